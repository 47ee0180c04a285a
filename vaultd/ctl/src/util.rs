//! What the commands share: the connection and the request helpers, the
//! server's errors, output, and reading and writing local files.

use std::io::Read as _;
use std::path::Path;

use anyhow::{anyhow, bail, Context as _};
use hyper::Method;
use serde_json::Value;
use vault_client::Client;

use crate::cli::ConnArgs;

/// The server refused: HTTP status (0 when the refusal is this tool's own
/// verdict, e.g. a failed verification), error code, message. Exit code 1.
pub struct ServerError(pub u16, pub String, pub String);

/// What a command ends with: `Err` is a local or usage error (exit 2),
/// `Ok(Err)` a refusal (exit 1).
pub type Outcome = anyhow::Result<Result<(), ServerError>>;

/// Unwraps the value of a `Result<Value, ServerError>`, or returns the
/// refusal from the command.
macro_rules! server {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        }
    };
}
pub(crate) use server;

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The common name of the client certificate (the principal's name).
pub fn cert_common_name(c: &ConnArgs) -> anyhow::Result<String> {
    let p = c
        .cert
        .as_deref()
        .context("--cert (or VAULT_CERT) is required")?;
    let pem = std::fs::read_to_string(p).with_context(|| p.display().to_string())?;
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|_| anyhow!("{}: not a PEM certificate", p.display()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&block.contents)
        .map_err(|e| anyhow!("{}: {e}", p.display()))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|n| n.as_str().ok())
        .ok_or_else(|| anyhow!("{}: no common name", p.display()))?;
    Ok(cn.to_owned())
}

impl ConnArgs {
    pub fn client(&self) -> anyhow::Result<Client> {
        let ca = self
            .cacert
            .as_deref()
            .context("--cacert (or VAULT_CACERT) is required")?;
        let id = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            (None, None) => None,
            _ => bail!("--cert and --key go together"),
        };
        Ok(Client::from_files(&self.addr, ca, id)?)
    }
}

/// One request over mTLS; the answer's JSON or the server's refusal.
pub async fn call(
    c: &ConnArgs,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Result<Value, ServerError>> {
    let client = c.client()?;
    let resp = client.request(method, path, body.as_ref()).await?;
    warn_expiry(&resp);
    decode(&resp)
}

static JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `--json`: warnings on stderr are JSON objects too.
pub fn set_json(j: bool) {
    JSON.store(j, std::sync::atomic::Ordering::Relaxed);
}

/// Once per run, on stderr: the server says the caller's certificate is in
/// its renewal window. With `--json`, `{"warning": {"code":
/// "certificate_expiring", "message", "expires_in_seconds"}}`.
pub fn warn_expiry(resp: &vault_client::Response) {
    use std::sync::atomic::Ordering;
    let Some(left) = resp.cert_expires_in else {
        return;
    };
    if WARNED.swap(true, Ordering::Relaxed) {
        return;
    }
    let when = if left >= 2 * 86_400 {
        format!("in {} days", left / 86_400)
    } else if left >= 3_600 {
        format!("in {} hours", left / 3_600)
    } else {
        format!("in {} minutes", (left / 60).max(1))
    };
    let message = format!(
        "your client certificate expires {when}: renew it with `vaultctl cert renew` before it does"
    );
    if JSON.load(Ordering::Relaxed) {
        eprintln!(
            "{}",
            serde_json::json!({"warning": {"code": "certificate_expiring", "message": message, "expires_in_seconds": left}, "schema_version": JSON_SCHEMA})
        );
    } else {
        eprintln!("warning: {message}");
    }
}

/// The JSON of a response, or the server's error.
pub fn decode(resp: &vault_client::Response) -> anyhow::Result<Result<Value, ServerError>> {
    let v: Value = resp
        .json()
        .map_err(|_| anyhow!("the server answered {} with a non-JSON body", resp.status))?;
    if (200..300).contains(&resp.status) {
        Ok(Ok(v))
    } else {
        let code = v["error"]["code"].as_str().unwrap_or("unknown").to_owned();
        let msg = v["error"]["message"].as_str().unwrap_or("").to_owned();
        Ok(Err(ServerError(resp.status, code, msg)))
    }
}

static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `--quiet`: no progress display.
pub fn set_quiet(q: bool) {
    QUIET.store(q, std::sync::atomic::Ordering::Relaxed);
}

/// Whether long work shows its progress: on stderr, only when it is a
/// terminal, never with `--json` or `--quiet`.
pub fn show_progress(json: bool) -> bool {
    use std::io::IsTerminal as _;
    !json && !QUIET.load(std::sync::atomic::Ordering::Relaxed) && std::io::stderr().is_terminal()
}

/// The version of vaultctl's `--json` output, in every object it prints
/// (`schema_version`); it goes up when a field changes meaning or goes away.
pub const JSON_SCHEMA: u32 = 1;

/// The JSON itself with `--json` (and `schema_version`), else the human text.
pub fn out(json: bool, v: &Value, human: impl FnOnce(&Value)) {
    if json {
        match v {
            Value::Object(m) => {
                let mut m = m.clone();
                m.insert("schema_version".into(), JSON_SCHEMA.into());
                println!("{}", Value::Object(m));
            }
            other => println!("{other}"),
        }
    } else {
        human(v);
    }
}

/// A checkout's lease on stderr, its value alone on stdout.
pub fn print_checkout(v: &Value) {
    eprintln!(
        "checkout {} of {} v{} expires {}",
        v["checkout_id"].as_str().unwrap_or(""),
        v["path"].as_str().unwrap_or(""),
        v["version"],
        v["expires_at"].as_str().unwrap_or("")
    );
    println!("{}", v["value"].as_str().unwrap_or(""));
}

/// A fresh P-256 key (PEM) and a CSR (PEM) for the common name `cn`.
pub fn key_and_csr(cn: &str) -> anyhow::Result<(zeroize::Zeroizing<String>, String)> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let csr = params.serialize_request(&key)?.pem()?;
    Ok((zeroize::Zeroizing::new(key.serialize_pem()), csr))
}

/// A secret value from a file or stdin, never argv; a trailing newline
/// from `echo` or an editor is not part of the value.
pub fn read_value(file: Option<&Path>) -> anyhow::Result<zeroize::Zeroizing<String>> {
    let mut value = zeroize::Zeroizing::new(String::new());
    match file {
        Some(p) => *value = std::fs::read_to_string(p).with_context(|| p.display().to_string())?,
        None => {
            std::io::stdin()
                .read_to_string(&mut value)
                .context("reading the value from stdin")?;
        }
    }
    Ok(zeroize::Zeroizing::new(
        value.trim_end_matches(['\n', '\r']).to_owned(),
    ))
}

pub fn read_json_file(p: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(p).with_context(|| p.display().to_string())?;
    serde_json::from_str(&text).with_context(|| format!("{}: not JSON", p.display()))
}

/// Writes `data` to `path` atomically (a synced temporary file renamed over
/// it) with `mode` permissions from the start.
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| tmp.display().to_string())?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| path.display().to_string())
}

pub fn write_private(path: &Path, data: &str) -> anyhow::Result<()> {
    write_file(path, data.as_bytes(), 0o600)
}

pub fn write_public(path: &Path, data: &str) -> anyhow::Result<()> {
    write_file(path, data.as_bytes(), 0o644)
}
