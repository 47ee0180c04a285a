//! The keyring under the root key, and per-secret-version data keys.
//!
//! ```text
//! RK ──HKDF-SHA256(salt_v, "vaultd keyring" ‖ v)──▶ keyring key v   (never stored)
//! keyring key v ──AES-256-GCM(AAD = dek context)──▶ wrapped DEK      (stored)
//! DEK ──AES-256-GCM(AAD = value context)──▶ value ciphertext         (stored)
//! ```
//!
//! Only the public salts and version numbers of keyring keys are stored.
//! Rotation adds a version with a fresh salt; data keys are then rewrapped
//! from old versions to the active one, row by row, while the old versions
//! stay loaded so reads never stop.
//!
//! Associated data binds each ciphertext to (secret path, secret version,
//! tier) and each wrapped DEK additionally to its keyring version, so a row
//! copied onto another path or version fails authentication.

use std::collections::BTreeMap;

use crate::barrier::{self, IntegrityError};
use crate::keys::{label, DataKey, KeyringKey, RootKey};
use crate::secret::{Key32, SecretBytes};

/// Public description of one keyring version (what is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyringVersion {
    pub version: u32,
    pub salt: [u8; 32],
}

impl KeyringVersion {
    pub fn new_random(version: u32) -> Self {
        let k = Key32::generate();
        // The salt is public; taking it from the CSPRNG keeps versions apart.
        KeyringVersion {
            version,
            salt: *k.expose_secret(),
        }
    }
}

/// The storage tier of a secret; part of every value's associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Data key wrapped under the keyring (the appliance can open it).
    Standard,
    /// Data key split among custodians ([`crate::custodian::sealed`]); the
    /// appliance cannot open it.
    Sealed,
}

impl Tier {
    fn tag(self) -> u8 {
        match self {
            Tier::Standard => 1,
            Tier::Sealed => 2,
        }
    }
}

/// The encrypted form of one secret version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedValue {
    pub key_version: u32,
    pub wrapped_dek: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

fn push_field(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u32).to_be_bytes());
    out.extend_from_slice(field);
}

/// Canonical AAD for a value ciphertext.
pub fn value_aad(path: &str, version: u64, tier: Tier) -> Vec<u8> {
    let mut v = Vec::with_capacity(32 + path.len());
    push_field(&mut v, label::VALUE_AAD);
    push_field(&mut v, path.as_bytes());
    v.extend_from_slice(&version.to_be_bytes());
    v.push(tier.tag());
    v
}

/// Canonical AAD for a wrapped data key.
pub fn dek_aad(path: &str, version: u64, tier: Tier, key_version: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(40 + path.len());
    push_field(&mut v, label::DEK_AAD);
    push_field(&mut v, path.as_bytes());
    v.extend_from_slice(&version.to_be_bytes());
    v.push(tier.tag());
    v.extend_from_slice(&key_version.to_be_bytes());
    v
}

/// Derives keyring key `kv` from the root key ([`RootKey::keyring_key`]).
pub fn derive_keyring_key(rk: &RootKey, kv: &KeyringVersion) -> KeyringKey {
    rk.keyring_key(kv)
}

/// Errors of keyring operations.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyringError {
    #[error("keyring version {0} is not loaded")]
    UnknownVersion(u32),
    #[error("keyring is empty")]
    Empty,
    #[error(transparent)]
    Integrity(#[from] IntegrityError),
}

/// The loaded keyring: every version's key, and which one new data uses.
pub struct Keyring {
    keys: BTreeMap<u32, KeyringKey>,
    active: u32,
}

impl Keyring {
    /// Derives every version from RK; the highest version is active.
    pub fn load(rk: &RootKey, versions: &[KeyringVersion]) -> Result<Keyring, KeyringError> {
        let mut keys = BTreeMap::new();
        for kv in versions {
            keys.insert(kv.version, derive_keyring_key(rk, kv));
        }
        let active = *keys.keys().next_back().ok_or(KeyringError::Empty)?;
        Ok(Keyring { keys, active })
    }

    pub fn active_version(&self) -> u32 {
        self.active
    }

    pub fn versions(&self) -> Vec<u32> {
        self.keys.keys().copied().collect()
    }

    /// Adds a new version derived from RK and makes it active.
    pub fn add(&mut self, rk: &RootKey, kv: &KeyringVersion) {
        self.keys.insert(kv.version, derive_keyring_key(rk, kv));
        if kv.version > self.active {
            self.active = kv.version;
        }
    }

    fn key(&self, v: u32) -> Result<&Key32, KeyringError> {
        self.keys
            .get(&v)
            .map(KeyringKey::key32)
            .ok_or(KeyringError::UnknownVersion(v))
    }

    /// Encrypts a new secret version under a fresh data key.
    pub fn seal_value(&self, path: &str, version: u64, tier: Tier, value: &[u8]) -> SealedValue {
        let dek = DataKey::generate();
        let ciphertext = barrier::encrypt(dek.key32(), &value_aad(path, version, tier), value);
        let kv = self.active;
        let key = self.key(kv).expect("active version is always loaded");
        let wrapped_dek =
            barrier::encrypt(key, &dek_aad(path, version, tier, kv), dek.expose_secret());
        SealedValue {
            key_version: kv,
            wrapped_dek,
            ciphertext,
        }
    }

    /// Decrypts a stored secret version.
    pub fn open_value(
        &self,
        path: &str,
        version: u64,
        tier: Tier,
        sealed: &SealedValue,
    ) -> Result<SecretBytes, KeyringError> {
        let key = self.key(sealed.key_version)?;
        let dek = barrier::decrypt_key(
            key,
            &dek_aad(path, version, tier, sealed.key_version),
            &sealed.wrapped_dek,
        )?;
        Ok(barrier::decrypt(
            &dek,
            &value_aad(path, version, tier),
            &sealed.ciphertext,
        )?)
    }

    /// Rewraps a data key from its keyring version to the active one. The
    /// value ciphertext is untouched. Returns `None` if already current.
    pub fn rewrap(
        &self,
        path: &str,
        version: u64,
        tier: Tier,
        key_version: u32,
        wrapped_dek: &[u8],
    ) -> Result<Option<(u32, Vec<u8>)>, KeyringError> {
        if key_version == self.active {
            return Ok(None);
        }
        let old = self.key(key_version)?;
        let dek =
            barrier::decrypt_key(old, &dek_aad(path, version, tier, key_version), wrapped_dek)?;
        let new = self.key(self.active)?;
        let w = barrier::encrypt(
            new,
            &dek_aad(path, version, tier, self.active),
            dek.expose_secret(),
        );
        Ok(Some((self.active, w)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> (RootKey, Keyring) {
        let rk = RootKey::generate();
        let kr = Keyring::load(&rk, &[KeyringVersion::new_random(1)]).unwrap();
        (rk, kr)
    }

    #[test]
    fn value_round_trip() {
        let (_, kr) = ring();
        let sv = kr.seal_value("db/root", 1, Tier::Standard, b"pw");
        let pt = kr.open_value("db/root", 1, Tier::Standard, &sv).unwrap();
        assert_eq!(pt.expose_secret(), b"pw");
    }

    #[test]
    fn swapped_rows_are_rejected() {
        let (_, kr) = ring();
        let a = kr.seal_value("a", 1, Tier::Standard, b"A");
        let b = kr.seal_value("b", 1, Tier::Standard, b"B");
        // Whole row moved to another path or version.
        assert!(kr.open_value("b", 1, Tier::Standard, &a).is_err());
        assert!(kr.open_value("a", 2, Tier::Standard, &a).is_err());
        // Ciphertext swapped under another row's data key.
        let mixed = SealedValue {
            ciphertext: b.ciphertext.clone(),
            ..a.clone()
        };
        assert!(kr.open_value("a", 1, Tier::Standard, &mixed).is_err());
        // Keyring version relabelled.
        let relabelled = SealedValue {
            key_version: 2,
            ..a.clone()
        };
        assert_eq!(
            kr.open_value("a", 1, Tier::Standard, &relabelled).err(),
            Some(KeyringError::UnknownVersion(2))
        );
    }

    #[test]
    fn flipped_bits_are_rejected() {
        let (_, kr) = ring();
        let sv = kr.seal_value("p", 3, Tier::Standard, b"secret");
        for i in 0..sv.ciphertext.len() {
            let mut s = sv.clone();
            s.ciphertext[i] ^= 0x40;
            assert!(kr.open_value("p", 3, Tier::Standard, &s).is_err());
        }
        for i in 0..sv.wrapped_dek.len() {
            let mut s = sv.clone();
            s.wrapped_dek[i] ^= 0x01;
            assert!(kr.open_value("p", 3, Tier::Standard, &s).is_err());
        }
    }

    #[test]
    fn rotation_keeps_old_versions_readable_and_rewraps() {
        let (rk, mut kr) = ring();
        let old = kr.seal_value("p", 1, Tier::Standard, b"old");
        kr.add(&rk, &KeyringVersion::new_random(2));
        assert_eq!(kr.active_version(), 2);
        assert_eq!(
            kr.open_value("p", 1, Tier::Standard, &old)
                .unwrap()
                .expose_secret(),
            b"old"
        );
        let new = kr.seal_value("p", 2, Tier::Standard, b"new");
        assert_eq!(new.key_version, 2);
        let (kv, w) = kr
            .rewrap("p", 1, Tier::Standard, old.key_version, &old.wrapped_dek)
            .unwrap()
            .unwrap();
        assert_eq!(kv, 2);
        let rewrapped = SealedValue {
            key_version: kv,
            wrapped_dek: w,
            ciphertext: old.ciphertext.clone(),
        };
        assert_eq!(
            kr.open_value("p", 1, Tier::Standard, &rewrapped)
                .unwrap()
                .expose_secret(),
            b"old"
        );
        assert!(kr
            .rewrap("p", 1, Tier::Standard, 2, &rewrapped.wrapped_dek)
            .unwrap()
            .is_none());
    }

    #[test]
    fn keyring_keys_depend_on_rk_salt_and_version() {
        let rk = RootKey::generate();
        let kv = KeyringVersion::new_random(1);
        let a = derive_keyring_key(&rk, &kv);
        assert!(a.ct_eq(&derive_keyring_key(&rk, &kv)));
        assert!(!a.ct_eq(&derive_keyring_key(&RootKey::generate(), &kv)));
        let other_version = KeyringVersion {
            version: 2,
            ..kv.clone()
        };
        assert!(!a.ct_eq(&derive_keyring_key(&rk, &other_version)));
    }

    #[test]
    fn reload_from_rk_reads_old_data() {
        let rk = RootKey::generate();
        let versions = vec![KeyringVersion::new_random(1)];
        let kr = Keyring::load(&rk, &versions).unwrap();
        let sv = kr.seal_value("x", 1, Tier::Standard, b"v");
        let kr2 = Keyring::load(&rk, &versions).unwrap();
        assert_eq!(
            kr2.open_value("x", 1, Tier::Standard, &sv)
                .unwrap()
                .expose_secret(),
            b"v"
        );
        let wrong = Keyring::load(&RootKey::generate(), &versions).unwrap();
        assert!(wrong.open_value("x", 1, Tier::Standard, &sv).is_err());
    }
}
