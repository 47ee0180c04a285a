//! `vaultctl checkout` and `vaultctl checkin` (pam).

use clap::Args;
use hyper::Method;
use serde_json::json;

use crate::cli::ConnArgs;
use crate::util::{call, enc, out, print_checkout, server, Outcome, ServerError};

#[derive(Args)]
pub struct CheckoutArgs {
    path: String,
    #[arg(long)]
    reason: String,
    /// Lease length in seconds (server default if omitted).
    #[arg(long)]
    ttl: Option<u64>,
    /// A named older version (audited as such; the current one if omitted).
    #[arg(long)]
    version: Option<u64>,
}

/// `checkout PATH --reason R`: the value alone on stdout; a checkout that
/// awaits approval prints the request to collect and exits 1.
pub async fn checkout(c: &ConnArgs, j: bool, a: CheckoutArgs) -> Outcome {
    let mut body = json!({"reason": a.reason});
    if let Some(t) = a.ttl {
        body["ttl_seconds"] = json!(t);
    }
    if let Some(v) = a.version {
        body["version"] = json!(v);
    }
    let v = server!(
        call(
            c,
            Method::POST,
            &format!("/v1/secrets/{}/checkout", enc(&a.path)),
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
            "pending_approval".into(),
            "no value: the checkout awaits approval".into(),
        )));
    }
    Ok(Ok(()))
}

/// `checkin CHECKOUT_ID`
pub async fn checkin(c: &ConnArgs, j: bool, checkout_id: &str) -> Outcome {
    let v = server!(
        call(
            c,
            Method::POST,
            &format!("/v1/checkouts/{}/checkin", enc(checkout_id)),
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
    Ok(Ok(()))
}
