//! mTLS: rustls server configuration and the connection loop.
//!
//! TLS 1.3 only; a client certificate is required and must chain to the
//! appliance CA and be within its validity period (rustls/webpki). Refused
//! handshakes are logged with the peer address and rustls' reason and
//! counted in `/metrics`. The verified certificate's fingerprint travels
//! with every request of the connection as the [`Peer`] extension.

use std::future::Future;
use std::net::IpAddr;
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

/// The server's rustls configuration: client certificates verified
/// against the appliance CA at the daemon's time, the server certificate
/// from `server_cert`.
pub fn server_config(
    ca_pem: &str,
    server_cert: Arc<crate::servedcert::ServerCert>,
    time: crate::state::TlsTime,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in certs("CA certificate", ca_pem)? {
        roots.add(c)?;
    }
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut cfg = ServerConfig::builder_with_details(provider, Arc::new(time))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(server_cert);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Connections whose TLS handshake has not finished yet.
///
/// An unauthenticated peer can open TCP connections and never speak TLS.
/// Such connections must not take the slots of clients with certificates:
/// they are held here, in a bounded pool of their own, and the connection
/// slots (`limits.max_connections`) are taken only once a handshake has
/// verified a client certificate. Each source address may hold at most
/// `per_source` pending handshakes: its next connection evicts **its own**
/// oldest one, so a flood from one address churns only its own share and
/// never evicts another address's handshake. When the whole pool is full
/// (a flood from many addresses), a new connection evicts the oldest
/// pending one: a genuine client's handshake takes a few milliseconds, so
/// idle connections evict themselves. Each pending handshake also has a
/// deadline.
pub struct HandshakeGate {
    max: usize,
    per_source: usize,
    timeout: Duration,
    next: std::sync::atomic::AtomicU64,
    pending: std::sync::Mutex<std::collections::VecDeque<Pending>>,
    /// Failures since the last [`HandshakeGate::take_failures`].
    failures: std::sync::Mutex<FailureTally>,
}

struct Pending {
    id: u64,
    source: IpAddr,
    evict: tokio::sync::oneshot::Sender<()>,
}

/// Why a handshake did not finish.
#[derive(Debug)]
pub enum HandshakeEnd {
    Refused(std::io::Error),
    TimedOut,
    /// Evicted by a newer connection (its source's share, or the pool, was
    /// full).
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

/// Handshakes that did not finish over a period: counted, not logged one
/// by one, so that a flood costs one summary audit entry per period rather
/// than one durable write per connection.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FailureTally {
    pub refused: u64,
    pub timed_out: u64,
    pub evicted: u64,
    /// Failures per source address (at most [`FailureTally::MAX_SOURCES`]
    /// addresses; the rest are counted in `other_sources`).
    pub by_source: std::collections::HashMap<IpAddr, u64>,
    pub other_sources: u64,
}

impl FailureTally {
    pub const MAX_SOURCES: usize = 1024;

    pub fn total(&self) -> u64 {
        self.refused + self.timed_out + self.evicted
    }

    fn add(&mut self, source: IpAddr, end: &HandshakeEnd) {
        match end {
            HandshakeEnd::Refused(_) => self.refused += 1,
            HandshakeEnd::TimedOut => self.timed_out += 1,
            HandshakeEnd::Evicted => self.evicted += 1,
        }
        if let Some(n) = self.by_source.get_mut(&source) {
            *n += 1;
        } else if self.by_source.len() < Self::MAX_SOURCES {
            self.by_source.insert(source, 1);
        } else {
            self.other_sources += 1;
        }
    }

    /// The `n` sources with the most failures, most first.
    pub fn top_sources(&self, n: usize) -> Vec<(IpAddr, u64)> {
        let mut v: Vec<(IpAddr, u64)> = self.by_source.iter().map(|(a, n)| (*a, *n)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }
}

impl HandshakeGate {
    pub fn new(max: usize, per_source: usize, timeout: Duration) -> Arc<HandshakeGate> {
        Arc::new(HandshakeGate {
            max: max.max(1),
            per_source: per_source.max(1),
            timeout,
            next: std::sync::atomic::AtomicU64::new(0),
            pending: std::sync::Mutex::new(std::collections::VecDeque::new()),
            failures: std::sync::Mutex::new(FailureTally::default()),
        })
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<Pending>> {
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
            Some(p) => {
                let _ = p.evict.send(());
                true
            }
            None => false,
        }
    }

    /// The failures counted since the last call, and a fresh count.
    pub fn take_failures(&self) -> FailureTally {
        std::mem::take(&mut *self.failures.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Runs `handshake` of a connection from `source` as a pending
    /// handshake: under the deadline, and until a newer connection evicts
    /// it. A failure is counted for the summary.
    pub async fn run<T>(
        self: &Arc<Self>,
        source: IpAddr,
        handshake: impl Future<Output = std::io::Result<T>>,
    ) -> Result<T, HandshakeEnd> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, evicted) = tokio::sync::oneshot::channel();
        {
            let mut pending = self.pending();
            let mine = pending.iter().filter(|p| p.source == source).count();
            if mine >= self.per_source {
                if let Some(i) = pending.iter().position(|p| p.source == source) {
                    if let Some(old) = pending.remove(i) {
                        let _ = old.evict.send(());
                    }
                }
            }
            while pending.len() >= self.max {
                if let Some(old) = pending.pop_front() {
                    let _ = old.evict.send(());
                }
            }
            pending.push_back(Pending {
                id,
                source,
                evict: tx,
            });
        }
        let r = tokio::select! {
            r = tokio::time::timeout(self.timeout, handshake) => match r {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(e)) => Err(HandshakeEnd::Refused(e)),
                Err(_) => Err(HandshakeEnd::TimedOut),
            },
            _ = evicted => Err(HandshakeEnd::Evicted),
        };
        self.pending().retain(|p| p.id != id);
        if let Err(e) = &r {
            self.failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .add(source, e);
        }
        r
    }
}

/// Connections past the handshake per source address: at most `max` each,
/// so that one address with valid certificates cannot take every slot.
pub struct PerSource {
    max: usize,
    open: std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>,
}

/// A connection counted in [`PerSource`] until dropped.
pub struct SourceSlot {
    of: Arc<PerSource>,
    source: IpAddr,
}

impl PerSource {
    pub fn new(max: usize) -> Arc<PerSource> {
        Arc::new(PerSource {
            max: max.max(1),
            open: std::sync::Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// A slot for one more connection from `source`, if it has fewer than
    /// the maximum open.
    pub fn try_take(self: &Arc<Self>, source: IpAddr) -> Option<SourceSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(source).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            of: self.clone(),
            source,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.of.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.source);
            }
        }
    }
}

/// Every `audit.handshake_summary_secs`: one entry for the TLS handshakes
/// that failed since the last (refused, timed out, evicted; the busiest
/// sources), if any did. A flood of unauthenticated connections thus costs
/// one durable write per period, not one per connection.
pub fn spawn_handshake_summary(st: Arc<AppState>, gate: Arc<HandshakeGate>) {
    let every = Duration::from_secs(st.config.audit.handshake_summary_secs);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let t = gate.take_failures();
            if t.total() == 0 {
                continue;
            }
            let s = st.clone();
            let r =
                tokio::task::spawn_blocking(move || write_handshake_summary(&s, &t, every)).await;
            if let Ok(Err(e)) = r {
                tracing::error!(error = %e, "could not audit the TLS handshake failures summary");
            }
        }
    });
}

fn write_handshake_summary(
    st: &AppState,
    t: &FailureTally,
    every: Duration,
) -> Result<(), vault_store::StoreError> {
    let top = t
        .top_sources(10)
        .iter()
        .map(|(a, n)| format!("{a}={n}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut d = crate::audit::Who::system().draft(
        st,
        "tls.handshake_failures",
        "",
        vault_core::audit::entry::Outcome::Denied,
        "tls_handshake_failed",
    );
    for (k, v) in [
        ("failures", t.total().to_string()),
        ("refused", t.refused.to_string()),
        ("timed_out", t.timed_out.to_string()),
        ("evicted", t.evicted.to_string()),
        ("sources", t.by_source.len().to_string()),
        ("failures_of_uncounted_sources", t.other_sources.to_string()),
        ("top_sources", top),
        ("period_secs", every.as_secs().to_string()),
    ] {
        d.details.insert(k.into(), v);
    }
    st.store.audit(d)?;
    Ok(())
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
        limits.max_handshakes_per_source,
        Duration::from_secs(limits.handshake_timeout_secs),
    );
    let per_source = PerSource::new(limits.max_connections_per_source);
    spawn_handshake_summary(state.clone(), gate.clone());
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
        let per_source = per_source.clone();
        tokio::spawn(async move {
            let stream = match gate.run(addr.ip(), acceptor.accept(tcp)).await {
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
            let Some(_source_slot) = per_source.try_take(addr.ip()) else {
                tracing::warn!(peer = %addr, "connection limit of this address reached; closing connection");
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

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 3));

    #[tokio::test]
    async fn a_flood_from_one_address_evicts_only_its_own_handshakes() {
        let gate = HandshakeGate::new(8, 2, Duration::from_secs(60));
        let never = || std::future::pending::<std::io::Result<()>>();
        // A client from B is mid-handshake.
        let g = gate.clone();
        let client = tokio::spawn(async move { g.run(B, never()).await });
        while gate.is_empty() {
            tokio::task::yield_now().await;
        }
        // A floods: 100 connections that never finish.
        let mut flood = Vec::new();
        for _ in 0..100 {
            let g = gate.clone();
            flood.push(tokio::spawn(async move { g.run(A, never()).await }));
            tokio::task::yield_now().await;
        }
        while gate.len() < 3 {
            tokio::task::yield_now().await;
        }
        // A holds its share of 2; B's handshake was never evicted.
        assert_eq!(gate.len(), 3);
        assert!(!client.is_finished());
        let mut evicted = 0;
        for f in flood {
            if f.is_finished() {
                assert!(matches!(f.await.unwrap(), Err(HandshakeEnd::Evicted)));
                evicted += 1;
            } else {
                f.abort();
            }
        }
        assert_eq!(evicted, 98);
        let t = gate.take_failures();
        assert_eq!((t.evicted, t.by_source.get(&A).copied()), (98, Some(98)));
        assert_eq!(t.top_sources(1), [(A, 98)]);
        assert_eq!(gate.take_failures(), FailureTally::default(), "taken");
        client.abort();
    }

    #[test]
    fn connections_past_the_handshake_are_capped_per_address() {
        let ps = PerSource::new(2);
        let a1 = ps.try_take(A).unwrap();
        let _a2 = ps.try_take(A).unwrap();
        assert!(ps.try_take(A).is_none());
        assert!(ps.try_take(B).is_some());
        drop(a1);
        assert!(ps.try_take(A).is_some());
    }

    #[tokio::test]
    async fn a_full_pool_evicts_the_oldest_pending_handshake() {
        let gate = HandshakeGate::new(2, 2, Duration::from_secs(60));
        let never = || std::future::pending::<std::io::Result<()>>();
        let g = gate.clone();
        let first = tokio::spawn(async move { g.run(A, never()).await });
        while gate.is_empty() {
            tokio::task::yield_now().await;
        }
        let g = gate.clone();
        let second = tokio::spawn(async move { g.run(A, never()).await });
        while gate.len() < 2 {
            tokio::task::yield_now().await;
        }
        // A third connection: the first is evicted, the second still waits.
        let third = gate.run(B, async { Ok::<_, std::io::Error>(7) }).await;
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
        let gate = HandshakeGate::new(4, 4, Duration::from_millis(10));
        let r = gate
            .run(A, std::future::pending::<std::io::Result<()>>())
            .await;
        assert!(matches!(r, Err(HandshakeEnd::TimedOut)));
        assert!(gate.is_empty());
        assert_eq!(gate.take_failures().timed_out, 1);
    }
}
