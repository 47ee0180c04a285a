//! `vaultctl keyring` (admin): rotation and rewrap progress.

use clap::Subcommand;
use hyper::Method;

use crate::cli::ConnArgs;
use crate::util::{call, out, server, Outcome};

#[derive(Subcommand)]
pub enum KeyringCmd {
    /// Add a keyring version; data keys are rewrapped online.
    Rotate,
    /// Versions and rewrap progress.
    Status,
}

/// `keyring rotate`
pub async fn rotate(c: &ConnArgs, j: bool) -> Outcome {
    let v = server!(call(c, Method::POST, "/v1/sys/keyring/rotate", None).await?);
    out(j, &v, |v| {
        println!(
            "keyring version {} is active; data keys are being rewrapped",
            v["active_version"]
        )
    });
    Ok(Ok(()))
}

/// `keyring status`
pub async fn status(c: &ConnArgs, j: bool) -> Outcome {
    let v = server!(call(c, Method::GET, "/v1/sys/keyring", None).await?);
    out(j, &v, |v| {
        println!("active version : {}", v["active_version"]);
        println!("pending rewrap : {}", v["pending_rewrap"]);
        for k in v["versions"].as_array().into_iter().flatten() {
            println!(
                "  v{}: {} secret versions",
                k["version"], k["secret_versions"]
            );
        }
    });
    Ok(Ok(()))
}
