//! `vaultctl doctor`: what is wrong with this machine's connection to the
//! appliance, in plain words. Each check says `ok`, `warn` or `FAIL`; the
//! command fails (exit 1) if any check fails.
//!
//! Checks, in order: the CA file, the client certificate and key (parse,
//! issued by that CA, validity, role), the address (TCP and TLS), that the
//! appliance knows the certificate (an authenticated read its role may
//! make), the seal status, and the clock skew against the appliance.

use std::path::Path;

use anyhow::anyhow;
use hyper::Method;
use serde_json::{json, Value};

use crate::cli::ConnArgs;
use crate::util::{decode, out, Outcome, ServerError};

/// Certificates expiring sooner than this are a warning.
const WARN_DAYS: i64 = 14;
/// More clock skew than this is a failure: certificates, leases and
/// approvals all depend on the clock.
const MAX_SKEW_SECS: i64 = 60;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Ok,
    Warn,
    Fail,
}

struct Check {
    name: &'static str,
    level: Level,
    message: String,
}

#[derive(Default)]
struct Report {
    checks: Vec<Check>,
}

impl Report {
    fn add(&mut self, name: &'static str, level: Level, message: impl Into<String>) -> Level {
        self.checks.push(Check {
            name,
            level,
            message: message.into(),
        });
        level
    }

    fn failed(&self) -> usize {
        self.checks
            .iter()
            .filter(|c| c.level == Level::Fail)
            .count()
    }

    fn json(&self) -> Value {
        json!({
            "checks": self.checks.iter().map(|c| json!({
                "check": c.name,
                "status": match c.level { Level::Ok => "ok", Level::Warn => "warn", Level::Fail => "fail" },
                "message": c.message,
            })).collect::<Vec<_>>(),
            "failed": self.failed(),
        })
    }
}

/// What doctor needs of a certificate.
struct CertInfo {
    subject: String,
    issuer: String,
    cn: Option<String>,
    ou: Option<String>,
    not_after: i64,
    not_before: i64,
}

fn read_cert(p: &Path) -> anyhow::Result<CertInfo> {
    let pem = std::fs::read(p).map_err(|e| anyhow!("cannot read {}: {e}", p.display()))?;
    let (_, block) = x509_parser::pem::parse_x509_pem(&pem)
        .map_err(|_| anyhow!("{} is not a PEM certificate", p.display()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&block.contents)
        .map_err(|e| anyhow!("{} does not parse as a certificate: {e}", p.display()))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(String::from);
    let ou = cert
        .subject()
        .iter_organizational_unit()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(String::from);
    let info = CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        cn,
        ou,
        not_after: cert.validity().not_after.timestamp(),
        not_before: cert.validity().not_before.timestamp(),
    };
    Ok(info)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Validity of a certificate, as a check.
fn validity(r: &mut Report, name: &'static str, what: &str, c: &CertInfo) -> Level {
    let t = now();
    let days = (c.not_after - t).div_euclid(86_400);
    if t < c.not_before {
        r.add(
            name,
            Level::Fail,
            format!("{what} is not valid yet (this machine's clock may be behind)"),
        )
    } else if t >= c.not_after {
        r.add(
            name,
            Level::Fail,
            format!("{what} has expired: ask an admin for a new one"),
        )
    } else if days < WARN_DAYS {
        r.add(
            name,
            Level::Warn,
            format!("{what} expires in {days} days: renew it soon"),
        )
    } else {
        r.add(
            name,
            Level::Ok,
            format!("{what} is valid for {days} more days"),
        )
    }
}

/// An authenticated read the role may make (`None`: nothing to try).
fn probe(role: &str) -> Option<&'static str> {
    match role {
        "admin" => Some("/v1/sys/principals"),
        "writer" | "pam" | "auditor" | "custodian" => Some("/v1/secrets?prefix=doctor&limit=1"),
        "metrics" => Some("/metrics"),
        _ => None,
    }
}

/// `doctor`
pub async fn doctor(c: &ConnArgs, j: bool) -> Outcome {
    let mut r = Report::default();
    check(c, &mut r).await;
    let failed = r.failed();
    out(j, &r.json(), |_| {
        for ch in &r.checks {
            let tag = match ch.level {
                Level::Ok => "ok  ",
                Level::Warn => "warn",
                Level::Fail => "FAIL",
            };
            println!("{tag} {:<12} {}", ch.name, ch.message);
        }
    });
    if failed > 0 {
        return Ok(Err(ServerError(
            0,
            "doctor_failed".into(),
            format!("{failed} check(s) failed"),
        )));
    }
    Ok(Ok(()))
}

async fn check(c: &ConnArgs, r: &mut Report) {
    // The CA.
    let ca = match &c.cacert {
        None => {
            r.add(
                "ca",
                Level::Fail,
                "no CA given: set --cacert or VAULT_CACERT to the appliance's ca.pem",
            );
            return;
        }
        Some(p) => match read_cert(p) {
            Ok(ca) => {
                r.add("ca", Level::Ok, format!("{} ({})", p.display(), ca.subject));
                validity(r, "ca-validity", "the CA certificate", &ca);
                Some(ca)
            }
            Err(e) => {
                r.add("ca", Level::Fail, e.to_string());
                return;
            }
        },
    };
    // The client certificate.
    let mut role = None;
    match (&c.cert, &c.key) {
        (None, None) => {
            r.add(
                "certificate",
                Level::Warn,
                "no client certificate (--cert/--key, VAULT_CERT/VAULT_KEY): only health and seal status can be checked",
            );
        }
        (Some(_), None) | (None, Some(_)) => {
            r.add("certificate", Level::Fail, "--cert and --key go together");
            return;
        }
        (Some(cp), Some(kp)) => match read_cert(cp) {
            Err(e) => {
                r.add("certificate", Level::Fail, e.to_string());
                return;
            }
            Ok(cert) => {
                let issued_by_ca = ca.as_ref().is_some_and(|ca| ca.subject == cert.issuer);
                if !issued_by_ca {
                    r.add(
                        "certificate",
                        Level::Fail,
                        format!(
                            "{} was issued by {:?}, not by the CA in --cacert: the appliance will refuse it",
                            cp.display(),
                            cert.issuer
                        ),
                    );
                } else {
                    r.add(
                        "certificate",
                        Level::Ok,
                        format!(
                            "{} for {} (role {})",
                            cp.display(),
                            cert.cn.as_deref().unwrap_or("?"),
                            cert.ou.as_deref().unwrap_or("?")
                        ),
                    );
                }
                validity(r, "validity", "your certificate", &cert);
                if std::fs::metadata(kp).is_err() {
                    r.add(
                        "key",
                        Level::Fail,
                        format!("cannot read the key {}", kp.display()),
                    );
                    return;
                }
                role = cert.ou;
            }
        },
    }
    // The address: TCP, TLS, and the appliance's answer.
    let client = match c.client() {
        Ok(cl) => cl,
        Err(e) => {
            r.add("connect", Level::Fail, format!("{e:#}"));
            return;
        }
    };
    let health = match client.request(Method::GET, "/v1/sys/health", None).await {
        Ok(resp) => resp,
        Err(e) => {
            let why = match &e {
                vault_client::ClientError::Connect(..) => format!(
                    "nothing answers at {}: check the address, the port and any firewall",
                    c.addr
                ),
                vault_client::ClientError::Handshake(..) => format!(
                    "the TLS handshake with {} failed: the server certificate is not from the CA in --cacert, does not name this host, or the appliance refused your certificate (revoked, expired or from another CA): {e}",
                    c.addr
                ),
                _ => format!("{e}"),
            };
            r.add("connect", Level::Fail, why);
            return;
        }
    };
    r.add(
        "connect",
        Level::Ok,
        format!("{} answers over mutual TLS", c.addr),
    );
    let h = health.json().unwrap_or(Value::Null);
    // Who the appliance says we are.
    if let Some(role) = role.as_deref() {
        if let Some(path) = probe(role) {
            match client.request(Method::GET, path, None).await {
                Ok(resp) => match decode(&resp) {
                    Ok(Ok(_)) => {
                        r.add(
                            "principal",
                            Level::Ok,
                            format!("the appliance knows this certificate (role {role})"),
                        );
                    }
                    Ok(Err(ServerError(_, code, msg))) if code == "sealed" => {
                        r.add(
                            "principal",
                            Level::Warn,
                            format!("not checked while sealed: {msg}"),
                        );
                    }
                    Ok(Err(ServerError(status, code, msg))) => {
                        let hint = match code.as_str() {
                            "unknown_principal" => "this certificate is not registered on this appliance (another appliance's, or from before a recovery)",
                            "revoked_certificate" => "this certificate was revoked: ask an admin for a new one",
                            "certificate_expired" => "this certificate has expired",
                            _ => "",
                        };
                        r.add(
                            "principal",
                            Level::Fail,
                            format!("{status} {code}: {msg} {hint}").trim().to_owned(),
                        );
                    }
                    Err(_) => {
                        r.add(
                            "principal",
                            Level::Fail,
                            "the appliance's answer is not JSON",
                        );
                    }
                },
                Err(e) => {
                    r.add("principal", Level::Fail, e.to_string());
                }
            }
        }
    }
    // Seal status.
    match h["sealed"].as_bool() {
        Some(false) => {
            r.add("seal", Level::Ok, "unsealed");
        }
        Some(true) => {
            let why = match client
                .request(Method::GET, "/v1/sys/seal-status", None)
                .await
            {
                Ok(resp) => resp.json().ok().and_then(|s| {
                    Some(format!(
                        "{}: {}",
                        s["reason"]["code"].as_str()?,
                        s["reason"]["message"].as_str()?
                    ))
                }),
                Err(_) => None,
            };
            r.add(
                "seal",
                Level::Fail,
                format!(
                    "the appliance is sealed ({}): an admin can retry with `vaultctl unseal`",
                    why.unwrap_or_else(|| "no reason given".into())
                ),
            );
        }
        None => {
            r.add("seal", Level::Fail, "the health answer has no seal state");
        }
    }
    // The clock.
    match h["time"].as_i64() {
        Some(t) => {
            let skew = now() - t;
            if skew.abs() > MAX_SKEW_SECS {
                r.add(
                    "clock",
                    Level::Fail,
                    format!(
                        "this machine's clock is {} s {} the appliance's: fix time sync (certificates, leases and approvals depend on it)",
                        skew.abs(),
                        if skew > 0 { "ahead of" } else { "behind" }
                    ),
                );
            } else {
                r.add("clock", Level::Ok, format!("{skew:+} s from the appliance"));
            }
        }
        None => {
            r.add(
                "clock",
                Level::Warn,
                "the appliance does not report its time",
            );
        }
    }
}
