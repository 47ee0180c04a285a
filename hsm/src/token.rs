//! Token plumbing shared by the seal and the signer.

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use vault_core::secret::Pin;

use crate::error::HsmError;
use crate::module;

/// Serialises key creation in this process so two handles calling
/// `open_or_create` at once do not both generate a key under one label.
pub(crate) static CREATE_LOCK: Mutex<()> = Mutex::new(());

pub(crate) fn create_lock() -> MutexGuard<'static, ()> {
    CREATE_LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Loads the module, finds the token by label, opens a RW session and logs
/// the user in.
///
/// Login state is per process and token in PKCS#11: if another session of
/// this process is already logged in, `C_Login` answers
/// `CKR_USER_ALREADY_LOGGED_IN` (accepted here) without checking the PIN.
pub(crate) fn open_session(
    module: &Path,
    token_label: &str,
    pin: &Pin,
) -> Result<Session, HsmError> {
    let ctx = module::context(module)?;
    let slot = find_slot(&ctx, token_label)?;
    let session = ctx
        .open_rw_session(slot)
        .map_err(|e| HsmError::from_cryptoki("C_OpenSession", e))?;
    let auth = AuthPin::from(pin.expose_secret());
    match session.login(UserType::User, Some(&auth)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(e) => Err(HsmError::from_cryptoki("C_Login", e)),
    }
}

fn find_slot(ctx: &cryptoki::context::Pkcs11, token_label: &str) -> Result<Slot, HsmError> {
    let slots = ctx
        .get_slots_with_initialized_token()
        .map_err(|e| HsmError::from_cryptoki("C_GetSlotList", e))?;
    let mut found = Vec::new();
    for slot in slots {
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| HsmError::from_cryptoki("C_GetTokenInfo", e))?;
        if info.label().trim_end() == token_label {
            found.push(slot);
        }
    }
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(HsmError::TokenMissing(format!(
            "no initialised token labelled {token_label:?}"
        ))),
        // Slot ids are not stable, so with two tokens of one label we could
        // pick a different one after a restart.
        many => Err(HsmError::TokenMissing(format!(
            "{} tokens are labelled {token_label:?}; token labels must be unique",
            many.len()
        ))),
    }
}

/// The single object matching `template`, `None` if there is none.
/// Several matches are an error: picking one could pick the wrong key.
pub(crate) fn find_one(
    session: &Session,
    template: &[Attribute],
    what: &str,
) -> Result<Option<ObjectHandle>, HsmError> {
    let found = session
        .find_objects(template)
        .map_err(|e| HsmError::from_cryptoki("C_FindObjects", e))?;
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        many => Err(HsmError::Device {
            call: "C_FindObjects",
            message: format!("{} objects match {what}; expected one", many.len()),
        }),
    }
}

/// `CKA_ID` for a key created under `label`: a stable value tools can match
/// on (first 16 bytes of SHA-256 of the label).
pub(crate) fn key_id(label: &str) -> Vec<u8> {
    Sha256::digest(label.as_bytes())[..16].to_vec()
}

/// Locks a session mutex; a panic elsewhere does not make the session unusable.
pub(crate) fn lock(session: &Mutex<Session>) -> MutexGuard<'_, Session> {
    session.lock().unwrap_or_else(PoisonError::into_inner)
}
