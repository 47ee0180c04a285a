//! Finding the signed boot policy that matches this boot.
//!
//! The signatures directory holds `*.json` files in the
//! `vault_core::boot::SignedPolicy` format (other names are ignored). A file
//! is a candidate when it parses, names the configured image key and its
//! `policy` equals the TPM's PolicyPCR digest for the current PCR values.
//! Its signature is *not* checked here: the TPM checks it
//! (`TPM2_VerifySignature`), which is what yields the ticket
//! `PolicyAuthorize` needs.

use std::io;
use std::path::{Path, PathBuf};

use vault_core::boot::{ImagePublicKey, SignedPolicy};
use vault_core::seal::{SealError, SealKind};

/// Signed policies larger than this are skipped.
const MAX_POLICY_FILE: u64 = 64 * 1024;

pub(crate) struct Candidate {
    pub path: PathBuf,
    pub policy: SignedPolicy,
}

/// The candidates in `dir` (sorted by file name) and a one-line summary of
/// what was found, for error messages.
pub(crate) struct Scan {
    pub candidates: Vec<Candidate>,
    pub summary: String,
}

pub(crate) fn scan(
    dir: &Path,
    key: &ImagePublicKey,
    current: &[u8; 32],
) -> Result<Scan, SealError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::warn!(dir = %dir.display(), "signed boot policy directory does not exist");
            return Ok(Scan {
                candidates: Vec::new(),
                summary: "the directory does not exist".into(),
            });
        }
        Err(e) => {
            return Err(SealError::Device {
                kind: SealKind::Tpm,
                call: "read signed boot policies",
                message: format!("cannot read {}: {e}", dir.display()),
            })
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json") && p.is_file())
        .collect();
    paths.sort();
    let (mut unparsable, mut other_key) = (0usize, 0usize);
    let mut candidates = Vec::new();
    let key_id = key.key_id();
    for path in &paths {
        let policy = match read_policy(path) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "skipping signed boot policy");
                unparsable += 1;
                continue;
            }
        };
        if policy.key_id != key_id {
            tracing::debug!(file = %path.display(), key_id = %policy.key_id,
                "signed boot policy names another image key");
            other_key += 1;
            continue;
        }
        if &policy.policy == current {
            candidates.push(Candidate {
                path: path.clone(),
                policy,
            });
        }
    }
    let summary = format!(
        "{} policy file(s): {unparsable} unparsable, {other_key} for another image key, \
         {} for other PCR values",
        paths.len(),
        paths.len() - unparsable - other_key - candidates.len()
    );
    Ok(Scan {
        candidates,
        summary,
    })
}

fn read_policy(path: &Path) -> Result<SignedPolicy, String> {
    let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if len > MAX_POLICY_FILE {
        return Err(format!("{len} bytes is too large"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    SignedPolicy::from_json(&text).map_err(|e| format!("{} ({})", e, e.code()))
}
