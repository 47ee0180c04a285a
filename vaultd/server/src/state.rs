//! Shared daemon state: sealed or unsealed, the keyring, the principal cache.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use vault_core::keyring::Keyring;
use vault_core::keys::{AuditHmacKey, RootKey};
use vault_core::policy::Role;
use vault_store::{Backend, PrincipalRow};

use crate::ca::HsmCaKey;
use crate::config::Config;
use crate::metrics::Metrics;

/// Wall-clock time, injected so tests can move it.
pub trait Clock: Send + Sync {
    fn now(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }
}

/// The clock the daemon runs on: the system's, or in a debug build with
/// `VAULTD_TEST_CLOCK_FILE` set, the system's plus the offset in seconds
/// written in that file (re-read every 100 ms). Tests move time this way
/// (certificate expiry and renewal, leases) with the real binary. A
/// release build ignores the variable and says so.
pub fn clock_from_env() -> Arc<dyn Clock> {
    let Some(path) = std::env::var_os("VAULTD_TEST_CLOCK_FILE") else {
        return Arc::new(SystemClock);
    };
    if !cfg!(debug_assertions) {
        tracing::error!("VAULTD_TEST_CLOCK_FILE is ignored: this is a release build");
        return Arc::new(SystemClock);
    }
    let offset = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let read = {
        let path = std::path::PathBuf::from(path);
        let offset = offset.clone();
        move || {
            if let Some(v) = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| t.trim().parse::<i64>().ok())
            {
                offset.store(v, Ordering::SeqCst);
            }
        }
    };
    read();
    tracing::warn!(
        offset = offset.load(Ordering::SeqCst),
        "test clock in use (debug build)"
    );
    std::thread::spawn(move || loop {
        std::thread::sleep(std::time::Duration::from_millis(100));
        read();
    });
    Arc::new(OffsetClock(offset))
}

/// The system clock moved by a test's offset (debug builds only).
struct OffsetClock(Arc<std::sync::atomic::AtomicI64>);

impl Clock for OffsetClock {
    fn now(&self) -> i64 {
        SystemClock.now() + self.0.load(Ordering::SeqCst)
    }
}

/// The daemon's clock as rustls sees it: certificate validity at the
/// handshake is judged by the same time as everything else.
#[derive(Clone)]
pub struct TlsTime(pub Arc<dyn Clock>);

impl std::fmt::Debug for TlsTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsTime")
    }
}

impl rustls::time_provider::TimeProvider for TlsTime {
    fn current_time(&self) -> Option<rustls_pki_types::UnixTime> {
        u64::try_from(self.0.now()).ok().map(|s| {
            rustls_pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(s))
        })
    }
}

/// Why the vault is sealed, as reported by `seal-status`.
#[derive(Debug, Clone)]
pub struct SealedReason {
    pub code: String,
    pub message: String,
    pub since: i64,
}

pub struct Unsealed {
    pub keyring: Arc<Keyring>,
    pub(crate) rk: RootKey,
    /// None if the token is unreachable (e.g. `tpm|pkcs11` unsealed by TPM).
    pub ca: Option<Arc<HsmCaKey>>,
    /// Signs audit checkpoints; None while the token is unreachable.
    pub audit_signer: Option<Arc<vault_hsm::Pkcs11Signer>>,
    /// Keys the HMACs of sensitive fields in audit entries.
    pub(crate) audit_hmac: AuditHmacKey,
    pub since: i64,
}

pub enum Vault {
    Sealed(SealedReason),
    Unsealed(Unsealed),
}

/// A known principal, resolved from the certificate fingerprint.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    pub fingerprint: String,
    /// The certificate's validity (from its registration).
    pub issued_at: i64,
    pub not_after: i64,
}

/// When a client certificate may be renewed: its last
/// `limits.cert_renew_days`, but never more than the second half of its
/// life. Also when every answer to its holder carries a warning.
pub fn renew_opens(config: &Config, issued_at: i64, not_after: i64) -> i64 {
    let window = i64::from(config.limits.cert_renew_days) * 86_400;
    let half = (not_after - issued_at).max(0) / 2;
    not_after - window.min(half)
}

pub struct AppState {
    pub config: Config,
    pub store: Arc<dyn Backend>,
    pub vault: RwLock<Vault>,
    pub principals: RwLock<HashMap<String, PrincipalRow>>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Metrics,
    /// The server certificate served at handshakes (replaced on reissue).
    pub server_cert: Arc<crate::servedcert::ServerCert>,
    pub appliance_id: String,
    pub ca_pem: String,
    /// Checkpoint key name and origin line.
    pub origin: String,
    /// DER SubjectPublicKeyInfo of the audit checkpoint key (published).
    pub audit_spki: Vec<u8>,
    /// DER certificates of the trusted PIV attestation roots.
    pub attestation_roots: Vec<Vec<u8>>,
    pub(crate) unseal_lock: tokio::sync::Mutex<()>,
    pub(crate) rewrap_running: AtomicBool,
}

impl AppState {
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    pub fn is_sealed(&self) -> bool {
        matches!(
            *self.vault.read().unwrap_or_else(|e| e.into_inner()),
            Vault::Sealed(_)
        )
    }

    /// The keyring, or None while sealed.
    pub fn keyring(&self) -> Option<Arc<Keyring>> {
        match &*self.vault.read().unwrap_or_else(|e| e.into_inner()) {
            Vault::Unsealed(u) => Some(u.keyring.clone()),
            Vault::Sealed(_) => None,
        }
    }

    pub fn ca(&self) -> Option<Arc<HsmCaKey>> {
        match &*self.vault.read().unwrap_or_else(|e| e.into_inner()) {
            Vault::Unsealed(u) => u.ca.clone(),
            Vault::Sealed(_) => None,
        }
    }

    /// (code, message) of the sealed state; ("", "") while unsealed.
    pub fn sealed_reason(&self) -> (String, String) {
        match &*self.vault.read().unwrap_or_else(|e| e.into_inner()) {
            Vault::Sealed(r) => (r.code.clone(), r.message.clone()),
            Vault::Unsealed(_) => (String::new(), String::new()),
        }
    }

    pub fn sealed_reason_code(&self) -> Option<String> {
        match &*self.vault.read().unwrap_or_else(|e| e.into_inner()) {
            Vault::Sealed(r) => Some(r.code.clone()),
            Vault::Unsealed(_) => None,
        }
    }

    pub fn audit_signer(&self) -> Option<Arc<vault_hsm::Pkcs11Signer>> {
        match &*self.vault.read().unwrap_or_else(|e| e.into_inner()) {
            Vault::Unsealed(u) => u.audit_signer.clone(),
            Vault::Sealed(_) => None,
        }
    }

    /// The audit HMAC of a sensitive value (None while sealed).
    pub fn audit_hmac(&self, value: &[u8]) -> Option<String> {
        match &*self.vault.read().unwrap_or_else(|e| e.into_inner()) {
            Vault::Unsealed(u) => Some(vault_core::audit::value_hmac(&u.audit_hmac, value)),
            Vault::Sealed(_) => None,
        }
    }

    pub fn set_sealed(&self, code: &str, message: String) {
        let since = self.now();
        *self.vault.write().unwrap_or_else(|e| e.into_inner()) = Vault::Sealed(SealedReason {
            code: code.to_owned(),
            message,
            since,
        });
        self.metrics.sealed.store(1, Ordering::Relaxed);
    }

    /// Looks up the principal for a certificate fingerprint.
    pub fn principal(&self, fingerprint: &str) -> Option<Result<Principal, &'static str>> {
        let map = self.principals.read().unwrap_or_else(|e| e.into_inner());
        let row = map.get(fingerprint)?;
        if row.revoked {
            return Some(Err("revoked"));
        }
        // Checked on every request, not only at the handshake: a connection
        // opened before the certificate expired ends with it.
        if row.not_after <= self.now() {
            return Some(Err("expired"));
        }
        Some(Ok(Principal {
            name: row.name.clone(),
            role: row.role,
            fingerprint: row.fingerprint.clone(),
            issued_at: row.issued_at,
            not_after: row.not_after,
        }))
    }

    /// Client certificates for the metrics and status: the latest expiry of
    /// a valid admin certificate (when the last admin is locked out unless
    /// one renews), and per role the valid certificates in their renewal
    /// window that nobody has renewed yet.
    pub fn certificate_summary(&self) -> crate::metrics::CertSummary {
        let now = self.now();
        let map = self.principals.read().unwrap_or_else(|e| e.into_inner());
        let renewed: std::collections::HashSet<&str> = map
            .values()
            .filter(|r| !r.revoked)
            .filter_map(|r| r.renewed_from.as_deref())
            .collect();
        let mut out = crate::metrics::CertSummary::default();
        for r in map.values().filter(|r| !r.revoked && r.not_after > now) {
            if r.role == Role::Admin {
                out.admin_expiry = Some(out.admin_expiry.unwrap_or(0).max(r.not_after));
            }
            let due = now >= renew_opens(&self.config, r.issued_at, r.not_after)
                && !renewed.contains(r.fingerprint.as_str());
            if due {
                if let Some(i) = Role::ALL.iter().position(|x| *x == r.role) {
                    out.renewal_due[i] += 1;
                }
            }
        }
        out
    }

    /// The certificate a renewed certificate replaces, while it is still
    /// unrevoked (until the renewal's first use retires it).
    pub fn live_predecessor(&self, fingerprint: &str) -> Option<String> {
        let map = self.principals.read().unwrap_or_else(|e| e.into_inner());
        let old = map.get(fingerprint)?.renewed_from.as_ref()?;
        map.get(old)
            .filter(|o| !o.revoked)
            .map(|o| o.fingerprint.clone())
    }

    /// The name and role registered for a fingerprint, revoked or expired
    /// included: whom a refusal is audited under.
    pub fn registered_as(&self, fingerprint: &str) -> Option<(String, Role)> {
        let map = self.principals.read().unwrap_or_else(|e| e.into_inner());
        map.get(fingerprint).map(|r| (r.name.clone(), r.role))
    }

    /// Marks a principal revoked in the in-memory copy, at once and
    /// whatever a later reload does: a committed revocation takes effect
    /// even if reading the table back fails.
    pub fn mark_revoked(&self, fingerprint: &str) {
        let mut map = self.principals.write().unwrap_or_else(|e| e.into_inner());
        if let Some(row) = map.get_mut(fingerprint) {
            row.revoked = true;
        }
    }

    pub fn reload_principals(&self) -> Result<(), vault_store::StoreError> {
        let rows = self.store.principals()?;
        let map = rows
            .into_iter()
            .map(|r| (r.fingerprint.clone(), r))
            .collect();
        *self.principals.write().unwrap_or_else(|e| e.into_inner()) = map;
        Ok(())
    }
}
