//! The daemon's one TOML configuration file.
//!
//! Parsed into typed structs, then validated as a whole: every problem is
//! reported at once (a list), never one per restart. Unknown keys are errors
//! so a typo cannot silently disable a setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use vault_core::seal::SealMode;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the mTLS API listens on, e.g. "127.0.0.1:8443".
    pub listen: SocketAddr,
    /// Directory for the database, TLS files and the CA certificate.
    pub data_dir: PathBuf,
    pub seal: SealConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub custodians: CustodianConfig,
    #[serde(default)]
    pub rotation: RotationConfig,
    /// `[appliance]`: settings of the flashed appliance image (data volume,
    /// first-boot ceremony, A/B updates). Absent on a development machine.
    #[serde(default)]
    pub appliance: Option<ApplianceConfig>,
    /// SHA-256 of the file this configuration was loaded from (audited at start).
    #[serde(skip)]
    pub source_sha256: String,
}

/// `[appliance]`: what the appliance image adds (see docs/OPERATORS.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplianceConfig {
    /// The TPM-bound encrypted data volume's mount point. When it is not
    /// mounted (the TPM refused its key), vaultd serves status only, sealed
    /// with `tpm_data_volume_locked`, and never writes below it.
    #[serde(default)]
    pub data_volume: Option<PathBuf>,
    /// An uninitialised vault serves the first-boot ceremony: a one-time
    /// bootstrap TLS identity and init code printed on the console.
    #[serde(default)]
    pub bootstrap: bool,
    /// Written (mode 0644, empty) once the vault is unsealed and serving;
    /// the boot is blessed only then.
    #[serde(default)]
    pub ready_file: Option<PathBuf>,
    /// Where uploaded update bundles are staged for the installer.
    #[serde(default)]
    pub update_dir: Option<PathBuf>,
    /// The image-signing public key (PEM) that update bundles must be
    /// signed with.
    #[serde(default)]
    pub image_key: Option<PathBuf>,
    /// File holding the running image's version (one line).
    #[serde(default)]
    pub version_file: Option<PathBuf>,
    /// Where the EFI system partition is mounted (read-only for vaultd).
    #[serde(default)]
    pub esp: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// A new signed checkpoint at most this often while entries arrive.
    #[serde(default = "d_checkpoint")]
    pub checkpoint_interval_secs: u64,
    /// TLS handshakes that failed are summarised in one entry
    /// (`tls.handshake_failures`) at most this often, not one entry each.
    #[serde(default = "d_handshake_summary")]
    pub handshake_summary_secs: u64,
    /// Export of the log to a SIEM (`[audit.siem]`); off when absent.
    #[serde(default)]
    pub siem: Option<SiemConfig>,
}

/// `[audit.siem]`: JSON lines to a file and/or RFC 5424 syslog, fed in the
/// background from the durable log (see `docs/SIEM.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiemConfig {
    /// Append one JSON line per entry to this file.
    #[serde(default)]
    pub jsonl_path: Option<PathBuf>,
    /// Syslog collector, "ip:port".
    #[serde(default)]
    pub syslog_address: Option<String>,
    /// "udp" (default) or "tcp" (RFC 6587 octet counting).
    #[serde(default = "d_syslog_protocol")]
    pub syslog_protocol: String,
    /// RFC 5424 APP-NAME.
    #[serde(default = "d_syslog_app_name")]
    pub syslog_app_name: String,
    /// Entries read from the log per round: the memory bound of a sink.
    #[serde(default = "d_siem_batch")]
    pub batch_entries: usize,
}

fn d_syslog_protocol() -> String {
    "udp".into()
}
fn d_syslog_app_name() -> String {
    "vaultd".into()
}
fn d_siem_batch() -> usize {
    500
}

impl SiemConfig {
    /// The syslog collector address (validated).
    pub fn syslog_addr(&self) -> Option<SocketAddr> {
        self.syslog_address.as_deref().and_then(|a| a.parse().ok())
    }

    fn validate(&self, p: &mut Vec<String>) {
        if self.jsonl_path.is_none() && self.syslog_address.is_none() {
            p.push("[audit.siem] needs at least one sink: jsonl_path or syslog_address".into());
        }
        if let Some(path) = &self.jsonl_path {
            if path.as_os_str().is_empty() {
                p.push("audit.siem.jsonl_path is empty".into());
            }
        }
        if let Some(a) = &self.syslog_address {
            if a.parse::<SocketAddr>().is_err() {
                p.push(format!(
                    "audit.siem.syslog_address {a:?} is not an ip:port address"
                ));
            }
        }
        if self.syslog_protocol != "udp" && self.syslog_protocol != "tcp" {
            p.push(format!(
                "audit.siem.syslog_protocol {:?} is not \"udp\" or \"tcp\"",
                self.syslog_protocol
            ));
        }
        let n = &self.syslog_app_name;
        if n.is_empty() || n.len() > 48 || !n.bytes().all(|b| (33..=126).contains(&b)) {
            p.push("audit.siem.syslog_app_name must be 1..=48 printable ASCII characters without spaces".into());
        }
        if self.batch_entries == 0 || self.batch_entries > 10_000 {
            p.push("audit.siem.batch_entries must be 1..=10000".into());
        }
    }
}

/// `[rotation]`: credential rotation on targets (`crate::rotate`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationConfig {
    /// The only directory exec hooks run from (absent: no exec hooks). An
    /// exec hook runs as vaultd, so on the appliance this is a directory of
    /// the signed, read-only root file system: a hook is then code that
    /// was signed with the image, never something an admin uploaded.
    #[serde(default)]
    pub exec_hook_dir: Option<PathBuf>,
    /// Tries of a rotation that changed nothing before it is `failed`.
    #[serde(default = "d_rotation_tries")]
    pub max_tries: u32,
}

fn d_rotation_tries() -> u32 {
    5
}

impl Default for RotationConfig {
    fn default() -> Self {
        RotationConfig {
            exec_hook_dir: None,
            max_tries: d_rotation_tries(),
        }
    }
}

/// `[custodians]`: who may enrol and how long approval requests live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustodianConfig {
    /// Trust Yubico's published PIV attestation roots (shipped in the binary).
    #[serde(default = "d_true")]
    pub trust_yubico_roots: bool,
    /// Extra PEM files of PIV attestation roots (e.g. a test root).
    #[serde(default)]
    pub attestation_roots: Vec<PathBuf>,
    /// Refuse keys whose attestation does not say touch is required (touch
    /// policy always or cached). On by default: a custodian's approval
    /// should need a person at the key, not only malware that has the PIN.
    #[serde(default = "d_true")]
    pub require_touch: bool,
    /// Refuse keys whose attestation does not say PIN is required for every
    /// use. On by default.
    #[serde(default = "d_true")]
    pub require_pin_always: bool,
    /// Lifetime of an approval or break-glass request.
    #[serde(default = "d_request_ttl")]
    pub request_ttl_secs: u64,
}

fn d_true() -> bool {
    true
}
fn d_request_ttl() -> u64 {
    3600
}

impl Default for CustodianConfig {
    fn default() -> Self {
        CustodianConfig {
            trust_yubico_roots: true,
            attestation_roots: Vec::new(),
            require_touch: true,
            require_pin_always: true,
            request_ttl_secs: d_request_ttl(),
        }
    }
}

fn d_checkpoint() -> u64 {
    2
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            checkpoint_interval_secs: d_checkpoint(),
            handshake_summary_secs: d_handshake_summary(),
            siem: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealConfig {
    /// "tpm", "pkcs11", "tpm+pkcs11" or "tpm|pkcs11".
    pub mode: String,
    pub tpm: Option<TpmSection>,
    /// Always required: the appliance CA key lives in the token.
    pub pkcs11: Option<Pkcs11Section>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpmSection {
    /// TCTI, e.g. "device:/dev/tpmrm0" or "swtpm:host=127.0.0.1,port=2321".
    pub tcti: String,
    /// PCR indices (SHA-256 bank) the root key is bound to.
    pub pcrs: Vec<u8>,
    /// Image-signing public key (PEM). When set, the seal is PolicyAuthorize
    /// by this key over PolicyPCR(`pcrs`): any boot whose PCR values match a
    /// policy signed by the key unseals, so signed updates need no re-seal.
    #[serde(default)]
    pub policy_key: Option<PathBuf>,
    /// Directory of signed PCR policies (`*.json`, written by the image
    /// build next to each kernel image). Required with `policy_key`.
    #[serde(default)]
    pub policy_signatures: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Section {
    pub module: PathBuf,
    pub token_label: String,
    /// File holding the user PIN (read at every unseal attempt, trimmed).
    pub pin_file: PathBuf,
    #[serde(default = "default_seal_key_label")]
    pub seal_key_label: String,
    #[serde(default = "default_ca_key_label")]
    pub ca_key_label: String,
    /// ECDSA P-256 key that signs audit checkpoints (created at init).
    #[serde(default = "default_audit_key_label")]
    pub audit_key_label: String,
}

fn default_seal_key_label() -> String {
    "vaultd-seal".into()
}
fn default_ca_key_label() -> String {
    "vaultd-ca".into()
}
fn default_audit_key_label() -> String {
    "vaultd-audit".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest request body accepted (bytes).
    #[serde(default = "d_body")]
    pub max_body_bytes: usize,
    /// Largest secret value (bytes).
    #[serde(default = "d_value")]
    pub max_value_bytes: usize,
    /// Per-request deadline (seconds).
    #[serde(default = "d_timeout")]
    pub request_timeout_secs: u64,
    /// Default and maximum checkout lease.
    #[serde(default = "d_ttl")]
    pub default_ttl_seconds: u64,
    #[serde(default = "d_max_ttl")]
    pub max_ttl_seconds: u64,
    /// The longest a lease may last, renewals included, for a secret that
    /// sets no `max_lease_seconds` of its own (and the most one may set).
    #[serde(default = "d_max_lease")]
    pub max_lease_seconds: u64,
    /// Validity of client certificates issued by the CA.
    #[serde(default = "d_cert_days")]
    pub client_cert_days: u32,
    /// How long before its expiry a client certificate may be renewed
    /// (`POST /v1/sys/certs/renew`), and from when every answer to its
    /// holder warns (at most the second half of its life).
    #[serde(default = "d_renew_days")]
    pub cert_renew_days: u32,
    /// Most concurrent connections with a verified client certificate.
    #[serde(default = "d_conns")]
    pub max_connections: usize,
    /// Most connections still in their TLS handshake; a new one evicts the
    /// oldest (`tls::HandshakeGate`).
    #[serde(default = "d_handshakes")]
    pub max_handshakes: usize,
    /// Deadline of a TLS handshake (seconds).
    #[serde(default = "d_handshake_timeout")]
    pub handshake_timeout_secs: u64,
    /// Most pending handshakes of one source address; its next connection
    /// evicts its own oldest.
    #[serde(default = "d_handshakes_per_source")]
    pub max_handshakes_per_source: usize,
    /// Most connections past the handshake from one source address.
    #[serde(default = "d_conns_per_source")]
    pub max_connections_per_source: usize,
}

fn d_body() -> usize {
    128 * 1024
}
fn d_value() -> usize {
    64 * 1024
}
fn d_timeout() -> u64 {
    30
}
fn d_ttl() -> u64 {
    900
}
fn d_max_ttl() -> u64 {
    86_400
}
fn d_max_lease() -> u64 {
    86_400
}
fn d_cert_days() -> u32 {
    90
}
fn d_renew_days() -> u32 {
    30
}
fn d_server_renew_days() -> u32 {
    30
}
fn d_conns() -> usize {
    1024
}
fn d_handshakes() -> usize {
    256
}
fn d_handshake_summary() -> u64 {
    60
}
fn d_handshakes_per_source() -> usize {
    32
}
fn d_conns_per_source() -> usize {
    256
}
fn d_handshake_timeout() -> u64 {
    5
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: d_body(),
            max_value_bytes: d_value(),
            request_timeout_secs: d_timeout(),
            default_ttl_seconds: d_ttl(),
            max_ttl_seconds: d_max_ttl(),
            max_lease_seconds: d_max_lease(),
            client_cert_days: d_cert_days(),
            cert_renew_days: d_renew_days(),
            max_connections: d_conns(),
            max_handshakes: d_handshakes(),
            handshake_timeout_secs: d_handshake_timeout(),
            max_handshakes_per_source: d_handshakes_per_source(),
            max_connections_per_source: d_conns_per_source(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// "text" (default) or "json".
    #[serde(default)]
    pub format: Option<String>,
    /// tracing filter, e.g. "info" or "vaultd=debug".
    #[serde(default)]
    pub level: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Extra DNS names / IPs for the server certificate made at init.
    #[serde(default)]
    pub server_names: Vec<String>,
    /// The server certificate is reissued (same names, new key) once it
    /// has fewer than this many days left; checked at unseal and hourly.
    #[serde(default = "d_server_renew_days")]
    pub server_cert_renew_days: u32,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            server_names: Vec::new(),
            server_cert_renew_days: d_server_renew_days(),
        }
    }
}

/// A configuration that failed to load: every problem found.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration {path}:\n  - {}", problems.join("\n  - "))]
pub struct ConfigError {
    pub path: String,
    pub problems: Vec<String>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let err = |p: String| ConfigError {
            path: path.display().to_string(),
            problems: vec![p],
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let mut cfg = Config::parse(&text).map_err(|problems| ConfigError {
            path: path.display().to_string(),
            problems,
        })?;
        use sha2::Digest as _;
        cfg.source_sha256 = hex::encode(sha2::Sha256::digest(text.as_bytes()));
        Ok(cfg)
    }

    pub fn parse(text: &str) -> Result<Config, Vec<String>> {
        let cfg: Config = toml::from_str(text).map_err(|e| vec![e.to_string()])?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Every problem at once.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut p = Vec::new();
        if self.tls.server_cert_renew_days == 0 || self.tls.server_cert_renew_days > 365 {
            p.push("tls.server_cert_renew_days must be 1..=365".into());
        }
        match SealMode::parse(&self.seal.mode) {
            None => p.push(format!(
                "seal.mode {:?} is not one of \"tpm\", \"pkcs11\", \"tpm+pkcs11\", \"tpm|pkcs11\"",
                self.seal.mode
            )),
            Some(m) => {
                if m.kinds().contains(&vault_core::seal::SealKind::Tpm) && self.seal.tpm.is_none() {
                    p.push(format!(
                        "seal.mode {:?} needs a [seal.tpm] section",
                        self.seal.mode
                    ));
                }
            }
        }
        match &self.seal.pkcs11 {
            None => p.push("[seal.pkcs11] is required (the CA key lives in the token)".into()),
            Some(h) => {
                if h.token_label.is_empty() {
                    p.push("seal.pkcs11.token_label is empty".into());
                }
                if h.seal_key_label.is_empty() || h.ca_key_label.is_empty() {
                    p.push("seal.pkcs11 key labels must not be empty".into());
                }
                let labels = [&h.seal_key_label, &h.ca_key_label, &h.audit_key_label];
                if labels[0] == labels[1] || labels[0] == labels[2] || labels[1] == labels[2] {
                    p.push("seal.pkcs11 seal_key_label, ca_key_label and audit_key_label must all differ".into());
                }
                if h.audit_key_label.is_empty() {
                    p.push("seal.pkcs11 key labels must not be empty".into());
                }
            }
        }
        if let Some(t) = &self.seal.tpm {
            if t.policy_key.is_some() != t.policy_signatures.is_some() {
                p.push("seal.tpm.policy_key and seal.tpm.policy_signatures go together".into());
            }
            if t.tcti.is_empty() {
                p.push("seal.tpm.tcti is empty".into());
            }
            if t.pcrs.is_empty() {
                p.push(
                    "seal.tpm.pcrs is empty: the root key must be bound to at least one PCR".into(),
                );
            }
            if let Some(bad) = t.pcrs.iter().find(|&&i| i > 23) {
                p.push(format!("seal.tpm.pcrs: PCR {bad} is out of range 0..=23"));
            }
        }
        let c = &self.custodians;
        if c.request_ttl_secs == 0 || c.request_ttl_secs > 7 * 24 * 3600 {
            p.push("custodians.request_ttl_secs must be 1..=604800".into());
        }
        if !c.trust_yubico_roots && c.attestation_roots.is_empty() {
            p.push("custodians: with trust_yubico_roots = false, attestation_roots must name at least one root".into());
        }
        let l = &self.limits;
        if l.max_value_bytes == 0 || l.max_value_bytes > 1024 * 1024 {
            p.push("limits.max_value_bytes must be 1..=1048576".into());
        }
        if l.max_body_bytes < l.max_value_bytes {
            p.push("limits.max_body_bytes must be at least limits.max_value_bytes".into());
        }
        if l.request_timeout_secs == 0 {
            p.push("limits.request_timeout_secs must be positive".into());
        }
        if l.default_ttl_seconds == 0 || l.default_ttl_seconds > l.max_ttl_seconds {
            p.push("limits.default_ttl_seconds must be 1..=max_ttl_seconds".into());
        }
        if l.max_lease_seconds < l.max_ttl_seconds || l.max_lease_seconds > 90 * 86_400 {
            p.push("limits.max_lease_seconds must be max_ttl_seconds..=7776000 (90 days)".into());
        }
        if l.client_cert_days == 0 || l.client_cert_days > 3650 {
            p.push("limits.client_cert_days must be 1..=3650".into());
        }
        if l.cert_renew_days == 0 || l.cert_renew_days > 365 {
            p.push("limits.cert_renew_days must be 1..=365".into());
        }
        if self.audit.checkpoint_interval_secs == 0 || self.audit.checkpoint_interval_secs > 3600 {
            p.push("audit.checkpoint_interval_secs must be 1..=3600".into());
        }
        if let Some(siem) = &self.audit.siem {
            siem.validate(&mut p);
        }
        if let Some(a) = &self.appliance {
            if a.update_dir.is_some() != a.image_key.is_some() {
                p.push("appliance.update_dir and appliance.image_key go together".into());
            }
            if a.update_dir.is_some() && a.esp.is_none() {
                p.push("appliance.update_dir needs appliance.esp".into());
            }
            for (name, path) in [
                ("data_volume", &a.data_volume),
                ("ready_file", &a.ready_file),
                ("update_dir", &a.update_dir),
                ("image_key", &a.image_key),
                ("version_file", &a.version_file),
                ("esp", &a.esp),
            ] {
                if let Some(path) = path {
                    if !path.is_absolute() {
                        p.push(format!("appliance.{name} must be an absolute path"));
                    }
                }
            }
        }
        if let Some(d) = &self.rotation.exec_hook_dir {
            if !d.is_absolute() {
                p.push("rotation.exec_hook_dir must be an absolute path".into());
            }
        }
        if !(1..=100).contains(&self.rotation.max_tries) {
            p.push("rotation.max_tries must be 1..=100".into());
        }
        if l.max_handshakes == 0 {
            p.push("limits.max_handshakes must be positive".into());
        }
        if l.max_handshakes_per_source == 0 || l.max_handshakes_per_source > l.max_handshakes {
            p.push("limits.max_handshakes_per_source must be 1..=max_handshakes".into());
        }
        if l.max_connections_per_source == 0 || l.max_connections_per_source > l.max_connections {
            p.push("limits.max_connections_per_source must be 1..=max_connections".into());
        }
        if self.audit.handshake_summary_secs == 0 || self.audit.handshake_summary_secs > 3600 {
            p.push("audit.handshake_summary_secs must be 1..=3600".into());
        }
        if l.handshake_timeout_secs == 0 || l.handshake_timeout_secs > 60 {
            p.push("limits.handshake_timeout_secs must be 1..=60".into());
        }
        if l.max_connections == 0 {
            p.push("limits.max_connections must be positive".into());
        }
        if let Some(f) = &self.log.format {
            if f != "text" && f != "json" {
                p.push(format!("log.format {f:?} is not \"text\" or \"json\""));
            }
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(p)
        }
    }

    pub fn seal_mode(&self) -> SealMode {
        SealMode::parse(&self.seal.mode).expect("validated")
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("vault.db")
    }
    pub fn ca_cert_path(&self) -> PathBuf {
        self.data_dir.join("ca.pem")
    }
    pub fn server_cert_path(&self) -> PathBuf {
        self.data_dir.join("server.pem")
    }
    pub fn server_key_path(&self) -> PathBuf {
        self.data_dir.join("server-key.pem")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen = "127.0.0.1:8443"
data_dir = "/var/lib/vaultd"
[seal]
mode = "tpm+pkcs11"
[seal.tpm]
tcti = "device:/dev/tpmrm0"
pcrs = [7]
[seal.pkcs11]
module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "vault"
pin_file = "/etc/vaultd/pin"
"#;

    #[test]
    fn good_config_parses() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.seal_mode(), SealMode::Both);
        assert_eq!(c.limits.default_ttl_seconds, 900);
        assert_eq!(c.seal.pkcs11.unwrap().ca_key_label, "vaultd-ca");
    }

    /// Device policy fails closed: touch and PIN-always are required unless
    /// the configuration turns them off, with or without a `[custodians]`
    /// table.
    #[test]
    fn custodian_device_policy_defaults_to_required() {
        for text in [
            GOOD.to_owned(),
            format!("{GOOD}[custodians]\nrequest_ttl_secs = 60\n"),
        ] {
            let c = Config::parse(&text).unwrap().custodians;
            assert!(c.require_touch && c.require_pin_always, "{text}");
        }
        let c = CustodianConfig::default();
        assert!(c.require_touch && c.require_pin_always);
        let off =
            format!("{GOOD}[custodians]\nrequire_touch = false\nrequire_pin_always = false\n");
        let c = Config::parse(&off).unwrap().custodians;
        assert!(!c.require_touch && !c.require_pin_always);
    }

    #[test]
    fn all_problems_reported_at_once() {
        let bad = GOOD
            .replace("tpm+pkcs11", "software")
            .replace("pcrs = [7]", "pcrs = [24]")
            .replace("token_label = \"vault\"", "token_label = \"\"");
        let errs = Config::parse(&bad).unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:?}");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let errs = Config::parse(&format!("{GOOD}\n[limits]\nmax_bdy_bytes = 5\n")).unwrap_err();
        assert!(errs[0].contains("max_bdy_bytes"), "{errs:?}");
    }

    #[test]
    fn tpm_mode_needs_tpm_section() {
        let no_tpm = GOOD.replace(
            "[seal.tpm]\ntcti = \"device:/dev/tpmrm0\"\npcrs = [7]\n",
            "",
        );
        let errs = Config::parse(&no_tpm).unwrap_err();
        assert!(errs[0].contains("[seal.tpm]"), "{errs:?}");
        assert!(Config::parse(&no_tpm.replace("tpm+pkcs11", "pkcs11")).is_ok());
    }

    #[test]
    fn siem_section() {
        let c = Config::parse(GOOD).unwrap();
        assert!(c.audit.siem.is_none());
        let c = Config::parse(&format!(
            "{GOOD}\n[audit.siem]\njsonl_path = \"/var/log/vaultd/audit.jsonl\"\nsyslog_address = \"127.0.0.1:514\"\n"
        ))
        .unwrap();
        let s = c.audit.siem.unwrap();
        assert_eq!(s.syslog_protocol, "udp");
        assert_eq!(s.syslog_app_name, "vaultd");
        assert_eq!(s.batch_entries, 500);
        assert_eq!(s.syslog_addr(), Some("127.0.0.1:514".parse().unwrap()));

        let errs = Config::parse(&format!("{GOOD}\n[audit.siem]\n")).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("at least one sink"), "{errs:?}");

        let errs = Config::parse(&format!(
            "{GOOD}\n[audit.siem]\nsyslog_address = \"syslog.example:514\"\nsyslog_protocol = \"tls\"\nbatch_entries = 0\nsyslog_app_name = \"va ultd\"\n"
        ))
        .unwrap_err();
        assert_eq!(errs.len(), 4, "{errs:?}");
        let errs = Config::parse(&format!(
            "{GOOD}\n[audit.siem]\njsonl_path = \"/x\"\nbatch_entries = 10001\n"
        ))
        .unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        let errs =
            Config::parse(&format!("{GOOD}\n[audit.siem]\njsonl_pth = \"/x\"\n")).unwrap_err();
        assert!(errs[0].contains("jsonl_pth"), "{errs:?}");
    }
}

#[cfg(test)]
mod doc_tests {
    /// The sample configuration in docs/ must stay valid.
    #[test]
    fn documented_sample_config_is_valid() {
        let text = include_str!("../../../docs/vaultd.sample.toml");
        if let Err(e) = super::Config::parse(text) {
            panic!("docs/vaultd.sample.toml: {e:?}");
        }
    }

    const CONFIGURATION_MD: &str = include_str!("../../../docs/CONFIGURATION.md");
    const SIEM_MD: &str = include_str!("../../../docs/SIEM.md");

    /// A minimal valid configuration with every section present, and a
    /// bogus key put into `section` ("" = top level).
    fn with_bogus_key(section: &str) -> String {
        let mut sections: Vec<(&str, Vec<&str>)> = vec![
            ("", vec!["listen = \"127.0.0.1:8443\"", "data_dir = \"/d\""]),
            ("seal", vec!["mode = \"tpm+pkcs11\""]),
            (
                "seal.tpm",
                vec!["tcti = \"device:/dev/tpmrm0\"", "pcrs = [7]"],
            ),
            (
                "seal.pkcs11",
                vec![
                    "module = \"/m.so\"",
                    "token_label = \"t\"",
                    "pin_file = \"/p\"",
                ],
            ),
            ("limits", vec![]),
            ("log", vec![]),
            ("tls", vec![]),
            ("audit", vec![]),
            ("audit.siem", vec!["jsonl_path = \"/tmp/a.jsonl\""]),
            ("custodians", vec![]),
            ("rotation", vec![]),
            ("appliance", vec![]),
        ];
        let s = sections
            .iter_mut()
            .find(|(n, _)| *n == section)
            .unwrap_or_else(|| panic!("no section {section:?} in the test"));
        s.1.push("zz_not_a_key = 1");
        let mut out = String::new();
        for (name, lines) in &sections {
            if !name.is_empty() {
                out.push_str(&format!("[{name}]\n"));
            }
            for l in lines {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// The keys the code accepts in `section`, from serde's own
    /// "unknown field, expected one of …" (every section denies unknown
    /// fields, so this is the exact field list).
    fn code_keys(section: &str) -> Vec<String> {
        let e = super::Config::parse(&with_bogus_key(section))
            .map(|_| ())
            .expect_err("a bogus key must be refused");
        let msg = e.join("\n");
        assert!(
            msg.contains("unknown field `zz_not_a_key`"),
            "[{section}]: {msg}"
        );
        let list = msg
            .split_once("expected")
            .map(|(_, l)| l)
            .unwrap_or_else(|| panic!("[{section}]: no field list in {msg}"));
        let mut keys: Vec<String> = list
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        keys.sort();
        keys
    }

    /// The keys a doc documents in the table that follows `heading`.
    fn doc_keys(doc: &str, heading: &str) -> Vec<String> {
        let at = doc
            .find(heading)
            .unwrap_or_else(|| panic!("no heading {heading:?}"));
        let rest = &doc[at + heading.len()..];
        let end = rest.find("\n#").unwrap_or(rest.len());
        let body = &rest[..end];
        let mut tables = 0;
        let mut in_table = false;
        let mut keys = Vec::new();
        for line in body.lines() {
            if line.starts_with('|') {
                if !in_table {
                    tables += 1;
                    in_table = true;
                }
                if let Some(k) = line.strip_prefix("| `").and_then(|l| l.split_once('`')) {
                    keys.push(k.0.to_owned());
                }
            } else {
                in_table = false;
            }
        }
        // One table per section: a blank line inside it splits it in two
        // and breaks its rendering.
        assert_eq!(tables, 1, "{heading}: {tables} tables, expected one");
        keys.sort();
        keys
    }

    /// Every key the code accepts is documented, and every documented key
    /// exists, section by section.
    #[test]
    fn configuration_md_documents_exactly_the_keys_the_code_accepts() {
        for (section, heading) in [
            ("", "### Top level"),
            ("seal", "### `[seal]`"),
            ("seal.tpm", "### `[seal.tpm]`"),
            ("seal.pkcs11", "### `[seal.pkcs11]`"),
            ("limits", "### `[limits]`"),
            ("log", "### `[log]`"),
            ("audit", "### `[audit]`"),
            ("custodians", "### `[custodians]`"),
            ("rotation", "### `[rotation]`"),
            ("appliance", "### `[appliance]`"),
            ("tls", "### `[tls]`"),
        ] {
            let doc = doc_keys(CONFIGURATION_MD, heading);
            let code = code_keys(section);
            assert!(doc.len() >= 2, "{heading}: {doc:?}");
            assert_eq!(doc, code, "docs/CONFIGURATION.md {heading} vs the code");
        }
        assert_eq!(
            doc_keys(SIEM_MD, "## Configuration"),
            code_keys("audit.siem"),
            "docs/SIEM.md vs the code"
        );
    }

    /// The full sample in CONFIGURATION.md parses and validates.
    #[test]
    fn configuration_md_full_sample_is_valid() {
        let at = CONFIGURATION_MD
            .find("## Full sample")
            .expect("a full sample");
        let block = CONFIGURATION_MD[at..]
            .split("```toml\n")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .expect("a toml block");
        if let Err(e) = super::Config::parse(block) {
            panic!("docs/CONFIGURATION.md full sample: {e:?}");
        }
    }
}
