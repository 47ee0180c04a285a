//! The appliance's internal CA.
//!
//! The CA key is an ECDSA P-256 key generated inside the PKCS#11 token and
//! never exported; certificates are built with rcgen and signed through
//! PKCS#11 ([`HsmCaKey`]). The CA issues the server certificate and client
//! certificates whose subject is `CN=<name>, OU=<role>`. The role a request
//! gets is read from the principal table (recorded at issuance), not trusted
//! from the certificate alone.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber, SigningKey,
};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};
use vault_core::policy::Role;
use vault_hsm::Pkcs11Signer;

/// Errors issuing certificates.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    #[error("certificate building failed: {0}")]
    Build(String),
    #[error("invalid certificate signing request: {0}")]
    BadCsr(String),
    #[error("the CA key is unavailable: {0}")]
    Unavailable(String),
}

impl From<rcgen::Error> for CaError {
    fn from(e: rcgen::Error) -> Self {
        CaError::Build(e.to_string())
    }
}

/// The CA key in the HSM, as rcgen sees it.
pub struct HsmCaKey {
    signer: Pkcs11Signer,
    public: Vec<u8>,
}

impl HsmCaKey {
    pub fn new(signer: Pkcs11Signer) -> Self {
        let public = signer.public_key_sec1();
        HsmCaKey { signer, public }
    }
}

impl PublicKeyData for HsmCaKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl SigningKey for HsmCaKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.signer
            .sign_sha256_der(msg)
            .map_err(|e| rcgen::Error::RemoteKeyError.tap_log(&e))
    }
}

trait TapLog {
    fn tap_log(self, e: &dyn std::fmt::Display) -> Self;
}
impl TapLog for rcgen::Error {
    fn tap_log(self, e: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %e, "HSM signing failed");
        self
    }
}

fn random_serial() -> SerialNumber {
    let mut b = uuid::Uuid::new_v4().into_bytes();
    b[0] &= 0x7f; // positive
    SerialNumber::from_slice(&b)
}

/// Lower-case hex SHA-256 of a DER certificate: the principal's identity.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Creates the self-signed CA certificate (PEM) with the HSM key.
pub fn create_ca(
    key: &HsmCaKey,
    appliance_id: &str,
    now: OffsetDateTime,
) -> Result<String, CaError> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!(
            "vaultd appliance CA {}",
            &appliance_id[..8.min(appliance_id.len())]
        ),
    );
    dn.push(DnType::OrganizationName, "vaultd");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = now - Duration::minutes(5);
    p.not_after = now + Duration::days(3650);
    p.serial_number = Some(random_serial());
    Ok(p.self_signed(key)?.pem())
}

/// An issuer for the stored CA certificate and the HSM key.
pub fn issuer<'a>(
    ca_pem: &str,
    key: &'a HsmCaKey,
) -> Result<Issuer<'static, &'a HsmCaKey>, CaError> {
    Issuer::from_ca_cert_pem(ca_pem, key).map_err(CaError::from)
}

/// A freshly issued certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub fingerprint: String,
    pub serial: String,
    pub not_after: i64,
}

/// A private key generated here for a certificate (server key, first admin).
pub struct GeneratedKey(zeroize::Zeroizing<String>);

impl GeneratedKey {
    pub fn expose_pem(&self) -> &str {
        &self.0
    }
}

fn finish(cert: rcgen::Certificate, not_after: OffsetDateTime, serial: &SerialNumber) -> Issued {
    Issued {
        fingerprint: fingerprint(cert.der()),
        cert_pem: cert.pem(),
        serial: hex::encode(serial.as_ref()),
        not_after: not_after.unix_timestamp(),
    }
}

/// Issues the server certificate for `names` (DNS names or IP addresses).
pub fn issue_server(
    issuer: &Issuer<'_, &HsmCaKey>,
    names: &[String],
    now: OffsetDateTime,
) -> Result<(Issued, GeneratedKey), CaError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "vaultd");
    p.distinguished_name = dn;
    for n in names {
        p.subject_alt_names
            .push(match n.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    n.clone()
                        .try_into()
                        .map_err(|e: rcgen::Error| CaError::Build(format!("{n}: {e}")))?,
                ),
            });
    }
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.not_before = now - Duration::minutes(5);
    p.not_after = now + Duration::days(825);
    let serial = random_serial();
    p.serial_number = Some(serial.clone());
    let not_after = p.not_after;
    let cert = p.signed_by(&key, issuer)?;
    Ok((
        finish(cert, not_after, &serial),
        GeneratedKey(zeroize::Zeroizing::new(key.serialize_pem())),
    ))
}

fn client_params(
    name: &str,
    role: Role,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationalUnitName, role.as_str());
    p.distinguished_name = dn;
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.not_before = not_before;
    p.not_after = not_after;
    p
}

/// Checks that a client CSR parses and is self-signed by its key (what
/// [`issue_client_csr`] will accept), without signing anything.
pub fn check_csr(csr_pem: &str) -> Result<(), CaError> {
    CertificateSigningRequestParams::from_pem(csr_pem)
        .map(|_| ())
        .map_err(|e| CaError::BadCsr(e.to_string()))
}

/// Signs a client CSR. The subject is set here (`CN=name, OU=role`); whatever
/// the CSR asked for is ignored except its public key.
pub fn issue_client_csr(
    issuer: &Issuer<'_, &HsmCaKey>,
    csr_pem: &str,
    name: &str,
    role: Role,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<Issued, CaError> {
    let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| CaError::BadCsr(e.to_string()))?;
    let mut p = client_params(name, role, not_before, not_after);
    let serial = random_serial();
    p.serial_number = Some(serial.clone());
    csr.params = p;
    let cert = csr.signed_by(issuer)?;
    Ok(finish(cert, not_after, &serial))
}

/// Issues a client certificate for a key generated here.
pub fn issue_client_keypair(
    issuer: &Issuer<'_, &HsmCaKey>,
    name: &str,
    role: Role,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<(Issued, GeneratedKey), CaError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut p = client_params(name, role, not_before, not_after);
    let serial = random_serial();
    p.serial_number = Some(serial.clone());
    let cert = p.signed_by(&key, issuer)?;
    Ok((
        finish(cert, not_after, &serial),
        GeneratedKey(zeroize::Zeroizing::new(key.serialize_pem())),
    ))
}

/// What the server reads from a verified client certificate.
#[derive(Debug, Clone)]
pub struct PeerCert {
    pub fingerprint: String,
    pub common_name: String,
    pub org_unit: String,
}

pub fn parse_peer(der: &[u8]) -> Option<PeerCert> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subj = cert.subject();
    let cn = subj
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .unwrap_or("")
        .to_owned();
    let ou = subj
        .iter_organizational_unit()
        .next()
        .and_then(|a| a.as_str().ok())
        .unwrap_or("")
        .to_owned();
    Some(PeerCert {
        fingerprint: fingerprint(der),
        common_name: cn,
        org_unit: ou,
    })
}
