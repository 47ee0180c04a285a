//! SoftHSM2 token directories for tests and dev scripts (feature `test-util`).
//!
//! SoftHSM reads `SOFTHSM2_CONF` and its token list once, at `C_Initialize`,
//! so a process must create every token it needs and set `SOFTHSM2_CONF`
//! *before* the first [`Pkcs11Seal`](crate::Pkcs11Seal) or
//! [`Pkcs11Signer`](crate::Pkcs11Signer) is opened.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The usual location of the SoftHSM2 module on Debian.
pub const SOFTHSM2_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// A directory holding a `softhsm2.conf` and its `tokens/` store.
#[derive(Debug, Clone)]
pub struct SoftHsmDir {
    dir: PathBuf,
}

impl SoftHsmDir {
    /// Creates `<dir>/tokens` and writes `<dir>/softhsm2.conf` pointing at it.
    pub fn create(dir: &Path) -> io::Result<SoftHsmDir> {
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens)?;
        let conf = format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
            tokens.display()
        );
        std::fs::write(dir.join("softhsm2.conf"), conf)?;
        Ok(SoftHsmDir {
            dir: dir.to_path_buf(),
        })
    }

    /// The configuration file, the value for `SOFTHSM2_CONF`.
    pub fn conf_path(&self) -> PathBuf {
        self.dir.join("softhsm2.conf")
    }

    /// Initialises a new token in a free slot with `softhsm2-util`.
    /// The error carries the command's stderr.
    pub fn init_token(&self, label: &str, so_pin: &str, pin: &str) -> io::Result<()> {
        let out = Command::new("softhsm2-util")
            .args([
                "--init-token",
                "--free",
                "--label",
                label,
                "--so-pin",
                so_pin,
                "--pin",
                pin,
            ])
            .env("SOFTHSM2_CONF", self.conf_path())
            .output()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run softhsm2-util: {e}")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "softhsm2-util --init-token --label {label} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }
}
