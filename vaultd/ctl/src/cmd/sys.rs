//! `vaultctl status` and `vaultctl unseal`: the seal.

use hyper::Method;

use crate::cli::ConnArgs;
use crate::util::{call, out, server, Outcome};

/// `status`: sealed or not, the mode, and why.
pub async fn status(c: &ConnArgs, j: bool) -> Outcome {
    let v = server!(call(c, Method::GET, "/v1/sys/seal-status", None).await?);
    out(j, &v, |v| {
        if v["sealed"].as_bool() == Some(false) {
            println!(
                "unsealed (mode {}, since {})",
                v["mode"].as_str().unwrap_or("?"),
                v["since"].as_str().unwrap_or("?")
            );
        } else {
            println!(
                "SEALED (mode {}): {} — {}",
                v["mode"].as_str().unwrap_or("?"),
                v["reason"]["code"].as_str().unwrap_or("?"),
                v["reason"]["message"].as_str().unwrap_or("")
            );
        }
        let sc = &v["server_certificate"];
        if let Some(t) = sc["not_after"].as_str() {
            if sc["reissue_due"].as_bool() == Some(true) {
                println!("server certificate expires {t}: REISSUE DUE (it is reissued by itself once unsealed with the token reachable; or `vaultctl cert server --reissue`)");
            } else {
                println!("server certificate expires {t}");
            }
        }
    });
    Ok(Ok(()))
}

/// `unseal` (admin): retry unsealing.
pub async fn unseal(c: &ConnArgs, j: bool) -> Outcome {
    let v = server!(call(c, Method::POST, "/v1/sys/unseal", None).await?);
    out(j, &v, |_| println!("unsealed"));
    Ok(Ok(()))
}
