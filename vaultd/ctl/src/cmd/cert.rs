//! `vaultctl cert`: client certificates (admin).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::{json, Value};

use crate::cli::ConnArgs;
use crate::util::{call, enc, key_and_csr, out, server, write_private, write_public, Outcome};

#[derive(Subcommand)]
pub enum CertCmd {
    /// Issue a client certificate. Generates the key locally unless --csr is given.
    Issue(IssueArgs),
    /// List principals.
    List,
    /// Revoke one certificate (by SHA-256 fingerprint) or every certificate of a name.
    Revoke(RevokeArgs),
    /// Renew your own certificate (--cert/--key) before it expires: same name and role, a new key.
    ///
    /// Without --out-dir, the new key and certificate replace the files given by --key and
    /// --cert. The old certificate keeps working until the new one is first used; then the
    /// appliance revokes it. Open during the certificate's renewal window (its last
    /// limits.cert_renew_days days, at most its second half).
    Renew(RenewArgs),
    /// Show the appliance's server certificate, or reissue it (admin).
    Server(ServerArgs),
}

#[derive(Args)]
pub struct RenewArgs {
    /// Sign this CSR (PEM) instead of generating a key here; the certificate goes to --out-dir.
    #[arg(long)]
    csr: Option<PathBuf>,
    /// Write NAME.pem (and NAME-key.pem) here instead of replacing --cert and --key.
    #[arg(long)]
    out_dir: Option<PathBuf>,
}

#[derive(Args)]
pub struct ServerArgs {
    /// Reissue it now with a new key (otherwise it is reissued by itself when
    /// fewer than tls.server_cert_renew_days are left).
    #[arg(long)]
    reissue: bool,
    /// With --reissue: the DNS names and IP addresses it is for, instead of
    /// the ones it has (repeat; loopback names are always added).
    #[arg(long = "name", requires = "reissue")]
    names: Vec<String>,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct RevokeArgs {
    /// The certificate's SHA-256 fingerprint (only that certificate).
    fingerprint: Option<String>,
    /// Every certificate of this principal name.
    #[arg(long)]
    name: Option<String>,
}

#[derive(Args)]
pub struct IssueArgs {
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
    /// A pam certificate's access grant (repeatable): `*`, a path, or a
    /// prefix ending with `/`. Without one a new pam name reaches nothing.
    #[arg(long = "grant")]
    grants: Vec<String>,
}

/// `cert issue`: NAME.pem, ca.pem and (unless `--csr`) NAME-key.pem in
/// `--out-dir`.
pub async fn issue(c: &ConnArgs, j: bool, a: IssueArgs) -> Outcome {
    let (csr_pem, key_pem) = match &a.csr {
        Some(p) => (
            std::fs::read_to_string(p).with_context(|| p.display().to_string())?,
            None,
        ),
        None => {
            let (key, csr) = key_and_csr(&a.name)?;
            (csr, Some(key))
        }
    };
    let mut body = json!({"name": a.name, "role": a.role, "csr_pem": csr_pem});
    if let Some(d) = a.days {
        body["validity_days"] = json!(d);
    }
    if !a.grants.is_empty() {
        body["grants"] = json!(a.grants);
    }
    let v = server!(call(c, Method::POST, "/v1/sys/certs", Some(body)).await?);
    let out_dir = &a.out_dir;
    std::fs::create_dir_all(out_dir).with_context(|| out_dir.display().to_string())?;
    if v.get("request_id").is_some() {
        // A pam or admin certificate after genesis: a governance
        // change. The key stays here; `governance apply` writes the
        // certificate next to it once the custodians approve.
        let key_path = out_dir.join(format!("{}-key.pem", a.name));
        if let Some(k) = &key_pem {
            write_private(&key_path, k)?;
        }
        out(j, &v, |v| {
            crate::cmd::governance::print_proposal(v);
            if key_pem.is_some() {
                println!("  key         : {}", key_path.display());
            }
            println!(
                "  after approval: vaultctl governance apply {} --out-dir {}",
                v["request_id"].as_str().unwrap_or("?"),
                out_dir.display()
            );
        });
        return Ok(Ok(()));
    }
    let cert_path = out_dir.join(format!("{}.pem", a.name));
    write_public(
        &cert_path,
        v["certificate_pem"].as_str().unwrap_or_default(),
    )?;
    write_public(
        &out_dir.join("ca.pem"),
        v["ca_pem"].as_str().unwrap_or_default(),
    )?;
    let key_path = out_dir.join(format!("{}-key.pem", a.name));
    if let Some(k) = &key_pem {
        write_private(&key_path, k)?;
    }
    let mut report = json!({
        "name": v["name"], "role": v["role"], "fingerprint": v["fingerprint"],
        "not_after": v["not_after"], "certificate": cert_path,
    });
    let key_path = key_pem.is_some().then_some(key_path);
    if let Some(k) = &key_path {
        report["key"] = json!(k);
    }
    out(j, &report, |r| {
        print_issued(r, &cert_path, key_path.as_deref())
    });
    Ok(Ok(()))
}

pub fn print_issued(r: &Value, cert_path: &Path, key_path: Option<&Path>) {
    println!(
        "issued {} certificate for {}",
        r["role"].as_str().unwrap_or("?"),
        r["name"].as_str().unwrap_or("?")
    );
    println!("  certificate : {}", cert_path.display());
    if let Some(k) = key_path {
        println!("  key         : {}", k.display());
    }
    println!(
        "  sha256      : {}",
        r["fingerprint"].as_str().unwrap_or("?")
    );
    println!("  expires     : {}", r["not_after"].as_str().unwrap_or("?"));
}

/// `cert list`: every principal, revoked ones marked.
pub async fn list(c: &ConnArgs, j: bool) -> Outcome {
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
    Ok(Ok(()))
}

/// `cert revoke FINGERPRINT` or `cert revoke --name NAME`
pub async fn revoke(c: &ConnArgs, j: bool, a: &RevokeArgs) -> Outcome {
    match &a.fingerprint {
        Some(fingerprint) => {
            let path = format!("/v1/sys/principals/{}/revoke", enc(fingerprint));
            let v = server!(call(c, Method::POST, &path, None).await?);
            out(j, &v, |_| println!("revoked {fingerprint}"));
        }
        // clap requires FINGERPRINT or --name; an empty name is refused by
        // the server (invalid_name).
        None => {
            let name = a.name.as_deref().unwrap_or_default();
            let body = json!({ "name": name });
            let v = server!(call(c, Method::POST, "/v1/sys/principals/revoke", Some(body)).await?);
            out(j, &v, |v| {
                for fp in v["revoked"].as_array().into_iter().flatten() {
                    println!("revoked {} ({name})", fp.as_str().unwrap_or_default());
                }
            });
        }
    }
    Ok(Ok(()))
}

/// `cert renew`: a new key and certificate for the caller's own identity.
pub async fn renew(c: &ConnArgs, j: bool, a: RenewArgs) -> Outcome {
    let name = crate::util::cert_common_name(c)?;
    let (csr_pem, key_pem) = match &a.csr {
        Some(p) => (
            std::fs::read_to_string(p).with_context(|| p.display().to_string())?,
            None,
        ),
        None => {
            let (key, csr) = key_and_csr(&name)?;
            (csr, Some(key))
        }
    };
    if a.csr.is_some() && a.out_dir.is_none() {
        anyhow::bail!("--csr needs --out-dir (the key is not here to replace)");
    }
    let v = server!(
        call(
            c,
            Method::POST,
            "/v1/sys/certs/renew",
            Some(json!({ "csr_pem": csr_pem }))
        )
        .await?
    );
    let cert_pem = v["certificate_pem"].as_str().unwrap_or_default();
    let (cert_path, key_path) = match &a.out_dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| d.display().to_string())?;
            write_public(&d.join("ca.pem"), v["ca_pem"].as_str().unwrap_or_default())?;
            (
                d.join(format!("{name}.pem")),
                d.join(format!("{name}-key.pem")),
            )
        }
        None => (
            c.cert.clone().context("--cert is required")?,
            c.key.clone().context("--key is required")?,
        ),
    };
    // The key first: a certificate on disk always has its key beside it.
    // Until the new certificate is used, the old pair still works, and a
    // second renewal replaces this one.
    if let Some(k) = &key_pem {
        write_private(&key_path, k)?;
    }
    write_public(&cert_path, cert_pem)?;
    let mut report = json!({
        "name": v["name"], "role": v["role"], "fingerprint": v["fingerprint"],
        "not_after": v["not_after"], "renewed": v["renewed"], "certificate": cert_path,
    });
    let key_path = key_pem.is_some().then_some(key_path);
    if let Some(k) = &key_path {
        report["key"] = json!(k);
    }
    out(j, &report, |r| {
        print_issued(r, &cert_path, key_path.as_deref());
        println!(
            "  renews      : {} (revoked when the new certificate is first used)",
            r["renewed"].as_str().unwrap_or("?")
        );
    });
    Ok(Ok(()))
}

/// `cert server [--reissue [--name N]...]`
pub async fn server(c: &ConnArgs, j: bool, a: ServerArgs) -> Outcome {
    let v = if a.reissue {
        let body = if a.names.is_empty() {
            json!({})
        } else {
            json!({ "names": a.names })
        };
        server!(call(c, Method::POST, "/v1/sys/server-cert", Some(body)).await?)
    } else {
        server!(call(c, Method::GET, "/v1/sys/server-cert", None).await?)
    };
    out(j, &v, |v| {
        if a.reissue {
            println!("server certificate reissued");
        }
        println!(
            "  sha256      : {}",
            v["fingerprint"].as_str().unwrap_or("?")
        );
        println!("  expires     : {}", v["not_after"].as_str().unwrap_or("?"));
        println!(
            "  reissued by itself from: {}",
            v["reissue_from"].as_str().unwrap_or("?")
        );
        let names: Vec<&str> = v["names"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str())
            .collect();
        println!("  names       : {}", names.join(", "));
    });
    Ok(Ok(()))
}
