//! Serving before there is a vault to serve: the first-boot ceremony and the
//! status-only server of an appliance whose data volume stayed locked.
//!
//! * **First boot** (`[appliance] bootstrap = true`, no vault yet): vaultd
//!   makes a one-time TLS identity in memory (never written to disk) and a
//!   one-time init code, prints the certificate's SHA-256 and the code on its
//!   console (stdout), and serves only `GET /v1/sys/health`,
//!   `GET /v1/sys/seal-status` and `POST /v1/sys/init` over TLS 1.3 without
//!   client certificates. The operator pins the fingerprint
//!   (`vaultctl init --pin-fingerprint`) so nobody in the middle can answer in
//!   the appliance's place, and proves presence at the console with the code.
//!   A successful init creates the vault (root key sealed, CA in the token,
//!   server certificate) and issues the first admin certificate for the
//!   operator's CSR; the bootstrap listener then drains and the identity is
//!   dropped, and the normal mTLS server starts on the same socket. Five
//!   wrong codes from one source address lock that address out for this
//!   boot; 1,000 from all addresses burn the code: nothing more is accepted
//!   until a restart prints a new one.
//! * **Locked data volume** (`[appliance] data_volume` not mounted: the TPM
//!   did not release the volume key, e.g. the disk was moved to another
//!   machine): vaultd serves the same status endpoints, sealed with
//!   `tpm_data_volume_locked`, and writes nothing.

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vault_store::Backend as _;

use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use zeroize::Zeroizing;

use crate::config::Config;
use crate::init::{initialize_with, FirstAdmin, InitError, InitReport};
use crate::start::StartError;

/// Wrong init codes from one source address before that address is
/// refused for the rest of this boot (`init_source_locked`).
pub const MAX_CODE_FAILURES_PER_SOURCE: u32 = 5;

/// Wrong init codes from all addresses together before the code is burnt.
/// The code has 100 bits, so guessing is hopeless; the limits are there so
/// that a flood of wrong codes from the network cannot burn the operator's
/// code (one address is locked out after 5), while a flood from many
/// addresses still ends in a burnt code, not in unbounded guesses.
pub const MAX_CODE_FAILURES: u32 = 1000;

/// Why the data volume counts as locked, if it does.
pub fn data_volume_locked(config: &Config) -> Option<String> {
    let vol = config.appliance.as_ref()?.data_volume.as_ref()?;
    match is_mount_point(vol) {
        Ok(true) => None,
        Ok(false) => Some(format!(
            "the data volume {} is not mounted: the TPM did not release its key \
             (another TPM, or this boot's measurements differ from the ones it is bound to)",
            vol.display()
        )),
        Err(e) => Some(format!(
            "the data volume {} cannot be examined: {e}",
            vol.display()
        )),
    }
}

/// True when `p` is the root of a mounted file system.
fn is_mount_point(p: &Path) -> std::io::Result<bool> {
    let here = std::fs::metadata(p)?;
    let parent = std::fs::metadata(p.join(".."))?;
    Ok(here.dev() != parent.dev() || here.ino() == parent.ino())
}

/// True when the vault exists (its database holds a sealed root key).
pub fn is_initialized(config: &Config) -> Result<bool, StartError> {
    let db = config.db_path();
    if !db.exists() {
        return Ok(false);
    }
    let store = vault_store::Store::open(&db, vault_store::StoreOptions::default())?;
    Ok(store.get_meta("sealed_root")?.is_some())
}

/// The one-time bootstrap identity: certificate DER, key PEM, fingerprint.
struct Identity {
    cert_der: Vec<u8>,
    key_pem: Zeroizing<String>,
    fingerprint: String,
}

fn identity(config: &Config) -> Result<Identity, StartError> {
    let err = |e: rcgen::Error| StartError::Bootstrap(format!("bootstrap identity: {e}"));
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err)?;
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    names.extend(config.tls.server_names.iter().cloned());
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    for n in &names {
        p.subject_alt_names
            .push(match n.parse::<std::net::IpAddr>() {
                Ok(ip) => rcgen::SanType::IpAddress(ip),
                Err(_) => rcgen::SanType::DnsName(n.clone().try_into().map_err(err)?),
            });
    }
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "vaultd bootstrap (one-time)");
    p.distinguished_name = dn;
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::minutes(5);
    p.not_after = now + time::Duration::days(30);
    let cert = p.self_signed(&key).map_err(err)?;
    let der = cert.der().to_vec();
    Ok(Identity {
        fingerprint: crate::ca::fingerprint(&der),
        cert_der: der,
        key_pem: Zeroizing::new(key.serialize_pem()),
    })
}

/// A one-time init code: 100 bits as 20 Crockford base32 symbols in groups
/// of five.
fn init_code() -> Zeroizing<String> {
    use rand::Rng as _;
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut rng = rand::rngs::OsRng;
    let mut s = Zeroizing::new(String::with_capacity(23));
    for i in 0..20 {
        if i > 0 && i % 5 == 0 {
            s.push('-');
        }
        s.push(ALPHABET[rng.gen_range(0..32)] as char);
    }
    s
}

/// Uppercase, dashes and spaces removed, Crockford's look-alikes mapped.
fn normalise_code(c: &str) -> Zeroizing<String> {
    Zeroizing::new(
        c.chars()
            .filter(|c| !matches!(c, '-' | ' '))
            .map(|c| match c.to_ascii_uppercase() {
                'O' => '0',
                'I' | 'L' => '1',
                u => u,
            })
            .collect(),
    )
}

enum Mode {
    /// Waiting for the first-boot ceremony.
    Uninitialised,
    /// The data volume is locked: status only.
    Locked(String),
}

/// The state of a bootstrap server, shared by its handlers
/// ([`crate::api::bootstrap`]).
pub struct Boot {
    config: Config,
    mode: Mode,
    /// None once burnt or used.
    code: Mutex<Option<Zeroizing<String>>>,
    failures: AtomicU32,
    /// Wrong codes per source address.
    failures_by_source: Mutex<std::collections::HashMap<std::net::IpAddr, u32>>,
    init_lock: tokio::sync::Mutex<()>,
    done: tokio::sync::watch::Sender<bool>,
}

/// Why a first-boot init was refused.
#[derive(Debug)]
pub enum InitRefused {
    /// Not waiting for the ceremony (the data volume is locked): the
    /// reason's code and message.
    NotServed(&'static str, String),
    /// The code is no longer valid (used, or too many wrong codes).
    CodeBurnt,
    /// A wrong code.
    CodeInvalid,
    /// This source address sent too many wrong codes.
    SourceLocked,
    /// The init task did not finish.
    TaskFailed,
    /// The ceremony itself failed.
    Init(InitError),
}

impl Boot {
    /// The seal reason this server reports: its code and message.
    pub fn reason(&self) -> (&'static str, String) {
        match &self.mode {
            Mode::Uninitialised => (
                "not_initialized",
                "the vault is not initialised: run the first-boot ceremony \
                 (vaultctl init --pin-fingerprint ... --code ...)"
                    .into(),
            ),
            Mode::Locked(m) => ("tpm_data_volume_locked", m.clone()),
        }
    }

    /// False while waiting for the first-boot ceremony.
    pub fn initialised(&self) -> bool {
        !matches!(self.mode, Mode::Uninitialised)
    }

    /// The configured seal mode.
    pub fn seal_mode(&self) -> &str {
        &self.config.seal.mode
    }

    /// The first-boot ceremony: checks the one-time code (five wrong codes
    /// burn it), creates the vault and issues the first admin certificate
    /// for `csr_pem`. On success the code is spent and the bootstrap server
    /// is told to end.
    pub async fn initialise(
        &self,
        source: std::net::IpAddr,
        code: &str,
        admin_name: &str,
        csr_pem: String,
    ) -> Result<InitReport, InitRefused> {
        if !matches!(self.mode, Mode::Uninitialised) {
            let (code, message) = self.reason();
            return Err(InitRefused::NotServed(code, message));
        }
        let _one_at_a_time = self.init_lock.lock().await;
        {
            let mut slot = self.code.lock().unwrap_or_else(|e| e.into_inner());
            let Some(expected) = slot.as_ref() else {
                return Err(InitRefused::CodeBurnt);
            };
            let mut by_source = self
                .failures_by_source
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let mine = by_source.entry(source).or_insert(0);
            if *mine >= MAX_CODE_FAILURES_PER_SOURCE {
                return Err(InitRefused::SourceLocked);
            }
            let ok = {
                use subtle::ConstantTimeEq as _;
                let a = normalise_code(expected);
                let g = normalise_code(code);
                a.len() == g.len() && bool::from(a.as_bytes().ct_eq(g.as_bytes()))
            };
            if !ok {
                *mine += 1;
                let n = self.failures.fetch_add(1, Ordering::SeqCst) + 1;
                tracing::warn!(failures = n, %source, from_source = *mine, "wrong init code");
                if *mine == MAX_CODE_FAILURES_PER_SOURCE {
                    console(&format!(
                        "vaultd: {MAX_CODE_FAILURES_PER_SOURCE} wrong init codes from {source}: \
                         that address is refused until a restart"
                    ));
                }
                if n >= MAX_CODE_FAILURES {
                    *slot = None;
                    console(&format!(
                        "vaultd: {MAX_CODE_FAILURES} wrong init codes: the code is burnt; \
                         restart the appliance for a new one"
                    ));
                }
                return Err(InitRefused::CodeInvalid);
            }
        }
        let config = self.config.clone();
        let name = admin_name.to_owned();
        let r = tokio::task::spawn_blocking(move || {
            initialize_with(&config, FirstAdmin::Csr(&csr_pem), &name)
        })
        .await
        .map_err(|_| InitRefused::TaskFailed)?;
        let report = r.map_err(InitRefused::Init)?;
        // The code is spent, success or not of what follows.
        *self.code.lock().unwrap_or_else(|e| e.into_inner()) = None;
        console(&format!(
            "vaultd: initialised by the first-boot ceremony (appliance {}, admin {} sha256 {})",
            report.appliance_id, admin_name, report.admin_fingerprint
        ));
        let _ = self.done.send(true);
        Ok(report)
    }
}

/// A status line for the operator: stdout, which the appliance's unit sends
/// to the serial console (and not to the journal).
pub fn console(line: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The remote address of a bootstrap connection (a request extension).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// How a bootstrap server ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The vault was initialised: start the normal server.
    Initialised,
    /// The shutdown signal came first.
    Stopped,
}

/// Serves the first-boot ceremony until the vault is initialised or
/// `shutdown` completes. `app` makes the HTTP routes
/// ([`crate::api::bootstrap::router`]).
pub async fn serve_init(
    config: &Config,
    listener: &TcpListener,
    app: impl FnOnce(Arc<Boot>) -> Router,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Ended, StartError> {
    serve_boot(config, listener, Mode::Uninitialised, app, shutdown).await
}

/// Serves status only (sealed, `tpm_data_volume_locked`) until `shutdown`.
pub async fn serve_locked(
    config: &Config,
    listener: &TcpListener,
    why: String,
    app: impl FnOnce(Arc<Boot>) -> Router,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StartError> {
    serve_boot(config, listener, Mode::Locked(why), app, shutdown)
        .await
        .map(drop)
}

async fn serve_boot(
    config: &Config,
    listener: &TcpListener,
    mode: Mode,
    app: impl FnOnce(Arc<Boot>) -> Router,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Ended, StartError> {
    let id = identity(config)?;
    let addr: SocketAddr = listener
        .local_addr()
        .map_err(|e| StartError::Io("listener".into(), e))?;
    let code = match &mode {
        Mode::Uninitialised => {
            let c = init_code();
            console("vaultd: NOT INITIALISED - first-boot ceremony");
            console(&format!(
                "vaultd: bootstrap TLS certificate sha256 {}",
                id.fingerprint
            ));
            console(&format!("vaultd: one-time init code {}", c.as_str()));
            console(&format!(
                "vaultd: from your workstation: vaultctl init --addr https://<appliance>:{} \
                 --pin-fingerprint {} --code <code> --out <dir>",
                addr.port(),
                id.fingerprint
            ));
            tracing::info!(%addr, fingerprint = %id.fingerprint, "waiting for the first-boot ceremony (the init code is on the console)");
            Some(c)
        }
        Mode::Locked(why) => {
            console(&format!("vaultd: SEALED [tpm_data_volume_locked] {why}"));
            console(&format!(
                "vaultd: status-only TLS certificate sha256 {}",
                id.fingerprint
            ));
            tracing::error!(%addr, reason = %why, "data volume locked: serving status only");
            None
        }
    };
    let provider = crate::tls::provider();
    let mut tls = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(crate::tls::TlsError::from)?
        .with_no_client_auth()
        .with_single_cert(
            vec![rustls_pki_types::CertificateDer::from(id.cert_der.clone())],
            crate::tls::key("bootstrap key", &id.key_pem)?,
        )
        .map_err(crate::tls::TlsError::from)?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let (done_tx, mut done_rx) = tokio::sync::watch::channel(false);
    let boot = Arc::new(Boot {
        config: config.clone(),
        mode,
        code: Mutex::new(code),
        failures: AtomicU32::new(0),
        failures_by_source: Mutex::new(std::collections::HashMap::new()),
        init_lock: tokio::sync::Mutex::new(()),
        done: done_tx,
    });
    let app = app(boot.clone());
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    drop(id);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // The first-boot listener: at most 64 handshakes pending, 8 per source
    // address (a new one evicts its source's oldest, or the oldest), 64
    // connections past the handshake.
    let gate = crate::tls::HandshakeGate::new(64, 8, Duration::from_secs(5));
    let slots = Arc::new(tokio::sync::Semaphore::new(64));
    tokio::pin!(shutdown);
    let ended = loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break Ended::Stopped,
            _ = done_rx.wait_for(|d| *d) => break Ended::Initialised,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    if !(crate::tls::out_of_fds(&e) && gate.evict_oldest()) {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        let (gate, slots) = (gate.clone(), slots.clone());
        tokio::spawn(async move {
            let stream = match gate.run(peer.ip(), acceptor.accept(tcp)).await {
                Ok(s) => s,
                Err(crate::tls::HandshakeEnd::Refused(e)) => {
                    tracing::warn!(%peer, error = %e, "bootstrap TLS handshake refused");
                    return;
                }
                Err(_) => return,
            };
            let Ok(_permit) = slots.try_acquire_owned() else {
                return;
            };
            let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(PeerAddr(peer));
                app.clone().oneshot(req)
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), svc);
            let _ = watcher.watch(conn).await;
        });
    };
    // Let the init response reach the operator before the identity goes.
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
    }
    drop(acceptor);
    if ended == Ended::Initialised {
        console("vaultd: bootstrap identity destroyed; starting the mTLS API");
    }
    Ok(ended)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_fresh_and_normalise() {
        let a = init_code();
        let b = init_code();
        assert_ne!(a.as_str(), b.as_str());
        assert_eq!(a.len(), 23);
        assert_eq!(a.matches('-').count(), 3);
        let lower = a.to_ascii_lowercase().replace('-', " ");
        assert_eq!(normalise_code(&lower).as_str(), normalise_code(&a).as_str());
        assert_eq!(normalise_code("oIl-0").as_str(), "0110");
    }

    #[test]
    fn mount_points() {
        assert!(is_mount_point(Path::new("/")).unwrap());
        let d = tempfile::tempdir().unwrap();
        // A fresh directory on the same file system is not a mount point.
        let sub = d.path().join("x");
        std::fs::create_dir(&sub).unwrap();
        assert!(!is_mount_point(&sub).unwrap());
        assert!(is_mount_point(&d.path().join("missing")).is_err());
    }
}
