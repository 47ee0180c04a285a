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
//! checkpoint. Verification needs nothing but the directory and the key.

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use base64::Engine as _;
use hyper::Method;
use serde_json::{json, Value};
use vault_client::Client;
use vault_core::audit::entry::Entry;
use vault_core::audit::merkle::{leaf_hash, verify_inclusion, Hash};
use vault_core::audit::note::Checkpoint;
use vault_core::audit::verify::verify;

fn b64d(s: &str) -> anyhow::Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| anyhow!("bad base64 from the server"))
}

/// `entries.log` in memory: one buffer, and where each record lies in it.
pub struct Records {
    pub data: Vec<u8>,
    pub spans: Vec<(usize, usize)>,
    /// Length of the complete records (a torn tail lies beyond).
    pub good_len: u64,
}

impl Records {
    pub fn len(&self) -> usize {
        self.spans.len()
    }
    pub fn get(&self, i: usize) -> &[u8] {
        let (a, b) = self.spans[i];
        &self.data[a..b]
    }
    pub fn torn(&self) -> bool {
        self.good_len != self.data.len() as u64
    }
}

/// Reads `entries.log` (missing = empty).
pub fn read_entries(path: &Path) -> anyhow::Result<Records> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| path.display().to_string()),
    };
    let mut spans = Vec::new();
    let mut pos = 0usize;
    while pos + 4 <= data.len() {
        let len = u32::from_be_bytes(data[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        if pos + 4 + len > data.len() {
            break;
        }
        spans.push((pos + 4, pos + 4 + len));
        pos += 4 + len;
    }
    Ok(Records {
        data,
        spans,
        good_len: pos as u64,
    })
}

/// PEM SubjectPublicKeyInfo → DER.
pub fn read_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    let pem = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .join("");
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .map_err(|_| anyhow!("{}: not a PEM public key", path.display()))?;
    use p256::pkcs8::DecodePublicKey as _;
    p256::PublicKey::from_public_key_der(&der)
        .map_err(|e| anyhow!("{}: not an ECDSA P-256 public key: {e}", path.display()))?;
    Ok(der)
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
pub async fn export(c: &Client, dir: &Path, json: bool) -> anyhow::Result<()> {
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
    let mut next = recs.len() as u64;
    drop(recs);
    if next > size {
        bail!("the local export has {next} entries but the appliance's newest checkpoint is of size {size}: the log was truncated or this directory belongs to another appliance");
    }
    let start = next;
    let tty = std::io::stderr().is_terminal() && !json;
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
    f.sync_all()?;
    if tty {
        eprintln!();
    }
    let cp_path = dir.join("checkpoints").join(format!("{size}.note"));
    crate::write_file(&cp_path, note.as_bytes(), 0o644)?;
    if json {
        println!(
            "{}",
            json!({"entries": next, "new_entries": next - start, "checkpoint_size": size})
        );
    } else {
        println!(
            "exported {} new entries ({next} in all) and the checkpoint of size {size} to {}",
            next - start,
            dir.display()
        );
    }
    Ok(())
}

/// `audit verify DIR --key K [--trusted-checkpoint F]`. Returns whether it passed.
pub fn verify_dir(
    dir: &Path,
    keys: &[PathBuf],
    trusted: Option<&PathBuf>,
    json: bool,
) -> anyhow::Result<bool> {
    let spkis = keys
        .iter()
        .map(|k| read_key(k))
        .collect::<Result<Vec<_>, _>>()?;
    let spki: Vec<&[u8]> = spkis.iter().map(|k| k.as_slice()).collect();
    let recs = read_entries(&dir.join("entries.log"))?;
    let torn = recs.torn();
    let mut notes = Vec::new();
    let cdir = dir.join("checkpoints");
    if cdir.exists() {
        let mut files: Vec<_> = std::fs::read_dir(&cdir)?.collect::<Result<Vec<_>, _>>()?;
        files.sort_by_key(|f| f.file_name());
        for f in files {
            let mut s = String::new();
            std::fs::File::open(f.path())?.read_to_string(&mut s)?;
            notes.push(s);
        }
    }
    let trusted = match trusted {
        Some(p) => Some(std::fs::read_to_string(p).with_context(|| p.display().to_string())?),
        None => None,
    };
    let tty = std::io::stderr().is_terminal() && !json;
    let total = recs.len();
    let refs: Vec<&[u8]> = (0..total).map(|i| recs.get(i)).collect();
    let nrefs: Vec<&str> = notes.iter().map(|n| n.as_str()).collect();
    let started = std::time::Instant::now();
    let mut report = verify(&refs, &nrefs, &spki, trusted.as_deref(), &mut |n| {
        if tty {
            eprint!("\rverifying {n}/{total}");
        }
    });
    if tty {
        eprintln!();
    }
    if torn && report.failure.is_none() {
        report.failure = Some(vault_core::audit::verify::Failure {
            kind: vault_core::audit::verify::FailureKind::Truncated,
            index: Some(total as u64),
            message: "entries.log ends with a torn record".into(),
        });
    }
    let b64 = |h: &Hash| base64::engine::general_purpose::STANDARD.encode(h);
    let out = json!({
        "ok": report.ok(),
        "entries": report.entries,
        "checkpoints": report.checkpoints,
        "signed_size": report.signed_size,
        "root": b64(&report.root),
        "elapsed_ms": started.elapsed().as_millis() as u64,
        "failure": report.failure.as_ref().map(|f| json!({
            "kind": f.kind.as_str(), "index": f.index, "message": f.message,
        })),
    });
    if json {
        println!("{out}");
    } else if let Some(f) = &report.failure {
        println!(
            "FAILED: {} at index {}: {}",
            f.kind.as_str(),
            f.index.map(|i| i.to_string()).unwrap_or_else(|| "?".into()),
            f.message
        );
    } else {
        println!(
            "OK: {} entries, {} signed checkpoints, newest of size {}, root {}",
            report.entries,
            report.checkpoints,
            report.signed_size,
            b64(&report.root)
        );
    }
    Ok(report.ok())
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
pub async fn tail(c: &Client, n: u64, json: bool) -> anyhow::Result<()> {
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
    Ok(())
}

/// `audit show INDEX [--audit-key K]`: the entry, and with a key, its inclusion
/// proof checked against the newest signed checkpoint.
pub async fn show(c: &Client, index: u64, key: Option<&Path>, json: bool) -> anyhow::Result<()> {
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
        let spki = read_key(k)?;
        let note = latest_note(c).await?;
        let name = note.split('\n').next().unwrap_or("").to_owned();
        let cp =
            Checkpoint::verify(&note, &name, &spki).map_err(|err| anyhow!("checkpoint: {err}"))?;
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
        verify_inclusion(&leaf_hash(&bytes), index, cp.size, &hashes, &cp.root)
            .map_err(|err| anyhow!("inclusion proof FAILED: {err}"))?;
        out["included_in_checkpoint"] = json!(cp.size);
    }
    if json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out["entry"])?);
        println!("leaf hash: {}", out["leaf_hash"].as_str().unwrap_or(""));
        if let Some(s) = out["included_in_checkpoint"].as_u64() {
            println!("inclusion proof verified against the signed checkpoint of size {s}");
        }
    }
    Ok(())
}

fn hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}
