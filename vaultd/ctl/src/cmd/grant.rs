//! `vaultctl grant list|add|remove`: which paths each PAM server may check
//! out (default deny). Adding one is a governance change once the
//! governance is established; removing one is immediate.

use clap::Subcommand;
use hyper::Method;
use serde_json::json;

use crate::cli::ConnArgs;
use crate::util::{call, out, server, Outcome};

#[derive(Subcommand)]
pub enum GrantCmd {
    /// Every grant (admin, auditor, custodian).
    List,
    /// Let a pam principal check out PREFIX: `*` (every path), a path, or
    /// a prefix ending with `/` (admin; a governance request after genesis).
    Add {
        principal: String,
        prefix: String,
        /// Why (recorded with the governance request).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Remove a grant (admin; immediate). Open leases run to their end.
    Remove { principal: String, prefix: String },
}

pub async fn run(c: &ConnArgs, j: bool, cmd: GrantCmd) -> Outcome {
    match cmd {
        GrantCmd::List => {
            let v = server!(call(c, Method::GET, "/v1/grants", None).await?);
            out(j, &v, |v| {
                let rows = v["grants"].as_array().cloned().unwrap_or_default();
                if rows.is_empty() {
                    println!("no grants: no PAM server reaches any secret");
                }
                for g in rows {
                    println!(
                        "{:<24} {:<32} granted {} by {}",
                        g["principal"].as_str().unwrap_or(""),
                        g["prefix"].as_str().unwrap_or(""),
                        g["granted_at"].as_str().unwrap_or(""),
                        g["granted_by"].as_str().unwrap_or(""),
                    );
                }
            });
        }
        GrantCmd::Add {
            principal,
            prefix,
            reason,
        } => {
            let mut body = json!({"principal": principal, "prefix": prefix});
            if let Some(r) = reason {
                body["reason"] = json!(r);
            }
            let v = server!(call(c, Method::POST, "/v1/grants", Some(body)).await?);
            if v.get("request_id").is_some() {
                out(j, &v, crate::cmd::governance::print_proposal);
            } else {
                out(j, &v, |_| println!("granted {prefix} to {principal}"));
            }
        }
        GrantCmd::Remove { principal, prefix } => {
            let body = json!({"principal": principal, "prefix": prefix});
            let v = server!(call(c, Method::POST, "/v1/grants/remove", Some(body)).await?);
            out(j, &v, |_| println!("removed {prefix} from {principal}"));
        }
    }
    Ok(Ok(()))
}
