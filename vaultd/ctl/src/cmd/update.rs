//! `vaultctl update`: signed appliance image updates (admin).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use hyper::Method;

use crate::cli::ConnArgs;
use crate::util::{call, decode, out, server, Outcome};

#[derive(Subcommand)]
pub enum UpdateCmd {
    /// Upload a signed update bundle (update-VERSION.vupd): the appliance
    /// checks its signature and hashes, installs it into the inactive slot
    /// and reboots into it; a slot that does not become healthy falls back.
    Apply { bundle: PathBuf },
    /// The running version and slot, and the state of the last update.
    Status,
}

/// `update apply BUNDLE`: the bundle goes up as one octet stream.
pub async fn apply(c: &ConnArgs, j: bool, bundle: &Path) -> Outcome {
    let data = std::fs::read(bundle).with_context(|| bundle.display().to_string())?;
    let size = data.len();
    let client = c.client()?;
    let resp = client
        .connect()
        .await?
        .request_bytes(
            Method::POST,
            "/v1/sys/update",
            "application/octet-stream",
            bytes::Bytes::from(data),
        )
        .await?;
    let v = server!(decode(&resp)?);
    out(j, &v, |v| {
        println!(
            "update {} (build {}) staged: {size} bytes, signature and hashes verified",
            v["version"].as_str().unwrap_or(""),
            v["build"]
        );
        println!("the appliance now writes its inactive slot and reboots into it");
    });
    Ok(Ok(()))
}

/// `update status`
pub async fn status(c: &ConnArgs, j: bool) -> Outcome {
    let v = server!(call(c, Method::GET, "/v1/sys/update", None).await?);
    out(j, &v, |v| {
        println!(
            "running {} on slot {}",
            v["version"].as_str().unwrap_or("?"),
            v["slot"].as_str().unwrap_or("?")
        );
        for k in ["staged", "installed", "failed"] {
            if !v[k].is_null() {
                println!("{k}: {}", v[k]);
            }
        }
    });
    Ok(Ok(()))
}
