//! Configuration of the TPM seal backend.

use std::fmt;
use std::path::PathBuf;

use vault_core::boot::ImagePublicKey;

/// Highest PCR index in the SHA-256 bank of a PC-client TPM.
pub const MAX_PCR: u8 = 23;

/// Where the TPM is and which PCRs the sealed key is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmConfig {
    /// TCTI string, e.g. `device:/dev/tpmrm0` or
    /// `swtpm:host=127.0.0.1,port=2321`.
    pub tcti: String,
    /// PCR indices in the SHA-256 bank (0..=23), e.g. `[7]` or
    /// `[0, 2, 4, 7, 11]`. Must not be empty: an unbound seal would unseal
    /// on any boot state.
    pub pcrs: Vec<u8>,
    /// `None`: plain PolicyPCR (the key unseals while `pcrs` hold their
    /// seal-time values). `Some`: PolicyAuthorize with the image-signing
    /// key over PolicyPCR(`pcrs`), approved by signed boot policies.
    pub authorized: Option<AuthorizedPolicy>,
}

/// PolicyAuthorize configuration: the image-signing key and where the
/// signed boot policies (`*.json`, see `vault_core::boot::policy`) are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizedPolicy {
    /// SPKI PEM of the image-signing key (ECDSA P-256).
    pub public_key_pem: String,
    /// Directory holding signed boot policies; read at every unseal.
    pub signatures_dir: PathBuf,
}

/// Why a [`TpmConfig`] is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("no PCRs configured: the TPM seal must be bound to at least one PCR")]
    NoPcrs,
    #[error("PCR index {0} is out of range (0..={MAX_PCR})")]
    PcrOutOfRange(u8),
    #[error("PCR {0} is listed more than once")]
    DuplicatePcr(u8),
    #[error("invalid PCR list {0:?}: expected comma-separated indices like \"0,2,4,7\"")]
    BadPcrList(String),
    #[error("invalid TCTI {0:?}")]
    BadTcti(String),
    #[error("invalid image-signing public key: {0}")]
    BadPolicyKey(String),
}

impl TpmConfig {
    /// A configuration; call [`TpmConfig::validate`] (or
    /// [`crate::TpmSeal::open`]) to check it.
    pub fn new(tcti: impl Into<String>, pcrs: impl Into<Vec<u8>>) -> Self {
        TpmConfig {
            tcti: tcti.into(),
            pcrs: pcrs.into(),
            authorized: None,
        }
    }

    /// Switches to PolicyAuthorize with the given image-signing key.
    pub fn with_authorized(mut self, a: AuthorizedPolicy) -> Self {
        self.authorized = Some(a);
        self
    }

    /// The parsed image-signing key, if authorized mode is configured.
    pub fn image_key(&self) -> Result<Option<ImagePublicKey>, ConfigError> {
        self.authorized
            .as_ref()
            .map(|a| {
                ImagePublicKey::from_pem(&a.public_key_pem)
                    .map_err(|e| ConfigError::BadPolicyKey(e.to_string()))
            })
            .transpose()
    }

    /// Checks the PCR list (non-empty, in range, no duplicates) and that the
    /// TCTI string parses. Does not contact the TPM.
    pub fn validate(&self) -> Result<(), ConfigError> {
        canonical_pcrs(&self.pcrs)?;
        crate::device::tcti_conf(&self.tcti)?;
        self.image_key()?;
        Ok(())
    }

    /// The PCR list sorted ascending, after validation.
    pub fn sorted_pcrs(&self) -> Result<Vec<u8>, ConfigError> {
        canonical_pcrs(&self.pcrs)
    }
}

impl fmt::Display for TpmConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tcti={} pcrs={}", self.tcti, format_pcrs(&self.pcrs))?;
        if let Some(a) = &self.authorized {
            match self.image_key() {
                Ok(Some(k)) => write!(f, " image_key={}", k.key_id())?,
                _ => write!(f, " image_key=<invalid>")?,
            }
            write!(f, " signatures_dir={}", a.signatures_dir.display())?;
        }
        Ok(())
    }
}

/// Parses a PCR list such as `"0,2,4,7"` or `"7"` (spaces allowed).
pub fn parse_pcrs(s: &str) -> Result<Vec<u8>, ConfigError> {
    let bad = || ConfigError::BadPcrList(s.to_string());
    if s.trim().is_empty() {
        return Err(ConfigError::NoPcrs);
    }
    let pcrs = s
        .split(',')
        .map(|p| p.trim().parse::<u8>().map_err(|_| bad()))
        .collect::<Result<Vec<u8>, _>>()?;
    canonical_pcrs(&pcrs)?;
    Ok(pcrs)
}

/// `[0, 7]` → `"0,7"`.
pub fn format_pcrs(pcrs: &[u8]) -> String {
    pcrs.iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Validates and sorts a PCR list.
pub(crate) fn canonical_pcrs(pcrs: &[u8]) -> Result<Vec<u8>, ConfigError> {
    if pcrs.is_empty() {
        return Err(ConfigError::NoPcrs);
    }
    let mut v = pcrs.to_vec();
    v.sort_unstable();
    for w in v.windows(2) {
        if w[0] == w[1] {
            return Err(ConfigError::DuplicatePcr(w[0]));
        }
    }
    if let Some(&p) = v.iter().find(|&&p| p > MAX_PCR) {
        return Err(ConfigError::PcrOutOfRange(p));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_pcrs() {
        let ok = TpmConfig::new("swtpm:host=127.0.0.1,port=2321", [7]);
        assert_eq!(ok.validate(), Ok(()));
        let ok = TpmConfig::new("device:/dev/tpmrm0", [11, 0, 2, 4, 7]);
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(ok.sorted_pcrs().unwrap(), vec![0, 2, 4, 7, 11]);
        assert_eq!(
            TpmConfig::new("device:/dev/tpmrm0", []).validate(),
            Err(ConfigError::NoPcrs)
        );
        assert_eq!(
            TpmConfig::new("device:/dev/tpmrm0", [24]).validate(),
            Err(ConfigError::PcrOutOfRange(24))
        );
        assert_eq!(
            TpmConfig::new("device:/dev/tpmrm0", [7, 7]).validate(),
            Err(ConfigError::DuplicatePcr(7))
        );
    }

    #[test]
    fn validates_image_key() {
        let pem = vault_core::boot::ImageSigningKey::generate()
            .public()
            .to_pem();
        let a = AuthorizedPolicy {
            public_key_pem: pem,
            signatures_dir: "/etc/vault/boot-policies".into(),
        };
        let c = TpmConfig::new("device:/dev/tpmrm0", [11]).with_authorized(a.clone());
        assert_eq!(c.validate(), Ok(()));
        assert!(c.to_string().contains("image_key="), "{c}");
        let bad = TpmConfig::new("device:/dev/tpmrm0", [11]).with_authorized(AuthorizedPolicy {
            public_key_pem: "nope".into(),
            ..a
        });
        assert!(matches!(bad.validate(), Err(ConfigError::BadPolicyKey(_))));
    }

    #[test]
    fn rejects_bad_tcti() {
        assert!(matches!(
            TpmConfig::new("nonsense-tcti", [7]).validate(),
            Err(ConfigError::BadTcti(_))
        ));
    }

    #[test]
    fn parses_pcr_lists() {
        assert_eq!(parse_pcrs("0, 2,4,7").unwrap(), vec![0, 2, 4, 7]);
        assert_eq!(parse_pcrs("7").unwrap(), vec![7]);
        assert_eq!(parse_pcrs(""), Err(ConfigError::NoPcrs));
        assert!(matches!(parse_pcrs("7,x"), Err(ConfigError::BadPcrList(_))));
        assert_eq!(parse_pcrs("7,30"), Err(ConfigError::PcrOutOfRange(30)));
        assert_eq!(format_pcrs(&[0, 7]), "0,7");
    }
}
