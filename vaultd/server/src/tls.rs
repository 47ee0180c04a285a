//! mTLS: rustls server configuration and the connection loop.
//!
//! TLS 1.3 only; a client certificate is required and must chain to the
//! appliance CA and be within its validity period (rustls/webpki). Refused
//! handshakes are logged with the peer address and rustls' reason and
//! counted in `/metrics`. The verified certificate's fingerprint travels
//! with every request of the connection as the [`Peer`] extension.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::ca::{parse_peer, PeerCert};
use crate::state::AppState;

/// The verified client certificate of a connection, inserted into every
/// request's extensions (read by the API's extractors and access log).
#[derive(Debug, Clone)]
pub struct Peer(pub Arc<PeerCert>);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}: no PEM certificate found")]
    NoCert(&'static str),
    #[error("{0}: no PEM private key found")]
    NoKey(&'static str),
    #[error("{0}: {1}")]
    Pem(&'static str, std::io::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(String),
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn certs(what: &'static str, pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(what, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCert(what));
    }
    Ok(certs)
}

pub fn key(what: &'static str, pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| TlsError::Pem(what, e))?
        .ok_or(TlsError::NoKey(what))
}

/// The server's rustls configuration.
pub fn server_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in certs("CA certificate", ca_pem)? {
        roots.add(c)?;
    }
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs("server certificate", cert_pem)?,
            key("server key", key_pem)?,
        )?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Connections whose TLS handshake has not finished yet.
///
/// An unauthenticated peer can open TCP connections and never speak TLS.
/// Such connections must not take the slots of clients with certificates:
/// they are held here, in a bounded pool of their own, and the connection
/// slots (`limits.max_connections`) are taken only once a handshake has
/// verified a client certificate. When the pool is full, a new connection
/// evicts the **oldest** pending one: a genuine client's handshake takes a
/// few milliseconds, so a flood of idle connections evicts itself, and an
/// attacker has to open connections faster than `max` per handshake time
/// to keep a client out. Each pending handshake also has a deadline.
pub struct HandshakeGate {
    max: usize,
    timeout: Duration,
    next: std::sync::atomic::AtomicU64,
    pending: std::sync::Mutex<std::collections::VecDeque<(u64, tokio::sync::oneshot::Sender<()>)>>,
}

/// Why a handshake did not finish.
#[derive(Debug)]
pub enum HandshakeEnd {
    Refused(std::io::Error),
    TimedOut,
    /// Evicted by a newer connection (the pool was full).
    Evicted,
}

impl std::fmt::Display for HandshakeEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeEnd::Refused(e) => write!(f, "TLS handshake refused: {e}"),
            HandshakeEnd::TimedOut => f.write_str("TLS handshake timed out"),
            HandshakeEnd::Evicted => {
                f.write_str("TLS handshake evicted by a newer connection (pool full)")
            }
        }
    }
}

impl HandshakeGate {
    pub fn new(max: usize, timeout: Duration) -> Arc<HandshakeGate> {
        Arc::new(HandshakeGate {
            max: max.max(1),
            timeout,
            next: std::sync::atomic::AtomicU64::new(0),
            pending: std::sync::Mutex::new(std::collections::VecDeque::new()),
        })
    }

    fn pending(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        std::collections::VecDeque<(u64, tokio::sync::oneshot::Sender<()>)>,
    > {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Handshakes in progress.
    pub fn len(&self) -> usize {
        self.pending().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Evicts the oldest pending handshake; false if there is none. (Also
    /// used when `accept` fails for want of file descriptors.)
    pub fn evict_oldest(&self) -> bool {
        match self.pending().pop_front() {
            Some((_, evict)) => {
                let _ = evict.send(());
                true
            }
            None => false,
        }
    }

    /// Runs `handshake` as a pending handshake: under the deadline, and
    /// until a newer connection evicts it.
    pub async fn run<T>(
        self: &Arc<Self>,
        handshake: impl Future<Output = std::io::Result<T>>,
    ) -> Result<T, HandshakeEnd> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, evicted) = tokio::sync::oneshot::channel();
        {
            let mut pending = self.pending();
            while pending.len() >= self.max {
                if let Some((_, old)) = pending.pop_front() {
                    let _ = old.send(());
                }
            }
            pending.push_back((id, tx));
        }
        let r = tokio::select! {
            r = tokio::time::timeout(self.timeout, handshake) => match r {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(e)) => Err(HandshakeEnd::Refused(e)),
                Err(_) => Err(HandshakeEnd::TimedOut),
            },
            _ = evicted => Err(HandshakeEnd::Evicted),
        };
        self.pending().retain(|(i, _)| *i != id);
        r
    }
}

/// Whether an `accept` error means the process is out of file descriptors.
pub fn out_of_fds(e: &std::io::Error) -> bool {
    // EMFILE (24) and ENFILE (23) on Linux.
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// Accepts connections until `shutdown` completes, then drains open
/// connections for up to 10 seconds.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(state.config.limits.max_connections));
    let limits = &state.config.limits;
    let gate = HandshakeGate::new(
        limits.max_handshakes,
        Duration::from_secs(limits.handshake_timeout_secs),
    );
    tokio::pin!(shutdown);
    loop {
        let (tcp, addr) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors: free one held by a pending
                    // handshake rather than wait for its deadline.
                    if !(out_of_fds(&e) && gate.evict_oldest()) {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let st = state.clone();
        let watcher = graceful.watcher();
        let gate = gate.clone();
        let slots = slots.clone();
        tokio::spawn(async move {
            let stream = match gate.run(acceptor.accept(tcp)).await {
                Ok(s) => s,
                Err(e) => {
                    st.metrics
                        .tls_handshake_failures
                        .fetch_add(1, Ordering::Relaxed);
                    match e {
                        // A flood evicts itself; one line per connection
                        // would be the flood again, in the log.
                        HandshakeEnd::Evicted => tracing::debug!(peer = %addr, "{e}"),
                        _ => tracing::warn!(peer = %addr, "{e}"),
                    }
                    return;
                }
            };
            // A connection slot only for a verified client certificate.
            let Ok(_permit) = slots.try_acquire_owned() else {
                tracing::warn!(peer = %addr, "connection limit reached; closing connection");
                return;
            };
            let peer = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| parse_peer(c.as_ref()));
            let Some(peer) = peer else {
                tracing::warn!(peer = %addr, "client certificate could not be parsed");
                return;
            };
            let peer = Peer(Arc::new(peer));
            st.metrics.connections_open.fetch_add(1, Ordering::Relaxed);
            let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(peer.clone());
                app.clone().oneshot(req)
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(peer = %addr, error = %e, "connection ended with an error");
            }
            st.metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => tracing::warn!("connections still open after 10 s; closing"),
    }
}

#[cfg(test)]
mod gate_tests {
    use super::*;

    #[tokio::test]
    async fn a_full_pool_evicts_the_oldest_pending_handshake() {
        let gate = HandshakeGate::new(2, Duration::from_secs(60));
        let never = || std::future::pending::<std::io::Result<()>>();
        let g = gate.clone();
        let first = tokio::spawn(async move { g.run(never()).await });
        while gate.is_empty() {
            tokio::task::yield_now().await;
        }
        let g = gate.clone();
        let second = tokio::spawn(async move { g.run(never()).await });
        while gate.len() < 2 {
            tokio::task::yield_now().await;
        }
        // A third connection: the first is evicted, the second still waits.
        let third = gate.run(async { Ok::<_, std::io::Error>(7) }).await;
        assert!(matches!(third, Ok(7)));
        assert!(matches!(first.await.unwrap(), Err(HandshakeEnd::Evicted)));
        assert!(!second.is_finished());
        assert_eq!(gate.len(), 1);
        assert!(gate.evict_oldest());
        assert!(matches!(second.await.unwrap(), Err(HandshakeEnd::Evicted)));
        assert!(gate.is_empty() && !gate.evict_oldest());
    }

    #[tokio::test]
    async fn a_handshake_past_its_deadline_ends() {
        let gate = HandshakeGate::new(4, Duration::from_millis(10));
        let r = gate
            .run(std::future::pending::<std::io::Result<()>>())
            .await;
        assert!(matches!(r, Err(HandshakeEnd::TimedOut)));
        assert!(gate.is_empty());
    }
}
