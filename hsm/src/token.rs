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

/// Serialises every token operation of this process: opening sessions,
/// logging in, finding and creating objects, encrypting, signing.
///
/// SoftHSM2 (file object store) has been seen to fail key generation with
/// CKR_TEMPLATE_INCONSISTENT while other threads worked on the same token,
/// and vaultd's token operations are rare (unseal, certificate issuance,
/// checkpoint signing), so one lock costs nothing and removes the class of
/// concurrency faults. It also keeps two `open_or_create` calls from both
/// generating a key under one label.
pub(crate) static OPS_LOCK: Mutex<()> = Mutex::new(());

pub(crate) fn ops_lock() -> MutexGuard<'static, ()> {
    OPS_LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A session locked for one operation, under the process-wide token lock.
pub(crate) struct Locked<'a> {
    _ops: MutexGuard<'static, ()>,
    session: MutexGuard<'a, Session>,
}

impl std::ops::Deref for Locked<'_> {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.session
    }
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

/// Locks a session for one operation (and the process-wide token lock); a
/// panic elsewhere does not make the session unusable.
pub(crate) fn lock(session: &Mutex<Session>) -> Locked<'_> {
    let ops = ops_lock();
    Locked {
        _ops: ops,
        session: session.lock().unwrap_or_else(PoisonError::into_inner),
    }
}
