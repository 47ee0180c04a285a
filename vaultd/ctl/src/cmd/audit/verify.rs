//! `vaultctl audit verify`: an export directory checked offline, with
//! nothing but the directory and the pinned checkpoint key(s); and reading
//! that directory's `entries.log`, which `export` extends.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _};
use base64::Engine as _;
use serde_json::json;
use vault_core::audit::merkle::Hash;
use vault_core::audit::verify::{verify, Failure, FailureKind, Report};

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

/// Every checkpoint note in `DIR/checkpoints`, in file-name order.
fn read_notes(cdir: &Path) -> anyhow::Result<Vec<String>> {
    let mut notes = Vec::new();
    if cdir.exists() {
        let mut files: Vec<_> = std::fs::read_dir(cdir)?.collect::<Result<Vec<_>, _>>()?;
        files.sort_by_key(|f| f.file_name());
        for f in files {
            let mut s = String::new();
            std::fs::File::open(f.path())?.read_to_string(&mut s)?;
            notes.push(s);
        }
    }
    Ok(notes)
}

/// `audit verify DIR --key K [--trusted-checkpoint F]`. Returns whether it passed.
pub fn verify_dir(
    dir: &Path,
    keys: &[PathBuf],
    trusted: Option<&PathBuf>,
    json: bool,
) -> anyhow::Result<bool> {
    let (report, _, elapsed) = check_dir(dir, keys, trusted, json)?;
    print_report(&report, elapsed, json);
    Ok(report.ok())
}

/// The offline verification of an export directory, without its verdict
/// printed: the report, the entries it read, and how long it took.
pub fn check_dir(
    dir: &Path,
    keys: &[PathBuf],
    trusted: Option<&PathBuf>,
    json: bool,
) -> anyhow::Result<(Report, Records, std::time::Duration)> {
    let spkis = keys
        .iter()
        .map(|k| read_key(k))
        .collect::<Result<Vec<_>, _>>()?;
    let spki: Vec<&[u8]> = spkis.iter().map(|k| k.as_slice()).collect();
    let recs = read_entries(&dir.join("entries.log"))?;
    let torn = recs.torn();
    let notes = read_notes(&dir.join("checkpoints"))?;
    let trusted = match trusted {
        Some(p) => Some(std::fs::read_to_string(p).with_context(|| p.display().to_string())?),
        None => None,
    };
    let tty = crate::util::show_progress(json);
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
        report.failure = Some(Failure {
            kind: FailureKind::Truncated,
            index: Some(total as u64),
            message: "entries.log ends with a torn record".into(),
        });
    }
    let elapsed = started.elapsed();
    Ok((report, recs, elapsed))
}

/// The verdict: one JSON object, or one line (`OK: …` or `FAILED: …`).
fn print_report(report: &Report, elapsed: std::time::Duration, json: bool) {
    let b64 = |h: &Hash| base64::engine::general_purpose::STANDARD.encode(h);
    let out = json!({
        "ok": report.ok(),
        "entries": report.entries,
        "checkpoints": report.checkpoints,
        "signed_size": report.signed_size,
        "root": b64(&report.root),
        "elapsed_ms": elapsed.as_millis() as u64,
        "failure": report.failure.as_ref().map(|f| json!({
            "kind": f.kind.as_str(), "index": f.index, "message": f.message,
        })),
        "schema_version": crate::util::JSON_SCHEMA,
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
}
