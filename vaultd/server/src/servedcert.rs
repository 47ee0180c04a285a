//! The server certificate the TLS layer serves, replaceable while running
//! (reissue: `crate::servercert`).

use std::net::IpAddr;
use std::sync::Arc;

/// A server certificate and key that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ServedCertError {
    #[error("server certificate or key: {0}")]
    Pem(String),
    #[error("server certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// What the served server certificate says about itself.
#[derive(Debug, Clone)]
pub struct ServerCertInfo {
    pub fingerprint: String,
    pub not_after: i64,
    /// Its subject alternative names (DNS names and IP addresses).
    pub names: Vec<String>,
}

/// The server certificate handshakes are answered with. A reissue
/// (`crate::servercert`) replaces it for every later handshake; open
/// connections keep the one they started with.
#[derive(Default)]
pub struct ServerCert(std::sync::RwLock<Option<(Arc<rustls::sign::CertifiedKey>, ServerCertInfo)>>);

impl std::fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerCert")
    }
}

impl ServerCert {
    /// Parses and installs a certificate and its key.
    pub fn set(&self, cert_pem: &str, key_pem: &str) -> Result<ServerCertInfo, ServedCertError> {
        let chain = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ServedCertError::Pem(e.to_string()))?;
        if chain.is_empty() {
            return Err(ServedCertError::Pem("no PEM certificate found".into()));
        }
        let info = cert_info(chain[0].as_ref())
            .ok_or_else(|| ServedCertError::Pem("the server certificate does not parse".into()))?;
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .map_err(|e| ServedCertError::Pem(e.to_string()))?
            .ok_or_else(|| ServedCertError::Pem("no PEM private key found".into()))?;
        let signer = rustls::crypto::ring::default_provider()
            .key_provider
            .load_private_key(key)?;
        let ck = rustls::sign::CertifiedKey::new(chain, signer);
        ck.keys_match()?;
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some((Arc::new(ck), info.clone()));
        Ok(info)
    }

    pub fn info(&self) -> Option<ServerCertInfo> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, i)| i.clone())
    }
}

impl rustls::server::ResolvesServerCert for ServerCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(k, _)| k.clone())
    }
}

/// Fingerprint, expiry and names of a DER certificate.
pub fn cert_info(der: &[u8]) -> Option<ServerCertInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::DNSName(d) => names.push((*d).to_owned()),
                x509_parser::extensions::GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => <[u8; 4]>::try_from(*b).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*b).ok().map(IpAddr::from),
                        _ => None,
                    };
                    names.extend(ip.map(|i| i.to_string()));
                }
                _ => {}
            }
        }
    }
    Some(ServerCertInfo {
        fingerprint: crate::ca::fingerprint(der),
        not_after: cert.validity().not_after.timestamp(),
        names,
    })
}
