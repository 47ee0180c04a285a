//! A/B updates of the appliance image, and what each boot records.
//!
//! The work is split by privilege:
//!
//! 1. `POST /v1/sys/update` (admin, mTLS; vaultd runs sandboxed as its own
//!    user): the bundle is streamed to `update_dir/incoming.vupd`, its
//!    signature (image-signing key, `[appliance] image_key`), every part's
//!    SHA-256 and its build number (higher than the running image's: no
//!    downgrades) are checked, then it is renamed to `staged.vupd` and the
//!    `ready` marker is written. Audited `sys.update.stage`.
//! 2. `vaultd install-update` (root, started by `vault-update.path` when
//!    `ready` appears): verifies the bundle again while copying it (it does
//!    not trust the unprivileged daemon), writes the root image and its verity
//!    tree to the inactive slot's partitions, puts that slot's kernel image on
//!    the ESP with a boot-counting suffix (`+3`: three tries) and its signed
//!    PCR policy beside it, writes `installed.json` and reboots. On failure it
//!    writes `failed.json` and installs nothing bootable.
//! 3. On every start vaultd audits `sys.boot` (version, slot). Once the new
//!    slot is unsealed and serving it audits `sys.update.complete` (and the
//!    boot is blessed through the ready file); if the machine came back on
//!    the other slot (the new one never became healthy and its tries ran
//!    out), `sys.update.rolled_back`. A failed installation is audited
//!    `sys.update.install_failed`.
//!
//! The HTTP handlers of step 1 and of `GET /v1/sys/update` are in
//! [`crate::api::update`]; this module returns [`UpdateError`]s, which the API
//! maps to HTTP errors.

use std::io::{BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use serde::{Deserialize, Serialize};
use vault_core::audit::entry::Outcome;
use vault_image::bundle::{BundleReader, Manifest};
use vault_image::key::ImagePublicKey;

use crate::audit::Who;
use crate::config::{ApplianceConfig, Config};
use crate::state::AppState;

/// Held while a bundle is uploaded and staged.
static UPLOAD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Largest bundle accepted (bytes).
pub const MAX_BUNDLE_BYTES: u64 = 2 << 30;
/// Boot tries a freshly installed slot gets before the other one is used.
pub const BOOT_TRIES: u32 = 3;

/// Why an update step failed. Codes are stable.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("updates are not configured on this machine ([appliance] update_dir, image_key, esp)")]
    NotConfigured,
    #[error("{0}")]
    Bundle(#[from] vault_image::ImageError),
    #[error("the bundle's build {bundle} is not newer than the running build {running}")]
    Downgrade { bundle: u64, running: u64 },
    #[error("the running image's version is unknown: {0}")]
    UnknownVersion(String),
    #[error("the bundle has no part {0:?}")]
    MissingPart(String),
    #[error("no update is staged")]
    NothingStaged,
    #[error("the booted slot is unknown (no vault.slot= on the kernel command line)")]
    UnknownSlot,
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}")]
    Command(String),
}

impl UpdateError {
    pub fn code(&self) -> &'static str {
        match self {
            UpdateError::NotConfigured => "update_not_configured",
            UpdateError::Bundle(e) => e.code(),
            UpdateError::Downgrade { .. } => "update_downgrade",
            UpdateError::UnknownVersion(_) => "update_unknown_version",
            UpdateError::MissingPart(_) => "bundle_missing_part",
            UpdateError::NothingStaged => "update_nothing_staged",
            UpdateError::UnknownSlot => "update_unknown_slot",
            UpdateError::Io(..) => "update_io_error",
            UpdateError::Command(_) => "update_install_failed",
        }
    }
}

fn io(what: impl AsRef<Path>) -> impl FnOnce(std::io::Error) -> UpdateError {
    let w = what.as_ref().display().to_string();
    move |e| UpdateError::Io(w, e)
}

/// The update settings, all present.
struct Settings<'a> {
    dir: &'a Path,
    key: &'a Path,
    esp: &'a Path,
    version_file: Option<&'a Path>,
}

fn settings(a: Option<&ApplianceConfig>) -> Result<Settings<'_>, UpdateError> {
    let a = a.ok_or(UpdateError::NotConfigured)?;
    match (&a.update_dir, &a.image_key, &a.esp) {
        (Some(dir), Some(key), Some(esp)) => Ok(Settings {
            dir,
            key,
            esp,
            version_file: a.version_file.as_deref(),
        }),
        _ => Err(UpdateError::NotConfigured),
    }
}

fn public_key(path: &Path) -> Result<ImagePublicKey, UpdateError> {
    let pem = std::fs::read_to_string(path).map_err(io(path))?;
    Ok(ImagePublicKey::from_pem(&pem).map_err(vault_image::ImageError::from)?)
}

/// The running image's version string and build number (`…+BUILD`).
pub fn running_version(version_file: Option<&Path>) -> Result<(String, u64), UpdateError> {
    let path = version_file.ok_or_else(|| UpdateError::UnknownVersion("no version_file".into()))?;
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let v = text.trim().to_owned();
    let build = v
        .rsplit_once('+')
        .and_then(|(_, b)| b.parse::<u64>().ok())
        .ok_or_else(|| UpdateError::UnknownVersion(format!("{v:?} does not end in +BUILD")))?;
    Ok((v, build))
}

/// The slot this boot came from (`vault.slot=a|b` on the command line).
pub fn booted_slot() -> Option<char> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").ok()?;
    slot_from_cmdline(&cmdline)
}

fn slot_from_cmdline(cmdline: &str) -> Option<char> {
    cmdline
        .split_ascii_whitespace()
        .find_map(|w| w.strip_prefix("vault.slot="))
        .and_then(|s| match s {
            "a" => Some('a'),
            "b" => Some('b'),
            _ => None,
        })
}

/// What the installer leaves for vaultd (`installed.json`, `failed.json`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallRecord {
    pub ok: bool,
    pub version: String,
    pub build: u64,
    pub slot: String,
    pub from_version: String,
    pub from_slot: String,
    pub code: String,
    pub message: String,
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<(), UpdateError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(data).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(parent) = path.parent() {
        if let Ok(d) = std::fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- staging

/// The staging directory (`[appliance] update_dir`), if updates are
/// configured (also the image key and the ESP).
pub fn staging_dir(a: Option<&ApplianceConfig>) -> Result<PathBuf, UpdateError> {
    settings(a).map(|s| s.dir.to_owned())
}

/// The right to upload and stage a bundle while the guard is held; `None`
/// while another upload is under way (uploads share the staging file).
pub fn upload_slot() -> Option<tokio::sync::MutexGuard<'static, ()>> {
    UPLOAD.try_lock().ok()
}

/// Streams an uploaded bundle to `dir/incoming.vupd` with a hard size cap
/// ([`MAX_BUNDLE_BYTES`]); returns its size.
pub async fn receive(dir: &Path, body: Body) -> Result<u64, UpdateError> {
    use http_body_util::BodyExt as _;
    let incoming = dir.join("incoming.vupd");
    let mut f = tokio::fs::File::create(&incoming)
        .await
        .map_err(io(&incoming))?;
    let mut body = body;
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            UpdateError::Io("request body".into(), std::io::Error::other(e.to_string()))
        })?;
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        total += chunk.len() as u64;
        if total > MAX_BUNDLE_BYTES {
            return Err(UpdateError::Io(
                "request body".into(),
                std::io::Error::other(format!("bundle larger than {MAX_BUNDLE_BYTES} bytes")),
            ));
        }
        tokio::io::AsyncWriteExt::write_all(&mut f, &chunk)
            .await
            .map_err(io(&incoming))?;
    }
    f.sync_all().await.map_err(io(&incoming))?;
    Ok(total)
}

/// Checks the uploaded bundle and stages it (blocking).
pub fn verify_and_stage(config: &Config, size: u64) -> Result<(Manifest, u64), UpdateError> {
    let s = settings(config.appliance.as_ref())?;
    let incoming = s.dir.join("incoming.vupd");
    let fail = |e: UpdateError| {
        let _ = std::fs::remove_file(&incoming);
        e
    };
    let pk = public_key(s.key).map_err(fail)?;
    let m = vault_image::bundle::verify_file(&incoming, &pk)
        .map_err(UpdateError::from)
        .map_err(fail)?;
    let (_, running) = running_version(s.version_file).map_err(fail)?;
    if m.build <= running {
        return Err(fail(UpdateError::Downgrade {
            bundle: m.build,
            running,
        }));
    }
    for p in [
        "root",
        "root.verity",
        "uki-a",
        "uki-b",
        "pcrsig-a",
        "pcrsig-b",
    ] {
        if !m.parts.iter().any(|x| x.name == p) {
            return Err(fail(UpdateError::MissingPart(p.into())));
        }
    }
    let staged = s.dir.join("staged.vupd");
    std::fs::rename(&incoming, &staged).map_err(io(&staged))?;
    let manifest = serde_json::to_vec(&m).expect("serialisable");
    write_atomic(&s.dir.join("ready"), &manifest)?;
    Ok((m, size))
}

// ---------------------------------------------------------------- boot

/// At start: audits `sys.boot`, and a rollback if the last installed slot
/// is not the one that booted.
pub fn audit_boot(st: &Arc<AppState>) -> Result<(), vault_store::StoreError> {
    let Some(a) = st.config.appliance.as_ref() else {
        return Ok(());
    };
    let who = Who::system();
    let version = running_version(a.version_file.as_deref())
        .map(|(v, _)| v)
        .unwrap_or_else(|_| "unknown".into());
    let slot = booted_slot().map(String::from).unwrap_or_default();
    let mut d = who.draft(st, "sys.boot", "", Outcome::Success, "");
    d.details.insert("version".into(), version.clone());
    d.details.insert("slot".into(), slot.clone());
    st.store.audit(d)?;
    if slot.is_empty() {
        tracing::warn!("the booted slot is unknown (no vault.slot= in /proc/cmdline): update outcomes are not assessed");
        return Ok(());
    }
    if let Some(dir) = &a.update_dir {
        let path = dir.join("installed.json");
        if let Some(rec) = read_record(&path) {
            if rec.slot != slot {
                let mut d = who.draft(
                    st,
                    "sys.update.rolled_back",
                    "",
                    Outcome::Error,
                    "update_rolled_back",
                );
                d.details.insert("version".into(), rec.version.clone());
                d.details.insert("slot".into(), rec.slot.clone());
                d.details.insert("booted_version".into(), version);
                d.details.insert("booted_slot".into(), slot);
                st.store.audit(d)?;
                let _ = std::fs::rename(&path, dir.join("installed.rolled-back.json"));
                bootstrap_console(&format!(
                    "vaultd: UPDATE ROLLED BACK: {} on slot {} never became healthy",
                    rec.version, rec.slot
                ));
            }
        }
    }
    Ok(())
}

fn bootstrap_console(line: &str) {
    crate::bootstrap::console(line)
}

fn read_record(path: &Path) -> Option<InstallRecord> {
    let b = std::fs::read(path).ok()?;
    match serde_json::from_slice(&b) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "unreadable update record");
            None
        }
    }
}

/// Every 2 s: the ready file follows the sealed state; an installed update
/// that now serves is audited complete; a failed installation is audited.
pub fn spawn_watcher(st: Arc<AppState>) {
    let Some(a) = st.config.appliance.clone() else {
        return;
    };
    tokio::spawn(async move {
        let mut ready = false;
        loop {
            let unsealed = !st.is_sealed();
            if let Some(f) = &a.ready_file {
                if unsealed && !ready {
                    match std::fs::write(f, b"") {
                        Ok(()) => ready = true,
                        Err(e) => {
                            tracing::warn!(path = %f.display(), error = %e, "cannot write the ready file")
                        }
                    }
                } else if !unsealed && ready {
                    let _ = std::fs::remove_file(f);
                    ready = false;
                }
            }
            if let Some(dir) = a.update_dir.clone() {
                let s = st.clone();
                let _ =
                    tokio::task::spawn_blocking(move || audit_records(&s, &dir, unsealed)).await;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
}

fn audit_records(st: &Arc<AppState>, dir: &Path, unsealed: bool) {
    let who = Who::system();
    let one = |name: &str, done: &str, action: &str, ok_needed: bool| {
        let path = dir.join(name);
        let Some(rec) = read_record(&path) else {
            return;
        };
        if ok_needed && !unsealed {
            return;
        }
        let (outcome, code) = if rec.ok {
            (Outcome::Success, "")
        } else {
            (Outcome::Error, rec.code.as_str())
        };
        let mut d = who.draft(st, action, "", outcome, code);
        d.details.insert("version".into(), rec.version.clone());
        d.details.insert("build".into(), rec.build.to_string());
        d.details.insert("slot".into(), rec.slot.clone());
        d.details
            .insert("from_version".into(), rec.from_version.clone());
        if !rec.message.is_empty() {
            d.details.insert("message".into(), rec.message.clone());
        }
        if st.store.audit(d).is_ok() {
            let _ = std::fs::rename(&path, dir.join(done));
            bootstrap_console(&format!(
                "vaultd: {action} {} (slot {})",
                rec.version, rec.slot
            ));
        }
    };
    if booted_slot().map(String::from).as_deref()
        == read_record(&dir.join("installed.json"))
            .map(|r| r.slot)
            .as_deref()
    {
        one(
            "installed.json",
            "installed.audited.json",
            "sys.update.complete",
            true,
        );
    }
    one(
        "failed.json",
        "failed.audited.json",
        "sys.update.install_failed",
        false,
    );
}

// ---------------------------------------------------------------- install

/// Partition of a slot's root image or verity tree.
fn slot_device(slot: char, verity: bool) -> PathBuf {
    PathBuf::from(format!(
        "/dev/disk/by-partlabel/root-{slot}{}",
        if verity { "-verity" } else { "" }
    ))
}

fn run(cmd: &str, args: &[&str]) -> Result<(), UpdateError> {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| UpdateError::Command(format!("{cmd}: {e}")))?;
    if !out.status.success() {
        return Err(UpdateError::Command(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// `vaultd install-update` (root): installs the staged bundle into the
/// inactive slot. Returns the record also written to `installed.json`.
pub fn install(config: &Config) -> Result<InstallRecord, UpdateError> {
    let s = settings(config.appliance.as_ref())?;
    let ready = s.dir.join("ready");
    if !ready.exists() {
        return Err(UpdateError::NothingStaged);
    }
    let result = install_staged(&s);
    // Whatever happened, the staged bundle is consumed: the path unit must
    // not loop on it.
    let _ = std::fs::remove_file(&ready);
    let _ = std::fs::remove_file(s.dir.join("staged.vupd"));
    match result {
        Ok(rec) => {
            write_atomic(
                &s.dir.join("installed.json"),
                &serde_json::to_vec_pretty(&rec).expect("serialisable"),
            )?;
            Ok(rec)
        }
        Err((e, version, build)) => {
            let (from_version, _) = running_version(s.version_file).unwrap_or_default();
            let rec = InstallRecord {
                ok: false,
                version,
                build,
                slot: String::new(),
                from_version,
                from_slot: booted_slot().map(String::from).unwrap_or_default(),
                code: e.code().into(),
                message: e.to_string(),
            };
            let _ = write_atomic(
                &s.dir.join("failed.json"),
                &serde_json::to_vec_pretty(&rec).expect("serialisable"),
            );
            Err(e)
        }
    }
}

type Failed = (UpdateError, String, u64);

fn install_staged(s: &Settings<'_>) -> Result<InstallRecord, Failed> {
    let fail0 = |e: UpdateError| (e, String::new(), 0);
    let pk = public_key(s.key).map_err(fail0)?;
    let (from_version, running) = running_version(s.version_file).map_err(fail0)?;
    let from = booted_slot()
        .ok_or(UpdateError::UnknownSlot)
        .map_err(fail0)?;
    let target = if from == 'a' { 'b' } else { 'a' };
    let staged = s.dir.join("staged.vupd");
    let f = std::fs::File::open(&staged)
        .map_err(io(&staged))
        .map_err(fail0)?;
    let mut r = BundleReader::open(BufReader::with_capacity(1 << 20, f), &pk)
        .map_err(UpdateError::from)
        .map_err(fail0)?;
    let m = r.manifest().clone();
    let fail = |e: UpdateError| (e, m.version.clone(), m.build);
    if m.build <= running {
        return Err(fail(UpdateError::Downgrade {
            bundle: m.build,
            running,
        }));
    }
    let stem = format!("vault_{}_{target}", m.build);
    let linux_dir = s.esp.join("EFI/Linux");
    let sig_dir = s.esp.join("vault/pcrsig");
    let uki_tmp = linux_dir.join(format!(".{stem}.efi.tmp"));
    let sig_tmp = sig_dir.join(format!(".{stem}.json.tmp"));
    let esp = s.esp.display().to_string();
    run("mount", &["-o", "remount,rw", &esp]).map_err(fail)?;
    let copy = (|| -> Result<(), UpdateError> {
        std::fs::create_dir_all(&sig_dir).map_err(io(&sig_dir))?;
        for part in m.parts.clone() {
            let name = part.name.as_str();
            let dst: Option<PathBuf> = match name {
                "root" => Some(slot_device(target, false)),
                "root.verity" => Some(slot_device(target, true)),
                n if n == format!("uki-{target}") => Some(uki_tmp.clone()),
                n if n == format!("pcrsig-{target}") => Some(sig_tmp.clone()),
                _ => None,
            };
            match dst {
                Some(path) => {
                    let is_dev = path.starts_with("/dev");
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create(!is_dev)
                        .truncate(!is_dev)
                        .open(&path)
                        .map_err(io(&path))?;
                    r.copy_part(name, &mut f)?;
                    f.sync_all().map_err(io(&path))?;
                }
                None => r.copy_part(name, &mut std::io::sink())?,
            }
            tracing::info!(
                part = name,
                bytes = part.size,
                "update part verified and written"
            );
        }
        Ok(())
    })();
    let copied = copy.and_then(|()| {
        // Every byte matched its signed hash: make the new slot bootable.
        let final_sig = sig_dir.join(format!("{stem}.json"));
        std::fs::rename(&sig_tmp, &final_sig).map_err(io(&final_sig))?;
        let final_uki = linux_dir.join(format!("{stem}+{BOOT_TRIES}.efi"));
        std::fs::rename(&uki_tmp, &final_uki).map_err(io(&final_uki))?;
        if let Ok(d) = std::fs::File::open(&linux_dir) {
            let _ = d.sync_all();
        }
        Ok(())
    });
    if copied.is_err() {
        let _ = std::fs::remove_file(&uki_tmp);
        let _ = std::fs::remove_file(&sig_tmp);
    }
    let remount = run("mount", &["-o", "remount,ro", &esp]);
    copied.map_err(fail)?;
    r.finish().map_err(UpdateError::from).map_err(fail)?;
    if let Err(e) = remount {
        tracing::warn!(error = %e, "the ESP stays writable until reboot");
    }
    Ok(InstallRecord {
        ok: true,
        version: m.version.clone(),
        build: m.build,
        slot: target.to_string(),
        from_version,
        from_slot: from.to_string(),
        code: String::new(),
        message: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_from_cmdline() {
        assert_eq!(slot_from_cmdline("ro vault.slot=a quiet"), Some('a'));
        assert_eq!(slot_from_cmdline("vault.slot=b"), Some('b'));
        assert_eq!(slot_from_cmdline("vault.slot=c"), None);
        assert_eq!(slot_from_cmdline("vault.slotx=a"), None);
        assert_eq!(slot_from_cmdline(""), None);
    }

    #[test]
    fn versions() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("version");
        std::fs::write(&f, "0.1.0+1764590000\n").unwrap();
        assert_eq!(
            running_version(Some(&f)).unwrap(),
            ("0.1.0+1764590000".into(), 1_764_590_000)
        );
        std::fs::write(&f, "0.1.0").unwrap();
        assert_eq!(
            running_version(Some(&f)).unwrap_err().code(),
            "update_unknown_version"
        );
        assert!(running_version(None).is_err());
    }
}
