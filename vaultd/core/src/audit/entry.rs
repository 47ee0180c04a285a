//! Audit entries and their canonical bytes.
//!
//! An entry is serialised once, by the log writer, as compact JSON with the
//! fields in the order below and maps in key order; those exact bytes are
//! the Merkle leaf, stored and returned verbatim, so nobody ever needs to
//! re-serialise to verify. Besides the Merkle tree, each entry carries its
//! own index (`seq`) and the leaf hash of its predecessor (`prev`): they let
//! an offline verifier name the exact entry that was removed, reordered or
//! modified, where a root mismatch alone only says "somewhere before N".
//!
//! Entries never hold a secret value, PIN or key. Sensitive request fields
//! appear only as keyed HMACs in `hmac` (key derived from the root key).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::merkle::Hash;

pub const ENTRY_FORMAT: u32 = 1;

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    /// Refused: authorisation, sealed, bad input, conflict.
    Denied,
    /// Failed inside the appliance (integrity, storage, device).
    Error,
}

/// An entry before the log assigns its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    /// RFC 3339 UTC.
    pub time: String,
    pub request_id: String,
    pub principal: String,
    pub role: String,
    pub fingerprint: String,
    pub action: String,
    pub target: String,
    pub outcome: Outcome,
    pub error: String,
    pub details: BTreeMap<String, String>,
    pub hmac: BTreeMap<String, String>,
}

/// The audit entry of one write, as data: the entry to append if the write
/// succeeds, and the one to append if the store refuses it (the store fills
/// in its `outcome` and `error`). Built by the service before the write, so
/// the store calls nothing back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditDrafts {
    pub success: Draft,
    pub refusal: Draft,
}

impl AuditDrafts {
    /// Both entries start as `base` (outcome success, no error).
    pub fn new(base: Draft) -> AuditDrafts {
        AuditDrafts {
            success: base.clone(),
            refusal: base,
        }
    }

    /// A detail recorded whether the write succeeds or is refused.
    pub fn detail(mut self, key: &str, value: impl Into<String>) -> AuditDrafts {
        let v = value.into();
        self.success.details.insert(key.into(), v.clone());
        self.refusal.details.insert(key.into(), v);
        self
    }

    /// A detail recorded only when the write succeeds.
    pub fn on_success(mut self, key: &str, value: impl Into<String>) -> AuditDrafts {
        self.success.details.insert(key.into(), value.into());
        self
    }

    /// A value HMAC recorded only when the write succeeds.
    pub fn hmac_on_success(mut self, key: &str, value: String) -> AuditDrafts {
        self.success.hmac.insert(key.into(), value);
        self
    }

    /// The refusal entry for a store error of `code`.
    pub fn refused(self, outcome: Outcome, code: &str) -> Draft {
        let mut d = self.refusal;
        d.outcome = outcome;
        d.error = code.into();
        d
    }
}

/// An entry as stored (the canonical form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub v: u32,
    pub seq: u64,
    /// Hex leaf hash of entry `seq - 1`; empty for the first entry.
    pub prev: String,
    pub time: String,
    pub request_id: String,
    pub principal: String,
    pub role: String,
    pub fingerprint: String,
    pub action: String,
    pub target: String,
    pub outcome: Outcome,
    pub error: String,
    pub details: BTreeMap<String, String>,
    pub hmac: BTreeMap<String, String>,
}

fn hex(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

impl Draft {
    /// Fixes the position and returns the canonical bytes.
    pub fn finalize(self, seq: u64, prev: Option<&Hash>) -> Vec<u8> {
        let e = Entry {
            v: ENTRY_FORMAT,
            seq,
            prev: prev.map(hex).unwrap_or_default(),
            time: self.time,
            request_id: self.request_id,
            principal: self.principal,
            role: self.role,
            fingerprint: self.fingerprint,
            action: self.action,
            target: self.target,
            outcome: self.outcome,
            error: self.error,
            details: self.details,
            hmac: self.hmac,
        };
        serde_json::to_vec(&e).expect("entries serialise")
    }
}

/// Why entry bytes are not a valid entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed audit entry: {0}")]
pub struct EntryError(pub String);

impl Entry {
    /// Parses canonical bytes; also checks they *are* canonical (re-encoding
    /// gives the same bytes), so two byte strings never decode to one entry.
    pub fn parse(bytes: &[u8]) -> Result<Entry, EntryError> {
        let e: Entry = serde_json::from_slice(bytes).map_err(|err| EntryError(err.to_string()))?;
        if e.v != ENTRY_FORMAT {
            return Err(EntryError(format!("unknown format {}", e.v)));
        }
        let again = serde_json::to_vec(&e).map_err(|err| EntryError(err.to_string()))?;
        if again != bytes {
            return Err(EntryError("not in canonical form".into()));
        }
        Ok(e)
    }

    /// The `prev` field as a hash (None for the first entry).
    pub fn prev_hash(&self) -> Result<Option<Hash>, EntryError> {
        if self.prev.is_empty() {
            return Ok(None);
        }
        let bytes = (0..self.prev.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(self.prev.get(i..i + 2).unwrap_or("zz"), 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| EntryError("prev is not hex".into()))?;
        let h: Hash = bytes
            .try_into()
            .map_err(|_| EntryError("prev is not 32 bytes".into()))?;
        Ok(Some(h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::merkle::leaf_hash;

    fn draft() -> Draft {
        Draft {
            time: "2026-01-01T00:00:00.000Z".into(),
            request_id: "r1".into(),
            principal: "pam01".into(),
            role: "pam".into(),
            fingerprint: "ab".repeat(32),
            action: "secret.checkout".into(),
            target: "db/root".into(),
            outcome: Outcome::Success,
            error: String::new(),
            details: BTreeMap::from([("version".into(), "3".into()), ("a".into(), "b".into())]),
            hmac: BTreeMap::new(),
        }
    }

    #[test]
    fn canonical_round_trip_and_chain() {
        let b0 = draft().finalize(0, None);
        let e0 = Entry::parse(&b0).unwrap();
        assert_eq!(e0.seq, 0);
        assert_eq!(e0.prev_hash().unwrap(), None);
        let h0 = leaf_hash(&b0);
        let b1 = draft().finalize(1, Some(&h0));
        let e1 = Entry::parse(&b1).unwrap();
        assert_eq!(e1.prev_hash().unwrap(), Some(h0));
        // Maps are ordered: "a" before "version".
        let s = String::from_utf8(b0).unwrap();
        assert!(
            s.find("\"a\"").unwrap() < s.find("\"version\"").unwrap(),
            "{s}"
        );
        assert!(s.starts_with("{\"v\":1,\"seq\":0,"), "{s}");
    }

    #[test]
    fn non_canonical_and_foreign_bytes_are_refused() {
        let b = draft().finalize(0, None);
        let spaced = String::from_utf8(b.clone())
            .unwrap()
            .replace(",\"seq\"", ", \"seq\"");
        assert!(Entry::parse(spaced.as_bytes()).is_err());
        assert!(Entry::parse(b"{}").is_err());
        assert!(Entry::parse(b"\xff").is_err());
        let extra = String::from_utf8(b).unwrap().replacen('{', "{\"x\":1,", 1);
        assert!(Entry::parse(extra.as_bytes()).is_err());
    }
}
