//! The server certificate: reissued before it expires, and on an admin's
//! request with other names.
//!
//! A reissue makes a new key and a certificate signed by the CA key in the
//! token, writes both next to the old ones as `*.new` (synced), audits
//! `cert.server_reissue`, then renames key and certificate into place and
//! serves the new pair to every later handshake. At start, [`load`]
//! discards a reissue interrupted before its key was renamed (the old pair
//! is intact) and completes one interrupted after it, so the pair on disk
//! always matches.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use vault_core::audit::entry::{AuditDrafts, Outcome};
use vault_store::WriteOp;

use crate::audit::Who;
use crate::ca;
use crate::config::Config;
use crate::servedcert::ServerCertInfo;
use crate::state::AppState;
use crate::timefmt::rfc3339;

/// Names every server certificate carries: the appliance's own tools reach
/// it on loopback.
const LOOPBACK: [&str; 3] = ["localhost", "127.0.0.1", "::1"];
/// Most names a server certificate may carry.
pub const MAX_NAMES: usize = 32;
/// How often the renewer looks at the expiry (a read and a comparison).
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// How long it waits after a failed reissue before it tries again.
const RETRY_AFTER: Duration = Duration::from_secs(300);

fn new_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".new");
    PathBuf::from(s)
}

/// Reads the server certificate and key, first finishing a reissue that a
/// crash interrupted.
pub fn load(config: &Config) -> std::io::Result<(String, zeroize::Zeroizing<String>)> {
    let (cert, key) = (config.server_cert_path(), config.server_key_path());
    let (cert_new, key_new) = (new_path(&cert), new_path(&key));
    if key_new.exists() {
        // Interrupted before the first rename (perhaps before its audit
        // entry): the old pair is intact and stays; the renewer redoes it.
        let _ = std::fs::remove_file(&cert_new);
        std::fs::remove_file(&key_new)?;
        tracing::warn!("an interrupted server certificate reissue was discarded");
    } else if cert_new.exists() {
        // The new key is in place: its certificate follows.
        std::fs::rename(&cert_new, &cert)?;
        sync_dir(&cert)?;
        tracing::warn!("an interrupted server certificate reissue was completed");
    }
    Ok((
        std::fs::read_to_string(&cert)?,
        zeroize::Zeroizing::new(std::fs::read_to_string(&key)?),
    ))
}

fn sync_dir(p: &Path) -> std::io::Result<()> {
    match p.parent() {
        Some(d) => std::fs::File::open(d)?.sync_all(),
        None => Ok(()),
    }
}

fn write_synced(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(data)?;
    f.sync_all()
}

/// Why a reissue did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReissueError {
    #[error("the CA key in the token is not available")]
    CaUnavailable,
    #[error("the server certificate could not be signed")]
    Sign,
    #[error("the server certificate could not be written; the old one stays")]
    Io,
    #[error("the reissue could not be audited")]
    Store(#[from] vault_store::StoreError),
    #[error("the reissued server certificate could not be loaded")]
    Load,
}

/// Checks the names an admin asks for: DNS names or IP addresses, the
/// loopback names added. Refused: empty, too many, or a name that is not a
/// host name (the message says which).
pub fn check_names(names: &[String]) -> Result<Vec<String>, String> {
    if names.is_empty() {
        return Err("names must list at least one DNS name or IP address".into());
    }
    let mut out: Vec<String> = LOOPBACK.iter().map(|s| (*s).to_owned()).collect();
    for n in names {
        let n = n.trim().to_ascii_lowercase();
        let ok = n.parse::<std::net::IpAddr>().is_ok() || valid_dns_name(&n);
        if !ok {
            return Err(format!(
                "{:?} is neither an IP address nor a DNS name",
                n.chars().take(80).collect::<String>()
            ));
        }
        if !out.contains(&n) {
            out.push(n);
        }
    }
    if out.len() > MAX_NAMES {
        return Err(format!("at most {MAX_NAMES} names"));
    }
    Ok(out)
}

/// A DNS name: dot-separated labels of letters, digits and `-` (a label
/// neither starts nor ends with `-`), at most 253 characters. No wildcard.
fn valid_dns_name(n: &str) -> bool {
    n.len() <= 253
        && n.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Reissues the server certificate for `names` (None: the names it has)
/// and serves it. `trigger` is recorded: `expiry` or `admin`.
pub fn reissue(
    st: &AppState,
    who: &Who,
    names: Option<Vec<String>>,
    trigger: &str,
) -> Result<ServerCertInfo, ReissueError> {
    let old = st.server_cert.info();
    let names = match names {
        Some(n) => n,
        None => {
            let mut n: Vec<String> = LOOPBACK.iter().map(|s| (*s).to_owned()).collect();
            let have = old.as_ref().map(|o| o.names.clone()).unwrap_or_default();
            for x in have
                .into_iter()
                .chain(st.config.tls.server_names.iter().cloned())
            {
                if !n.contains(&x) {
                    n.push(x);
                }
            }
            n
        }
    };
    let key = st.ca().ok_or(ReissueError::CaUnavailable)?;
    let now =
        OffsetDateTime::from_unix_timestamp(st.now()).unwrap_or_else(|_| OffsetDateTime::now_utc());
    let (issued, new_key) = ca::issuer(&st.ca_pem, &key)
        .and_then(|issuer| ca::issue_server(&issuer, &names, now))
        .map_err(|e| {
            tracing::error!(error = %e, "server certificate reissue failed");
            ReissueError::Sign
        })?;
    let (cert_path, key_path) = (st.config.server_cert_path(), st.config.server_key_path());
    let (cert_new, key_new) = (new_path(&cert_path), new_path(&key_path));
    let io = |e: std::io::Error| {
        tracing::error!(error = %e, "server certificate files could not be written");
        let _ = std::fs::remove_file(&key_new);
        let _ = std::fs::remove_file(&cert_new);
        ReissueError::Io
    };
    write_synced(&key_new, new_key.expose_pem().as_bytes(), 0o600).map_err(io)?;
    write_synced(&cert_new, issued.cert_pem.as_bytes(), 0o644).map_err(io)?;
    sync_dir(&cert_new).map_err(io)?;

    let mut draft = who.draft(st, "cert.server_reissue", "server", Outcome::Success, "");
    draft.details.insert("trigger".into(), trigger.into());
    draft
        .details
        .insert("fingerprint".into(), issued.fingerprint.clone());
    draft.details.insert("serial".into(), issued.serial.clone());
    draft
        .details
        .insert("not_after".into(), rfc3339(issued.not_after));
    draft.details.insert("names".into(), names.join(","));
    if let Some(o) = &old {
        draft
            .details
            .insert("previous".into(), o.fingerprint.clone());
    }
    if let Err(e) = st
        .store
        .write_audited(WriteOp::AuditOnly, AuditDrafts::new(draft))
    {
        let _ = std::fs::remove_file(&key_new);
        let _ = std::fs::remove_file(&cert_new);
        return Err(e.into());
    }
    // From here the reissue is recorded: finish it (or [`load`] will).
    std::fs::rename(&key_new, &key_path).map_err(io)?;
    std::fs::rename(&cert_new, &cert_path).map_err(io)?;
    sync_dir(&cert_path).map_err(io)?;
    let info = st
        .server_cert
        .set(&issued.cert_pem, new_key.expose_pem())
        .map_err(|e| {
            tracing::error!(error = %e, "the reissued server certificate could not be loaded");
            ReissueError::Load
        })?;
    tracing::info!(fingerprint = %info.fingerprint, not_after = %rfc3339(info.not_after), trigger, "server certificate reissued");
    Ok(info)
}

/// Whether the served certificate is due: fewer than
/// `tls.server_cert_renew_days` left.
pub fn due(st: &AppState) -> bool {
    let window = i64::from(st.config.tls.server_cert_renew_days) * 86_400;
    st.server_cert
        .info()
        .is_some_and(|i| i.not_after - st.now() < window)
}

/// Reissues the server certificate when it is due, while unsealed with the
/// CA key reachable. A failure is logged once and retried after a pause.
pub fn spawn_renewer(st: Arc<AppState>) {
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            let mut pause = CHECK_EVERY;
            if due(&st) && st.ca().is_some() {
                let s = st.clone();
                let r = tokio::task::spawn_blocking(move || {
                    reissue(&s, &Who::system(), None, "expiry")
                })
                .await;
                match r {
                    Ok(Ok(_)) => failing = false,
                    Ok(Err(e)) => {
                        if !failing {
                            tracing::error!(error = %e, "automatic server certificate reissue failed; retrying in 5 minutes");
                        }
                        failing = true;
                        pause = RETRY_AFTER;
                    }
                    Err(_) => pause = RETRY_AFTER,
                }
            }
            tokio::time::sleep(pause).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_host_names_or_addresses() {
        let ok =
            check_names(&["Vault.Example".into(), "10.0.0.5".into(), "fe80::1".into()]).unwrap();
        assert_eq!(
            ok,
            [
                "localhost",
                "127.0.0.1",
                "::1",
                "vault.example",
                "10.0.0.5",
                "fe80::1"
            ]
        );
        for bad in [
            "",
            "*.example",
            "a..b",
            "-a.example",
            "a b",
            "x".repeat(254).as_str(),
            "é.example",
        ] {
            assert!(check_names(&[bad.to_owned()]).is_err(), "{bad:?}");
        }
        assert!(check_names(&[]).unwrap_err().contains("at least one"));
        let many: Vec<String> = (0..40).map(|i| format!("h{i}.example")).collect();
        assert!(check_names(&many).unwrap_err().contains("at most"));
    }
}
