//! The YubiKey custodian token: [`CustodianToken`] on a YubiKey's PIV application,
//! through the `yubikey` crate (0.8) and PC/SC.
//!
//! | trait method | on the YubiKey |
//! | --- | --- |
//! | `serial`, `version` | read once at [`YubiKeyToken::open`] |
//! | `verify_pin` | VERIFY (PIN, 6–8 bytes) |
//! | `public_key` | the slot's attestation certificate, else slot metadata, else the key [`YubiKeyToken::generate`] returned (see below) |
//! | `sign` | ECDSA P-256 with 9c over SHA-256(msg): the digest is computed here and sent to the key (`sign_data` takes the digest), DER |
//! | `ecdh` | ECDH with 9d (`decrypt_data` with the peer's uncompressed point): the shared x-coordinate |
//! | `attest` | ATTEST (INS F9): the slot's attestation certificate, DER |
//! | `attestation_intermediate` | the f9 certificate (PIV object 5FFF01), DER, exactly as stored |
//!
//! Enrolment is [`YubiKeyToken::generate`]: a P-256 key generated on the key in 9c
//! or 9d with a PIN policy (once/always) and a touch policy (never/always/cached),
//! authenticated with the management key ([`ManagementKey`]; `None` means the
//! factory default `010203…08` ×3, which only a key still in its factory state
//! accepts: production keys must have their own).
//!
//! # Where `public_key` comes from
//! On a real YubiKey the attestation certificate is the authoritative source: the
//! key signs it with its device key, so it cannot name a key that is not in the
//! slot. [`CustodianToken::public_key`] therefore asks, once per slot and session,
//! in this order: (1) ATTEST for the slot (source [`KeySource::Attestation`]);
//! (2) GET METADATA (firmware 5.3+; [`KeySource::Metadata`]); (3) the key that
//! [`YubiKeyToken::generate`] returned in this session ([`KeySource::Generated`]).
//! When none of these yields a P-256 key it returns [`TokenError::NoKey`] (an
//! empty slot, or a key that is neither attestable nor described by metadata,
//! e.g. an imported key on firmware before 5.3). The key is **not** verified
//! against any trust anchor here: verify the attestation chain with
//! [`vault_core::custodian::attestation::verify`] before trusting a custodian.
//! Caching: keys are cached per session and replaced by `generate`; a key changed
//! behind this token's back (another program regenerating the slot) is seen only by
//! a new [`YubiKeyToken`].
//!
//! # Rough edges of the `yubikey` crate 0.8 handled here
//! * Some of its functions index into card replies without checking their length
//!   (`piv::attest` on an empty successful reply, `Certificate::read` on an empty
//!   object, `authenticate`, the version query): every call into the crate runs
//!   under `catch_unwind`, and a panic becomes [`TokenError::Device`] (this needs
//!   the default `panic = "unwind"`).
//! * `cccid()` panics on some cards, `piv_keys()` and `metadata()` fail on others:
//!   the first two are never called, metadata is only a fallback.
//! * An empty PIN "verifies" when the PIN is already verified (an empty VERIFY is
//!   the retry-counter query): PINs are checked locally to be 6–8 bytes first.
//! * `get_pin_retries()` re-selects the PIV application, which logs the PIN out:
//!   [`YubiKeyToken::pin_retries`] says so.
//! * Firmware 5.7+ ships an AES-192 default management key, the crate only speaks
//!   3DES: management-key authentication then fails and [`YubiKeyToken::generate`]
//!   says why (change the management key to 3DES with `ykman` first).
//! * `MgmKey::new` logs a weak key's bytes: [`ManagementKey`] rejects weak DES keys
//!   itself, so key bytes never reach the crate's log line.
//! * The crate logs every APDU at `trace` level (PIN and management-key
//!   cryptograms included): never enable `trace` for the `yubikey` target.
//! * The crate keeps the verified PIN (zeroizing) inside its `YubiKey` for
//!   reconnects; it is dropped with the token.
//! * `deauthenticate()` selects another applet and leaves PIV unselected: not used;
//!   `generate` ends with a PIV re-select instead.
//!
//! # PIN
//! With PIN policy *always* (and on 9c of some cards regardless of policy), the
//! key wants a VERIFY immediately before each `sign`/`ecdh`: call `verify_pin`
//! right before, with no other token call in between (a first `public_key` call
//! talks to the card). Otherwise the operation fails with
//! [`TokenError::PinRequired`]. The PIN is never kept by this crate.
//!
//! Touch: with touch policy always/cached, `sign` and `ecdh` block until the key is
//! touched (about 15 s, then the key refuses). The virtual test card does not
//! emulate touch (the policy is only recorded and attested).
//!
//! # Tested against
//! `run-card-tests.sh` runs the tests in `tests/card.rs` against the virtual card in
//! `tests/piv-card` (piv-authenticator behind an adapter that emulates attestation
//! with a test CA). What it cannot show, to check on real YubiKeys (5.4–5.6, and a
//! 5.7+ one with a 3DES management key) before relying on this crate:
//! - touch always/cached: `sign`/`ecdh` block until touched, and fail cleanly
//!   when not touched in time;
//! - PIN always on 9d: `ecdh` needs a VERIFY right before it;
//! - attestation chains to Yubico's real PIV root (RSA f9 on most keys) and the
//!   policy extension matches what was asked;
//! - `public_key` falls back to metadata for a key that cannot be attested;
//! - PIN blocked after the last try -> `PinBlocked`; a removed key -> `Device`.

#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::PublicKey;
use sha2::{Digest as _, Sha256};
use vault_core::custodian::attestation;
use vault_core::custodian::ecies::SharedX;
use vault_core::secret::Pin;
use yubikey::certificate::Certificate;
use yubikey::piv::{self, AlgorithmId, SlotId};
use yubikey::{Error as YkError, MgmKey, Serial, YubiKey};
use zeroize::Zeroizing;

pub use vault_core::custodian::token::{CustodianToken, Slot, TokenError};

/// PIV object holding the device attestation (f9) certificate.
const OBJ_ATTESTATION: u32 = 0x005F_FF01;
/// PIV PINs are 6 to 8 bytes.
const PIN_LEN: std::ops::RangeInclusive<usize> = 6..=8;

/// When a slot's key needs the PIN (the YubiKey's policy; `never` is not offered:
/// a custodian key always needs the PIN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinPolicy {
    /// Once per session (until the key is removed or PIV is re-selected).
    Once,
    /// Before every signature or key agreement.
    Always,
}

/// When a slot's key needs a touch of the YubiKey.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TouchPolicy {
    Never,
    /// Every use.
    Always,
    /// Once per 15 seconds.
    Cached,
}

impl From<PinPolicy> for yubikey::PinPolicy {
    fn from(p: PinPolicy) -> Self {
        match p {
            PinPolicy::Once => yubikey::PinPolicy::Once,
            PinPolicy::Always => yubikey::PinPolicy::Always,
        }
    }
}

impl From<TouchPolicy> for yubikey::TouchPolicy {
    fn from(t: TouchPolicy) -> Self {
        match t {
            TouchPolicy::Never => yubikey::TouchPolicy::Never,
            TouchPolicy::Always => yubikey::TouchPolicy::Always,
            TouchPolicy::Cached => yubikey::TouchPolicy::Cached,
        }
    }
}

/// What an attestation of a key made with this policy reports.
impl From<PinPolicy> for attestation::PinPolicy {
    fn from(p: PinPolicy) -> Self {
        match p {
            PinPolicy::Once => attestation::PinPolicy::Once,
            PinPolicy::Always => attestation::PinPolicy::Always,
        }
    }
}

impl From<TouchPolicy> for attestation::TouchPolicy {
    fn from(t: TouchPolicy) -> Self {
        match t {
            TouchPolicy::Never => attestation::TouchPolicy::Never,
            TouchPolicy::Always => attestation::TouchPolicy::Always,
            TouchPolicy::Cached => attestation::TouchPolicy::Cached,
        }
    }
}

/// Where [`CustodianToken::public_key`] got a slot's key from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// The slot's attestation certificate (authoritative on a real YubiKey).
    Attestation,
    /// GET METADATA (firmware 5.3+).
    Metadata,
    /// What [`YubiKeyToken::generate`] returned in this session (the key could not
    /// be attested nor described by metadata).
    Generated,
}

/// A 3DES PIV management key (24 bytes). Zeroized on drop; `Debug` shows nothing.
#[derive(Clone)]
pub struct ManagementKey(Zeroizing<[u8; 24]>);

impl ManagementKey {
    /// The factory default, `010203040506070801020304050607080102030405060708`
    /// (what `generate(.., None)` uses): only for keys still in factory state and tests.
    pub fn factory_default() -> ManagementKey {
        let mut k = Zeroizing::new([0u8; 24]);
        for (i, b) in k.iter_mut().enumerate() {
            *b = (i % 8) as u8 + 1;
        }
        ManagementKey(k)
    }

    /// 24 key bytes; weak and semi-weak DES keys are refused.
    pub fn from_bytes(bytes: &[u8]) -> Result<ManagementKey, TokenError> {
        let arr: [u8; 24] = bytes
            .try_into()
            .map_err(|_| TokenError::Device("a management key is 24 bytes (3DES)".into()))?;
        let k = ManagementKey(Zeroizing::new(arr));
        if is_weak_3des(&k.0) {
            return Err(TokenError::Device(
                "the management key is a weak DES key".into(),
            ));
        }
        Ok(k)
    }

    /// 48 hex digits (what `ykman piv access change-management-key` prints).
    pub fn from_hex(hex: &str) -> Result<ManagementKey, TokenError> {
        let bad = || TokenError::Device("a management key is 48 hex digits".into());
        let hex = hex.trim().as_bytes();
        if hex.len() != 48 {
            return Err(bad());
        }
        let mut bytes = Zeroizing::new([0u8; 24]);
        for (i, pair) in hex.chunks_exact(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16).ok_or_else(bad)?;
            let lo = (pair[1] as char).to_digit(16).ok_or_else(bad)?;
            bytes[i] = (hi * 16 + lo) as u8;
        }
        ManagementKey::from_bytes(&bytes[..])
    }

    fn to_mgm_key(&self) -> Result<MgmKey, TokenError> {
        // Weakness was checked at construction, so this never reaches the crate's
        // log line that prints a weak key.
        MgmKey::new(*self.0).map_err(|_| TokenError::Device("unusable management key".into()))
    }
}

impl fmt::Debug for ManagementKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ManagementKey(..)")
    }
}

/// Weak and semi-weak DES keys (parity bits ignored), per 8-byte part of a 3DES key:
/// the same list the `yubikey` crate refuses.
fn is_weak_3des(key: &[u8; 24]) -> bool {
    const WEAK: [[u8; 8]; 16] = [
        [0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01],
        [0xFE, 0xFE, 0xFE, 0xFE, 0xFE, 0xFE, 0xFE, 0xFE],
        [0x1F, 0x1F, 0x1F, 0x1F, 0x0E, 0x0E, 0x0E, 0x0E],
        [0xE0, 0xE0, 0xE0, 0xE0, 0xF1, 0xF1, 0xF1, 0xF1],
        [0x01, 0xFE, 0x01, 0xFE, 0x01, 0xFE, 0x01, 0xFE],
        [0xFE, 0x01, 0xFE, 0x01, 0xFE, 0x01, 0xFE, 0x01],
        [0x1F, 0xE0, 0x1F, 0xE0, 0x0E, 0xF1, 0x0E, 0xF1],
        [0xE0, 0x1F, 0xE0, 0x1F, 0xF1, 0x0E, 0xF1, 0x0E],
        [0x01, 0xE0, 0x01, 0xE0, 0x01, 0xF1, 0x01, 0xF1],
        [0xE0, 0x01, 0xE0, 0x01, 0xF1, 0x01, 0xF1, 0x01],
        [0x1F, 0xFE, 0x1F, 0xFE, 0x0E, 0xFE, 0x0E, 0xFE],
        [0xFE, 0x1F, 0xFE, 0x1F, 0xFE, 0x0E, 0xFE, 0x0E],
        [0x01, 0x1F, 0x01, 0x1F, 0x01, 0x0E, 0x01, 0x0E],
        [0x1F, 0x01, 0x1F, 0x01, 0x0E, 0x01, 0x0E, 0x01],
        [0xE0, 0xFE, 0xE0, 0xFE, 0xF1, 0xFE, 0xF1, 0xFE],
        [0xFE, 0xE0, 0xFE, 0xE0, 0xFE, 0xF1, 0xFE, 0xF1],
    ];
    key.chunks_exact(8).any(|part| {
        WEAK.iter()
            .any(|w| part.iter().zip(w).all(|(a, b)| a & 0xFE == b & 0xFE))
    })
}

fn slot_id(slot: Slot) -> SlotId {
    match slot {
        Slot::Signature => SlotId::Signature,
        Slot::KeyManagement => SlotId::KeyManagement,
    }
}

fn slot_index(slot: Slot) -> usize {
    match slot {
        Slot::Signature => 0,
        Slot::KeyManagement => 1,
    }
}

fn slot_name(slot: Slot) -> &'static str {
    match slot {
        Slot::Signature => "9c",
        Slot::KeyManagement => "9d",
    }
}

/// Runs a call into the `yubikey` crate, turning a panic (an unchecked index into
/// a short card reply) into an error.
fn guarded<T>(
    what: &'static str,
    f: impl FnOnce() -> yubikey::Result<T>,
) -> Result<yubikey::Result<T>, TokenError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| {
        TokenError::Device(format!(
            "{what}: unexpected reply from the YubiKey (the yubikey crate panicked)"
        ))
    })
}

/// A crate error as a device error. The crate's messages are fixed strings and
/// PC/SC errors: no PIN or key material.
fn device(what: &str, e: YkError) -> TokenError {
    TokenError::Device(format!("{what}: {e}"))
}

/// A P-256 key from a SubjectPublicKeyInfo's bit string (a SEC1 point).
fn p256_from_bits(bits: Option<&[u8]>) -> Option<PublicKey> {
    bits.and_then(|b| PublicKey::from_sec1_bytes(b).ok())
}

/// The certificate in a PIV certificate object (`70 cert, 71 certinfo, FE lrc`,
/// without the outer 53): the DER bytes exactly as stored.
fn cert_from_object(obj: &[u8]) -> Result<Vec<u8>, TokenError> {
    let bad = |why: &str| TokenError::Device(format!("malformed certificate object: {why}"));
    let mut rest = obj;
    let mut cert = None;
    let mut info = 0u8;
    while !rest.is_empty() {
        let (tag, value, next) = split_tlv(rest).ok_or_else(|| bad("bad TLV"))?;
        match tag {
            0x70 => cert = Some(value),
            0x71 => info = value.first().copied().unwrap_or(0),
            _ => {}
        }
        rest = next;
    }
    let cert = cert.ok_or_else(|| bad("no certificate (tag 70)"))?;
    if info & 0x01 != 0 {
        return Err(TokenError::Unsupported("compressed certificate objects"));
    }
    Certificate::from_bytes(cert.to_vec()).map_err(|_| bad("not an X.509 certificate"))?;
    Ok(cert.to_vec())
}

/// One BER-TLV with a 1-byte tag: (tag, value, rest).
fn split_tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&l0, rest) = rest.split_first()?;
    let (len, rest) = match l0 {
        0..=0x7F => (usize::from(l0), rest),
        0x81 => {
            let (&l, r) = rest.split_first()?;
            (usize::from(l), r)
        }
        0x82 => {
            let hi = *rest.first()?;
            let lo = *rest.get(1)?;
            (usize::from(u16::from_be_bytes([hi, lo])), rest.get(2..)?)
        }
        _ => return None,
    };
    if rest.len() < len {
        return None;
    }
    let (value, rest) = rest.split_at(len);
    Some((tag, value, rest))
}

/// A custodian's YubiKey, opened through PC/SC.
///
/// Not `Sync` (one PC/SC connection, used from one thread at a time); `Send`.
/// Dropping it disconnects with a card reset, which logs the PIN out.
pub struct YubiKeyToken {
    yk: RefCell<YubiKey>,
    serial: u32,
    version: (u8, u8, u8),
    /// Per slot (9c, 9d): the public key and where it came from.
    keys: RefCell<[Option<(PublicKey, KeySource)>; 2]>,
    /// Per slot: the key `generate` returned in this session.
    generated: [Option<PublicKey>; 2],
}

impl fmt::Debug for YubiKeyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("YubiKeyToken")
            .field("serial", &self.serial)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl YubiKeyToken {
    /// Opens the YubiKey with this serial, or, with `None`, the only YubiKey
    /// attached (an error if there are several).
    pub fn open(serial: Option<u32>) -> Result<YubiKeyToken, TokenError> {
        let yk = guarded("open", || match serial {
            Some(s) => YubiKey::open_by_serial(Serial(s)),
            None => YubiKey::open(),
        })?
        .map_err(|e| match (serial, e) {
            (Some(s), YkError::NotFound) => {
                TokenError::Device(format!("no YubiKey with serial {s} is attached"))
            }
            (None, YkError::NotFound) => TokenError::Device("no YubiKey is attached".into()),
            // YubiKey::open's way of saying it found more than one.
            (None, YkError::PcscError { inner: None }) => {
                TokenError::Device("several YubiKeys are attached: open one by its serial".into())
            }
            (_, e) => device("open", e),
        })?;
        let v = yk.version();
        Ok(YubiKeyToken {
            serial: yk.serial().0,
            version: (v.major, v.minor, v.patch),
            yk: RefCell::new(yk),
            keys: RefCell::new([None, None]),
            generated: [None, None],
        })
    }

    /// PIN tries left. **Logs the PIN out**: the query needs the PIV application
    /// re-selected (a verified PIN answers "no verification needed" instead).
    pub fn pin_retries(&mut self) -> Result<u8, TokenError> {
        let yk = self.yk.get_mut();
        guarded("PIN retries", || yk.get_pin_retries())?.map_err(|e| device("PIN retries", e))
    }

    /// Generates a P-256 key in `slot` (enrolment), replacing what was there, and
    /// returns its public key.
    ///
    /// Authenticates with `mgm_key`, or with the **factory default** management key
    /// when `None` (a key that still has it is not fit for production: anyone
    /// holding it can replace the custodian's keys). When the key can attest, the
    /// attested key is checked to be the returned one.
    ///
    /// Ends with the PIV application re-selected, so neither the management-key
    /// authentication nor a verified PIN outlives the call (the virtual test card
    /// keeps management-key authentication until it restarts).
    pub fn generate(
        &mut self,
        slot: Slot,
        pin_policy: PinPolicy,
        touch_policy: TouchPolicy,
        mgm_key: Option<&ManagementKey>,
    ) -> Result<PublicKey, TokenError> {
        let mgm = match mgm_key {
            Some(k) => k.to_mgm_key()?,
            None => MgmKey::default(),
        };
        let aes_default = self.version >= (5, 7, 0);
        let idx = slot_index(slot);
        let result = {
            let yk = self.yk.get_mut();
            match guarded("management key authentication", || yk.authenticate(mgm))? {
                Ok(()) => {}
                Err(YkError::AuthenticationError) if aes_default => {
                    return Err(TokenError::Unsupported(
                        "management key authentication failed: firmware 5.7+ uses AES-192 \
                         management keys, which the yubikey crate 0.8 cannot use (set a 3DES \
                         management key with ykman first)",
                    ))
                }
                Err(YkError::AuthenticationError) => {
                    return Err(TokenError::Device(
                        "management key authentication failed (wrong management key)".into(),
                    ))
                }
                Err(e) => return Err(device("management key authentication", e)),
            }
            let generated = guarded("generate", || {
                piv::generate(
                    yk,
                    slot_id(slot),
                    AlgorithmId::EccP256,
                    pin_policy.into(),
                    touch_policy.into(),
                )
            })?;
            // Drop the management-key authentication (and PIN) whatever happened.
            let _ = guarded("re-select", || yk.get_pin_retries());
            generated
        };
        // The old key is gone even if the new one cannot be read back.
        self.keys.get_mut()[idx] = None;
        self.generated[idx] = None;
        let spki = result.map_err(|e| match e {
            YkError::AuthenticationError => {
                TokenError::Device("generate: not authenticated with the management key".into())
            }
            YkError::AlgorithmError => {
                TokenError::Unsupported("this YubiKey refused P-256 with these PIN/touch policies")
            }
            e => device("generate", e),
        })?;
        let public = p256_from_bits(spki.subject_public_key.as_bytes()).ok_or_else(|| {
            TokenError::Device("generate: the YubiKey returned no valid P-256 key".into())
        })?;
        self.generated[idx] = Some(public);
        match self.attested_key(slot) {
            Ok(Some(k)) if k == public => {
                self.keys.get_mut()[idx] = Some((public, KeySource::Attestation))
            }
            Ok(Some(_)) => {
                return Err(TokenError::Device(format!(
                    "generate: the attested key in {} is not the generated key",
                    slot_name(slot)
                )))
            }
            // Cannot attest: public_key() falls back to metadata, then this key.
            Ok(None) => {}
            Err(e) => return Err(e),
        }
        Ok(public)
    }

    /// Where [`CustodianToken::public_key`] found the slot's key, once it has.
    pub fn key_source(&self, slot: Slot) -> Option<KeySource> {
        self.keys.borrow()[slot_index(slot)].map(|(_, s)| s)
    }

    /// The reader the key sits in.
    pub fn reader_name(&self) -> String {
        self.yk.borrow().name().to_owned()
    }

    /// The key in the slot's attestation certificate; `None` when the key cannot
    /// attest it (empty slot, imported key, no attestation support).
    fn attested_key(&self, slot: Slot) -> Result<Option<PublicKey>, TokenError> {
        match self.attest_der(slot) {
            Ok(der) => {
                let cert = Certificate::from_bytes(der).map_err(|_| {
                    TokenError::Device("the attestation is not an X.509 certificate".into())
                })?;
                let key = p256_from_bits(cert.subject_pki().subject_public_key.as_bytes());
                match key {
                    Some(k) => Ok(Some(k)),
                    None => Err(TokenError::Device(format!(
                        "the key in {} is not a P-256 key",
                        slot_name(slot)
                    ))),
                }
            }
            Err(TokenError::NoKey(_)) | Err(TokenError::Unsupported(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn attest_der(&self, slot: Slot) -> Result<Vec<u8>, TokenError> {
        let mut yk = self.yk.borrow_mut();
        let der =
            guarded("attest", || piv::attest(&mut yk, slot_id(slot)))?.map_err(|e| match e {
                YkError::NotSupported => {
                    TokenError::Unsupported("this YubiKey cannot attest keys (firmware < 4.3)")
                }
                // 6A80/6A88: nothing to attest (an empty slot, or an imported key).
                YkError::GenericError => TokenError::NoKey(slot),
                e => device("attest", e),
            })?;
        Ok(der.to_vec())
    }

    fn metadata_key(&self, slot: Slot) -> Option<PublicKey> {
        let mut yk = self.yk.borrow_mut();
        let md = guarded("metadata", || piv::metadata(&mut yk, slot_id(slot)))
            .ok()?
            .ok()?;
        p256_from_bits(md.public.as_ref()?.subject_public_key.as_bytes())
    }

    /// The slot's key, from the cache or the card (see the crate docs).
    fn lookup(&self, slot: Slot) -> Result<PublicKey, TokenError> {
        let idx = slot_index(slot);
        if let Some((k, _)) = self.keys.borrow()[idx] {
            return Ok(k);
        }
        let found = match self.attested_key(slot)? {
            Some(k) => Some((k, KeySource::Attestation)),
            None => match self.metadata_key(slot) {
                Some(k) => Some((k, KeySource::Metadata)),
                None => self.generated[idx].map(|k| (k, KeySource::Generated)),
            },
        };
        let (k, source) = found.ok_or(TokenError::NoKey(slot))?;
        self.keys.borrow_mut()[idx] = Some((k, source));
        Ok(k)
    }

    /// Maps an error of a private-key operation.
    fn op_error(&self, slot: Slot, what: &'static str, e: YkError) -> TokenError {
        match e {
            // 6982: security status not satisfied.
            YkError::AuthenticationError => TokenError::PinRequired,
            // Anything else the card refused: is there a key at all?
            YkError::GenericError => match self.lookup(slot) {
                Err(TokenError::NoKey(s)) => TokenError::NoKey(s),
                _ => TokenError::Device(format!("{what}: the YubiKey refused the operation")),
            },
            e => device(what, e),
        }
    }
}

impl CustodianToken for YubiKeyToken {
    fn serial(&self) -> u32 {
        self.serial
    }

    fn version(&self) -> (u8, u8, u8) {
        self.version
    }

    fn verify_pin(&mut self, pin: &Pin) -> Result<(), TokenError> {
        let pin = pin.expose_secret().as_bytes();
        // An empty VERIFY is the retry query, and succeeds while a PIN is verified.
        if !PIN_LEN.contains(&pin.len()) {
            return Err(TokenError::Device("a PIV PIN is 6 to 8 bytes".into()));
        }
        let yk = self.yk.get_mut();
        match guarded("verify PIN", || yk.verify_pin(pin))? {
            Ok(()) => Ok(()),
            Err(YkError::WrongPin { tries: 0 }) | Err(YkError::PinLocked) => {
                Err(TokenError::PinBlocked)
            }
            Err(YkError::WrongPin { tries }) => Err(TokenError::WrongPin { tries }),
            Err(e) => Err(device("verify PIN", e)),
        }
    }

    fn public_key(&self, slot: Slot) -> Result<PublicKey, TokenError> {
        self.lookup(slot)
    }

    fn sign(&mut self, msg: &[u8]) -> Result<Vec<u8>, TokenError> {
        let digest = Sha256::digest(msg);
        let res = {
            let yk = self.yk.get_mut();
            guarded("sign", || {
                piv::sign_data(yk, &digest, AlgorithmId::EccP256, SlotId::Signature)
            })?
        };
        let der = res.map_err(|e| self.op_error(Slot::Signature, "sign", e))?;
        let sig = Signature::from_der(&der).map_err(|_| {
            TokenError::Device("sign: the YubiKey returned no DER signature".into())
        })?;
        // A signature that does not verify is a device fault: never hand it out.
        if let Some((k, _)) = self.keys.borrow()[slot_index(Slot::Signature)] {
            VerifyingKey::from(&k).verify(msg, &sig).map_err(|_| {
                TokenError::Device("sign: the signature does not verify with the 9c key".into())
            })?;
        }
        Ok(der.to_vec())
    }

    fn ecdh(&mut self, peer: &PublicKey) -> Result<SharedX, TokenError> {
        let point = peer.to_encoded_point(false);
        let res = {
            let yk = self.yk.get_mut();
            guarded("ECDH", || {
                piv::decrypt_data(
                    yk,
                    point.as_bytes(),
                    AlgorithmId::EccP256,
                    SlotId::KeyManagement,
                )
            })?
        };
        let out = res.map_err(|e| self.op_error(Slot::KeyManagement, "ECDH", e))?;
        let x: [u8; 32] = out.as_slice().try_into().map_err(|_| {
            TokenError::Device(format!(
                "ECDH: the YubiKey returned {} bytes, not 32",
                out.len()
            ))
        })?;
        Ok(Zeroizing::new(x))
    }

    fn attest(&mut self, slot: Slot) -> Result<Vec<u8>, TokenError> {
        let der = self.attest_der(slot)?;
        Certificate::from_bytes(der.clone()).map_err(|_| {
            TokenError::Device("the attestation is not an X.509 certificate".into())
        })?;
        Ok(der)
    }

    fn attestation_intermediate(&mut self) -> Result<Vec<u8>, TokenError> {
        let yk = self.yk.get_mut();
        let obj =
            guarded("read f9 certificate", || yk.fetch_object(OBJ_ATTESTATION))?.map_err(|e| {
                match e {
                    YkError::NotFound => TokenError::Unsupported(
                        "this YubiKey has no attestation certificate (object 5FFF01)",
                    ),
                    e => device("read f9 certificate", e),
                }
            })?;
        cert_from_object(&obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn management_keys() {
        let d = ManagementKey::factory_default();
        assert_eq!(
            &d.0[..],
            &[1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8]
        );
        let h =
            ManagementKey::from_hex("010203040506070801020304050607080102030405060708").unwrap();
        assert_eq!(h.0, d.0);
        assert!(h.to_mgm_key().is_ok());
        assert!(ManagementKey::from_hex("0102").is_err());
        assert!(ManagementKey::from_hex(&"zz".repeat(24)).is_err());
        assert!(ManagementKey::from_bytes(&[7u8; 23]).is_err());
        // A weak DES part (parity ignored) is refused before it reaches the crate.
        let mut weak = [0x42u8; 24];
        weak[8..16].copy_from_slice(&[0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]);
        assert!(ManagementKey::from_bytes(&weak).is_err());
        let mut semi = [0x42u8; 24];
        semi[16..].copy_from_slice(&[0x01, 0xFE, 0x01, 0xFE, 0x01, 0xFE, 0x01, 0xFE]);
        assert!(ManagementKey::from_bytes(&semi).is_err());
        // Debug shows no key bytes.
        let shown = format!("{h:?}");
        assert_eq!(shown, "ManagementKey(..)");
    }

    #[test]
    fn panics_in_the_crate_become_errors() {
        let r: Result<yubikey::Result<()>, _> = guarded("test", || {
            let v: Vec<u8> = Vec::new();
            let _ = v[0];
            Ok(())
        });
        assert!(matches!(r, Err(TokenError::Device(_))));
    }

    #[test]
    fn certificate_objects() {
        assert!(cert_from_object(&[]).is_err());
        assert!(cert_from_object(&[0x70, 0x05, 1, 2]).is_err());
        assert!(cert_from_object(&[0x70, 0x82, 0xFF]).is_err());
        assert!(cert_from_object(&[0x70, 0x02, 0x30, 0x00, 0x71, 0x01, 0x00, 0xFE, 0x00]).is_err());
        assert!(matches!(
            cert_from_object(&[0x70, 0x01, 0x30, 0x71, 0x01, 0x01]),
            Err(TokenError::Unsupported(_))
        ));
        let (t, v, rest) = split_tlv(&[0x70, 0x81, 0x02, 9, 9, 0xFE, 0x00]).unwrap();
        assert_eq!((t, v, rest), (0x70, &[9u8, 9][..], &[0xFEu8, 0x00][..]));
    }

    #[test]
    fn policies_map_to_the_attested_ones() {
        assert_eq!(
            attestation::PinPolicy::from(PinPolicy::Always),
            attestation::PinPolicy::Always
        );
        assert_eq!(
            attestation::TouchPolicy::from(TouchPolicy::Cached),
            attestation::TouchPolicy::Cached
        );
        assert_eq!(
            yubikey::PinPolicy::from(PinPolicy::Once),
            yubikey::PinPolicy::Once
        );
        assert_eq!(
            yubikey::TouchPolicy::from(TouchPolicy::Never),
            yubikey::TouchPolicy::Never
        );
    }

    fn assert_send<T: Send>() {}
    #[test]
    fn the_token_is_send() {
        assert_send::<YubiKeyToken>();
    }
}
