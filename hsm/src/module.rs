//! One initialised PKCS#11 context per module path, for the whole process.
//!
//! `C_Initialize` may be called only once per module and process (a second
//! call fails with `CKR_CRYPTOKI_ALREADY_INITIALIZED`), and SoftHSM reads its
//! configuration (`SOFTHSM2_CONF`) and token list at that moment. Contexts are
//! never finalised.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use vault_core::seal::SealError;

use crate::error::HsmError;

fn registry() -> &'static Mutex<HashMap<PathBuf, Pkcs11>> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    MODULES.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Loads and initialises `module` on first use (OS locking), then returns the
/// same context to every caller. A failed load is not cached, so it can be
/// retried once the module is fixed.
pub(crate) fn context(module: &Path) -> Result<Pkcs11, HsmError> {
    let mut map = registry().lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(ctx) = map.get(module) {
        return Ok(ctx.clone());
    }
    let what = format!("module {}", module.display());
    let ctx = Pkcs11::new(module)
        .map_err(|e| HsmError::from_cryptoki("C_GetFunctionList", e).context(&what))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Someone else in this process initialised the library: it is usable.
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        // The token cannot be reached through this module at all.
        Err(e) => {
            return Err(match HsmError::from_cryptoki("C_Initialize", e) {
                HsmError::Device { call, message } => {
                    HsmError::TokenMissing(format!("{what}: {call} failed: {message}"))
                }
                other => other.context(&what),
            })
        }
    }
    tracing::debug!(module = %module.display(), "PKCS#11 module initialised");
    map.insert(module.to_path_buf(), ctx.clone());
    Ok(ctx)
}

/// The process-wide context for `module`, initialised on first use.
///
/// For code that needs the token directly (inspection tools, tests). Do not
/// call `initialize` or `finalize` on it.
pub fn pkcs11_module(module: &Path) -> Result<Pkcs11, SealError> {
    context(module).map_err(SealError::from)
}
