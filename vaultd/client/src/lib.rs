//! A small mutual-TLS HTTP/1.1 client for the vaultd API.
//!
//! Used by `vaultctl`, the end-to-end tests and the load generator. One
//! [`Conn`] is one keep-alive TLS connection; [`Client::request`] opens a
//! connection per call for one-shot use.
//!
//! # Layout
//!
//! * [`Client`]: TLS configuration (CA to trust, optional client identity)
//!   and the server address.
//! * [`Conn`]: one connection, many requests.
//! * [`Response`]: status and body; the body is zeroized on drop because a
//!   checkout response carries a secret value.

#![forbid(unsafe_code)]

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::Method;
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("invalid address {0:?}: expected https://HOST:PORT")]
    Address(String),
    #[error("{0}: {1}")]
    Pem(&'static str, String),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("TLS handshake with {0} failed: {1}")]
    Handshake(String, std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("request: {0}")]
    Request(String),
}

/// A response. The body is zeroized on drop.
pub struct Response {
    pub status: u16,
    pub body: zeroize::Zeroizing<Vec<u8>>,
    /// Seconds the caller's certificate has left, when the server says it
    /// is in its renewal window (`vault-certificate-expires-in`).
    pub cert_expires_in: Option<i64>,
    /// Seconds to wait before asking again (`Retry-After`), on refusals
    /// that end by themselves (a rotation on its way).
    pub retry_after: Option<u64>,
}

impl Response {
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
    /// The stable error code of an error response, if any.
    pub fn error_code(&self) -> Option<String> {
        self.json()
            .ok()?
            .get("error")?
            .get("code")?
            .as_str()
            .map(str::to_owned)
    }
}

#[derive(Clone)]
pub struct Client {
    tls: TlsConnector,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    /// The local address connections are made from (default: the
    /// system's choice).
    source: Option<std::net::IpAddr>,
}

fn parse_certs(what: &'static str, pem: &str) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let v = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClientError::Pem(what, e.to_string()))?;
    if v.is_empty() {
        return Err(ClientError::Pem(what, "no certificate found".into()));
    }
    Ok(v)
}

fn parse_key(pem: &str) -> Result<PrivateKeyDer<'static>, ClientError> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| ClientError::Pem("client key", e.to_string()))?
        .ok_or_else(|| ClientError::Pem("client key", "no private key found".into()))
}

fn read(path: &std::path::Path) -> Result<String, ClientError> {
    std::fs::read_to_string(path)
        .map_err(|e| ClientError::Pem("file", format!("{}: {e}", path.display())))
}

/// `https://HOST:PORT` → (host, port, TLS server name).
fn parse_addr(addr: &str) -> Result<(String, u16, ServerName<'static>), ClientError> {
    let rest = addr
        .strip_prefix("https://")
        .ok_or_else(|| ClientError::Address(addr.into()))?
        .trim_end_matches('/');
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| ClientError::Address(addr.into()))?;
    let port: u16 = port
        .parse()
        .map_err(|_| ClientError::Address(addr.into()))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let server_name =
        ServerName::try_from(host.clone()).map_err(|_| ClientError::Address(addr.into()))?;
    Ok((host, port, server_name))
}

impl Client {
    /// `addr` is `https://HOST:PORT`; `identity` is (certificate PEM, key PEM).
    pub fn new(
        addr: &str,
        ca_pem: &str,
        identity: Option<(&str, &str)>,
    ) -> Result<Client, ClientError> {
        Client::new_at(addr, ca_pem, identity, 0)
    }

    /// [`Client::new`], judging the server certificate's validity as if the
    /// clock were `offset_secs` ahead (tests that move an appliance's clock).
    pub fn new_at(
        addr: &str,
        ca_pem: &str,
        identity: Option<(&str, &str)>,
        offset_secs: i64,
    ) -> Result<Client, ClientError> {
        let (host, port, server_name) = parse_addr(addr)?;
        let mut roots = RootCertStore::empty();
        for c in parse_certs("CA certificate", ca_pem)? {
            roots.add(c)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let b =
            rustls::ClientConfig::builder_with_details(provider, Arc::new(OffsetTime(offset_secs)))
                .with_protocol_versions(&[&rustls::version::TLS13])?
                .with_root_certificates(roots);
        let mut cfg = match identity {
            Some((cert, key)) => {
                b.with_client_auth_cert(parse_certs("client certificate", cert)?, parse_key(key)?)?
            }
            None => b.with_no_client_auth(),
        };
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Client {
            tls: TlsConnector::from(Arc::new(cfg)),
            host,
            port,
            server_name,
            source: None,
        })
    }

    /// A client for an appliance's first-boot ceremony: no client
    /// certificate, and the server is trusted only if its certificate's
    /// SHA-256 (hex, as printed on the appliance's console) is `sha256_hex`.
    /// The TLS 1.3 handshake signature is still verified against that
    /// certificate's key.
    pub fn pinned(addr: &str, sha256_hex: &str) -> Result<Client, ClientError> {
        let (host, port, server_name) = parse_addr(addr)?;
        let pin = parse_fingerprint(sha256_hex)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(PinnedVerifier {
            pin,
            algs: provider.signature_verification_algorithms,
        });
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Client {
            tls: TlsConnector::from(Arc::new(cfg)),
            host,
            port,
            server_name,
            source: None,
        })
    }

    /// Same, reading PEM files.
    pub fn from_files(
        addr: &str,
        ca: &std::path::Path,
        identity: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Result<Client, ClientError> {
        let ca = read(ca)?;
        match identity {
            Some((c, k)) => {
                let cert = read(c)?;
                let key = zeroize::Zeroizing::new(read(k)?);
                Client::new(addr, &ca, Some((&cert, &key)))
            }
            None => Client::new(addr, &ca, None),
        }
    }

    /// Connections from this local address (e.g. another 127.0.0.x, to
    /// test limits per source address).
    pub fn from_source(mut self, source: std::net::IpAddr) -> Client {
        self.source = Some(source);
        self
    }

    async fn tcp(&self, target: &str) -> std::io::Result<TcpStream> {
        let Some(source) = self.source else {
            return TcpStream::connect((self.host.as_str(), self.port)).await;
        };
        let addr = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await?
            .find(|a| a.is_ipv4() == source.is_ipv4())
            .ok_or_else(|| {
                std::io::Error::other(format!("{target}: no address of the source's family"))
            })?;
        let socket = if source.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.bind(std::net::SocketAddr::new(source, 0))?;
        socket.connect(addr).await
    }

    /// Opens a keep-alive connection.
    pub async fn connect(&self) -> Result<Conn, ClientError> {
        let target = format!("{}:{}", self.host, self.port);
        let tcp = self
            .tcp(&target)
            .await
            .map_err(|e| ClientError::Connect(target.clone(), e))?;
        self.connect_over(tcp).await
    }

    /// A keep-alive connection over a TCP stream the caller opened (its own
    /// socket options, a proxy, a slow link).
    pub async fn connect_over(&self, tcp: TcpStream) -> Result<Conn, ClientError> {
        let target = format!("{}:{}", self.host, self.port);
        let _ = tcp.set_nodelay(true);
        let tls = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| ClientError::Handshake(target.clone(), e))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            sender,
            host: target,
        })
    }

    /// One request on a fresh connection.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Response, ClientError> {
        self.connect().await?.request(method, path, body).await
    }
}

/// A SHA-256 fingerprint: 64 hex digits, optionally separated by colons.
/// The system clock moved by an offset, for certificate validity.
#[derive(Debug)]
struct OffsetTime(i64);

impl rustls::time_provider::TimeProvider for OffsetTime {
    fn current_time(&self) -> Option<rustls_pki_types::UnixTime> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs();
        let t = now.checked_add_signed(self.0)?;
        Some(rustls_pki_types::UnixTime::since_unix_epoch(
            std::time::Duration::from_secs(t),
        ))
    }
}

pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], ClientError> {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    let bad = || {
        ClientError::Request(format!(
            "fingerprint {text:?} is not a SHA-256 (64 hex digits)"
        ))
    };
    if hex.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
            .map_err(|_| bad())?;
    }
    Ok(out)
}

/// Trusts exactly one server certificate, by SHA-256.
#[derive(Debug)]
struct PinnedVerifier {
    pin: [u8; 32],
    algs: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::client::danger::ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use subtle::ConstantTimeEq as _;
        let got = ring_sha256(end_entity.as_ref());
        if bool::from(got.ct_eq(&self.pin)) {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the appliance's certificate does not match the pinned fingerprint".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not accepted".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algs.supported_schemes()
    }
}

fn ring_sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).into()
}

/// One keep-alive connection.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl Conn {
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Response, ClientError> {
        self.request_with(method, path, &[], body).await
    }

    /// A request with a raw body (e.g. an update bundle).
    pub async fn request_bytes(
        &mut self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<Response, ClientError> {
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.host)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(body))
            .map_err(|e| ClientError::Request(e.to_string()))?;
        self.send(req).await
    }

    /// A request with extra headers.
    pub async fn request_with(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&serde_json::Value>,
    ) -> Result<Response, ClientError> {
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.host);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let payload = match body {
            Some(v) => {
                b = b.header(hyper::header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(v).map_err(|e| ClientError::Request(e.to_string()))?)
            }
            None => Bytes::new(),
        };
        let req = b
            .body(Full::new(payload))
            .map_err(|e| ClientError::Request(e.to_string()))?;
        self.send(req).await
    }

    /// Sends one request and collects the whole (zeroized-on-drop) body.
    async fn send(&mut self, req: hyper::Request<Full<Bytes>>) -> Result<Response, ClientError> {
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let cert_expires_in = resp
            .headers()
            .get("vault-certificate-expires-in")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let retry_after = resp
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Response {
            status,
            body: zeroize::Zeroizing::new(body.to_vec()),
            cert_expires_in,
            retry_after,
        })
    }
}
