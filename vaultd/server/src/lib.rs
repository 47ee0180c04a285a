//! vaultd: the vault daemon.
//!
//! The caller owns the listener and the shutdown signal ([`run`]), so tests
//! bind port 0 and stop the server when they like.
//!
//! # Layout
//!
//! * [`config`]: the TOML configuration and its validation.
//! * [`init`]: the init ceremony (root key, seal, CA, first admin).
//! * [`recover`]: custodian recovery on a new box (`vaultd recover begin|finish`).
//! * [`unseal`]: opening the configured seal devices and unsealing.
//! * [`state`]: sealed/unsealed state, keyring, principal cache, clock.
//! * [`ca`]: the internal CA (key in the PKCS#11 token) and certificate parsing.
//! * [`tls`]: rustls mTLS configuration, the connection loop and the
//!   verified client certificate of a connection ([`tls::Peer`]).
//! * [`api`]: the HTTP layer: the `/v1` router, handlers, extractors,
//!   `ApiError`, OpenAPI document.
//! * [`audit`]: audit entry drafts, value HMACs, signed checkpoints.
//! * [`rotation`]: keyring rotation and background rewrap.
//! * [`leases`]: the reaper that ends checkouts at their TTL.
//! * [`update`]: A/B image updates: staging, verification, installation,
//!   and what each boot records.
//! * [`bootstrap`]: the first-boot ceremony and the status-only server of a
//!   locked data volume (their TLS servers; the routes are in [`api`]).
//! * [`metrics`]: Prometheus counters.
//! * [`siem`]: background export of the audit log (JSON lines, syslog).
//! * [`timefmt`]: RFC 3339 timestamps.
//!
//! Layering: [`api`] depends on the domain modules above and none of them
//! depends on [`api`]; this file wires them together and no module depends
//! on it ([`StartError`] lives in its own module). `tests/module_graph.rs`
//! checks both, and that the module graph has no cycle.

#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod bootstrap;
pub mod ca;
pub mod config;
pub mod init;
pub mod leases;
pub mod metrics;
pub mod recover;
pub mod rotate;
pub mod rotation;
pub mod servedcert;
pub mod servercert;
pub mod siem;
mod start;
pub mod state;
pub mod timefmt;
pub mod tls;
pub mod unseal;
pub mod update;

pub use start::StartError;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use vault_store::Backend as _;

use tokio::net::TcpListener;
use vault_store::{Store, StoreError, StoreOptions};

use crate::config::Config;
use crate::state::{AppState, SealedReason, Vault};

/// Yubico's PIV attestation roots (see the comments in the file for
/// fingerprints and sources).
pub const YUBICO_PIV_ROOTS: &str = include_str!("yubico-piv-roots.pem");

/// DER certificates from PEM text; at least one, every block a certificate.
pub fn pem_certificates(text: &str, what: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for item in rustls_pemfile::read_all(&mut text.as_bytes()) {
        match item {
            Ok(rustls_pemfile::Item::X509Certificate(der)) => out.push(der.to_vec()),
            Ok(_) => {
                return Err(format!(
                    "{what}: contains something other than certificates"
                ))
            }
            Err(e) => return Err(format!("{what}: not PEM: {e}")),
        }
    }
    if out.is_empty() {
        return Err(format!("{what}: no certificate found"));
    }
    for der in &out {
        x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("{what}: a certificate does not parse: {e}"))?;
    }
    Ok(out)
}

/// The configured PIV attestation roots.
pub fn load_attestation_roots(cfg: &config::CustodianConfig) -> Result<Vec<Vec<u8>>, StartError> {
    let mut roots = Vec::new();
    if cfg.trust_yubico_roots {
        roots.extend(
            pem_certificates(YUBICO_PIV_ROOTS, "built-in Yubico roots")
                .map_err(StartError::AttestationRoots)?,
        );
    }
    for path in &cfg.attestation_roots {
        let text = std::fs::read_to_string(path)
            .map_err(|e| StartError::Io(path.display().to_string(), e))?;
        roots.extend(
            pem_certificates(&text, &path.display().to_string())
                .map_err(StartError::AttestationRoots)?,
        );
    }
    Ok(roots)
}

fn meta_string(store: &Store, key: &str) -> Result<String, StartError> {
    let v = store
        .get_meta(key)?
        .ok_or_else(|| StartError::Store(StoreError::Corrupt(format!("meta {key} missing"))))?;
    String::from_utf8(v)
        .map_err(|_| StartError::Store(StoreError::Corrupt(format!("meta {key} is not UTF-8"))))
}

/// Opens the store and builds the (sealed) state.
pub fn build_state(config: Config) -> Result<Arc<AppState>, StartError> {
    let db = config.db_path();
    if !db.exists() {
        return Err(StartError::NotInitialized(db.display().to_string()));
    }
    let store = Store::open(&db, StoreOptions::default())?;
    if store.get_meta("sealed_root")?.is_none() {
        return Err(StartError::NotInitialized(db.display().to_string()));
    }
    let appliance_id = meta_string(&store, "appliance_id")?;
    let ca_pem = meta_string(&store, "ca_pem")?;
    let audit_spki = store
        .get_meta("audit_spki")?
        .ok_or_else(|| StartError::Store(StoreError::Corrupt("meta audit_spki missing".into())))?;
    let origin = audit::origin(&appliance_id);
    audit::check_log_against_checkpoint(&store, &origin, &audit_spki)?;
    let attestation_roots = load_attestation_roots(&config.custodians)?;
    let state = Arc::new(AppState {
        config,
        store: Arc::new(store),
        vault: RwLock::new(Vault::Sealed(SealedReason {
            code: "starting".into(),
            message: "the daemon is starting".into(),
            since: 0,
        })),
        principals: RwLock::new(HashMap::new()),
        clock: state::clock_from_env(),
        metrics: Default::default(),
        server_cert: Default::default(),
        appliance_id,
        ca_pem,
        origin,
        audit_spki,
        attestation_roots,
        unseal_lock: tokio::sync::Mutex::new(()),
        rewrap_running: AtomicBool::new(false),
    });
    state
        .metrics
        .sealed
        .store(1, std::sync::atomic::Ordering::Relaxed);
    state.reload_principals()?;
    Ok(state)
}

/// The daemon's `serve`: on an appliance whose data volume is locked, status
/// only; on an uninitialised appliance with `[appliance] bootstrap`, the
/// first-boot ceremony first; then [`run`].
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    let stop = move || {
        let mut rx = rx.clone();
        async move {
            let _ = rx.wait_for(|v| *v).await;
        }
    };
    if let Some(why) = bootstrap::data_volume_locked(&config) {
        return bootstrap::serve_locked(&config, &listener, why, api::bootstrap::router, stop())
            .await;
    }
    let bootstrap = config.appliance.as_ref().is_some_and(|a| a.bootstrap);
    if bootstrap && !bootstrap::is_initialized(&config)? {
        match bootstrap::serve_init(&config, &listener, api::bootstrap::router, stop()).await? {
            bootstrap::Ended::Initialised => {}
            bootstrap::Ended::Stopped => return Ok(()),
        }
    }
    run(config, listener, stop()).await
}

/// Unseals (once, automatically) and serves until `shutdown` completes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let state = build_state(config)?;
    let (server_cert, server_key) = servercert::load(&state.config)
        .map_err(|e| StartError::Io(state.config.server_cert_path().display().to_string(), e))?;
    state.server_cert.set(&server_cert, &server_key)?;
    drop(server_key);
    let tls = tls::server_config(
        &state.ca_pem,
        state.server_cert.clone(),
        state::TlsTime(state.clock.clone()),
    )?;

    // The first entries of every run: the daemon started with this configuration.
    let who = audit::Who::system();
    let mut start = who.draft(
        &state,
        "daemon.start",
        "",
        vault_core::audit::entry::Outcome::Success,
        "",
    );
    start
        .details
        .insert("config_sha256".into(), state.config.source_sha256.clone());
    start
        .details
        .insert("seal_mode".into(), state.config.seal.mode.clone());
    start
        .details
        .insert("version".into(), env!("CARGO_PKG_VERSION").into());
    state.store.audit(start)?;
    update::audit_boot(&state)?;

    let s = state.clone();
    let unsealed =
        tokio::task::spawn_blocking(move || unseal::try_unseal(&s, &audit::Who::system()).is_ok())
            .await
            .unwrap_or(false);
    if unsealed {
        rotation::spawn_rewrap(state.clone());
        bootstrap::console(&format!(
            "vaultd: UNSEALED, serving the mTLS API on {} (appliance {})",
            listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default(),
            state.appliance_id
        ));
    } else {
        let (code, message) = state.sealed_reason();
        bootstrap::console(&format!("vaultd: SEALED [{code}] {message}"));
    }
    update::spawn_watcher(state.clone());
    audit::spawn_checkpointer(state.clone());
    leases::spawn_reaper(state.clone());
    rotate::spawn(state.clone());
    servercert::spawn_renewer(state.clone());
    let _siem = siem::spawn(state.clone()); // dropped last: drains and stops the sinks
    let addr = listener
        .local_addr()
        .map_err(|e| StartError::Io("listener".into(), e))?;
    tracing::info!(%addr, sealed = !unsealed, "vaultd listening (mTLS)");
    let app = api::router(state.clone());
    tls::serve(listener, tls, app, state.clone(), shutdown).await;
    // On the way out: record the seal, sign a checkpoint covering it (the
    // signer exists only while unsealed), then drop the root key.
    let s = state.clone();
    let _ = tokio::task::spawn_blocking(move || {
        let r = s.store.audit(who.draft(
            &s,
            "sys.seal",
            "",
            vault_core::audit::entry::Outcome::Success,
            "",
        ));
        if let Err(e) = audit::checkpoint_now(&s) {
            tracing::warn!(error = %e, "no checkpoint at shutdown");
        }
        r
    })
    .await;
    state.set_sealed("stopped", "the daemon stopped".into());
    tracing::info!("vaultd stopped");
    Ok(())
}
