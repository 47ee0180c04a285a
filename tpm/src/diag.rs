//! What the TPM itself computes, for cross-checking
//! `vault_core::boot::policy` in tests (feature `test-util`).

use vault_core::boot::{ImagePublicKey, SignedPolicy};
use vault_core::seal::SealError;
use vault_core::secret::Key32;

use crate::device::Tpm;

/// The PolicyPCR digest a trial session reaches for the current values of
/// `pcrs` (ascending, SHA-256 bank).
pub fn trial_pcr_policy(tcti: &str, pcrs: &[u8]) -> Result<[u8; 32], SealError> {
    Tpm::connect(tcti)?.current_pcr_policy(pcrs)
}

/// The Name the TPM gives the image key after `TPM2_LoadExternal`.
pub fn image_key_name(tcti: &str, pk: &ImagePublicKey) -> Result<Vec<u8>, SealError> {
    Tpm::connect(tcti)?.image_key_name(pk)
}

/// The digest a trial session reaches with `PolicyAuthorize(key_name)`
/// (empty policyRef) from the zero digest.
pub fn trial_authorize_digest(tcti: &str, key_name: &[u8]) -> Result<[u8; 32], SealError> {
    Tpm::connect(tcti)?.trial_authorize_digest(key_name)
}

/// The authPolicy of the sealed object inside a blob.
pub fn blob_auth_policy(blob: &[u8]) -> Result<Vec<u8>, SealError> {
    let b = crate::blob::decode(blob)?;
    Ok(b.public.auth_policy().value().to_vec())
}

/// Unseals an authorized (version 2) blob with exactly `policy`, skipping
/// the directory scan and the check that `policy` matches the current PCR
/// values, so tests can show that the TPM itself enforces them.
pub fn unseal_with_policy(
    tcti: &str,
    pcrs: &[u8],
    blob: &[u8],
    pk: &ImagePublicKey,
    policy: &SignedPolicy,
) -> Result<Key32, SealError> {
    let b = crate::blob::decode(blob)?;
    let mut tpm = Tpm::connect(tcti)?;
    let (name, ticket) = tpm.verify_policy_signature(pk, &policy.policy, &policy.signature)?;
    tpm.unseal_authorized(pcrs, b.public, b.private, &policy.policy, &name, ticket)
}
