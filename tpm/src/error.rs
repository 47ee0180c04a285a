//! The one place where TSS/TPM errors become [`SealError`]s.

use tss_esapi::constants::response_code::Tss2ResponseCode;
use vault_core::seal::{SealError, SealKind};

// TSS2 response-code layers (bits 16..24 of a TSS2_RC).
const LAYER_SHIFT: u32 = 16;
const LAYER_TPM: u32 = 0;
const LAYER_ESAPI: u32 = 7;
const LAYER_SYS: u32 = 8;
const LAYER_TCTI: u32 = 10;
const LAYER_RESMGR: u32 = 11;
const LAYER_RESMGR_TPM: u32 = 12;

// TSS2 base response codes (low 16 bits of a non-TPM layer).
const BASE_NO_CONNECTION: u32 = 8;
const BASE_TRY_AGAIN: u32 = 9;
const BASE_IO_ERROR: u32 = 10;

// TPM 2.0 response codes (low 12 bits).
const RC_FMT1: u32 = 0x080;
const RC_VER1: u32 = 0x100;
const RC_INTEGRITY: u32 = 0x01F; // format one
const RC_POLICY_FAIL: u32 = 0x01D; // format one
const RC_SIGNATURE: u32 = 0x01B; // format one
const RC_VALUE: u32 = 0x004; // format one
const RC_PCR: u32 = 0x127;
const RC_PCR_CHANGED: u32 = 0x128;
const RC_LOCKOUT: u32 = 0x921;

/// The TSS2_RC value inside a tss-esapi error, if it carries one.
pub(crate) fn raw_rc(e: &tss_esapi::Error) -> Option<u32> {
    let tss_esapi::Error::Tss2Error(rc) = e else {
        return None;
    };
    // tss-esapi 7 exposes the raw code only through Display
    // ("Response code value: 0x...").
    let text = match rc {
        Tss2ResponseCode::Success => return Some(0),
        Tss2ResponseCode::FormatZero(z) => z.to_string(),
        Tss2ResponseCode::FormatOne(o) => o.to_string(),
    };
    let hex = text.rsplit("0x").next()?;
    u32::from_str_radix(hex.trim(), 16).ok()
}

/// What a response code means for the seal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    PcrMismatch,
    Lockout,
    Unavailable,
    Corrupt,
    BadSignature,
    Other,
}

/// Classifies a raw TSS2_RC returned by ESAPI `call`.
pub(crate) fn classify(call: &str, rc: u32) -> Class {
    let layer = (rc >> LAYER_SHIFT) & 0xff;
    let base = rc & 0xffff;
    match layer {
        LAYER_TPM | LAYER_RESMGR_TPM => classify_tpm(call, base),
        LAYER_TCTI => Class::Unavailable,
        LAYER_ESAPI | LAYER_SYS | LAYER_RESMGR
            if matches!(base, BASE_NO_CONNECTION | BASE_TRY_AGAIN | BASE_IO_ERROR) =>
        {
            Class::Unavailable
        }
        _ => Class::Other,
    }
}

fn classify_tpm(call: &str, rc: u32) -> Class {
    if rc & RC_FMT1 != 0 {
        // Format one: error number in bits 0..6, handle/session/parameter
        // number in bits 8..12 (so 0x99d, 0x9ad, ... are all POLICY_FAIL).
        match rc & 0x3f {
            RC_POLICY_FAIL => Class::PcrMismatch,
            RC_INTEGRITY => Class::Corrupt,
            RC_SIGNATURE if call == "Esys_VerifySignature" => Class::BadSignature,
            // approvedPolicy differs from the session's PolicyPCR digest:
            // the PCRs changed after the signed policy was chosen.
            RC_VALUE if call == "Esys_PolicyAuthorize" => Class::PcrMismatch,
            // Any parameter/handle error from Load concerns the blob we
            // passed in (size, value, type, attributes, ...).
            _ if call == "Esys_Load" => Class::Corrupt,
            _ => Class::Other,
        }
    } else if rc & RC_VER1 != 0 {
        match rc & 0xfff {
            RC_LOCKOUT => Class::Lockout,
            RC_PCR | RC_PCR_CHANGED => Class::PcrMismatch,
            _ => Class::Other,
        }
    } else {
        Class::Other
    }
}

/// Maps an error from ESAPI function `call` (e.g. `"Esys_Unseal"`) to the
/// most specific [`SealError`]. The message carries the response code and
/// its description, never key material.
pub(crate) fn map_tss(call: &'static str, e: tss_esapi::Error) -> SealError {
    let Some(rc) = raw_rc(&e) else {
        return SealError::Device {
            kind: SealKind::Tpm,
            call,
            message: format!("tss-esapi: {e}"),
        };
    };
    let message = format!("{call} returned TSS2_RC {rc:#x}: {e}");
    match classify(call, rc) {
        Class::PcrMismatch => SealError::PcrMismatch(message),
        Class::Lockout => SealError::TpmLockout(message),
        Class::Unavailable => SealError::TpmUnavailable(message),
        Class::Corrupt => SealError::BlobCorrupt(message),
        Class::BadSignature => SealError::PolicySignatureInvalid(message),
        Class::Other => SealError::Device {
            kind: SealKind::Tpm,
            call,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_codes() {
        for rc in [0x99d, 0xa9d, 0xb9d, 0x19d, 0x1dd] {
            assert_eq!(classify("Esys_Unseal", rc), Class::PcrMismatch, "{rc:#x}");
        }
        assert_eq!(classify("Esys_Unseal", 0x127), Class::PcrMismatch);
        assert_eq!(classify("Esys_Unseal", 0x921), Class::Lockout);
        assert_eq!(classify("Esys_Load", 0x9f), Class::Corrupt);
        assert_eq!(classify("Esys_Load", 0x1df), Class::Corrupt);
        assert_eq!(classify("Esys_Load", 0x2d5), Class::Corrupt); // size, parameter 2
        assert_eq!(classify("Esys_Create", 0x2d5), Class::Other);
        assert_eq!(classify("Esys_Load", 0x902), Class::Other); // object memory
        assert_eq!(classify("Esys_Unseal", 0xa000a), Class::Unavailable); // TCTI IO error
        assert_eq!(classify("Esys_Unseal", 0x7000a), Class::Unavailable); // ESAPI IO error
        assert_eq!(classify("Esys_Unseal", 0x70001), Class::Other);
        assert_eq!(classify("Esys_Unseal", 0xc099d), Class::PcrMismatch); // via resmgr
                                                                          // TPM_RC_SIGNATURE on parameter 2 of VerifySignature.
        assert_eq!(classify("Esys_VerifySignature", 0x2db), Class::BadSignature);
        assert_eq!(classify("Esys_Unseal", 0x2db), Class::Other);
        assert_eq!(classify("Esys_PolicyAuthorize", 0x184), Class::PcrMismatch);
        assert_eq!(classify("Esys_Load", 0x184), Class::Corrupt);
    }

    #[test]
    fn wrapper_errors_are_device_errors() {
        let e = tss_esapi::Error::WrapperError(tss_esapi::WrapperErrorKind::InvalidParam);
        let s = map_tss("Esys_Unseal", e);
        assert_eq!(s.code(), "tpm_error");
    }
}
