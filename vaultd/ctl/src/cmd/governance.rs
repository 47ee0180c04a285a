//! `vaultctl governance`: the custodian quorum over the control plane. An
//! admin proposes (genesis, a new rule, the recovery bundle; enrolments
//! through `custodian enroll`), custodians approve on their YubiKeys after
//! seeing the change in full, and the proposer applies it.

use clap::Subcommand;
use hyper::Method;
use serde_json::{json, Value};

use crate::cli::ConnArgs;
use crate::cmd::custodian::parse_approvals;
use crate::cmd::requests::{self, ApproveArgs};
use crate::util::{call, enc, out, server, write_public, Outcome};
use anyhow::Context as _;

#[derive(Subcommand)]
pub enum GovernanceCmd {
    /// Whether the governance is established, its rule and the custodians.
    Status,
    /// Propose the genesis (admin): the rule, e.g. `security:2`, and the
    /// enrolled custodians, for every one of them to sign.
    Genesis {
        /// The governance rule: group:k[,group:k…], at least two approvals in all.
        #[arg(long)]
        rule: String,
        /// Why (1-1024 characters), shown to the custodians.
        #[arg(long)]
        reason: String,
    },
    /// Propose a new governance rule (admin), approved under the current one.
    Rule {
        /// The new rule: group:k[,group:k…].
        #[arg(long)]
        rule: String,
        /// Why (1-1024 characters), shown to the custodians.
        #[arg(long)]
        reason: String,
    },
    /// Propose the root key's recovery bundle (admin): the root key split
    /// k of n among a group's custodians, replacing any earlier bundle.
    Recovery {
        /// The group whose custodians receive the shares (their 9d keys).
        #[arg(long)]
        group: String,
        /// How many of them rebuild the root key (at least 2).
        #[arg(long)]
        k: u64,
        /// Why, shown to the custodians.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Governance requests.
    List {
        /// pending, approved, denied or all.
        #[arg(long, default_value = "pending")]
        status: String,
    },
    /// One governance request in full, with its change.
    Show { id: String },
    /// Approve (or with --deny, deny) a change with your YubiKey
    /// (custodian), after it is shown in full: as `vaultctl approve`.
    Approve(ApproveArgs),
    /// Apply an approved change (the admin who proposed it). A certificate
    /// is written to --out-dir as NAME.pem, with ca.pem.
    Apply {
        id: String,
        #[arg(long, default_value = ".")]
        out_dir: std::path::PathBuf,
    },
}

pub async fn run(c: &ConnArgs, j: bool, cmd: GovernanceCmd) -> Outcome {
    match cmd {
        GovernanceCmd::Status => status(c, j).await,
        GovernanceCmd::Genesis { rule, reason } => {
            let body = json!({"rule": parse_approvals(&rule)?, "reason": reason});
            propose(c, j, Method::POST, "/v1/governance/genesis", body).await
        }
        GovernanceCmd::Rule { rule, reason } => {
            let body = json!({"rule": parse_approvals(&rule)?, "reason": reason});
            propose(c, j, Method::PUT, "/v1/governance/rule", body).await
        }
        GovernanceCmd::Recovery { group, k, reason } => {
            let mut body = json!({"group": group, "k": k});
            if let Some(r) = reason {
                body["reason"] = json!(r);
            }
            propose(c, j, Method::POST, "/v1/sys/recovery", body).await
        }
        GovernanceCmd::List { status } => list(c, j, &status).await,
        GovernanceCmd::Show { id } => requests::show(c, j, &id).await,
        GovernanceCmd::Approve(a) => requests::approve(c, j, a).await,
        GovernanceCmd::Apply { id, out_dir } => apply(c, j, &id, &out_dir).await,
    }
}

async fn status(c: &ConnArgs, j: bool) -> Outcome {
    let v = server!(call(c, Method::GET, "/v1/governance", None).await?);
    out(j, &v, |v| {
        if v["established"] == true {
            println!("governance established, rule {}", v["rule"]);
        } else {
            println!("governance not established (propose the genesis)");
        }
        for m in v["custodians"].as_array().into_iter().flatten() {
            println!(
                "  {:<16} {:<24} YubiKey {} 9c SHA-256 {}",
                m["name"].as_str().unwrap_or("?"),
                m["groups"].to_string(),
                m["serial"],
                m["signature_key_sha256"].as_str().unwrap_or("?"),
            );
        }
        println!(
            "custodian set SHA-256 {}",
            v["custodian_set_sha256"].as_str().unwrap_or("?")
        );
    });
    Ok(Ok(()))
}

/// Prints a proposal (202) as the custodians will see it.
pub fn print_proposal(v: &Value) {
    let needs: Vec<String> = v["needs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            format!(
                "{} from {}",
                n["remaining"],
                n["group"].as_str().unwrap_or("?")
            )
        })
        .collect();
    println!(
        "proposed {} ({}): governance request {}, needs {}; expires {}",
        v["path"].as_str().unwrap_or("?"),
        change_name(v),
        v["request_id"].as_str().unwrap_or("?"),
        needs.join(" and "),
        v["expires_at"].as_str().unwrap_or("?"),
    );
}

fn change_name(v: &Value) -> String {
    v["change"]
        .as_str()
        .and_then(|c| serde_json::from_str::<Value>(c).ok())
        .and_then(|c| c["change"].as_str().map(String::from))
        .unwrap_or_else(|| "?".into())
}

async fn propose(c: &ConnArgs, j: bool, m: Method, path: &str, body: Value) -> Outcome {
    let v = server!(call(c, m, path, Some(body)).await?);
    out(j, &v, print_proposal);
    Ok(Ok(()))
}

async fn list(c: &ConnArgs, j: bool, status: &str) -> Outcome {
    let v = server!(
        call(
            c,
            Method::GET,
            &format!("/v1/requests?status={}", enc(status)),
            None
        )
        .await?
    );
    let mine: Vec<Value> = v["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["kind"] == "governance")
        .cloned()
        .collect();
    out(j, &json!({ "requests": mine }), |_| {
        for r in &mine {
            println!(
                "{} {:<17} {:<24} {:<16} by {}: {}",
                r["request_id"].as_str().unwrap_or("?"),
                r["status"].as_str().unwrap_or("?"),
                r["path"].as_str().unwrap_or("?"),
                change_name(r),
                r["requester"].as_str().unwrap_or("?"),
                r["reason"].as_str().unwrap_or("?"),
            );
        }
    });
    Ok(Ok(()))
}

async fn apply(c: &ConnArgs, j: bool, id: &str, out_dir: &std::path::Path) -> Outcome {
    let v = server!(
        call(
            c,
            Method::POST,
            &format!("/v1/requests/{}/apply", enc(id)),
            None
        )
        .await?
    );
    let cert = v["result"]["certificate_pem"].as_str().map(|c| {
        let name = v["result"]["name"].as_str().unwrap_or("client");
        (out_dir.join(format!("{name}.pem")), c.to_owned())
    });
    if let Some((path, pem)) = &cert {
        std::fs::create_dir_all(out_dir).with_context(|| out_dir.display().to_string())?;
        write_public(path, pem)?;
        write_public(
            &out_dir.join("ca.pem"),
            v["result"]["ca_pem"].as_str().unwrap_or_default(),
        )?;
    }
    out(j, &v, |v| {
        println!(
            "applied {} ({})",
            v["subject"].as_str().unwrap_or("?"),
            v["change"].as_str().unwrap_or("?")
        );
        if let Some((path, _)) = &cert {
            crate::cmd::cert::print_issued(&v["result"], path, None);
        }
    });
    Ok(Ok(()))
}
