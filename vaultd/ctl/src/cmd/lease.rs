//! `vaultctl lease list|renew|revoke|record`: the leases of checkouts, and
//! the session recordings made under them.

use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::{json, Value};

use crate::cli::ConnArgs;
use crate::util::{call, enc, out, server, Outcome};

#[derive(Subcommand)]
pub enum LeaseCmd {
    /// Open leases, newest first (--all: ended ones too).
    List(ListArgs),
    /// Extend your own lease (pam), up to the secret's maximum lease.
    Renew {
        checkout_id: String,
        /// New lease length from now, in seconds (server default if omitted).
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// End a lease now (admin); the reason is audited.
    #[command(visible_alias = "force-checkin")]
    Revoke {
        checkout_id: String,
        #[arg(long)]
        reason: String,
    },
    /// Register a session recording made with your checkout (pam): its
    /// SHA-256 and size go into the signed audit log, the file stays here.
    Record(RecordArgs),
}

#[derive(Args)]
pub struct RecordArgs {
    checkout_id: String,
    /// The recording file (hashed here; never sent).
    file: std::path::PathBuf,
    /// When the session began (RFC 3339, e.g. 2026-12-03T09:30:00Z).
    #[arg(long)]
    started: String,
    /// When it ended (RFC 3339).
    #[arg(long)]
    ended: String,
    /// A label of yours, e.g. the session id (letters, digits, . _ : / @ -).
    #[arg(long)]
    label: Option<String>,
}

#[derive(Args)]
pub struct ListArgs {
    /// Only secrets whose path starts with this.
    #[arg(long)]
    prefix: Option<String>,
    /// Only this principal's leases.
    #[arg(long)]
    principal: Option<String>,
    /// Ended leases too (checked in, revoked, expired).
    #[arg(long)]
    all: bool,
    /// At most this many (1..=1000).
    #[arg(long, default_value_t = 100)]
    limit: usize,
}

fn print_lease(l: &Value) {
    let s = |k: &str| l[k].as_str().unwrap_or("").to_owned();
    let mut line = format!(
        "{}  {:<10} {}  v{}  {}  expires {}",
        s("checkout_id"),
        s("state"),
        s("path"),
        l["version"],
        s("principal"),
        s("expires_at"),
    );
    if l["renewals"].as_u64().unwrap_or(0) > 0 {
        line.push_str(&format!("  renewed {}×", l["renewals"]));
    }
    if !l["revoked_by"].is_null() {
        line.push_str(&format!(
            "  revoked by {}: {}",
            s("revoked_by"),
            s("revoke_reason")
        ));
    }
    println!("{line}");
}

pub async fn list(c: &ConnArgs, j: bool, a: ListArgs) -> Outcome {
    let mut q = vec![format!("limit={}", a.limit)];
    if let Some(p) = &a.prefix {
        q.push(format!("path_prefix={}", enc(p)));
    }
    if let Some(p) = &a.principal {
        q.push(format!("principal={}", enc(p)));
    }
    if a.all {
        q.push("state=all".into());
    }
    let v = server!(
        call(
            c,
            Method::GET,
            &format!("/v1/checkouts?{}", q.join("&")),
            None
        )
        .await?
    );
    out(j, &v, |v| {
        let rows = v["checkouts"].as_array().cloned().unwrap_or_default();
        if rows.is_empty() {
            println!("no leases");
        }
        rows.iter().for_each(print_lease);
        if !v["next_before"].is_null() {
            println!("(more: raise --limit)");
        }
    });
    Ok(Ok(()))
}

pub async fn renew(c: &ConnArgs, j: bool, checkout_id: &str, ttl: Option<u64>) -> Outcome {
    let body = match ttl {
        Some(t) => json!({"ttl_seconds": t}),
        None => json!({}),
    };
    let v = server!(
        call(
            c,
            Method::POST,
            &format!("/v1/checkouts/{}/renew", enc(checkout_id)),
            Some(body)
        )
        .await?
    );
    out(j, &v, |v| {
        println!(
            "renewed {}: expires {}",
            checkout_id,
            v["expires_at"].as_str().unwrap_or("")
        )
    });
    Ok(Ok(()))
}

pub async fn revoke(c: &ConnArgs, j: bool, checkout_id: &str, reason: &str) -> Outcome {
    let v = server!(
        call(
            c,
            Method::POST,
            &format!("/v1/checkouts/{}/revoke", enc(checkout_id)),
            Some(json!({"reason": reason}))
        )
        .await?
    );
    out(j, &v, |v| {
        println!(
            "revoked {} ({} of {})",
            checkout_id,
            v["path"].as_str().unwrap_or(""),
            v["principal"].as_str().unwrap_or("")
        )
    });
    Ok(Ok(()))
}

pub async fn record(c: &ConnArgs, j: bool, a: RecordArgs) -> Outcome {
    let (sha, size) = crate::cmd::audit::file_digest(&a.file)?;
    let mut body = json!({
        "sha256": sha, "size": size, "started_at": a.started, "ended_at": a.ended,
    });
    if let Some(l) = &a.label {
        body["label"] = json!(l);
    }
    let v = server!(
        call(
            c,
            Method::POST,
            &format!("/v1/checkouts/{}/recordings", enc(&a.checkout_id)),
            Some(body)
        )
        .await?
    );
    out(j, &v, |v| {
        println!(
            "registered {} ({} bytes, sha256 {}) with checkout {} of {}",
            a.file.display(),
            v["size"],
            v["sha256"].as_str().unwrap_or(""),
            a.checkout_id,
            v["path"].as_str().unwrap_or(""),
        )
    });
    Ok(Ok(()))
}
