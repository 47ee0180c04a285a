//! `vaultctl secret`: write (writer), metadata and list; destroying old
//! versions and deleting a secret (admin; a governance request after
//! genesis). A value is read from a file or stdin, never from argv.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::{json, Value};

use crate::cli::ConnArgs;
use crate::cmd::custodian::parse_approvals;
use crate::util::{call, enc, out, read_value, server, Outcome};

#[derive(Subcommand)]
pub enum SecretCmd {
    /// Store a new version. The value is read from --value-file or stdin.
    Put(PutArgs),
    /// Metadata and versions (never the value).
    Get { path: String },
    /// List secrets by prefix.
    List {
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Destroy old versions' values for good (admin; a governance request
    /// after genesis). The current version cannot be destroyed.
    DestroyVersion {
        path: String,
        /// Version numbers, e.g. `1 2`.
        #[arg(required = true, num_args = 1..)]
        versions: Vec<u64>,
        /// Why (in the audit log and the governance request).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Delete a secret: every version's value destroyed (admin; a
    /// governance request after genesis). A later write continues its
    /// version numbers under the same approvals.
    Delete {
        path: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

/// `secret destroy-version PATH V...` and `secret delete PATH`.
pub async fn destroy(
    c: &ConnArgs,
    j: bool,
    path: &str,
    versions: Option<&[u64]>,
    reason: Option<&str>,
) -> Outcome {
    let mut q = Vec::new();
    if let Some(vs) = versions {
        let list: Vec<String> = vs.iter().map(u64::to_string).collect();
        q.push(format!("versions={}", list.join(",")));
    }
    if let Some(r) = reason {
        q.push(format!("reason={}", enc(r)));
    }
    let mut uri = format!("/v1/secrets/{}", enc(path));
    if !q.is_empty() {
        uri.push('?');
        uri.push_str(&q.join("&"));
    }
    let v = server!(call(c, Method::DELETE, &uri, None).await?);
    if v.get("request_id").is_some() {
        out(j, &v, crate::cmd::governance::print_proposal);
        return Ok(Ok(()));
    }
    out(j, &v, |v| {
        let done: Vec<String> = v["destroyed_versions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| n.to_string())
            .collect();
        if v["deleted"] == true {
            println!("deleted {path}; destroyed versions: {}", done.join(" "));
        } else if done.is_empty() {
            println!("{path}: those versions were destroyed already");
        } else {
            println!("{path}: destroyed versions {}", done.join(" "));
        }
        let open: Vec<&str> = v["open_checkouts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c.as_str())
            .collect();
        if !open.is_empty() {
            eprintln!(
                "warning: {} lease(s) still open, their value is out: {} (end them with `vaultctl lease revoke`)",
                open.len(),
                open.join(" ")
            );
        }
    });
    Ok(Ok(()))
}

#[derive(Args)]
pub struct PutArgs {
    path: String,
    #[arg(long)]
    value_file: Option<PathBuf>,
    /// JSON object of non-secret metadata.
    #[arg(long)]
    metadata: Option<String>,
    /// Only one checkout at a time.
    #[arg(long)]
    exclusive: bool,
    /// The longest a lease may last, renewals included, in seconds
    /// (standard tier; the appliance's limit if omitted).
    #[arg(long, value_name = "SECONDS")]
    max_lease: Option<u64>,
    /// Sealed tier, `GROUP:K`: the value's key is split among the group's
    /// custodians and k of them are needed to open it (docs/CUSTODIANS.md).
    #[arg(long, value_name = "GROUP:K")]
    sealed: Option<String>,
}

/// `secret put PATH`
pub async fn put(c: &ConnArgs, j: bool, a: PutArgs) -> Outcome {
    let trimmed = read_value(a.value_file.as_deref())?;
    let mut body = json!({"value": trimmed.as_str()});
    if let Some(spec) = a.sealed {
        let custody = parse_approvals(&spec)?;
        match custody.as_array().map(|a| a.as_slice()) {
            Some([one]) => {
                body["tier"] = json!("sealed");
                body["custody"] = one.clone();
            }
            _ => bail!("--sealed takes one GROUP:K"),
        }
    }
    if let Some(m) = a.metadata {
        body["metadata"] = serde_json::from_str(&m).context("--metadata must be a JSON object")?;
    }
    if a.exclusive {
        body["exclusive"] = json!(true);
    }
    if let Some(m) = a.max_lease {
        body["max_lease_seconds"] = json!(m);
    }
    let path = a.path;
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
    Ok(Ok(()))
}

/// `secret get PATH`: metadata, versions and open checkouts.
pub async fn get(c: &ConnArgs, j: bool, path: &str) -> Outcome {
    let v = server!(call(c, Method::GET, &format!("/v1/secrets/{}", enc(path)), None).await?);
    out(j, &v, print_secret);
    Ok(Ok(()))
}

fn print_secret(v: &Value) {
    println!("path            : {}", v["path"].as_str().unwrap_or(""));
    println!("current version : {}", v["current_version"]);
    println!("exclusive       : {}", v["exclusive"]);
    if !v["max_lease_seconds"].is_null() {
        println!("max lease       : {} s", v["max_lease_seconds"]);
    }
    println!("metadata        : {}", v["metadata"]);
    if let Some(at) = v["deleted_at"].as_str() {
        println!(
            "deleted         : {at} by {}",
            v["deleted_by"].as_str().unwrap_or("")
        );
    }
    for ver in v["versions"].as_array().into_iter().flatten() {
        let destroyed = match ver["destroyed_at"].as_str() {
            Some(at) => format!(
                " (destroyed {at} by {})",
                ver["destroyed_by"].as_str().unwrap_or("")
            ),
            None => String::new(),
        };
        println!(
            "  v{} {} by {}{destroyed}",
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
}

/// `secret list [--prefix P]`: every page, then one list.
pub async fn list(c: &ConnArgs, j: bool, prefix: &str) -> Outcome {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut q = format!("/v1/secrets?limit=1000&prefix={}", enc(prefix));
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
    Ok(Ok(()))
}
