//! The one place where errors become HTTP responses.
//!
//! Every error body is `{"error": {"code": "...", "message": "..."}}`; codes
//! are stable and documented in docs/API.md. Messages never carry secret
//! values or key material.
//!
//! [`Code`] lists every code with its HTTP status ([`Code::status`]); an
//! [`ApiError`] gets its status from its code. The exceptions, where one code
//! is answered with another status, are explicit ([`ApiError::with_status`]):
//! a storage conflict is always 409 (`not_initialized` from the store is 409,
//! from the first-boot server 503), and a code from a lower layer that
//! [`Code`] does not list keeps the status its caller gives
//! ([`ApiError::lower`], [`Code::Unlisted`]).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use vault_store::{Conflict, StoreError};

use crate::update::UpdateError;

macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $code:literal, $status:ident;)*) => {
        /// A stable error code of the API and its HTTP status.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Code {
            $($(#[$doc])* $name,)*
            /// A code reported by a lower layer (storage, seal devices, image
            /// bundles, custodian checks) that this list does not name: it
            /// reaches the client unchanged, with the status its caller gave.
            Unlisted(&'static str),
        }

        impl Code {
            /// Every listed code (not [`Code::Unlisted`]).
            pub const ALL: &'static [Code] = &[$(Code::$name,)*];

            /// The code as it appears in error bodies, audit entries and
            /// metrics.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$name => $code,)*
                    Code::Unlisted(s) => s,
                }
            }

            /// The HTTP status an error with this code is answered with. An
            /// unlisted code has none of its own: 500 unless its caller gives
            /// one ([`ApiError::with_status`], [`ApiError::lower`]).
            pub fn status(self) -> StatusCode {
                match self {
                    $(Code::$name => StatusCode::$status,)*
                    Code::Unlisted(_) => StatusCode::INTERNAL_SERVER_ERROR,
                }
            }
        }
    };
}

codes! {
    // Authentication and authorisation.
    NoClientCertificate = "no_client_certificate", UNAUTHORIZED;
    UnknownPrincipal = "unknown_principal", FORBIDDEN;
    RevokedCertificate = "revoked_certificate", FORBIDDEN;
    CertificateExpired = "certificate_expired", FORBIDDEN;
    Forbidden = "forbidden", FORBIDDEN;
    NotGranted = "not_granted", FORBIDDEN;
    // Routing and request bodies.
    NotFound = "not_found", NOT_FOUND;
    NoCheckpoint = "no_checkpoint", NOT_FOUND;
    MethodNotAllowed = "method_not_allowed", METHOD_NOT_ALLOWED;
    UnsupportedMediaType = "unsupported_media_type", UNSUPPORTED_MEDIA_TYPE;
    BodyTooLarge = "body_too_large", PAYLOAD_TOO_LARGE;
    InvalidBody = "invalid_body", BAD_REQUEST;
    InvalidJson = "invalid_json", BAD_REQUEST;
    // Invalid input.
    InvalidPath = "invalid_path", BAD_REQUEST;
    InvalidQuery = "invalid_query", BAD_REQUEST;
    InvalidRange = "invalid_range", BAD_REQUEST;
    InvalidIndex = "invalid_index", BAD_REQUEST;
    InvalidTreeSize = "invalid_tree_size", BAD_REQUEST;
    ValueTooLarge = "value_too_large", PAYLOAD_TOO_LARGE;
    InvalidMetadata = "invalid_metadata", BAD_REQUEST;
    InvalidReason = "invalid_reason", BAD_REQUEST;
    InvalidTtl = "invalid_ttl", BAD_REQUEST;
    InvalidCheckoutId = "invalid_checkout_id", BAD_REQUEST;
    InvalidName = "invalid_name", BAD_REQUEST;
    InvalidRole = "invalid_role", BAD_REQUEST;
    InvalidValidity = "invalid_validity", BAD_REQUEST;
    InvalidCsr = "invalid_csr", BAD_REQUEST;
    InvalidFingerprint = "invalid_fingerprint", BAD_REQUEST;
    InvalidNames = "invalid_names", BAD_REQUEST;
    InvalidRecording = "invalid_recording", BAD_REQUEST;
    InvalidGrant = "invalid_grant", BAD_REQUEST;
    InvalidVersions = "invalid_versions", BAD_REQUEST;
    InvalidRotationPolicy = "invalid_rotation_policy", BAD_REQUEST;
    // Conflicts with the stored state.
    CheckedOut = "checked_out", CONFLICT;
    VersionChanged = "version_changed", CONFLICT;
    VersionDestroyed = "version_destroyed", CONFLICT;
    VersionCurrent = "version_current", CONFLICT;
    RotationInProgress = "rotation_in_progress", CONFLICT;
    UseOnly = "use_only", CONFLICT;
    OneTimeUsed = "one_time_used", CONFLICT;
    RotationChanged = "rotation_changed", CONFLICT;
    AlreadyCheckedIn = "already_checked_in", CONFLICT;
    LeaseExpired = "lease_expired", CONFLICT;
    LeaseActive = "lease_active", CONFLICT;
    LeaseMaxExceeded = "lease_max_exceeded", CONFLICT;
    LastAdmin = "last_admin", CONFLICT;
    NameInUse = "name_in_use", CONFLICT;
    RenewalTooEarly = "renewal_too_early", CONFLICT;
    RenewalClosed = "renewal_closed", CONFLICT;
    RecordingBeforeCheckout = "recording_before_checkout", CONFLICT;
    GrantExists = "grant_exists", CONFLICT;
    OlderVersionGated = "older_version_gated", CONFLICT;
    KeyringVersionExists = "keyring_version_exists", CONFLICT;
    SealedTier = "sealed_tier", CONFLICT;
    NotSealedTier = "not_sealed_tier", CONFLICT;
    TierMismatch = "tier_mismatch", CONFLICT;
    QuorumUnreachable = "quorum_unreachable", CONFLICT;
    CustodyUnavailable = "custody_unavailable", CONFLICT;
    WrongRequestKind = "wrong_request_kind", CONFLICT;
    // Custodians, approvals, break-glass.
    InvalidTier = "invalid_tier", BAD_REQUEST;
    InvalidCustody = "invalid_custody", BAD_REQUEST;
    InvalidPolicy = "invalid_policy", BAD_REQUEST;
    InvalidGroups = "invalid_groups", BAD_REQUEST;
    InvalidRecipientKey = "invalid_recipient_key", BAD_REQUEST;
    InvalidRequestId = "invalid_request_id", BAD_REQUEST;
    InvalidDecision = "invalid_decision", BAD_REQUEST;
    UnknownAttestationRoot = "unknown_attestation_root", BAD_REQUEST;
    BadAttestationSignature = "bad_attestation_signature", BAD_REQUEST;
    AttestationExpired = "attestation_expired", BAD_REQUEST;
    UnattestedKey = "unattested_key", BAD_REQUEST;
    WrongKeyType = "wrong_key_type", BAD_REQUEST;
    DevicePolicy = "device_policy", BAD_REQUEST;
    AttestationMismatch = "attestation_mismatch", BAD_REQUEST;
    AttestationNameMismatch = "attestation_name_mismatch", BAD_REQUEST;
    AttestationIssuerNotCa = "attestation_issuer_not_ca", BAD_REQUEST;
    AttestationIssuerKeyUsage = "attestation_issuer_key_usage", BAD_REQUEST;
    AttestationPathLength = "attestation_path_length", BAD_REQUEST;
    AttestationLeafIsCa = "attestation_leaf_is_ca", BAD_REQUEST;
    AlreadyEnrolled = "already_enrolled", CONFLICT;
    KeyAlreadyEnrolled = "key_already_enrolled", CONFLICT;
    NotACustodian = "not_a_custodian", FORBIDDEN;
    SelfApproval = "self_approval", FORBIDDEN;
    NotInPolicy = "not_in_policy", FORBIDDEN;
    BadSignature = "bad_signature", BAD_REQUEST;
    ShareRequired = "share_required", BAD_REQUEST;
    UnexpectedShare = "unexpected_share", BAD_REQUEST;
    DuplicateVote = "duplicate_vote", CONFLICT;
    RequestClosed = "request_closed", CONFLICT;
    RequestExpired = "request_expired", CONFLICT;
    PendingApproval = "pending_approval", CONFLICT;
    RequestDenied = "request_denied", CONFLICT;
    AlreadyCollected = "already_collected", CONFLICT;
    // Governance (the custodian quorum over the control plane).
    GovernanceRequired = "governance_required", CONFLICT;
    GovernanceEstablished = "governance_established", CONFLICT;
    GovernanceChanged = "governance_changed", CONFLICT;
    CustodiansChanged = "custodians_changed", CONFLICT;
    PolicyChanged = "policy_changed", CONFLICT;
    InvalidChange = "invalid_change", BAD_REQUEST;
    // Unavailable services, failures.
    Sealed = "sealed", SERVICE_UNAVAILABLE;
    AuditUnavailable = "audit_unavailable", SERVICE_UNAVAILABLE;
    SignerUnavailable = "signer_unavailable", SERVICE_UNAVAILABLE;
    CaUnavailable = "ca_unavailable", SERVICE_UNAVAILABLE;
    StorageUnavailable = "storage_unavailable", SERVICE_UNAVAILABLE;
    Timeout = "timeout", SERVICE_UNAVAILABLE;
    Integrity = "integrity", INTERNAL_SERVER_ERROR;
    Internal = "internal", INTERNAL_SERVER_ERROR;
    // Updates (`/v1/sys/update`), with the bundle reader's codes.
    UpdateNotConfigured = "update_not_configured", NOT_IMPLEMENTED;
    UpdateDowngrade = "update_downgrade", CONFLICT;
    UpdateInProgress = "update_in_progress", CONFLICT;
    UpdateUnknownVersion = "update_unknown_version", SERVICE_UNAVAILABLE;
    UpdateNothingStaged = "update_nothing_staged", SERVICE_UNAVAILABLE;
    UpdateUnknownSlot = "update_unknown_slot", SERVICE_UNAVAILABLE;
    UpdateIoError = "update_io_error", SERVICE_UNAVAILABLE;
    UpdateInstallFailed = "update_install_failed", SERVICE_UNAVAILABLE;
    BundleMissingPart = "bundle_missing_part", BAD_REQUEST;
    BundleBadSignature = "bundle_bad_signature", BAD_REQUEST;
    BundlePartMismatch = "bundle_part_mismatch", BAD_REQUEST;
    BundleTruncated = "bundle_truncated", BAD_REQUEST;
    BundleMalformed = "bundle_malformed", BAD_REQUEST;
    PolicyMalformed = "policy_malformed", BAD_REQUEST;
    PolicyBadSignature = "policy_bad_signature", BAD_REQUEST;
    SignatureInvalid = "signature_invalid", BAD_REQUEST;
    KeyMalformed = "key_malformed", BAD_REQUEST;
    IoError = "io_error", BAD_REQUEST;
    // The first-boot ceremony (`POST /v1/sys/init`).
    InitCodeInvalid = "init_code_invalid", FORBIDDEN;
    InitCodeBurnt = "init_code_burnt", FORBIDDEN;
    InitSourceLocked = "init_source_locked", TOO_MANY_REQUESTS;
    /// 503 from the first-boot server; 409 as a storage conflict.
    NotInitialized = "not_initialized", SERVICE_UNAVAILABLE;
    AlreadyInitialized = "already_initialized", CONFLICT;
    InitFailed = "init_failed", SERVICE_UNAVAILABLE;
    // Seal reasons, the error code of a failed unseal or init.
    TpmPcrMismatch = "tpm_pcr_mismatch", SERVICE_UNAVAILABLE;
    TpmLockout = "tpm_lockout", SERVICE_UNAVAILABLE;
    TpmUnavailable = "tpm_unavailable", SERVICE_UNAVAILABLE;
    Pkcs11TokenMissing = "pkcs11_token_missing", SERVICE_UNAVAILABLE;
    Pkcs11PinIncorrect = "pkcs11_pin_incorrect", SERVICE_UNAVAILABLE;
    Pkcs11PinLocked = "pkcs11_pin_locked", SERVICE_UNAVAILABLE;
    Pkcs11PinUnavailable = "pkcs11_pin_unavailable", SERVICE_UNAVAILABLE;
    SealKeyMissing = "seal_key_missing", SERVICE_UNAVAILABLE;
    SealBlobCorrupt = "seal_blob_corrupt", SERVICE_UNAVAILABLE;
    TpmError = "tpm_error", SERVICE_UNAVAILABLE;
    Pkcs11Error = "pkcs11_error", SERVICE_UNAVAILABLE;
    SealNotConfigured = "seal_not_configured", SERVICE_UNAVAILABLE;
    TpmDataVolumeLocked = "tpm_data_volume_locked", SERVICE_UNAVAILABLE;
    TpmPolicySignatureInvalid = "tpm_policy_signature_invalid", SERVICE_UNAVAILABLE;
    TpmPolicyKeyMismatch = "tpm_policy_key_mismatch", SERVICE_UNAVAILABLE;
}

impl Code {
    /// Seconds a client waits before asking again (`Retry-After`), for
    /// refusals that end by themselves within seconds: a rotation on its
    /// way. (`one_time_used` has none: its rotation waits for a lease.)
    pub fn retry_after(self) -> Option<u32> {
        match self {
            Code::RotationInProgress => Some(2),
            _ => None,
        }
    }

    /// The listed code spelled `code`, else [`Code::Unlisted`]: for codes
    /// that lower layers report as strings.
    pub fn named(code: &'static str) -> Code {
        Code::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == code)
            .unwrap_or(Code::Unlisted(code))
    }
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: Code,
    pub message: String,
}

/// Carried on error responses so the access log and metrics see the code.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub Code);

impl ApiError {
    /// An error answered with its code's status.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self::with_status(code.status(), code, message)
    }
    /// An error answered with another status than its code's: only for the
    /// documented exceptions (a storage conflict is 409 whatever its code;
    /// an unlisted code from a lower layer).
    pub fn with_status(status: StatusCode, code: Code, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    /// An error whose code a lower layer reports as a string: a listed code
    /// gets its status; an unlisted one is answered with `unlisted`.
    pub fn lower(code: &'static str, unlisted: StatusCode, message: impl Into<String>) -> Self {
        match Code::named(code) {
            c @ Code::Unlisted(_) => Self::with_status(unlisted, c, message),
            c => Self::new(c, message),
        }
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(Code::Forbidden, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }
    pub fn sealed() -> Self {
        Self::new(
            Code::Sealed,
            "the vault is sealed; see GET /v1/sys/seal-status",
        )
    }
    pub fn integrity() -> Self {
        Self::new(
            Code::Integrity,
            "stored data failed an integrity check; the incident has been logged",
        )
    }
    pub fn audit_unavailable() -> Self {
        Self::new(
            Code::AuditUnavailable,
            "the audit log cannot be written; nothing was done or disclosed",
        )
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::NotFound => ApiError::not_found("no such object"),
            StoreError::Conflict(Conflict::CheckedOut) => ApiError::new(
                Code::CheckedOut,
                "the secret is exclusive and already checked out",
            ),
            StoreError::Conflict(Conflict::OneTimeUsed) => ApiError::new(
                Code::OneTimeUsed,
                "the secret's current value was handed out once already; the rotation that \
                 replaces it starts when that checkout ends (see open_checkouts)",
            ),
            StoreError::Conflict(Conflict::RotationInProgress) => ApiError::new(
                Code::RotationInProgress,
                "the secret's value is being rotated on its target; retry in a few seconds",
            ),
            // A conflict is 409 whatever its code.
            StoreError::Conflict(c) => {
                ApiError::with_status(StatusCode::CONFLICT, Code::named(c.as_str()), e.to_string())
            }
            StoreError::Forbidden(m) => ApiError::forbidden(*m),
            StoreError::NotGranted => ApiError::new(
                Code::NotGranted,
                "no access grant of this principal covers the path",
            ),
            // Retried by the service; this is what is left after the last try.
            StoreError::Stale(_) => ApiError::new(
                Code::VersionChanged,
                "other writes kept landing first; nothing was changed, retry",
            ),
            StoreError::AuditUnavailable(_) => {
                tracing::error!(error = %e, "audit log unavailable; request refused");
                ApiError::audit_unavailable()
            }
            StoreError::Corrupt(m) => {
                tracing::error!(error = %m, "stored row failed to decode");
                ApiError::integrity()
            }
            StoreError::Sqlite(_)
            | StoreError::Fenced { .. }
            | StoreError::WriterGone
            | StoreError::TransactionFailed(_)
            | StoreError::SchemaTooNew { .. } => {
                tracing::error!(error = %e, "storage failure");
                ApiError::new(
                    Code::StorageUnavailable,
                    "storage is unavailable; nothing was changed",
                )
            }
            _ => ApiError::internal("unexpected storage error"),
        }
    }
}

impl From<UpdateError> for ApiError {
    fn from(e: UpdateError) -> Self {
        // Every code an update step reports today is listed; one this list
        // does not name can only come from the bundle reader (vault-image),
        // whose errors are the client's bundle: 400.
        ApiError::lower(e.code(), StatusCode::BAD_REQUEST, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            serde_json::json!({"error": {"code": self.code.as_str(), "message": self.message}});
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(secs) = self.code.retry_after() {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(secs),
            );
        }
        resp.extensions_mut().insert(ErrorCode(self.code));
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_and_fenced_writes_have_their_codes() {
        let e = ApiError::from(StoreError::Stale("version_changed"));
        assert_eq!(
            (e.status, e.code.as_str()),
            (StatusCode::CONFLICT, "version_changed")
        );
        let e = ApiError::from(StoreError::Fenced {
            epoch: 1,
            current: 2,
        });
        assert_eq!(
            (e.status, e.code.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable")
        );
    }

    fn snake_case(s: &str) -> bool {
        !s.is_empty()
            && s.split('_').all(|w| {
                !w.is_empty()
                    && w.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            })
            && s.starts_with(|c: char| c.is_ascii_lowercase())
    }

    #[test]
    fn codes_are_unique_and_snake_case() {
        let mut seen = std::collections::BTreeSet::new();
        for c in Code::ALL {
            let s = c.as_str();
            assert!(snake_case(s), "{c:?}: {s:?} is not snake_case");
            assert!(seen.insert(s), "{s:?} is used by two variants");
            assert_eq!(Code::named(s), *c);
        }
        assert_eq!(Code::named("no_such_code"), Code::Unlisted("no_such_code"));
    }

    /// The error-code tables of docs/API.md (from `## Error codes` to the
    /// next `## ` heading): each table row's backticked codes and, where the
    /// second column is a number, its HTTP status.
    fn documented() -> Vec<(String, Option<u16>)> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/API.md");
        let doc = std::fs::read_to_string(path).expect("docs/API.md");
        let start = doc
            .find("\n## Error codes\n")
            .expect("an error-code section");
        let section = &doc[start + 1..];
        let section = match section[3..].find("\n## ") {
            Some(end) => &section[..end + 3],
            None => section,
        };
        let mut out = Vec::new();
        for line in section.lines().filter(|l| l.starts_with('|')) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let (first, second) = (cells.get(1).copied(), cells.get(2).copied());
            let status = second.and_then(|s| s.parse::<u16>().ok());
            for code in first.unwrap_or("").split('`').skip(1).step_by(2) {
                out.push((code.to_owned(), status));
            }
        }
        out
    }

    #[test]
    fn every_code_is_documented_with_its_status() {
        let doc = documented();
        let mut wrong = Vec::new();
        for c in Code::ALL {
            let rows: Vec<_> = doc.iter().filter(|(d, _)| d == c.as_str()).collect();
            if rows.is_empty() {
                wrong.push(format!("{}: not documented", c.as_str()));
            }
            for (_, status) in rows {
                if let Some(s) = status.filter(|s| *s != c.status().as_u16()) {
                    wrong.push(format!(
                        "{}: documented {s}, Code::status {}",
                        c.as_str(),
                        c.status().as_u16()
                    ));
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "the error-code tables of docs/API.md disagree with Code:\n{}",
            wrong.join("\n")
        );
    }

    /// Codes the layers below report as strings are all listed, so they get
    /// their documented status rather than a caller's fallback.
    #[test]
    fn lower_layer_codes_are_listed() {
        use vault_core::boot::BootFormatError;
        use vault_core::custodian::approval::VoteError;
        use vault_core::custodian::attestation::AttestationError;
        use vault_core::seal::{SealError, SealKind};
        use vault_image::ImageError;

        let s = || String::from("x");
        let seal = [
            SealError::PcrMismatch(s()),
            SealError::TpmLockout(s()),
            SealError::TpmUnavailable(s()),
            SealError::TokenMissing(s()),
            SealError::PinIncorrect,
            SealError::PinLocked,
            SealError::PinUnavailable(s()),
            SealError::KeyMissing(s()),
            SealError::BlobCorrupt(s()),
            SealError::Device {
                kind: SealKind::Tpm,
                call: "c",
                message: s(),
            },
            SealError::Device {
                kind: SealKind::Pkcs11,
                call: "c",
                message: s(),
            },
            SealError::NotConfigured(SealKind::Tpm),
            SealError::PolicySignatureInvalid(s()),
            SealError::PolicyKeyMismatch(s()),
        ];
        let image = || {
            vec![
                ImageError::BundleBadSignature(s()),
                ImageError::BundlePartMismatch(s()),
                ImageError::BundleTruncated(s()),
                ImageError::BundleMalformed(s()),
                ImageError::Format(BootFormatError::PolicyMalformed(s())),
                ImageError::Format(BootFormatError::PolicyBadSignature(s())),
                ImageError::Format(BootFormatError::SignatureInvalid(s())),
                ImageError::Format(BootFormatError::KeyMalformed(s())),
                ImageError::Io {
                    context: s(),
                    source: std::io::Error::other("x"),
                },
            ]
        };
        let attestation = [
            AttestationError::Malformed(s()),
            AttestationError::UnknownRoot,
            AttestationError::BadSignature,
            AttestationError::Expired,
            AttestationError::WrongKeyType,
            AttestationError::MissingExtension("x"),
            AttestationError::Policy(s()),
            AttestationError::NameMismatch {
                child: s(),
                issuer: s(),
            },
            AttestationError::IssuerNotCa(s()),
            AttestationError::IssuerKeyUsage(s()),
            AttestationError::PathLength {
                issuer: s(),
                allowed: 0,
                have: 1,
            },
            AttestationError::LeafIsCa,
        ];
        let vote = [
            VoteError::Expired,
            VoteError::SelfApproval,
            VoteError::Duplicate,
            VoteError::NotInPolicy,
            VoteError::BadSignature,
            VoteError::Closed("approved"),
        ];
        let mut update: Vec<UpdateError> = image().into_iter().map(UpdateError::from).collect();
        update.extend([
            UpdateError::NotConfigured,
            UpdateError::Downgrade {
                bundle: 1,
                running: 2,
            },
            UpdateError::UnknownVersion(s()),
            UpdateError::MissingPart(s()),
            UpdateError::NothingStaged,
            UpdateError::UnknownSlot,
            UpdateError::Io(s(), std::io::Error::other("x")),
            UpdateError::Command(s()),
        ]);
        let mut codes: Vec<&'static str> = Vec::new();
        codes.extend(seal.iter().map(SealError::code));
        codes.extend(image().iter().map(ImageError::code));
        codes.extend(attestation.iter().map(AttestationError::code));
        codes.extend(vote.iter().map(VoteError::code));
        codes.extend(update.iter().map(UpdateError::code));
        codes.extend(store_conflicts());
        for c in codes {
            assert!(
                !matches!(Code::named(c), Code::Unlisted(_)),
                "{c:?} is reported by a lower layer but not listed in Code"
            );
        }
    }

    /// Every conflict the store reports.
    fn store_conflicts() -> Vec<&'static str> {
        vault_store::Conflict::ALL
            .iter()
            .map(|c| c.as_str())
            .collect()
    }

    #[test]
    fn statuses_as_before() {
        // The shorthands and the exceptions.
        assert_eq!(ApiError::sealed().status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            ApiError::integrity().status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let e = ApiError::from(StoreError::Conflict(Conflict::NotInitialized));
        assert_eq!(
            (e.status, e.code.as_str()),
            (StatusCode::CONFLICT, "not_initialized")
        );
        // Every store conflict is 409 (tier_mismatch, documented 409 in its
        // own row, among them).
        for c in vault_store::Conflict::ALL {
            let e = ApiError::from(StoreError::Conflict(*c));
            assert_eq!(
                (e.status, e.code.as_str()),
                (StatusCode::CONFLICT, c.as_str())
            );
        }
        let e = ApiError::lower("a_new_bundle_code", StatusCode::BAD_REQUEST, "m");
        assert_eq!(
            (e.status, e.code.as_str()),
            (StatusCode::BAD_REQUEST, "a_new_bundle_code")
        );
        let e = ApiError::from(UpdateError::NotConfigured);
        assert_eq!(e.status, StatusCode::NOT_IMPLEMENTED);
        let e = ApiError::from(UpdateError::Downgrade {
            bundle: 1,
            running: 2,
        });
        assert_eq!(e.status, StatusCode::CONFLICT);
        let e = ApiError::from(UpdateError::NothingStaged);
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
    }
}
