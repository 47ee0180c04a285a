//! `vaultctl`: the operator, writer and PAM command line for vaultd.
//!
//! Everything talks to the daemon over mutual TLS (`init` over the pinned
//! first-boot identity), except the offline steps: `audit verify`, `recover
//! share`, `breakglass open`. It links neither the daemon nor the store: the
//! local ceremonies (`vaultd init`, `vaultd recover`) belong to the daemon's
//! binary on the appliance. Output is
//! human text by default and the server's JSON with `--json`. Secret values
//! are never taken from the command line (other users can read argv): `secret
//! put` reads the value from a file or standard input.
//!
//! Exit codes: 0 success, 1 the server refused (the error code is printed),
//! 2 usage or local error (bad files, cannot connect).

#![forbid(unsafe_code)]

mod audit;
mod custodian;
mod recover;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context as _};
use clap::{Args, Parser, Subcommand};
use hyper::Method;
use serde_json::{json, Value};
use vault_client::Client;

#[derive(Parser)]
#[command(
    name = "vaultctl",
    version,
    about = "Command-line tool for the vaultd appliance"
)]
struct Cli {
    #[command(flatten)]
    conn: ConnArgs,
    /// Print the server's JSON instead of human text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args)]
struct ConnArgs {
    /// Appliance address.
    #[arg(
        long,
        env = "VAULT_ADDR",
        default_value = "https://127.0.0.1:8443",
        global = true
    )]
    addr: String,
    /// CA certificate that signed the appliance's server certificate.
    #[arg(long, env = "VAULT_CACERT", global = true)]
    cacert: Option<PathBuf>,
    /// Client certificate (PEM).
    #[arg(long, env = "VAULT_CERT", global = true)]
    cert: Option<PathBuf>,
    /// Client private key (PEM).
    #[arg(long, env = "VAULT_KEY", global = true)]
    key: Option<PathBuf>,
}

#[derive(Subcommand)]
enum UpdateCmd {
    /// Upload a signed update bundle (update-VERSION.vupd): the appliance
    /// checks its signature and hashes, installs it into the inactive slot
    /// and reboots into it; a slot that does not become healthy falls back.
    Apply { bundle: PathBuf },
    /// The running version and slot, and the state of the last update.
    Status,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the first-boot ceremony of a flashed appliance remotely, over its
    /// one-time TLS identity (the admin key is generated here and never
    /// leaves). The local ceremony is `vaultd init`, on the appliance.
    Init {
        /// Refused with a pointer to `vaultd init` (the local ceremony
        /// opens the seal devices and the data file: the daemon's job).
        #[arg(long, hide = true, conflicts_with_all = ["pin_fingerprint", "code"])]
        config: Option<PathBuf>,
        /// SHA-256 of the appliance's bootstrap certificate, from its console.
        #[arg(long, requires = "code")]
        pin_fingerprint: Option<String>,
        /// The one-time init code from the appliance's console.
        #[arg(long, requires = "pin_fingerprint")]
        code: Option<String>,
        /// Directory for the first admin's certificate and key, and the CA.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "admin")]
        admin_name: String,
    },
    /// Seal status.
    Status,
    /// Appliance image updates (admin).
    #[command(subcommand)]
    Update(UpdateCmd),
    /// Retry unsealing (admin).
    Unseal,
    /// Client certificates (admin).
    #[command(subcommand)]
    Cert(CertCmd),
    /// Secrets: write (writer), metadata and list.
    #[command(subcommand)]
    Secret(SecretCmd),
    /// Check a secret out (pam). Prints the value.
    Checkout {
        path: String,
        #[arg(long)]
        reason: String,
        /// Lease length in seconds (server default if omitted).
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Check a checkout back in (pam).
    Checkin { checkout_id: String },
    /// Keyring (admin).
    #[command(subcommand)]
    Keyring(KeyringCmd),
    /// The audit log (auditor): export, verify offline, inspect.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Custodians and their YubiKeys (enrol: admin).
    #[command(subcommand)]
    Custodian(custodian::CustodianCmd),
    /// Set the approvals a secret's checkouts need (admin), e.g.
    /// `--approvals security:2,dba:1`; `--approvals none` removes them.
    Policy {
        path: String,
        #[arg(long)]
        approvals: String,
    },
    /// Approval and break-glass requests.
    #[command(subcommand)]
    Requests(custodian::RequestsCmd),
    /// Approve (or with --deny, deny) a request with your YubiKey (custodian).
    Approve {
        id: String,
        #[arg(long)]
        deny: bool,
        /// Your custodian name (default: the common name of --cert).
        #[arg(long = "as")]
        as_name: Option<String>,
        /// The YubiKey's serial (needed when several are attached).
        #[arg(long)]
        serial: Option<u32>,
        /// Read the PIN from this file instead of asking.
        #[arg(long)]
        pin_file: Option<PathBuf>,
    },
    /// Collect an approved checkout request (pam): prints the value.
    Collect { id: String },
    /// Break-glass secrets (sealed tier): request and open locally (pam).
    #[command(subcommand)]
    Breakglass(custodian::BreakglassCmd),
    /// A custodian's part of restoring the root key on a new box with k
    /// YubiKeys; the operator runs `vaultd recover begin|finish` on the box.
    #[command(subcommand)]
    Recover(recover::RecoverCmd),
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Download entries and the newest signed checkpoint into DIR (resumable).
    Export {
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify an exported log offline: signatures, hash chain, Merkle roots,
    /// coverage, and consistency with your last trusted checkpoint.
    Verify {
        dir: PathBuf,
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
    },
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

#[derive(Subcommand)]
enum CertCmd {
    /// Issue a client certificate. Generates the key locally unless --csr is given.
    Issue {
        #[arg(long)]
        role: String,
        #[arg(long)]
        name: String,
        /// Sign this CSR (PEM) instead of generating a key.
        #[arg(long)]
        csr: Option<PathBuf>,
        /// Validity in days (server maximum applies).
        #[arg(long)]
        days: Option<u32>,
        /// Where NAME.pem, NAME-key.pem and ca.pem are written.
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
    },
    /// List principals.
    List,
    /// Revoke a principal by certificate SHA-256 fingerprint.
    Revoke { fingerprint: String },
}

#[derive(Subcommand)]
enum SecretCmd {
    /// Store a new version. The value is read from --value-file or stdin.
    Put {
        path: String,
        #[arg(long)]
        value_file: Option<PathBuf>,
        /// JSON object of non-secret metadata.
        #[arg(long)]
        metadata: Option<String>,
        /// Only one checkout at a time.
        #[arg(long)]
        exclusive: bool,
        /// Sealed tier, `GROUP:K`: the value's key is split among the group's
        /// custodians and k of them are needed to open it (docs/CUSTODIANS.md).
        #[arg(long, value_name = "GROUP:K")]
        sealed: Option<String>,
    },
    /// Metadata and versions (never the value).
    Get { path: String },
    /// List secrets by prefix.
    List {
        #[arg(long, default_value = "")]
        prefix: String,
    },
}

#[derive(Subcommand)]
enum KeyringCmd {
    /// Add a keyring version; data keys are rewrapped online.
    Rotate,
    /// Versions and rewrap progress.
    Status,
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct ServerError(u16, String, String);

/// The common name of the client certificate (the principal's name).
fn cert_common_name(c: &ConnArgs) -> anyhow::Result<String> {
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
    fn client(&self) -> anyhow::Result<Client> {
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

async fn call(
    c: &ConnArgs,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Result<Value, ServerError>> {
    let client = c.client()?;
    let resp = client.request(method, path, body.as_ref()).await?;
    decode(&resp)
}

/// The JSON of a response, or the server's error.
fn decode(resp: &vault_client::Response) -> anyhow::Result<Result<Value, ServerError>> {
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

/// The first-boot ceremony of a flashed appliance, over its one-time TLS
/// identity (pinned by fingerprint): the admin key is made here, the
/// appliance signs its certificate.
async fn remote_init(
    json: bool,
    addr: &str,
    fingerprint: &str,
    code: &str,
    dir: &Path,
    admin_name: &str,
) -> anyhow::Result<Result<(), ServerError>> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, admin_name);
    let csr = params.serialize_request(&key)?.pem()?;
    let key_pem = zeroize::Zeroizing::new(key.serialize_pem());
    let client = Client::pinned(addr, fingerprint)?;
    let body = json!({"code": code, "admin_name": admin_name, "csr_pem": csr});
    let resp = client
        .request(Method::POST, "/v1/sys/init", Some(&body))
        .await?;
    let v = match decode(&resp)? {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    let field = |k: &str| -> anyhow::Result<String> {
        v[k].as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("the appliance's answer has no {k}"))
    };
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    let ca = dir.join("ca.pem");
    let cert = dir.join(format!("{admin_name}.pem"));
    let key_path = dir.join(format!("{admin_name}-key.pem"));
    write_private(&key_path, &key_pem)?;
    write_public(&cert, &field("admin_cert_pem")?)?;
    write_public(&ca, &field("ca_pem")?)?;
    // The appliance now serves mTLS under its new CA: prove the new
    // credentials work before declaring success.
    let c = Client::from_files(addr, &ca, Some((&cert, &key_path)))?;
    let mut sealed = Value::Null;
    for _ in 0..60 {
        if let Ok(r) = c.request(Method::GET, "/v1/sys/seal-status", None).await {
            if let Ok(Ok(s)) = decode(&r) {
                sealed = s;
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let report = json!({
        "appliance_id": v["appliance_id"], "seal_mode": v["seal_mode"],
        "ca_cert": ca, "admin_cert": cert, "admin_key": key_path,
        "admin_fingerprint": v["admin_fingerprint"], "seal_status": sealed,
    });
    out(json, &report, |r| {
        println!(
            "appliance {} initialised (seal mode {})",
            r["appliance_id"].as_str().unwrap_or(""),
            r["seal_mode"].as_str().unwrap_or("")
        );
        println!("  CA certificate : {}", ca.display());
        println!("  admin cert     : {}", cert.display());
        println!("  admin key      : {}", key_path.display());
        match r["seal_status"]["sealed"].as_bool() {
            Some(false) => {
                println!("  mTLS API       : answering with the new credentials, unsealed")
            }
            Some(true) => println!(
                "  mTLS API       : answering, but SEALED: {}",
                r["seal_status"]["reason"]
            ),
            None => println!("  mTLS API       : did not answer yet with the new credentials"),
        }
    });
    if sealed.is_null() {
        bail!("the appliance was initialised but its mTLS API did not answer with the new credentials within 30 s");
    }
    Ok(Ok(()))
}

/// A secret value from a file or stdin, never argv; a trailing newline
/// from `echo` or an editor is not part of the value.
fn read_value(file: Option<&Path>) -> anyhow::Result<zeroize::Zeroizing<String>> {
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

fn read_json_file(p: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(p).with_context(|| p.display().to_string())?;
    serde_json::from_str(&text).with_context(|| format!("{}: not JSON", p.display()))
}

/// Writes `data` to `path` atomically (a synced temporary file renamed over
/// it) with `mode` permissions from the start.
fn write_file(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
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

fn write_private(path: &Path, data: &str) -> anyhow::Result<()> {
    write_file(path, data.as_bytes(), 0o600)
}

fn write_public(path: &Path, data: &str) -> anyhow::Result<()> {
    write_file(path, data.as_bytes(), 0o644)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vaultctl: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(ServerError(0, _, msg))) => {
            eprintln!("vaultctl: {msg}");
            ExitCode::from(1)
        }
        Ok(Err(ServerError(status, code, msg))) => {
            eprintln!("vaultctl: server refused ({status} {code}): {msg}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("vaultctl: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// A checkout's lease on stderr, its value alone on stdout.
fn print_checkout(v: &Value) {
    eprintln!(
        "checkout {} of {} v{} expires {}",
        v["checkout_id"].as_str().unwrap_or(""),
        v["path"].as_str().unwrap_or(""),
        v["version"],
        v["expires_at"].as_str().unwrap_or("")
    );
    println!("{}", v["value"].as_str().unwrap_or(""));
}

fn out(json: bool, v: &Value, human: impl FnOnce(&Value)) {
    if json {
        println!("{v}");
    } else {
        human(v);
    }
}

async fn run(cli: Cli) -> anyhow::Result<Result<(), ServerError>> {
    let j = cli.json;
    let c = &cli.conn;
    macro_rules! server {
        ($e:expr) => {
            match $e {
                Ok(v) => v,
                Err(e) => return Ok(Err(e)),
            }
        };
    }
    match cli.cmd {
        Cmd::Init {
            config: Some(_), ..
        } => bail!(
            "the local ceremony runs on the appliance, as the daemon: `vaultd --config FILE init --out DIR`"
        ),
        Cmd::Init {
            config: None,
            pin_fingerprint: Some(fp),
            code: Some(code),
            out: dir,
            admin_name,
        } => {
            server!(remote_init(j, &c.addr, &fp, &code, &dir, &admin_name).await?);
        }
        Cmd::Init { .. } => {
            bail!("init needs --pin-fingerprint and --code (the appliance's console shows them); the local ceremony is `vaultd init`")
        }
        Cmd::Update(UpdateCmd::Apply { bundle }) => {
            let data = std::fs::read(&bundle).with_context(|| bundle.display().to_string())?;
            let size = data.len();
            let client = c.client()?;
            let resp = client
                .connect()
                .await?
                .request_bytes(
                    Method::POST,
                    "/v1/sys/update",
                    "application/octet-stream",
                    bytes::Bytes::from(data),
                )
                .await?;
            let v = server!(decode(&resp)?);
            out(j, &v, |v| {
                println!(
                    "update {} (build {}) staged: {size} bytes, signature and hashes verified",
                    v["version"].as_str().unwrap_or(""),
                    v["build"]
                );
                println!("the appliance now writes its inactive slot and reboots into it");
            });
        }
        Cmd::Update(UpdateCmd::Status) => {
            let v = server!(call(c, Method::GET, "/v1/sys/update", None).await?);
            out(j, &v, |v| {
                println!(
                    "running {} on slot {}",
                    v["version"].as_str().unwrap_or("?"),
                    v["slot"].as_str().unwrap_or("?")
                );
                for k in ["staged", "installed", "failed"] {
                    if !v[k].is_null() {
                        println!("{k}: {}", v[k]);
                    }
                }
            });
        }
        Cmd::Status => {
            let v = server!(call(c, Method::GET, "/v1/sys/seal-status", None).await?);
            out(j, &v, |v| {
                if v["sealed"].as_bool() == Some(false) {
                    println!(
                        "unsealed (mode {}, since {})",
                        v["mode"].as_str().unwrap_or("?"),
                        v["since"].as_str().unwrap_or("?")
                    );
                } else {
                    println!(
                        "SEALED (mode {}): {} — {}",
                        v["mode"].as_str().unwrap_or("?"),
                        v["reason"]["code"].as_str().unwrap_or("?"),
                        v["reason"]["message"].as_str().unwrap_or("")
                    );
                }
            });
        }
        Cmd::Unseal => {
            let v = server!(call(c, Method::POST, "/v1/sys/unseal", None).await?);
            out(j, &v, |_| println!("unsealed"));
        }
        Cmd::Cert(CertCmd::Issue {
            role,
            name,
            csr,
            days,
            out_dir,
        }) => {
            let (csr_pem, key_pem) = match &csr {
                Some(p) => (
                    std::fs::read_to_string(p).with_context(|| p.display().to_string())?,
                    None,
                ),
                None => {
                    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
                    let mut params = rcgen::CertificateParams::default();
                    params
                        .distinguished_name
                        .push(rcgen::DnType::CommonName, name.as_str());
                    let csr = params.serialize_request(&key)?;
                    (
                        csr.pem()?,
                        Some(zeroize::Zeroizing::new(key.serialize_pem())),
                    )
                }
            };
            let mut body = json!({"name": name, "role": role, "csr_pem": csr_pem});
            if let Some(d) = days {
                body["validity_days"] = json!(d);
            }
            let v = server!(call(c, Method::POST, "/v1/sys/certs", Some(body)).await?);
            std::fs::create_dir_all(&out_dir).with_context(|| out_dir.display().to_string())?;
            let cert_path = out_dir.join(format!("{name}.pem"));
            write_public(
                &cert_path,
                v["certificate_pem"].as_str().unwrap_or_default(),
            )?;
            write_public(
                &out_dir.join("ca.pem"),
                v["ca_pem"].as_str().unwrap_or_default(),
            )?;
            let key_path = out_dir.join(format!("{name}-key.pem"));
            if let Some(k) = &key_pem {
                write_private(&key_path, k)?;
            }
            let mut report = json!({
                "name": v["name"], "role": v["role"], "fingerprint": v["fingerprint"],
                "not_after": v["not_after"], "certificate": cert_path,
            });
            if key_pem.is_some() {
                report["key"] = json!(key_path);
            }
            out(j, &report, |r| {
                println!(
                    "issued {} certificate for {}",
                    r["role"].as_str().unwrap_or("?"),
                    r["name"].as_str().unwrap_or("?")
                );
                println!("  certificate : {}", cert_path.display());
                if key_pem.is_some() {
                    println!("  key         : {}", key_path.display());
                }
                println!(
                    "  sha256      : {}",
                    r["fingerprint"].as_str().unwrap_or("?")
                );
                println!("  expires     : {}", r["not_after"].as_str().unwrap_or("?"));
            });
        }
        Cmd::Cert(CertCmd::List) => {
            let v = server!(call(c, Method::GET, "/v1/sys/principals", None).await?);
            out(j, &v, |v| {
                for p in v["principals"].as_array().into_iter().flatten() {
                    println!(
                        "{:<20} {:<8} {} {}{}",
                        p["name"].as_str().unwrap_or(""),
                        p["role"].as_str().unwrap_or(""),
                        p["fingerprint"].as_str().unwrap_or(""),
                        p["not_after"].as_str().unwrap_or(""),
                        if p["revoked"].as_bool() == Some(true) {
                            " REVOKED"
                        } else {
                            ""
                        }
                    );
                }
            });
        }
        Cmd::Cert(CertCmd::Revoke { fingerprint }) => {
            let v = server!(
                call(
                    c,
                    Method::POST,
                    &format!("/v1/sys/principals/{}/revoke", enc(&fingerprint)),
                    None
                )
                .await?
            );
            out(j, &v, |_| println!("revoked {fingerprint}"));
        }
        Cmd::Secret(SecretCmd::Put {
            path,
            value_file,
            metadata,
            exclusive,
            sealed,
        }) => {
            let trimmed = read_value(value_file.as_deref())?;
            let mut body = json!({"value": trimmed.as_str()});
            if let Some(spec) = sealed {
                let custody = custodian::parse_approvals(&spec)?;
                match custody.as_array().map(|a| a.as_slice()) {
                    Some([one]) => {
                        body["tier"] = json!("sealed");
                        body["custody"] = one.clone();
                    }
                    _ => bail!("--sealed takes one GROUP:K"),
                }
            }
            if let Some(m) = metadata {
                body["metadata"] =
                    serde_json::from_str(&m).context("--metadata must be a JSON object")?;
            }
            if exclusive {
                body["exclusive"] = json!(true);
            }
            let v = server!(
                call(
                    c,
                    Method::PUT,
                    &format!("/v1/secrets/{}", enc(&path)),
                    Some(body)
                )
                .await?
            );
            out(j, &v, |v| {
                println!("stored {} version {}", path, v["version"])
            });
        }
        Cmd::Secret(SecretCmd::Get { path }) => {
            let v =
                server!(call(c, Method::GET, &format!("/v1/secrets/{}", enc(&path)), None).await?);
            out(j, &v, |v| {
                println!("path            : {}", v["path"].as_str().unwrap_or(""));
                println!("current version : {}", v["current_version"]);
                println!("exclusive       : {}", v["exclusive"]);
                println!("metadata        : {}", v["metadata"]);
                for ver in v["versions"].as_array().into_iter().flatten() {
                    println!(
                        "  v{} {} by {}",
                        ver["version"],
                        ver["created_at"].as_str().unwrap_or(""),
                        ver["created_by"].as_str().unwrap_or("")
                    );
                }
                for co in v["open_checkouts"].as_array().into_iter().flatten() {
                    println!(
                        "  checked out by {} until {} ({})",
                        co["principal"].as_str().unwrap_or(""),
                        co["expires_at"].as_str().unwrap_or(""),
                        co["checkout_id"].as_str().unwrap_or("")
                    );
                }
            });
        }
        Cmd::Secret(SecretCmd::List { prefix }) => {
            let mut all = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let mut q = format!("/v1/secrets?limit=1000&prefix={}", enc(&prefix));
                if let Some(a) = &after {
                    q.push_str(&format!("&after={}", enc(a)));
                }
                let v = server!(call(c, Method::GET, &q, None).await?);
                all.extend(v["secrets"].as_array().cloned().unwrap_or_default());
                match v["next_after"].as_str() {
                    Some(n) => after = Some(n.to_owned()),
                    None => break,
                }
            }
            let v = json!({"secrets": all});
            out(j, &v, |v| {
                for s in v["secrets"].as_array().into_iter().flatten() {
                    println!(
                        "{}  v{}{}",
                        s["path"].as_str().unwrap_or(""),
                        s["current_version"],
                        if s["exclusive"].as_bool() == Some(true) {
                            "  (exclusive)"
                        } else {
                            ""
                        }
                    );
                }
            });
        }
        Cmd::Checkout { path, reason, ttl } => {
            let mut body = json!({"reason": reason});
            if let Some(t) = ttl {
                body["ttl_seconds"] = json!(t);
            }
            let v = server!(
                call(
                    c,
                    Method::POST,
                    &format!("/v1/secrets/{}/checkout", enc(&path)),
                    Some(body)
                )
                .await?
            );
            out(j, &v, |v| {
                if v["status"] == "pending_approval" {
                    eprintln!(
                        "approval needed: request {} (needs {}); collect with `vaultctl collect {}` once approved",
                        v["request_id"].as_str().unwrap_or(""),
                        v["needs"],
                        v["request_id"].as_str().unwrap_or("")
                    );
                    return;
                }
                print_checkout(v);
            });
            if v["status"] == "pending_approval" {
                // Nothing was checked out: exit status 1, like a refusal.
                return Ok(Err(ServerError(
                    0,
                    String::new(),
                    "no value: the checkout awaits approval".into(),
                )));
            }
        }
        Cmd::Custodian(custodian::CustodianCmd::Enroll {
            name,
            groups,
            reuse,
            serial,
            pin_policy,
            touch_policy,
            mgm_key_file,
        }) => {
            let body = custodian::enroll_body(
                &name,
                &groups,
                reuse,
                serial,
                &pin_policy,
                &touch_policy,
                mgm_key_file.as_deref(),
            )?;
            let v = server!(call(c, Method::POST, "/v1/custodians", Some(body)).await?);
            out(j, &v, |v| {
                println!(
                    "enrolled {} (YubiKey {} firmware {}, PIN {}, touch {}) in {}",
                    v["name"].as_str().unwrap_or("?"),
                    v["serial"],
                    v["firmware"].as_str().unwrap_or("?"),
                    v["pin_policy"].as_str().unwrap_or("?"),
                    v["touch_policy"].as_str().unwrap_or("?"),
                    v["groups"]
                )
            });
        }
        Cmd::Custodian(custodian::CustodianCmd::List) => {
            let v = server!(call(c, Method::GET, "/v1/custodians", None).await?);
            out(j, &v, |v| {
                for c in v["custodians"].as_array().into_iter().flatten() {
                    println!(
                        "{:<16} {:<24} YubiKey {} fw {} PIN {} touch {}",
                        c["name"].as_str().unwrap_or("?"),
                        c["groups"].to_string(),
                        c["serial"],
                        c["firmware"].as_str().unwrap_or("?"),
                        c["pin_policy"].as_str().unwrap_or("?"),
                        c["touch_policy"].as_str().unwrap_or("?"),
                    );
                }
            });
        }
        Cmd::Policy { path, approvals } => {
            let body = json!({"approvals": custodian::parse_approvals(&approvals)?});
            let v = server!(
                call(
                    c,
                    Method::PUT,
                    &format!("/v1/policies/{}", enc(&path)),
                    Some(body)
                )
                .await?
            );
            out(j, &v, |v| {
                println!("{}: approvals {}", path, v["approvals"])
            });
        }
        Cmd::Requests(custodian::RequestsCmd::List { status }) => {
            let v = server!(
                call(
                    c,
                    Method::GET,
                    &format!("/v1/requests?status={}", enc(&status)),
                    None
                )
                .await?
            );
            out(j, &v, |v| {
                for r in v["requests"].as_array().into_iter().flatten() {
                    println!(
                        "{} {:<10} {:<17} {} v{} by {}: {}",
                        r["request_id"].as_str().unwrap_or("?"),
                        r["kind"].as_str().unwrap_or("?"),
                        r["status"].as_str().unwrap_or("?"),
                        r["path"].as_str().unwrap_or("?"),
                        r["version"],
                        r["requester"].as_str().unwrap_or("?"),
                        r["reason"].as_str().unwrap_or("?"),
                    );
                }
            });
        }
        Cmd::Requests(custodian::RequestsCmd::Show { id }) => {
            let v =
                server!(call(c, Method::GET, &format!("/v1/requests/{}", enc(&id)), None).await?);
            out(j, &v, |v| print!("{}", custodian::describe(v)));
        }
        Cmd::Approve {
            id,
            deny,
            as_name,
            serial,
            pin_file,
        } => {
            let me = match as_name {
                Some(n) => n,
                None => cert_common_name(c)?,
            };
            let v =
                server!(call(c, Method::GET, &format!("/v1/requests/{}", enc(&id)), None).await?);
            eprint!("{}", custodian::describe(&v));
            let decision = if deny {
                vault_core::custodian::approval::Decision::Deny
            } else {
                vault_core::custodian::approval::Decision::Approve
            };
            eprintln!(
                "{} this request as {me}",
                if deny { "DENY" } else { "APPROVE" }
            );
            let mut t = custodian::open_token(serial)?;
            let pin = custodian::read_pin(pin_file.as_deref())?;
            let body = custodian::vote_body(&v, &me, decision, &mut t, &pin)?;
            let r = server!(
                call(
                    c,
                    Method::POST,
                    &format!("/v1/requests/{}/vote", enc(&id)),
                    Some(body)
                )
                .await?
            );
            out(j, &r, |r| {
                println!(
                    "{} recorded; request is {}",
                    r["decision"].as_str().unwrap_or("?"),
                    r["status"].as_str().unwrap_or("?")
                )
            });
        }
        Cmd::Collect { id } => {
            let v = server!(
                call(
                    c,
                    Method::POST,
                    &format!("/v1/requests/{}/collect", enc(&id)),
                    None
                )
                .await?
            );
            out(j, &v, print_checkout);
        }
        Cmd::Recover(recover::RecoverCmd::Share {
            request,
            as_name,
            serial,
            pin_file,
            out: file,
        }) => {
            let (req, bundle) = recover::read_request(&request)?;
            eprint!("{}", recover::describe(&req, &bundle));
            let mut t = custodian::open_token(serial)?;
            let pin = custodian::read_pin(pin_file.as_deref())?;
            let answer = recover::share(&req, &bundle, &as_name, &mut t, &pin)?;
            write_public(&file, &serde_json::to_string_pretty(&answer)?)?;
            out(j, &answer, |_| {
                println!(
                    "answer written to {}: give it to the operator",
                    file.display()
                )
            });
        }
        Cmd::Breakglass(custodian::BreakglassCmd::Request {
            path,
            reason,
            key_out,
        }) => {
            if key_out.exists() {
                bail!(
                    "{} exists: refusing to overwrite a one-time key",
                    key_out.display()
                );
            }
            let (pem, public) = custodian::one_time_key()?;
            write_private(&key_out, &pem)?;
            let body = json!({"reason": reason, "recipient_key": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &public)});
            let v = match call(
                c,
                Method::POST,
                &format!("/v1/secrets/{}/breakglass", enc(&path)),
                Some(body),
            )
            .await?
            {
                Ok(v) => v,
                Err(e) => {
                    let _ = std::fs::remove_file(&key_out);
                    return Ok(Err(e));
                }
            };
            out(j, &v, |v| {
                println!(
                    "break-glass request {} for {} v{} (needs {}); one-time key in {} (SHA-256 of its public key {}: tell the custodians)",
                    v["request_id"].as_str().unwrap_or("?"),
                    path,
                    v["version"],
                    v["needs"],
                    key_out.display(),
                    custodian::key_fingerprint(&public),
                )
            });
        }
        Cmd::Breakglass(custodian::BreakglassCmd::Open {
            id,
            one_time_key: key,
            out: out_file,
        }) => {
            if !key.exists() {
                bail!("{}: no such one-time key", key.display());
            }
            let v = server!(
                call(
                    c,
                    Method::POST,
                    &format!("/v1/requests/{}/collect", enc(&id)),
                    None
                )
                .await?
            );
            let value = custodian::open_collected(&v, &key)?;
            let text = std::str::from_utf8(value.expose_secret())
                .map_err(|_| anyhow!("the value is not UTF-8"))?;
            match out_file {
                Some(p) => {
                    write_private(&p, text)?;
                    eprintln!("value written to {}", p.display());
                }
                None => println!("{text}"),
            }
            // The one-time key has done its job.
            let _ = std::fs::remove_file(&key);
        }
        Cmd::Checkin { checkout_id } => {
            let v = server!(
                call(
                    c,
                    Method::POST,
                    &format!("/v1/checkouts/{}/checkin", enc(&checkout_id)),
                    None
                )
                .await?
            );
            out(j, &v, |v| {
                println!(
                    "checked in {} ({})",
                    checkout_id,
                    v["path"].as_str().unwrap_or("")
                )
            });
        }
        Cmd::Audit(AuditCmd::Verify {
            dir,
            key,
            previous_keys,
            trusted_checkpoint,
        }) => {
            let mut keys = vec![key];
            keys.extend(previous_keys);
            if !audit::verify_dir(&dir, &keys, trusted_checkpoint.as_ref(), j)? {
                return Ok(Err(ServerError(
                    0,
                    "verification_failed".into(),
                    "the audit log did not verify".into(),
                )));
            }
        }
        Cmd::Audit(AuditCmd::Export { out: dir }) => audit::export(&c.client()?, &dir, j).await?,
        Cmd::Audit(AuditCmd::Tail { n }) => audit::tail(&c.client()?, n, j).await?,
        Cmd::Audit(AuditCmd::Show { index, audit_key }) => {
            audit::show(&c.client()?, index, audit_key.as_deref(), j).await?
        }
        Cmd::Audit(AuditCmd::Hash { value_file }) => {
            let trimmed = read_value(value_file.as_deref())?;
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
        }
        Cmd::Audit(AuditCmd::PublicKey) => {
            let v = server!(call(c, Method::GET, "/v1/audit/public-key", None).await?);
            out(j, &v, |v| {
                print!("{}", v["public_key_pem"].as_str().unwrap_or(""))
            });
        }
        Cmd::Keyring(KeyringCmd::Rotate) => {
            let v = server!(call(c, Method::POST, "/v1/sys/keyring/rotate", None).await?);
            out(j, &v, |v| {
                println!(
                    "keyring version {} is active; data keys are being rewrapped",
                    v["active_version"]
                )
            });
        }
        Cmd::Keyring(KeyringCmd::Status) => {
            let v = server!(call(c, Method::GET, "/v1/sys/keyring", None).await?);
            out(j, &v, |v| {
                println!("active version : {}", v["active_version"]);
                println!("pending rewrap : {}", v["pending_rewrap"]);
                for k in v["versions"].as_array().into_iter().flatten() {
                    println!(
                        "  v{}: {} secret versions",
                        k["version"], k["secret_versions"]
                    );
                }
            });
        }
    }
    Ok(Ok(()))
}
