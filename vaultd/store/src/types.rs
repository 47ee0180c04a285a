//! Rows as the daemon sees them. None of these hold clear secret values.

use serde_json::Value;
use vault_core::custodian::approval::Decision;
use vault_core::custodian::request::{RequestKind, RequestStatus};
use vault_core::keyring::SealedValue;
use vault_core::policy::Role;

#[derive(Debug, Clone, PartialEq)]
pub struct SecretInfo {
    pub path: String,
    pub exclusive: bool,
    pub current_version: u64,
    pub metadata: Value,
    pub created_at: i64,
    pub updated_at: i64,
    pub versions: Vec<VersionInfo>,
    pub open_checkouts: Vec<OpenCheckout>,
    pub policy: SecretPolicy,
    /// The longest a lease of it may last, renewals included (`None`: the
    /// configured `limits.max_lease_seconds`).
    pub max_lease_seconds: Option<u64>,
    /// When and by whom it was deleted (a tombstone: every version is
    /// destroyed until a write continues it).
    pub deleted: Option<(i64, String)>,
}

/// How a secret is protected: its tier, the approvals its checkouts need
/// (JSON `[{"group", "k"}]`) and, for the sealed tier, its custody (JSON
/// `{"group", "k"}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretPolicy {
    pub tier: String,
    pub approvals: String,
    pub custody: Option<String>,
    /// The prefix policies over this path, shortest prefix first: each
    /// applies on top of the secret's own approvals (AND).
    pub prefixes: Vec<PrefixPolicy>,
}

/// Approvals (JSON `[{"group", "k"}]`) every secret under `prefix` (which
/// ends with `/`) needs, whether it exists yet or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixPolicy {
    pub prefix: String,
    pub approvals: String,
    pub set_at: i64,
    pub set_by: String,
}

/// An access grant: `principal` (a pam name) may check out, or ask for,
/// the paths `prefix` covers ([`grant_covers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRow {
    pub principal: String,
    pub prefix: String,
    pub granted_at: i64,
    pub granted_by: String,
}

/// Whether a grant's `prefix` covers `path`: `*` every path; one ending
/// with `/` every path under it; anything else that path only.
pub fn grant_covers(prefix: &str, path: &str) -> bool {
    prefix == "*" || prefix == path || (prefix.ends_with('/') && path.starts_with(prefix))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    pub version: u64,
    pub created_at: i64,
    pub created_by: String,
    pub key_version: u32,
    /// When and by whom its value was destroyed.
    pub destroyed: Option<(i64, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenCheckout {
    pub id: String,
    pub principal: String,
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSummary {
    pub path: String,
    pub current_version: u64,
    pub exclusive: bool,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalRow {
    /// Lower-case hex SHA-256 of the certificate DER.
    pub fingerprint: String,
    pub name: String,
    pub role: Role,
    pub serial: String,
    pub not_after: i64,
    pub issued_at: i64,
    pub revoked: bool,
    /// The certificate this one renewed (`POST /v1/sys/certs/renew`); it is
    /// revoked, and what it held moves here, when this one is first used.
    pub renewed_from: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutRow {
    pub id: String,
    pub path: String,
    pub version: u64,
    pub principal: String,
    /// The certificate that made it (empty for checkouts recorded before
    /// schema 5, which are bound to the name only).
    pub fingerprint: String,
    pub reason: String,
    pub exclusive: bool,
    pub created_at: i64,
    pub expires_at: i64,
    pub checked_in_at: Option<i64>,
    /// When the reaper ended the lease (it was not checked in by then).
    pub expired_at: Option<i64>,
    /// How often the lease was renewed.
    pub renewals: u32,
    /// Who ended the lease early (`checked_in_at` is then when), and why.
    pub revoked: Option<(String, String)>,
}

impl CheckoutRow {
    /// Neither checked in, revoked nor expired by the reaper.
    pub fn is_open(&self) -> bool {
        self.checked_in_at.is_none() && self.expired_at.is_none()
    }
}

/// Counts for metrics (`Backend::gauges`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    pub open_checkouts: u64,
    pub pending_requests: u64,
    /// Rotations that gave up (`failed`) and wait for an admin.
    pub rotations_failed: u64,
    /// Secrets whose target refused the current value at a heartbeat.
    pub drifted: u64,
    /// When the newest checkpoint was signed.
    pub checkpoint_at: Option<i64>,
}

/// Which checkouts `Backend::checkouts` lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckoutFilter {
    /// Only paths that start with this.
    pub path_prefix: Option<String>,
    /// Only this principal's.
    pub principal: Option<String>,
    /// Only open leases (not checked in, revoked or expired).
    pub open_only: bool,
    /// Paging: only checkouts recorded before the one with this id.
    pub before: Option<String>,
    pub limit: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleVersion {
    pub path: String,
    pub version: u64,
    pub key_version: u32,
    pub wrapped_dek: Vec<u8>,
}

/// An enrolled custodian: public keys and what the attestation said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustodianRow {
    pub name: String,
    pub groups: Vec<String>,
    pub serial: u32,
    pub firmware: String,
    pub pin_policy: String,
    pub touch_policy: String,
    /// SEC1 uncompressed P-256 public keys of slots 9c and 9d.
    pub sig_key: Vec<u8>,
    pub kex_key: Vec<u8>,
    /// JSON: the attestation certificates as submitted (base64 DER).
    pub attestation: String,
    pub enrolled_at: i64,
    pub enrolled_by: String,
}

/// A request that needs custodians' approval (a gated checkout, a
/// break-glass opening or a governance change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRow {
    pub id: String,
    pub kind: RequestKind,
    pub path: String,
    pub version: u64,
    pub requester: String,
    /// The certificate that made it, the only one that may collect it
    /// (empty for requests from before schema 5: bound to the name only).
    pub requester_fingerprint: String,
    pub reason: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub nonce: [u8; 32],
    pub recipient_key: Option<Vec<u8>>,
    /// JSON `[{"group": .., "k": ..}]`.
    pub policy: String,
    pub ttl_seconds: u64,
    /// Expiry is not stored: it is computed from the time
    /// ([`vault_core::custodian::request`]).
    pub status: RequestStatus,
    pub collected_at: Option<i64>,
    pub checkout_id: Option<String>,
    /// Governance requests only: the canonical change custodians sign
    /// ([`vault_core::custodian::governance`]).
    pub change: Option<String>,
}

/// One custodian's signed decision (and, for break-glass, their share
/// re-sealed to the requester's one-time key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoteRow {
    pub request_id: String,
    pub custodian: String,
    pub decision: Decision,
    pub signature: Vec<u8>,
    pub share: Option<Vec<u8>>,
    pub created_at: i64,
}

/// The custody of a sealed-tier secret and its stored ciphertext and shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedVersion {
    pub ciphertext: Vec<u8>,
    /// (custodian, envelope sealed to their 9d key)
    pub shares: Vec<(String, Vec<u8>)>,
}

/// A secret's rotation policy as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationPolicyRow {
    pub path: String,
    /// Canonical JSON (`vault_core::rotation::RotationPolicy`).
    pub policy: String,
    /// Comma-separated triggers (`checkin`, `expiry`, `one_time`).
    pub triggers: String,
    pub interval_seconds: Option<u64>,
    /// A cron schedule in UTC (`vault_core::cron`), canonical text.
    pub cron: Option<String>,
    pub heartbeat_seconds: Option<u64>,
    /// The last heartbeat (read only: written by [`crate::WriteOp::Heartbeat`]
    /// and promotions).
    pub checked_at: Option<i64>,
    /// Since when the target refuses the current value (read only).
    pub drift_at: Option<i64>,
    /// The connector's credential secret (use-only).
    pub credential: Option<String>,
    pub set_at: i64,
    pub set_by: String,
    pub last_rotated_at: Option<i64>,
}

/// Where a rotation in flight is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationState {
    /// To be generated (waits while the secret has open leases).
    Due,
    /// The new value is generated and stored, not yet sent to the target:
    /// the current value is still the one in service.
    Pending,
    /// The new value may have reached the target: checkouts wait until it
    /// is verified and promoted.
    Applying,
    /// Given up after its tries; the current value stays in service.
    Failed,
}

impl RotationState {
    pub fn as_str(self) -> &'static str {
        match self {
            RotationState::Due => "due",
            RotationState::Pending => "pending",
            RotationState::Applying => "applying",
            RotationState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<RotationState> {
        Some(match s {
            "due" => RotationState::Due,
            "pending" => RotationState::Pending,
            "applying" => RotationState::Applying,
            "failed" => RotationState::Failed,
            _ => return None,
        })
    }
}

/// A rotation in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationRow {
    pub path: String,
    pub state: RotationState,
    /// What started it: `checkin`, `expiry`, `schedule` or `manual`.
    pub trigger: String,
    pub attempts: u32,
    pub next_at: i64,
    pub last_error: Option<String>,
    pub started_at: i64,
    /// The version the pending value becomes, and the value encrypted for
    /// it (once generated).
    pub pending: Option<(u64, SealedValue)>,
}
