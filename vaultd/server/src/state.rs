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
}

pub struct AppState {
    pub config: Config,
    pub store: Arc<dyn Backend>,
    pub vault: RwLock<Vault>,
    pub principals: RwLock<HashMap<String, PrincipalRow>>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Metrics,
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
        }))
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
