//! `vaultctl audit verify-recording FILE --checkout ID --dir DIR --key K`:
//! a session recording checked offline against an exported, signed audit
//! log. The PAM server registered the recording's SHA-256 and size with its
//! checkout (`POST /v1/checkouts/{id}/recordings`, entry
//! `checkout.recording`); this finds that entry among the entries a signed
//! checkpoint covers, proves its inclusion in that checkpoint's tree, and
//! compares the file.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use vault_core::audit::entry::{Entry, Outcome as EntryOutcome};
use vault_core::audit::merkle::{leaf_hash, verify_inclusion, Tree};

use super::verify::check_dir;
use crate::util::{Outcome, ServerError};

#[derive(Args)]
pub struct VerifyRecordingArgs {
    /// The recording file.
    file: PathBuf,
    /// The checkout the recording was registered with.
    #[arg(long)]
    checkout: String,
    /// An export directory (`vaultctl audit export --out DIR`).
    #[arg(long)]
    dir: PathBuf,
    #[command(flatten)]
    trust: super::Trust,
}

/// SHA-256 (lowercase hex) and size of a file, read in pieces.
pub fn file_digest(path: &Path) -> anyhow::Result<(String, u64)> {
    let mut f = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| path.display().to_string())?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex(&h.finalize()), size))
}

fn hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

fn failed(message: String) -> Outcome {
    Ok(Err(ServerError(
        0,
        "recording_not_verified".into(),
        message,
    )))
}

/// A registration as the log has it.
fn registration(index: u64, e: &Entry) -> Value {
    let d = |k: &str| e.details.get(k).cloned().unwrap_or_default();
    json!({
        "index": index,
        "time": e.time,
        "principal": e.principal,
        "fingerprint": e.fingerprint,
        "path": d("path"),
        "version": d("version"),
        "sha256": d("sha256"),
        "size": d("size"),
        "started_at": d("started_at"),
        "ended_at": d("ended_at"),
        "label": e.details.get("label"),
    })
}

pub fn verify_recording(json: bool, a: VerifyRecordingArgs) -> Outcome {
    if uuid_like(&a.checkout).is_none() {
        anyhow::bail!("--checkout is a checkout id (a UUID)");
    }
    let (sha, size) = file_digest(&a.file)?;
    let t = &a.trust;
    let (report, recs, _) = check_dir(&a.dir, &t.keys(), t.trusted_checkpoint.as_ref(), json)?;
    if let Some(f) = &report.failure {
        return failed(format!(
            "the audit log did not verify ({} at index {}: {}); nothing in it can be trusted",
            f.kind.as_str(),
            f.index.map(|i| i.to_string()).unwrap_or_else(|| "?".into()),
            f.message
        ));
    }
    let signed = report.signed_size;
    // Only entries a signed checkpoint covers count; later ones are listed
    // so the auditor knows to export again.
    let mut matching = None;
    let mut others = Vec::new();
    let mut unsigned = Vec::new();
    for i in 0..recs.len() {
        let bytes = recs.get(i);
        if !bytes
            .windows(b"checkout.recording".len())
            .any(|w| w == b"checkout.recording")
        {
            continue;
        }
        let e = Entry::parse(bytes).with_context(|| format!("entry {i}"))?;
        if e.action != "checkout.recording"
            || e.outcome != EntryOutcome::Success
            || e.target != a.checkout
        {
            continue;
        }
        let reg = registration(i as u64, &e);
        if (i as u64) >= signed {
            unsigned.push(reg);
        } else if matching.is_none()
            && e.details.get("sha256") == Some(&sha)
            && e.details.get("size") == Some(&size.to_string())
        {
            matching = Some((i as u64, reg));
        } else {
            others.push(reg);
        }
    }
    let Some((index, reg)) = matching else {
        let mut why = if others.is_empty() {
            format!(
                "no recording is registered for checkout {} in the signed log",
                a.checkout
            )
        } else {
            format!(
                "the file (sha256 {sha}, {size} bytes) is not a recording registered for checkout {}: the log has {}",
                a.checkout,
                others
                    .iter()
                    .map(|r| format!(
                        "#{} sha256 {} {} bytes",
                        r["index"], r["sha256"].as_str().unwrap_or(""), r["size"].as_str().unwrap_or("")
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        if !unsigned.is_empty() {
            why.push_str(&format!(
                "; {} later registration(s) are not yet covered by a signed checkpoint: export again",
                unsigned.len()
            ));
        }
        if json {
            println!(
                "{}",
                json!({
                    "verified": false, "checkout_id": a.checkout, "sha256": sha, "size": size,
                    "registered": others, "not_yet_signed": unsigned, "message": why,
                    "schema_version": crate::util::JSON_SCHEMA,
                })
            );
        }
        return failed(why);
    };
    // The inclusion proof of the entry in the newest signed checkpoint's
    // tree, computed from the export and checked against that root (which
    // the verification above matched to the signed note).
    let mut tree = Tree::new();
    for i in 0..signed as usize {
        tree.push(leaf_hash(recs.get(i)));
    }
    let root = tree.root_at(signed).context("checkpoint root")?;
    let leaf = leaf_hash(recs.get(index as usize));
    let proof = tree
        .inclusion_proof(index, signed)
        .context("inclusion proof")?;
    if verify_inclusion(&leaf, index, signed, &proof, &root).is_err() {
        return failed(format!("entry {index}'s inclusion proof does not verify"));
    }
    let out = json!({
        "verified": true,
        "checkout_id": a.checkout,
        "sha256": sha,
        "size": size,
        "registration": reg,
        "checkpoint_size": signed,
        "root": hex(&root),
        "leaf_hash": hex(&leaf),
        "inclusion_proof": proof.iter().map(|h| hex(h)).collect::<Vec<_>>(),
        "schema_version": crate::util::JSON_SCHEMA,
    });
    if json {
        println!("{out}");
    } else {
        let s = |k: &str| reg[k].as_str().unwrap_or("").to_owned();
        println!(
            "VERIFIED: {} ({size} bytes, sha256 {sha}) is the recording {} registered at {} for checkout {} of {} (v{}), session {} to {}{}",
            a.file.display(),
            s("principal"),
            s("time"),
            a.checkout,
            s("path"),
            s("version"),
            s("started_at"),
            s("ended_at"),
            reg["label"]
                .as_str()
                .map(|l| format!(", label {l}"))
                .unwrap_or_default(),
        );
        println!(
            "entry #{index}, leaf hash {}, included in the signed checkpoint of size {signed} (root {}) by a proof of {} hashes:",
            hex(&leaf),
            hex(&root),
            proof.len()
        );
        for h in &proof {
            println!("  {}", hex(h));
        }
        if !unsigned.is_empty() {
            println!(
                "{} later registration(s) for this checkout are not yet covered by a signed checkpoint",
                unsigned.len()
            );
        }
    }
    Ok(Ok(()))
}

/// The id if it has a UUID's shape (8-4-4-4-12 hex digits).
fn uuid_like(s: &str) -> Option<&str> {
    let parts: Vec<&str> = s.split('-').collect();
    let ok = parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()));
    ok.then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkout_ids_are_uuid_shaped() {
        assert!(uuid_like("0f0e0d0c-0b0a-4000-8000-000000000001").is_some());
        for bad in ["", "x", "0f0e0d0c-0b0a-4000-8000-00000000000", "../../etc"] {
            assert!(uuid_like(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_file_digest_is_sha256_and_size() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            file_digest(&p).unwrap(),
            (
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
                3
            )
        );
    }
}
