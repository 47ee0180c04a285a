//! `vaultctl audit …`: export, offline verification, tail, show, hash.
//!
//! Export directory layout (also documented in docs/AUDIT.md):
//!
//! ```text
//! DIR/entries.log              entries in index order, each: u32 big-endian length ‖ exact leaf bytes
//! DIR/checkpoints/<size>.note  every signed checkpoint fetched, one C2SP note per file
//! ```
//!
//! Export is resumable: it appends the entries it does not have yet (a torn
//! last record from an interrupted run is cut off first) and adds the newest
//! checkpoint. Verification (`verify.rs`) needs nothing but the directory and
//! the key.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use base64::Engine as _;
use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::{json, Value};
use vault_client::Client;
use vault_core::audit::entry::Entry;
use vault_core::audit::merkle::{leaf_hash, verify_inclusion, Hash};
use vault_core::audit::note::Checkpoint;

use crate::cli::ConnArgs;
use crate::util::{call, out, read_value, server, write_file, Outcome, ServerError};
use verify::{read_entries, read_key, verify_dir};

mod recording;
mod verify;

pub use recording::{file_digest, verify_recording};

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Download entries and the newest signed checkpoint into DIR (resumable).
    Export {
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify an exported log offline: signatures, hash chain, Merkle roots,
    /// coverage, and consistency with your last trusted checkpoint.
    Verify(VerifyArgs),
    /// Check a session recording offline against an exported log: the
    /// registration of its SHA-256 and size with the checkout, that
    /// entry's inclusion proof in the newest signed checkpoint, and a
    /// verdict (exit 5 if it does not match).
    VerifyRecording(recording::VerifyRecordingArgs),
    /// The newest entries.
    Tail {
        #[arg(short, default_value_t = 20)]
        n: u64,
    },
    /// One entry; with --audit-key, its inclusion proof is checked against the newest signed checkpoint.
    Show {
        index: u64,
        /// The checkpoint public key (PEM): also check the entry's inclusion
        /// proof against a fresh signed checkpoint. (Not `--key`: that is
        /// the client key.)
        #[arg(long = "audit-key")]
        audit_key: Option<PathBuf>,
    },
    /// The HMAC a value has in audit entries (value from --value-file or stdin).
    Hash {
        #[arg(long)]
        value_file: Option<PathBuf>,
    },
    /// Print the checkpoint public key (PEM) as the appliance publishes it.
    PublicKey,
}

#[derive(Args)]
pub struct VerifyArgs {
    dir: PathBuf,
    #[command(flatten)]
    trust: Trust,
}

/// What an offline verification trusts: the pinned key(s) and, if kept, an
/// earlier checkpoint.
#[derive(Args)]
pub struct Trust {
    /// The checkpoint public key (PEM), obtained and pinned beforehand.
    #[arg(long)]
    key: PathBuf,
    /// Earlier checkpoint keys of this appliance (PEM; repeatable): the
    /// audit key is replaced when custodians recover the appliance.
    #[arg(long = "previous-key")]
    previous_keys: Vec<PathBuf>,
    /// A checkpoint you saved earlier; the log must extend it.
    #[arg(long)]
    trusted_checkpoint: Option<PathBuf>,
}

impl Trust {
    /// The pinned key first, then the earlier ones.
    fn keys(&self) -> Vec<PathBuf> {
        let mut keys = vec![self.key.clone()];
        keys.extend(self.previous_keys.iter().cloned());
        keys
    }
}

fn b64d(s: &str) -> anyhow::Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| anyhow!("bad base64 from the server"))
}

async fn get_json(c: &Client, path: &str) -> anyhow::Result<Value> {
    let r = c.request(Method::GET, path, None).await?;
    let v: Value = r
        .json()
        .map_err(|_| anyhow!("non-JSON answer ({}) from {path}", r.status))?;
    if r.status != 200 {
        bail!(
            "{path}: {} {}: {}",
            r.status,
            v["error"]["code"].as_str().unwrap_or("?"),
            v["error"]["message"].as_str().unwrap_or("")
        );
    }
    Ok(v)
}

async fn latest_note(c: &Client) -> anyhow::Result<String> {
    // Ask for a fresh checkpoint so the export is fully covered; fall back
    // to the newest one if signing is not possible right now.
    let r = c
        .request(Method::POST, "/v1/audit/checkpoint", None)
        .await?;
    let r = if r.status == 200 {
        r
    } else {
        c.request(Method::GET, "/v1/audit/checkpoint", None).await?
    };
    if r.status != 200 {
        bail!(
            "cannot get a checkpoint: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    String::from_utf8(r.body.to_vec()).map_err(|_| anyhow!("checkpoint is not UTF-8"))
}

fn note_size(note: &str) -> anyhow::Result<u64> {
    note.split('\n')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("malformed checkpoint from the server"))
}

/// `audit export --out DIR`
pub async fn export(c: &ConnArgs, json: bool, dir: &Path) -> Outcome {
    let c = &c.client()?;
    std::fs::create_dir_all(dir.join("checkpoints")).with_context(|| dir.display().to_string())?;
    let log = dir.join("entries.log");
    let recs = read_entries(&log)?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)?;
    if recs.torn() {
        f.set_len(recs.good_len)?;
        eprintln!(
            "cut a torn record at the end of {} (interrupted export)",
            log.display()
        );
    }
    let note = latest_note(c).await?;
    let size = note_size(&note)?;
    let next = recs.len() as u64;
    drop(recs);
    if next > size {
        bail!("the local export has {next} entries but the appliance's newest checkpoint is of size {size}: the log was truncated or this directory belongs to another appliance");
    }
    let start = next;
    let tty = crate::util::show_progress(json);
    let next = append_entries(c, &mut f, start, size, tty).await?;
    f.sync_all()?;
    if tty {
        eprintln!();
    }
    let cp_path = dir.join("checkpoints").join(format!("{size}.note"));
    write_file(&cp_path, note.as_bytes(), 0o644)?;
    if json {
        println!(
            "{}",
            json!({"entries": next, "new_entries": next - start, "checkpoint_size": size,
                   "schema_version": crate::util::JSON_SCHEMA})
        );
    } else {
        println!(
            "exported {} new entries ({next} in all) and the checkpoint of size {size} to {}",
            next - start,
            dir.display()
        );
    }
    Ok(Ok(()))
}

/// Appends entries `[next, size)` to `entries.log`, 1000 at a time, each
/// checked to be the one expected; returns the new count.
async fn append_entries(
    c: &Client,
    f: &mut std::fs::File,
    mut next: u64,
    size: u64,
    tty: bool,
) -> anyhow::Result<u64> {
    while next < size {
        let end = (next + 1000).min(size);
        let v = get_json(c, &format!("/v1/audit/entries?start={next}&end={end}")).await?;
        let list = v["entries"]
            .as_array()
            .ok_or_else(|| anyhow!("no entries in the answer"))?;
        if list.is_empty() {
            bail!("the appliance returned no entries for [{next}, {end})");
        }
        let mut buf = Vec::new();
        for e in list {
            let idx = e["index"]
                .as_u64()
                .ok_or_else(|| anyhow!("entry without index"))?;
            if idx != next {
                bail!("the appliance returned entry {idx} where {next} was expected");
            }
            let bytes = b64d(e["entry"].as_str().unwrap_or(""))?;
            buf.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            buf.extend_from_slice(&bytes);
            next += 1;
        }
        f.write_all(&buf)?;
        if tty {
            eprint!("\rexported {next}/{size}");
        }
    }
    Ok(next)
}

/// `audit verify DIR --key K`: a log that does not verify exits 5.
pub fn verify(json: bool, a: VerifyArgs) -> Outcome {
    let t = &a.trust;
    if !verify_dir(&a.dir, &t.keys(), t.trusted_checkpoint.as_ref(), json)? {
        return Ok(Err(ServerError(
            0,
            "verification_failed".into(),
            "the audit log did not verify".into(),
        )));
    }
    Ok(Ok(()))
}

fn line(v: &Value) -> String {
    let d = &v["decoded"];
    format!(
        "#{:<7} {} {:<10} {:<18} {:<24} {}{}",
        v["index"],
        d["time"].as_str().unwrap_or(""),
        d["principal"].as_str().unwrap_or(""),
        d["action"].as_str().unwrap_or(""),
        d["target"].as_str().unwrap_or(""),
        d["outcome"].as_str().unwrap_or(""),
        match d["error"].as_str() {
            Some(e) if !e.is_empty() => format!(" ({e})"),
            _ => String::new(),
        }
    )
}

/// `audit tail [-n N]`
pub async fn tail(c: &ConnArgs, json: bool, n: u64) -> Outcome {
    let c = &c.client()?;
    let v = get_json(c, "/v1/audit/entries?start=0&end=1").await?;
    let size = v["tree_size"].as_u64().unwrap_or(0);
    let start = size.saturating_sub(n.clamp(1, 1000));
    let v = get_json(c, &format!("/v1/audit/entries?start={start}&end={size}")).await?;
    for e in v["entries"].as_array().into_iter().flatten() {
        if json {
            println!("{}", e["decoded"]);
        } else {
            println!("{}", line(e));
        }
    }
    Ok(Ok(()))
}

/// `audit show INDEX [--audit-key K]`: the entry, and with a key, its inclusion
/// proof checked against the newest signed checkpoint.
pub async fn show(c: &ConnArgs, json: bool, index: u64, key: Option<&Path>) -> Outcome {
    let c = &c.client()?;
    let v = get_json(
        c,
        &format!("/v1/audit/entries?start={index}&end={}", index + 1),
    )
    .await?;
    let e = v["entries"]
        .get(0)
        .ok_or_else(|| anyhow!("no entry {index}"))?
        .clone();
    let bytes = b64d(e["entry"].as_str().unwrap_or(""))?;
    Entry::parse(&bytes).map_err(|err| anyhow!("entry {index} is malformed: {err}"))?;
    let mut out =
        json!({"index": index, "entry": e["decoded"], "leaf_hash": hex(&leaf_hash(&bytes))});
    if let Some(k) = key {
        out["included_in_checkpoint"] = json!(check_inclusion(c, index, &bytes, k).await?);
    }
    if json {
        out["schema_version"] = json!(crate::util::JSON_SCHEMA);
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out["entry"])?);
        println!("leaf hash: {}", out["leaf_hash"].as_str().unwrap_or(""));
        if let Some(s) = out["included_in_checkpoint"].as_u64() {
            println!("inclusion proof verified against the signed checkpoint of size {s}");
        }
    }
    Ok(Ok(()))
}

/// Checks entry `index`'s inclusion proof against a fresh checkpoint signed
/// by the key in `k`; returns the checkpoint's size.
async fn check_inclusion(c: &Client, index: u64, bytes: &[u8], k: &Path) -> anyhow::Result<u64> {
    let spki = read_key(k)?;
    let note = latest_note(c).await?;
    let name = note.split('\n').next().unwrap_or("").to_owned();
    let cp = Checkpoint::verify(&note, &name, &spki).map_err(|err| anyhow!("checkpoint: {err}"))?;
    if cp.size <= index {
        bail!(
            "the newest checkpoint (size {}) does not cover entry {index} yet",
            cp.size
        );
    }
    let p = get_json(
        c,
        &format!(
            "/v1/audit/proof/inclusion?index={index}&tree_size={}",
            cp.size
        ),
    )
    .await?;
    let hashes: Vec<Hash> = p["hashes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            b64d(h.as_str().unwrap_or(""))?
                .try_into()
                .map_err(|_| anyhow!("proof hash is not 32 bytes"))
        })
        .collect::<anyhow::Result<_>>()?;
    verify_inclusion(&leaf_hash(bytes), index, cp.size, &hashes, &cp.root)
        .map_err(|err| anyhow!("inclusion proof FAILED: {err}"))?;
    Ok(cp.size)
}

fn hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// `audit hash`: the HMAC the value has in audit entries.
pub async fn hash(c: &ConnArgs, j: bool, value_file: Option<&Path>) -> Outcome {
    let trimmed = read_value(value_file)?;
    let v = server!(
        call(
            c,
            Method::POST,
            "/v1/audit/hash",
            Some(json!({"value": trimmed.as_str()}))
        )
        .await?
    );
    out(j, &v, |v| println!("{}", v["hmac"].as_str().unwrap_or("")));
    Ok(Ok(()))
}

/// `audit public-key`: the checkpoint key as the appliance publishes it.
pub async fn public_key(c: &ConnArgs, j: bool) -> Outcome {
    let v = server!(call(c, Method::GET, "/v1/audit/public-key", None).await?);
    out(j, &v, |v| {
        print!("{}", v["public_key_pem"].as_str().unwrap_or(""))
    });
    Ok(Ok(()))
}
