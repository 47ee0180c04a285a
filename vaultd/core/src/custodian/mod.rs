//! The custodian protocol (no I/O): k-of-n sharing, encryption of shares
//! to custodians' YubiKey keys, signed approvals and the quorum rules.
//!
//! * [`shamir`]: Shamir's secret sharing over GF(2^8).
//! * [`ecies`]: ECDH P-256 + HKDF-SHA256 + AES-256-GCM envelopes.
//! * [`token`]: the custodian-token trait (PIV 9c/9d) and a software token.
//! * [`approval`]: canonical signed approvals and the quorum rules.
//! * [`governance`]: control-plane changes under the custodian quorum.
//! * [`policy`]: approval policies and custody (strict JSON), reachability.
//! * [`request`]: request kinds, stored statuses and phases (the lifecycle).
//! * [`recovery`]: the root key split k-of-n to custodians, and its recovery.
//! * [`attestation`]: YubiKey PIV attestation chains and device policy.
//! * [`sealed`]: the offline-encrypted tier (k-of-n data keys, break-glass).

pub mod approval;
pub mod attestation;
pub mod ecies;
pub mod governance;
pub mod policy;
pub mod recovery;
pub mod request;
pub mod sealed;
pub mod shamir;
pub mod token;
