//! PCR helpers.

use vault_core::seal::{SealError, SealKind};

use crate::config::{canonical_pcrs, MAX_PCR};
use crate::device::Tpm;

/// Extends SHA-256 PCR `pcr` of the TPM at `tcti` with SHA-256(`data`)
/// (at most 1024 bytes), as a boot component's measurement would. Used by
/// tests to simulate a changed boot state; harmless but irreversible until
/// the next TPM reset.
pub fn extend_pcr(tcti: &str, pcr: u8, data: &[u8]) -> Result<(), String> {
    if pcr > MAX_PCR {
        return Err(format!("PCR index {pcr} is out of range (0..={MAX_PCR})"));
    }
    if data.len() > 1024 {
        return Err("measurement data is longer than 1024 bytes".into());
    }
    let mut tpm = Tpm::connect(tcti).map_err(|e| e.to_string())?;
    tpm.extend_pcr(pcr, data).map_err(|e| e.to_string())
}

/// Reads SHA-256 PCRs `pcrs` (each 0..=23, no duplicates) of the TPM at
/// `tcti`; returns `(index, value)` in ascending PCR order.
pub fn read_pcrs(tcti: &str, pcrs: &[u8]) -> Result<Vec<(u8, [u8; 32])>, SealError> {
    let pcrs = canonical_pcrs(pcrs).map_err(|e| SealError::Device {
        kind: SealKind::Tpm,
        call: "config",
        message: e.to_string(),
    })?;
    Tpm::connect(tcti)?.read_pcrs(&pcrs)
}
