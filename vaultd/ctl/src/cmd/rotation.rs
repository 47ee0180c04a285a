//! `vaultctl rotation set|show|now|remove`: a secret's rotation policy
//! (what changes its value on the target) and its rotation in flight
//! (admin). Setting a policy is a governance request after genesis.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use hyper::Method;
use serde_json::{json, Value};

use crate::cli::ConnArgs;
use crate::util::{call, enc, out, server, Outcome};

#[derive(Subcommand)]
pub enum RotationCmd {
    /// Set the policy from a JSON file (`{"connector", "triggers",
    /// "interval_seconds" or "cron", "password"}`, docs/API.md "Rotation").
    Set {
        path: String,
        #[arg(long, value_name = "FILE")]
        policy_file: PathBuf,
        /// Why (recorded with the governance request).
        #[arg(long)]
        reason: Option<String>,
    },
    /// The policy and the rotation in flight.
    Show { path: String },
    /// Rotate now (a failed rotation starts again).
    Now { path: String },
    /// Remove the policy.
    Remove { path: String },
}

fn print_rotation(r: &Value) {
    if r.is_null() {
        println!("rotation        : none in flight");
        return;
    }
    println!(
        "rotation        : {} (trigger {}, {} failed tries)",
        r["state"].as_str().unwrap_or(""),
        r["trigger"].as_str().unwrap_or(""),
        r["tries"]
    );
    if let Some(e) = r["last_error"].as_str() {
        println!("last error      : {e}");
    }
    if let Some(v) = r["pending_version"].as_u64() {
        println!("becomes version : {v}");
    }
    println!(
        "next try        : {}",
        r["next_try_at"].as_str().unwrap_or("")
    );
}

pub async fn run(c: &ConnArgs, j: bool, cmd: RotationCmd) -> Outcome {
    let uri = |p: &str| format!("/v1/rotation/{}", enc(p));
    match cmd {
        RotationCmd::Set {
            path,
            policy_file,
            reason,
        } => {
            let text = std::fs::read_to_string(&policy_file)
                .with_context(|| format!("reading {}", policy_file.display()))?;
            let policy: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", policy_file.display()))?;
            let mut body = json!({"policy": policy});
            if let Some(r) = reason {
                body["reason"] = json!(r);
            }
            let v = server!(call(c, Method::PUT, &uri(&path), Some(body)).await?);
            if v.get("request_id").is_some() {
                out(j, &v, crate::cmd::governance::print_proposal);
            } else {
                out(j, &v, |_| println!("rotation policy of {path} set"));
            }
        }
        RotationCmd::Show { path } => {
            let v = server!(call(c, Method::GET, &uri(&path), None).await?);
            out(j, &v, |v| {
                println!("path            : {path}");
                println!("policy          : {}", v["policy"]);
                println!(
                    "set             : {} by {}",
                    v["set_at"].as_str().unwrap_or(""),
                    v["set_by"].as_str().unwrap_or("")
                );
                println!(
                    "last rotated    : {}",
                    v["last_rotated_at"].as_str().unwrap_or("never")
                );
                print_rotation(&v["rotation"]);
            });
        }
        RotationCmd::Now { path } => {
            let v = server!(call(c, Method::POST, &uri(&path), None).await?);
            out(j, &v, |v| {
                println!("rotation of {path} requested");
                print_rotation(&v["rotation"]);
            });
        }
        RotationCmd::Remove { path } => {
            let v = server!(call(c, Method::DELETE, &uri(&path), None).await?);
            out(j, &v, |_| println!("rotation policy of {path} removed"));
        }
    }
    Ok(Ok(()))
}
