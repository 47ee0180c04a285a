//! `vaultctl requests`, `vaultctl approve` and `vaultctl collect`: approval
//! and break-glass requests, a custodian's signed vote on one, and the
//! value of an approved checkout.

use std::path::PathBuf;

use anyhow::{anyhow, Context as _};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use clap::{Args, Subcommand};
use hyper::Method;
use p256::PublicKey;
use serde_json::{json, Value};
use vault_core::custodian::approval::{Decision, Request};
use vault_core::custodian::ecies::key_fingerprint;
use vault_core::custodian::governance;
use vault_core::custodian::sealed;
use vault_core::custodian::token::{CustodianToken, Slot};
use vault_core::secret::Pin;

use crate::cli::ConnArgs;
use crate::cmd::custodian::{open_token, read_pin};
use crate::util::{call, cert_common_name, enc, out, print_checkout, server, Outcome};

#[derive(Subcommand)]
pub enum RequestsCmd {
    /// Approval and break-glass requests.
    List {
        /// pending, approved, denied or all.
        #[arg(long, default_value = "pending")]
        status: String,
    },
    /// One request in full.
    Show { id: String },
}

#[derive(Args)]
pub struct ApproveArgs {
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
}

/// `requests list [--status S]`
pub async fn list(c: &ConnArgs, j: bool, status: &str) -> Outcome {
    let v = server!(
        call(
            c,
            Method::GET,
            &format!("/v1/requests?status={}", enc(status)),
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
    Ok(Ok(()))
}

/// `requests show ID`
pub async fn show(c: &ConnArgs, j: bool, id: &str) -> Outcome {
    let v = server!(call(c, Method::GET, &format!("/v1/requests/{}", enc(id)), None).await?);
    out(j, &v, |v| print!("{}", describe(v)));
    Ok(Ok(()))
}

/// `approve ID [--deny]`: the request shown in full on stderr, then signed
/// on the YubiKey.
pub async fn approve(c: &ConnArgs, j: bool, a: ApproveArgs) -> Outcome {
    let me = match a.as_name {
        Some(n) => n,
        None => cert_common_name(c)?,
    };
    let id = &a.id;
    let v = server!(call(c, Method::GET, &format!("/v1/requests/{}", enc(id)), None).await?);
    eprint!("{}", describe(&v));
    let decision = if a.deny {
        Decision::Deny
    } else {
        Decision::Approve
    };
    eprintln!(
        "{} this request as {me}",
        if a.deny { "DENY" } else { "APPROVE" }
    );
    let mut t = open_token(a.serial)?;
    let pin = read_pin(a.pin_file.as_deref())?;
    let body = vote_body(&v, &me, decision, &mut t, &pin)?;
    let r = server!(
        call(
            c,
            Method::POST,
            &format!("/v1/requests/{}/vote", enc(id)),
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
    Ok(Ok(()))
}

/// `collect ID`: an approved checkout request's value, as `checkout` prints it.
pub async fn collect(c: &ConnArgs, j: bool, id: &str) -> Outcome {
    let v = server!(
        call(
            c,
            Method::POST,
            &format!("/v1/requests/{}/collect", enc(id)),
            None
        )
        .await?
    );
    out(j, &v, print_checkout);
    Ok(Ok(()))
}

/// The request as shown, in the exact form that is signed.
pub fn request_from(v: &Value) -> anyhow::Result<Request> {
    let s = |k: &str| -> anyhow::Result<String> {
        Ok(v[k]
            .as_str()
            .ok_or_else(|| anyhow!("request field {k} missing"))?
            .to_owned())
    };
    let i = |k: &str| {
        v[k].as_i64()
            .ok_or_else(|| anyhow!("request field {k} missing"))
    };
    let nonce: [u8; 32] = B64
        .decode(s("nonce")?)
        .ok()
        .and_then(|n| n.try_into().ok())
        .ok_or_else(|| anyhow!("request nonce is not 32 bytes"))?;
    let recipient_key = match v["recipient_key"].as_str() {
        Some(k) => Some(B64.decode(k).context("recipient_key")?),
        None => None,
    };
    let change = match v["change"].as_str() {
        // Only the canonical text of a known change is signed: what
        // `describe` showed is exactly what the signature covers.
        Some(c) => {
            governance::parse(c).map_err(|e| anyhow!("the request's change: {e}"))?;
            Some(c.to_owned())
        }
        None => None,
    };
    Ok(Request {
        request_id: s("request_id")?,
        appliance_id: s("appliance_id")?,
        path: s("path")?,
        version: v["version"]
            .as_u64()
            .ok_or_else(|| anyhow!("request field version missing"))?,
        requester: s("requester")?,
        reason: s("reason")?,
        created_at: i("created_at")?,
        expires_at: i("expires_at")?,
        nonce,
        recipient_key,
        change,
    })
}

/// A governance change as shown before signing: every field, with the
/// attestation certificates of an enrolment (checked by the appliance
/// against the attestation roots; the keys they attest are shown in full)
/// and a certificate's CSR shortened to their size and SHA-256.
pub fn describe_change(text: &str) -> String {
    let Ok(change) = governance::parse(text) else {
        return "change    (not a valid change: do not approve)\n".into();
    };
    let mut v = serde_json::to_value(&change).unwrap_or(Value::Null);
    // Long fields are shown by size and SHA-256: compare a CSR's with
    // `sha256sum` of the file its owner made.
    for field in ["/custodian/attestation", "/csr_pem"] {
        if let Some(a) = v.pointer_mut(field) {
            let raw = a.as_str().unwrap_or_default().to_owned();
            *a = json!(format!(
                "({} bytes, SHA-256 {})",
                raw.len(),
                governance::sha256_hex(raw.as_bytes())
            ));
        }
    }
    let pretty = serde_json::to_string_pretty(&v).unwrap_or_default();
    let mut s = format!(
        "change    {} (SHA-256 {})\n",
        change.name(),
        governance::sha256_hex(text.as_bytes())
    );
    for line in pretty.lines() {
        s.push_str(&format!("  {line}\n"));
    }
    s
}

/// What the custodian is asked to approve, in full.
pub fn describe(v: &Value) -> String {
    let what = if v["kind"] == "governance" {
        format!("subject   {}", v["path"].as_str().unwrap_or("?"))
    } else {
        format!(
            "secret    {} (version {})",
            v["path"].as_str().unwrap_or("?"),
            v["version"]
        )
    };
    let mut s = format!(
        "request   {}\nkind      {}\nstatus    {}\n{what}\nrequester {}\nreason    {}\ncreated   {}\nexpires   {}\nappliance {}\npolicy    {}\n",
        v["request_id"].as_str().unwrap_or("?"),
        v["kind"].as_str().unwrap_or("?"),
        v["status"].as_str().unwrap_or("?"),
        v["requester"].as_str().unwrap_or("?"),
        v["reason"].as_str().unwrap_or("?"),
        v["created"].as_str().unwrap_or("?"),
        v["expires"].as_str().unwrap_or("?"),
        v["appliance_id"].as_str().unwrap_or("?"),
        v["policy"],
    );
    if let Some(k) = v["recipient_key"].as_str() {
        let fp = key_fingerprint(&B64.decode(k).unwrap_or_default());
        s.push_str(&format!(
            "one-time key SHA-256 {fp}\n  (compare with the requester out of band: your share is sealed to this key)\n"
        ));
    }
    if let Some(c) = v["change"].as_str() {
        s.push_str(&describe_change(c));
    }
    for vote in v["votes"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "vote      {} {} at {}\n",
            vote["custodian"].as_str().unwrap_or("?"),
            vote["decision"].as_str().unwrap_or("?"),
            vote["at"].as_str().unwrap_or("?")
        ));
    }
    s
}

/// Signs a decision on the token and, for a break-glass approval by a share
/// holder, forwards the share to the requester's one-time key.
pub fn vote_body(
    v: &Value,
    me: &str,
    decision: Decision,
    t: &mut dyn CustodianToken,
    pin: &Pin,
) -> anyhow::Result<Value> {
    let req = request_from(v)?;
    t.verify_pin(pin).map_err(|e| anyhow!("YubiKey: {e}"))?;
    eprintln!("touch your YubiKey if it blinks");
    let sig = t
        .sign(&req.message(decision, me))
        .map_err(|e| anyhow!("YubiKey sign: {e}"))?;
    let mut body = json!({"decision": decision.as_str(), "signature": B64.encode(sig)});
    if let (Decision::Approve, Some(env)) = (decision, v["your_share"].as_str()) {
        let env = B64.decode(env).context("your_share")?;
        let rk = req
            .recipient_key
            .as_deref()
            .ok_or_else(|| anyhow!("a share to forward but no recipient key"))?;
        let rk = PublicKey::from_sec1_bytes(rk).map_err(|_| anyhow!("bad recipient key"))?;
        let kex = t
            .public_key(Slot::KeyManagement)
            .map_err(|e| anyhow!("YubiKey: {e}"))?;
        // A 9d key with PIN policy "always" needs the PIN again.
        t.verify_pin(pin).map_err(|e| anyhow!("YubiKey: {e}"))?;
        let mut ecdh = |e: &PublicKey| t.ecdh(e).map_err(|x| x.to_string());
        let fwd = sealed::forward_share(
            &env,
            &kex,
            &mut ecdh,
            &req.request_id,
            &req.path,
            req.version,
            me,
            &rk,
            &mut rand::rngs::OsRng,
        )
        .map_err(|e| anyhow!("opening your share: {e}"))?;
        body["share"] = json!(B64.encode(fwd));
    }
    Ok(body)
}
