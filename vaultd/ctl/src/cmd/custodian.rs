//! `vaultctl custodian` and `vaultctl policy`: enrolment of custodians with
//! their YubiKeys, and the approvals a secret's checkouts need; and the
//! YubiKey and PIN helpers the custodian commands share.
//!
//! The signing and key agreement happen on the custodian's YubiKey
//! (slot 9c signs approvals, slot 9d opens shares); the tool shows the
//! request in full before asking for the PIN, and rebuilds the signed bytes
//! itself from what it showed, so the appliance cannot get a signature over
//! something the custodian did not see (`requests.rs`, `breakglass.rs`,
//! `recover.rs`).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::{json, Value};
use vault_core::custodian::token::{CustodianToken, Slot};
use vault_core::secret::Pin;
use vault_piv::{ManagementKey, PinPolicy, TouchPolicy, YubiKeyToken};

use crate::cli::ConnArgs;
use crate::util::{call, enc, out, server, Outcome};

#[derive(Subcommand)]
pub enum CustodianCmd {
    /// Enrol a custodian (admin): P-256 keys in PIV slots 9c and 9d of the
    /// attached YubiKey, attested, submitted to the appliance.
    Enroll(EnrollArgs),
    /// Enrolled custodians.
    List,
    /// Remove a custodian (admin): it no longer votes or counts, and its
    /// keys are never enrolled again. After genesis a governance change.
    Remove {
        name: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Replace a custodian's groups (admin). After genesis a governance change.
    Groups {
        name: String,
        /// Group (repeat for several).
        #[arg(long = "group", required = true)]
        groups: Vec<String>,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Args)]
pub struct EnrollArgs {
    #[arg(long)]
    name: String,
    /// Group (repeat for several).
    #[arg(long = "group", required = true)]
    groups: Vec<String>,
    /// Use the keys already in 9c and 9d instead of generating new ones.
    #[arg(long)]
    reuse: bool,
    /// The YubiKey's serial (needed when several are attached).
    #[arg(long)]
    serial: Option<u32>,
    /// PIN policy of new keys: once or always.
    #[arg(long, default_value = "always")]
    pin_policy: String,
    /// Touch policy of new keys: always, cached or never.
    #[arg(long, default_value = "always")]
    touch_policy: String,
    /// File with the PIV management key (hex, 3DES). The factory default
    /// key is used when absent.
    #[arg(long)]
    mgm_key_file: Option<PathBuf>,
    /// PEM file of further attestation intermediates, sent after the
    /// key's f9 certificate in file order (keys made on firmware 5.7.4+
    /// chain through newer Yubico intermediates). Repeatable; at most 3
    /// certificates in all.
    #[arg(long = "intermediate", value_name = "PEM")]
    intermediates: Vec<PathBuf>,
}

#[derive(Args)]
pub struct PolicyArgs {
    path: String,
    #[arg(long)]
    approvals: String,
}

/// `custodian enroll`: keys made (or reused) and attested on the YubiKey,
/// the attestations submitted.
pub async fn enroll(c: &ConnArgs, j: bool, a: EnrollArgs) -> Outcome {
    let body = enroll_body(&a)?;
    let v = server!(call(c, Method::POST, "/v1/custodians", Some(body)).await?);
    if v.get("request_id").is_some() {
        // After genesis an enrolment is a governance change.
        out(j, &v, crate::cmd::governance::print_proposal);
        return Ok(Ok(()));
    }
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
    Ok(Ok(()))
}

/// `custodian remove NAME [--reason R]`
pub async fn remove(c: &ConnArgs, j: bool, name: &str, reason: Option<&str>) -> Outcome {
    let mut path = format!("/v1/custodians/{}", enc(name));
    if let Some(r) = reason {
        path.push_str(&format!("?reason={}", enc(r)));
    }
    let v = server!(call(c, Method::DELETE, &path, None).await?);
    if v.get("request_id").is_some() {
        out(j, &v, crate::cmd::governance::print_proposal);
        return Ok(Ok(()));
    }
    out(j, &v, |v| {
        println!("removed custodian {}", v["removed"].as_str().unwrap_or("?"))
    });
    Ok(Ok(()))
}

/// `custodian groups NAME --group G…`
pub async fn groups(
    c: &ConnArgs,
    j: bool,
    name: &str,
    groups: &[String],
    reason: Option<&str>,
) -> Outcome {
    let mut body = json!({ "groups": groups });
    if let Some(r) = reason {
        body["reason"] = json!(r);
    }
    let path = format!("/v1/custodians/{}/groups", enc(name));
    let v = server!(call(c, Method::PUT, &path, Some(body)).await?);
    if v.get("request_id").is_some() {
        out(j, &v, crate::cmd::governance::print_proposal);
        return Ok(Ok(()));
    }
    out(j, &v, |v| {
        println!(
            "{}: groups {}",
            v["name"].as_str().unwrap_or("?"),
            v["groups"]
        )
    });
    Ok(Ok(()))
}

/// `custodian list`
pub async fn list(c: &ConnArgs, j: bool) -> Outcome {
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
    Ok(Ok(()))
}

/// `policy PATH --approvals group:k,…`
pub async fn policy(c: &ConnArgs, j: bool, a: PolicyArgs) -> Outcome {
    let body = json!({"approvals": parse_approvals(&a.approvals)?});
    let path = a.path;
    let v = server!(
        call(
            c,
            Method::PUT,
            &format!("/v1/policies/{}", enc(&path)),
            Some(body)
        )
        .await?
    );
    if v.get("request_id").is_some() {
        // A relaxation after genesis: a governance change.
        out(j, &v, crate::cmd::governance::print_proposal);
        return Ok(Ok(()));
    }
    out(j, &v, |v| {
        println!("{}: approvals {}", path, v["approvals"])
    });
    Ok(Ok(()))
}

fn token(serial: Option<u32>) -> anyhow::Result<YubiKeyToken> {
    YubiKeyToken::open(serial).map_err(|e| anyhow!("YubiKey: {e}"))
}

pub fn open_token(serial: Option<u32>) -> anyhow::Result<YubiKeyToken> {
    token(serial)
}

/// The PIN from a file, or asked on the terminal (never from argv).
pub fn read_pin(pin_file: Option<&Path>) -> anyhow::Result<Pin> {
    let pin = match pin_file {
        Some(p) => zeroize::Zeroizing::new(
            std::fs::read_to_string(p)
                .with_context(|| p.display().to_string())?
                .trim_end_matches(['\n', '\r'])
                .to_owned(),
        ),
        None => zeroize::Zeroizing::new(
            rpassword::prompt_password("YubiKey PIN: ").context("reading the PIN")?,
        ),
    };
    Ok(Pin::new((*pin).clone()))
}

fn policies(pin_policy: &str, touch_policy: &str) -> anyhow::Result<(PinPolicy, TouchPolicy)> {
    let pin_policy = match pin_policy {
        "once" => PinPolicy::Once,
        "always" => PinPolicy::Always,
        p => bail!("--pin-policy {p:?}: once or always"),
    };
    let touch_policy = match touch_policy {
        "always" => TouchPolicy::Always,
        "cached" => TouchPolicy::Cached,
        "never" => TouchPolicy::Never,
        t => bail!("--touch-policy {t:?}: always, cached or never"),
    };
    Ok((pin_policy, touch_policy))
}

/// New P-256 keys in slots 9c and 9d.
fn generate_keys(
    t: &mut YubiKeyToken,
    (pin_policy, touch_policy): (PinPolicy, TouchPolicy),
    mgm_key_file: Option<&Path>,
) -> anyhow::Result<()> {
    let mgm = match mgm_key_file {
        Some(p) => Some(
            ManagementKey::from_hex(
                std::fs::read_to_string(p)
                    .with_context(|| p.display().to_string())?
                    .trim(),
            )
            .map_err(|e| anyhow!("management key: {e}"))?,
        ),
        None => None,
    };
    eprintln!(
        "generating P-256 keys in slots 9c and 9d of YubiKey {} (touch it if it blinks)",
        t.serial()
    );
    for slot in [Slot::Signature, Slot::KeyManagement] {
        t.generate(slot, pin_policy, touch_policy, mgm.as_ref())
            .map_err(|e| anyhow!("generate {slot:?}: {e}"))?;
    }
    Ok(())
}

/// The certificates of `--intermediate` files, DER, in order.
fn extra_intermediates(files: &[PathBuf]) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for f in files {
        let data = std::fs::read(f).map_err(|e| anyhow!("read {}: {e}", f.display()))?;
        let mut n = 0;
        for pem in x509_parser::pem::Pem::iter_from_buffer(&data) {
            let pem = pem.map_err(|e| anyhow!("{}: not PEM: {e}", f.display()))?;
            if pem.label != "CERTIFICATE" {
                anyhow::bail!("{}: a {:?} block; only CERTIFICATE", f.display(), pem.label);
            }
            x509_parser::parse_x509_certificate(&pem.contents)
                .map_err(|e| anyhow!("{}: certificate {}: {e}", f.display(), n + 1))?;
            out.push(pem.contents);
            n += 1;
        }
        if n == 0 {
            anyhow::bail!("{}: no certificate in it", f.display());
        }
    }
    if out.len() > 3 {
        anyhow::bail!(
            "{} further intermediates: vaultd takes the f9 certificate and at most 3 more",
            out.len()
        );
    }
    Ok(out)
}

/// The enrolment request: the slots' attestations, the f9 intermediate and
/// any further ones.
fn enroll_body(a: &EnrollArgs) -> anyhow::Result<Value> {
    // Read before touching the YubiKey: a bad file must not cost new keys.
    let extra = extra_intermediates(&a.intermediates)?;
    let policies = policies(&a.pin_policy, &a.touch_policy)?;
    let mut t = token(a.serial)?;
    if !a.reuse {
        generate_keys(&mut t, policies, a.mgm_key_file.as_deref())?;
    }
    let sig = t
        .attest(Slot::Signature)
        .map_err(|e| anyhow!("attest 9c: {e}"))?;
    let kex = t
        .attest(Slot::KeyManagement)
        .map_err(|e| anyhow!("attest 9d: {e}"))?;
    let f9 = t
        .attestation_intermediate()
        .map_err(|e| anyhow!("read the f9 attestation certificate: {e}"))?;
    Ok(json!({
        "name": a.name,
        "groups": a.groups,
        "signature_attestation": B64.encode(sig),
        "key_management_attestation": B64.encode(kex),
        "intermediates": std::iter::once(&f9)
            .chain(extra.iter())
            .map(|c| B64.encode(c))
            .collect::<Vec<_>>(),
    }))
}

/// `group:k,group:k` → the approvals list.
pub fn parse_approvals(s: &str) -> anyhow::Result<Value> {
    if s.trim().is_empty() || s == "none" {
        return Ok(json!([]));
    }
    let mut out = Vec::new();
    for part in s.split(',') {
        let (g, k) = part
            .split_once(':')
            .ok_or_else(|| anyhow!("{part:?}: expected group:k"))?;
        let k: u64 = k.parse().map_err(|_| anyhow!("{part:?}: k is a number"))?;
        out.push(json!({"group": g, "k": k}));
    }
    Ok(Value::Array(out))
}

#[cfg(test)]
mod tests {
    use super::extra_intermediates;
    use std::io::Write;

    fn cert_pem(cn: &str) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.self_signed(&key).unwrap().pem()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn intermediates_are_read_in_file_order() {
        let (a, b, c) = (cert_pem("a"), cert_pem("b"), cert_pem("c"));
        let f1 = file(&format!("{a}{b}"));
        let f2 = file(&c);
        let got = extra_intermediates(&[f1.path().into(), f2.path().into()]).unwrap();
        let cn = |der: &[u8]| {
            let (_, x) = x509_parser::parse_x509_certificate(der).unwrap();
            x.subject().to_string()
        };
        let names: Vec<String> = got.iter().map(|d| cn(d)).collect();
        assert_eq!(names, ["CN=a", "CN=b", "CN=c"]);
    }

    #[test]
    fn bad_intermediate_files_are_refused() {
        let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let four = (0..4).map(|i| cert_pem(&i.to_string())).collect::<String>();
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        for (text, want) in [
            (key.as_str(), "only CERTIFICATE"),
            ("nothing here", "no certificate"),
            (four.as_str(), "at most 3 more"),
            (garbage, "certificate 1"),
        ] {
            let f = file(text);
            let e = extra_intermediates(&[f.path().into()])
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{want:?} not in {e:?}");
        }
        let e = extra_intermediates(&["/nonexistent/x.pem".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("read /nonexistent/x.pem"), "{e}");
    }
}
