//! The init ceremony: root key, seal, keyring, CA, server and first admin
//! certificates. Runs on the appliance with access to its TPM and token.
//!
//! Order matters: every file is written first and the database's `Init`
//! record last, so an interrupted ceremony leaves an uninitialised vault that
//! can simply be initialised again, never a half-initialised one.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use vault_store::Backend as _;

use time::{Duration, OffsetDateTime};
use vault_core::keyring::KeyringVersion;
use vault_core::keys::RootKey;
use vault_core::policy::{validate_name, Role};
use vault_core::seal::{seal_root, unseal_root, Seal, SealKind, SealProvider, SealedRoot};
use vault_store::{AuditDrafts, PrincipalRow, Store, StoreError, StoreOptions, WriteOp};

use crate::ca;
use crate::config::Config;
use crate::unseal::{open_ca, ConfigProvider};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InitError {
    #[error("the vault is already initialised ({0})")]
    AlreadyInitialized(String),
    #[error("seal: {0} [{code}]", code = .0.code())]
    Seal(#[from] vault_core::seal::SealError),
    #[error("seal check after sealing failed: {0}")]
    SealCheck(String),
    #[error("CA: {0}")]
    Ca(String),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("the admin's certificate request is invalid: {0}")]
    BadCsr(String),
    #[error("invalid admin name {0:?}")]
    BadName(String),
    #[error("the vault at {0} is not initialised: there is nothing to recover")]
    NotInitialized(String),
    #[error("audit checkpoint: {0}")]
    Checkpoint(String),
}

/// What the ceremony produced (all public).
#[derive(Debug)]
pub struct InitReport {
    pub appliance_id: String,
    pub seal_mode: String,
    pub ca_cert: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    pub admin_fingerprint: String,
    /// The first admin's certificate (PEM).
    pub admin_cert_pem: String,
    /// The CA certificate (PEM).
    pub ca_pem: String,
}

/// Where the first admin's key comes from.
#[derive(Clone, Copy)]
pub enum FirstAdmin<'a> {
    /// Generated here; certificate, key and CA written to the directory.
    Generate(&'a Path),
    /// The remote ceremony: the operator's CSR (the key never leaves the
    /// operator's machine); nothing is written besides the vault itself.
    Csr(&'a str),
    /// `vaultd init --admin-csr`: the operator's CSR; the certificate and
    /// the CA are written to the directory, and no key exists here.
    CsrTo(&'a Path, &'a str),
}

/// Writes `data` to `path` atomically with `mode` permissions.
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), InitError> {
    let io = |e| InitError::Io(path.to_owned(), e);
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

fn mkdir(p: &Path) -> Result<(), InitError> {
    std::fs::create_dir_all(p).map_err(|e| InitError::Io(p.to_owned(), e))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| InitError::Io(p.to_owned(), e))
}

/// Initialises the vault described by `config`; the first admin's
/// credentials go to `out_dir`.
pub fn initialize(
    config: &Config,
    out_dir: &Path,
    admin_name: &str,
) -> Result<InitReport, InitError> {
    initialize_with(config, FirstAdmin::Generate(out_dir), admin_name)
}

/// [`initialize`] with the first admin's key from `admin`.
pub fn initialize_with(
    config: &Config,
    admin: FirstAdmin<'_>,
    admin_name: &str,
) -> Result<InitReport, InitError> {
    if !validate_name(admin_name) {
        return Err(InitError::BadName(admin_name.to_owned()));
    }
    mkdir(&config.data_dir)?;
    if let FirstAdmin::Generate(out_dir) | FirstAdmin::CsrTo(out_dir, _) = admin {
        mkdir(out_dir)?;
    }
    let store = Store::open(&config.db_path(), StoreOptions::default())?;
    if store.get_meta("sealed_root")?.is_some() {
        return Err(InitError::AlreadyInitialized(
            config.db_path().display().to_string(),
        ));
    }
    let mode = config.seal_mode();
    let rk = RootKey::generate();
    let sealed = seal_checked(config, &rk)?;
    drop(rk);
    let appliance_id = uuid::Uuid::new_v4().to_string();
    let now = OffsetDateTime::now_utc();
    let (pki, report) = make_pki(config, admin, &appliance_id, admin_name, now)?;

    // Last: the database record that makes the vault initialised.
    let init_entry = ceremony_entry(
        now,
        "sys.init",
        [
            ("seal_mode".to_owned(), mode.to_string()),
            ("admin".to_owned(), admin_name.to_owned()),
            (
                "admin_fingerprint".to_owned(),
                report.admin_fingerprint.clone(),
            ),
        ]
        .into_iter()
        .collect(),
    );
    store.write_audited(
        WriteOp::Init {
            meta: vec![
                (
                    "sealed_root".into(),
                    serde_json::to_vec(&sealed).expect("serialisable"),
                ),
                ("appliance_id".into(), appliance_id.into_bytes()),
                ("ca_pem".into(), pki.ca_pem.into_bytes()),
                (
                    "created_at".into(),
                    now.unix_timestamp().to_string().into_bytes(),
                ),
                ("audit_spki".into(), pki.audit_spki),
            ],
            keyring: KeyringVersion::new_random(1),
            principals: vec![pki.admin],
            now: now.unix_timestamp(),
        },
        AuditDrafts::new(init_entry),
    )?;
    tracing::info!(appliance_id = %report.appliance_id, mode = %report.seal_mode, "vault initialised");
    Ok(report)
}

/// Custodian recovery on new hardware: `rk` (rebuilt by k custodians and
/// checked against the recovery bundle by the caller) is sealed under this
/// box's TPM and/or token, a new CA, server certificate, audit key and first
/// admin are made, every earlier principal is revoked (their certificates
/// come from the lost CA), the recovery is audited (`sys.recover`, with
/// `details` naming the custodians) and a checkpoint is signed with the new
/// audit key over the whole log, so auditors can chain the old key's
/// checkpoints to the new key's.
///
/// Order as in [`initialize`]: files first, the database record last, then
/// the checkpoint. If it is interrupted, run it again.
pub fn recover(
    config: &Config,
    out_dir: &Path,
    admin_name: &str,
    rk: &RootKey,
    mut details: std::collections::BTreeMap<String, String>,
) -> Result<InitReport, InitError> {
    if !validate_name(admin_name) {
        return Err(InitError::BadName(admin_name.to_owned()));
    }
    mkdir(out_dir)?;
    let db = config.db_path();
    if !db.exists() {
        return Err(InitError::NotInitialized(db.display().to_string()));
    }
    let store = Store::open(&db, StoreOptions::default())?;
    let meta = |k: &str| -> Result<Vec<u8>, InitError> {
        store
            .get_meta(k)?
            .ok_or_else(|| InitError::NotInitialized(db.display().to_string()))
    };
    meta("sealed_root")?;
    let appliance_id = String::from_utf8(meta("appliance_id")?)
        .map_err(|_| StoreError::Corrupt("appliance_id is not UTF-8".into()))?;
    let old_spki = meta("audit_spki")?;
    let sealed = seal_checked(config, rk)?;
    let now = OffsetDateTime::now_utc();
    let (pki, report) = make_pki(
        config,
        FirstAdmin::Generate(out_dir),
        &appliance_id,
        admin_name,
        now,
    )?;
    let fp = |d: &[u8]| {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(d))
    };
    details.insert("seal_mode".into(), report.seal_mode.clone());
    details.insert("admin".into(), admin_name.to_owned());
    details.insert("admin_fingerprint".into(), report.admin_fingerprint.clone());
    details.insert("old_audit_key_sha256".into(), fp(&old_spki));
    details.insert("new_audit_key_sha256".into(), fp(&pki.audit_spki));
    let entry = ceremony_entry(now, "sys.recover", details);
    let audit_spki = pki.audit_spki.clone();
    store.write_audited(
        WriteOp::Recover {
            meta: vec![
                (
                    "sealed_root".into(),
                    serde_json::to_vec(&sealed).expect("serialisable"),
                ),
                ("ca_pem".into(), pki.ca_pem.into_bytes()),
                ("audit_spki".into(), pki.audit_spki),
                (
                    "recovered_at".into(),
                    now.unix_timestamp().to_string().into_bytes(),
                ),
            ],
            admin: pki.admin,
        },
        AuditDrafts::new(entry),
    )?;
    // vaultd refuses a log whose newest checkpoint its key did not sign.
    let signer = crate::unseal::open_audit_signer(config, false, &audit_spki)
        .map_err(InitError::Checkpoint)?;
    let origin = crate::audit::origin(&appliance_id);
    let (size, root) = {
        let t = store.audit_log().read();
        (t.size(), t.root())
    };
    let cp = vault_core::audit::note::Checkpoint {
        origin: origin.clone(),
        size,
        root,
    };
    let sig = signer
        .sign_sha256_der(cp.body().as_bytes())
        .map_err(|e| InitError::Checkpoint(e.to_string()))?;
    store.write(WriteOp::AddCheckpoint {
        tree_size: size,
        note: cp.signed(&origin, &audit_spki, &sig),
        now: now.unix_timestamp(),
    })?;
    tracing::info!(%appliance_id, mode = %report.seal_mode, "vault recovered by custodians");
    Ok(report)
}

/// Seals `rk` with the configured devices (creating their keys if needed)
/// and checks it by unsealing again before anything depends on it.
fn seal_checked(config: &Config, rk: &RootKey) -> Result<SealedRoot, InitError> {
    let mode = config.seal_mode();
    let provider = ConfigProvider {
        config,
        create: true,
    };
    let backends: Vec<Box<dyn Seal>> = mode
        .kinds()
        .iter()
        .map(|k: &SealKind| provider.open(*k))
        .collect::<Result<_, _>>()?;
    let refs: Vec<&dyn Seal> = backends.iter().map(|b| b.as_ref()).collect();
    let sealed = seal_root(mode, &refs, rk)?;
    drop(backends);
    let check = unseal_root(
        &sealed,
        &ConfigProvider {
            config,
            create: false,
        },
    )
    .map_err(|f| InitError::SealCheck(f.message()))?;
    if !check.ct_eq(rk) {
        return Err(InitError::SealCheck("unsealed key differs".into()));
    }
    Ok(sealed)
}

/// What [`make_pki`] made that goes into the database.
struct Pki {
    ca_pem: String,
    audit_spki: Vec<u8>,
    admin: PrincipalRow,
}

/// CA and audit keys in the token, the CA, server and first admin
/// certificates; writes the certificate files.
fn make_pki(
    config: &Config,
    first_admin: FirstAdmin<'_>,
    appliance_id: &str,
    admin_name: &str,
    now: OffsetDateTime,
) -> Result<(Pki, InitReport), InitError> {
    let mode = config.seal_mode();
    let ca_key = open_ca(config, true).map_err(InitError::Ca)?;
    let audit_key = crate::unseal::open_audit_signer(config, true, &[]).map_err(InitError::Ca)?;
    let audit_spki = audit_key.public_key_spki_der();
    drop(audit_key);
    let ca_pem =
        ca::create_ca(&ca_key, appliance_id, now).map_err(|e| InitError::Ca(e.to_string()))?;
    let issuer = ca::issuer(&ca_pem, &ca_key).map_err(|e| InitError::Ca(e.to_string()))?;
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    names.extend(config.tls.server_names.iter().cloned());
    names.dedup();
    let (server, server_key) =
        ca::issue_server(&issuer, &names, now).map_err(|e| InitError::Ca(e.to_string()))?;
    let not_before = now - Duration::minutes(5);
    let not_after = now + Duration::days(i64::from(config.limits.client_cert_days));
    let (admin, admin_key) = match first_admin {
        FirstAdmin::Generate(_) => {
            ca::issue_client_keypair(&issuer, admin_name, Role::Admin, not_before, not_after)
                .map(|(i, k)| (i, Some(k)))
        }
        FirstAdmin::Csr(csr) | FirstAdmin::CsrTo(_, csr) => {
            ca::issue_client_csr(&issuer, csr, admin_name, Role::Admin, not_before, not_after)
                .map(|i| (i, None))
        }
    }
    .map_err(|e| match e {
        ca::CaError::BadCsr(m) => InitError::BadCsr(m),
        e => InitError::Ca(e.to_string()),
    })?;

    write_file(&config.ca_cert_path(), ca_pem.as_bytes(), 0o644)?;
    write_file(
        &config.server_cert_path(),
        server.cert_pem.as_bytes(),
        0o644,
    )?;
    write_file(
        &config.server_key_path(),
        server_key.expose_pem().as_bytes(),
        0o600,
    )?;
    let out_dir = match first_admin {
        FirstAdmin::Generate(d) | FirstAdmin::CsrTo(d, _) => d.to_owned(),
        FirstAdmin::Csr(_) => PathBuf::new(),
    };
    let report = InitReport {
        appliance_id: appliance_id.to_owned(),
        seal_mode: mode.to_string(),
        ca_cert: out_dir.join("ca.pem"),
        admin_cert: out_dir.join(format!("{admin_name}.pem")),
        admin_key: out_dir.join(format!("{admin_name}-key.pem")),
        admin_fingerprint: admin.fingerprint.clone(),
        admin_cert_pem: admin.cert_pem.clone(),
        ca_pem: ca_pem.clone(),
    };
    if let Some(admin_key) = admin_key {
        write_file(&report.ca_cert, ca_pem.as_bytes(), 0o644)?;
        write_file(&report.admin_cert, admin.cert_pem.as_bytes(), 0o644)?;
        write_file(&report.admin_key, admin_key.expose_pem().as_bytes(), 0o600)?;
    } else if let FirstAdmin::CsrTo(..) = first_admin {
        write_file(&report.ca_cert, ca_pem.as_bytes(), 0o644)?;
        write_file(&report.admin_cert, admin.cert_pem.as_bytes(), 0o644)?;
    }
    let admin = PrincipalRow {
        fingerprint: admin.fingerprint,
        name: admin_name.to_owned(),
        role: Role::Admin,
        serial: admin.serial,
        not_after: admin.not_after,
        issued_at: now.unix_timestamp(),
        revoked: false,
        renewed_from: None,
    };
    Ok((
        Pki {
            ca_pem,
            audit_spki,
            admin,
        },
        report,
    ))
}

/// The audit entry of a local ceremony (init, recovery).
fn ceremony_entry(
    now: OffsetDateTime,
    action: &str,
    details: std::collections::BTreeMap<String, String>,
) -> vault_core::audit::entry::Draft {
    let who = crate::audit::Who::system();
    vault_core::audit::entry::Draft {
        time: crate::timefmt::rfc3339(now.unix_timestamp()),
        request_id: who.request_id,
        principal: "ceremony".into(),
        role: "system".into(),
        fingerprint: String::new(),
        action: action.into(),
        target: String::new(),
        outcome: vault_core::audit::entry::Outcome::Success,
        error: String::new(),
        details,
        hmac: Default::default(),
    }
}
