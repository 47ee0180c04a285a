//! Writes a synthetic, correctly signed audit export (the format of
//! `vaultctl audit export`) for benchmarking `vaultctl audit verify`.
//! The signing key is a software P-256 key made here; its public key is
//! written next to the export as `audit.pub`.
//!
//! vault-audit-gen --entries 1000000 --out DIR

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;

use clap::Parser;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey as _, LineEnding};
use vault_core::audit::entry::{Draft, Outcome};
use vault_core::audit::merkle::{leaf_hash, CompactRange};
use vault_core::audit::note::Checkpoint;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1_000_000)]
    entries: u64,
    /// A checkpoint every this many entries (and at the end).
    #[arg(long, default_value_t = 10_000)]
    checkpoint_every: u64,
    #[arg(long)]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    std::fs::create_dir_all(a.out.join("checkpoints"))?;
    let sk = SigningKey::random(&mut rand::rngs::OsRng);
    let spki = sk.verifying_key().to_public_key_der()?.as_bytes().to_vec();
    std::fs::write(
        a.out.join("audit.pub"),
        sk.verifying_key().to_public_key_pem(LineEnding::LF)?,
    )?;
    let origin = "vaultd.appliance/bench";
    let mut f = std::io::BufWriter::new(std::fs::File::create(a.out.join("entries.log"))?);
    let mut cr = CompactRange::new();
    let mut prev = None;
    let mut bytes_total = 0u64;
    let sign = |size: u64, cr: &CompactRange| -> anyhow::Result<()> {
        let cp = Checkpoint {
            origin: origin.into(),
            size,
            root: cr.root(),
        };
        let sig: Signature = sk.sign(cp.body().as_bytes());
        std::fs::write(
            a.out.join("checkpoints").join(format!("{size}.note")),
            cp.signed(origin, &spki, sig.to_der().as_bytes()),
        )?;
        Ok(())
    };
    for i in 0..a.entries {
        let d = Draft {
            time: "2026-11-22T08:00:00Z".into(),
            request_id: format!("{i:032x}"),
            principal: format!("pam{:02}", i % 40),
            role: "pam".into(),
            fingerprint: "ab".repeat(32),
            action: "secret.checkout".into(),
            target: format!("prod/db/{}", i % 5000),
            outcome: Outcome::Success,
            error: String::new(),
            details: BTreeMap::from([
                (
                    "checkout_id".into(),
                    "0b5cb5b2-7f34-4d1f-9c55-3c2b8a51c1de".into(),
                ),
                ("reason".into(), "change CHG-1234".into()),
                ("ttl_seconds".into(), "900".into()),
                ("version".into(), "3".into()),
            ]),
            hmac: BTreeMap::new(),
        };
        let b = d.finalize(i, prev.as_ref());
        let h = leaf_hash(&b);
        prev = Some(h);
        cr.push(h);
        f.write_all(&(b.len() as u32).to_be_bytes())?;
        f.write_all(&b)?;
        bytes_total += b.len() as u64;
        if (i + 1) % a.checkpoint_every == 0 || i + 1 == a.entries {
            sign(i + 1, &cr)?;
        }
    }
    f.flush()?;
    println!(
        "{} entries ({} MB, {} bytes/entry average) in {}",
        a.entries,
        bytes_total / 1_000_000,
        bytes_total / a.entries.max(1),
        a.out.display()
    );
    Ok(())
}
