//! The key hierarchy, in one file: every key has its own type, and every
//! domain-separation label is a named constant in [`label`].
//!
//! ```text
//!  TPM 2.0 sealed object            PKCS#11 token AES-256 key (non-extractable)
//!            │  SealShare                      │  SealShare
//!            └──────────── seal mode ──────────┘   (tpm+pkcs11: RK = A xor B;
//!                           │                       otherwise one share = RK)
//!                           ▼
//!  RootKey (RK)  32 random bytes, in memory only while unsealed
//!     │   ├─ HKDF-SHA256(salt_v, RK, label::KEYRING ‖ u32be(v)) ─▶ KeyringKey v
//!     │   │      └─ AES-256-GCM(AAD = label::DEK_AAD …) wraps ─▶ DataKey (one per version)
//!     │   │             └─ AES-256-GCM(AAD = label::VALUE_AAD …) ─▶ value ciphertext
//!     │   ├─ HKDF-SHA256(RK, label::AUDIT_HMAC) ─▶ AuditHmacKey (value HMACs in entries)
//!     │   └─ HMAC-SHA256(RK, label::ROOT_CHECK) ─▶ the sealed root's check value
//!     └─ Shamir k-of-n (recovery shares, custodian::recovery), each sealed to a
//!        custodian's 9d key (ECIES, label::ECIES_INFO), checked by
//!        HMAC-SHA256(RK, label::RECOVERY_CHECK)
//!
//!  sealed tier: DataKey NOT under RK; Shamir k-of-n to custodians
//!  (label::SEALED_SHARE_AAD), forwarded to a one-time key at break-glass
//!  (label::BREAKGLASS_SHARE_AAD)
//! ```
//!
//! None of these types implements `Debug`, `Clone` or `Serialize`; reading
//! one goes through `expose_secret()`, copying through `duplicate()`, and
//! every one is zeroized on drop (they wrap [`Key32`]). Turning one key type
//! into another happens only in the named functions here.

use hkdf::Hkdf;
use sha2::Sha256;

use crate::keyring::KeyringVersion;
use crate::secret::Key32;

/// Every domain-separation label (HKDF info, HMAC message, AEAD associated
/// data prefix, signed-message prefix). Changing one breaks every stored
/// ciphertext, check value or signature that used it: never change one,
/// add a new version instead.
pub mod label {
    /// HKDF info prefix of keyring key v (followed by `u32be(v)`).
    pub const KEYRING: &[u8] = b"vaultd keyring v1";
    /// HKDF info of the audit HMAC key.
    pub const AUDIT_HMAC: &[u8] = b"vaultd audit hmac v1";
    /// HMAC message of the sealed root's key check value.
    pub const ROOT_CHECK: &[u8] = b"vaultd root key check v1";
    /// First field of a value ciphertext's associated data.
    pub const VALUE_AAD: &[u8] = b"vaultd/value/v1";
    /// First field of a wrapped data key's associated data.
    pub const DEK_AAD: &[u8] = b"vaultd/dek/v1";
    /// Associated data of the PKCS#11 seal's AES-GCM wrap.
    pub const PKCS11_SEAL_AAD: &[u8] = b"vaultd pkcs11 seal v1";
    /// HKDF info of the custodian ECIES envelope key.
    pub const ECIES_INFO: &[u8] = b"vaultd custodian ecies v1";
    /// HMAC message of the recovery bundle's key check value.
    pub const RECOVERY_CHECK: &[u8] = b"vaultd recovery check v1";
    /// Associated-data prefix of a recovery share sealed to a custodian.
    pub const RECOVERY_SHARE_AAD: &[u8] = b"vaultd recovery share v1";
    /// Associated-data prefix of a recovery share forwarded to the one-time key.
    pub const RECOVERY_TRANSFER_AAD: &[u8] = b"vaultd recovery transfer v1";
    /// Associated-data prefix of a sealed-tier share sealed to a custodian.
    pub const SEALED_SHARE_AAD: &[u8] = b"vaultd sealed share v1";
    /// Associated-data prefix of a sealed-tier share forwarded at break-glass.
    pub const BREAKGLASS_SHARE_AAD: &[u8] = b"vaultd breakglass share v1";
    /// Prefix of the message a custodian signs to approve or deny a checkout.
    pub const APPROVAL: &[u8] = b"vaultd approval v1";
    /// Prefix of the message a custodian signs for a break-glass request.
    pub const BREAKGLASS_APPROVAL: &[u8] = b"vaultd breakglass approval v1";
    /// Prefix of the message a custodian signs for a governance change.
    pub const GOVERNANCE_APPROVAL: &[u8] = b"vaultd governance approval v1";

    /// Every label, for the uniqueness test.
    pub const ALL: &[&[u8]] = &[
        KEYRING,
        AUDIT_HMAC,
        ROOT_CHECK,
        VALUE_AAD,
        DEK_AAD,
        PKCS11_SEAL_AAD,
        ECIES_INFO,
        RECOVERY_CHECK,
        RECOVERY_SHARE_AAD,
        RECOVERY_TRANSFER_AAD,
        SEALED_SHARE_AAD,
        BREAKGLASS_SHARE_AAD,
        APPROVAL,
        BREAKGLASS_APPROVAL,
        GOVERNANCE_APPROVAL,
    ];
}

macro_rules! key_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name(Key32);

        impl $name {
            pub fn expose_secret(&self) -> &[u8; 32] {
                self.0.expose_secret()
            }

            /// Constant-time equality.
            pub fn ct_eq(&self, other: &$name) -> bool {
                self.0.ct_eq(&other.0)
            }

            /// An explicit copy (no `Clone`, so copies are visible in review).
            pub fn duplicate(&self) -> $name {
                $name(self.0.duplicate())
            }

            /// The primitive key, for the barrier (not every type needs it).
            #[allow(dead_code)]
            pub(crate) fn key32(&self) -> &Key32 {
                &self.0
            }
        }
    };
}

key_type!(
    /// RK: the root of the hierarchy. Generated once at init, sealed by the
    /// configured devices, split to custodians for recovery.
    RootKey
);
key_type!(
    /// Keyring key v: wraps data keys; derived from RK, never stored.
    KeyringKey
);
key_type!(
    /// One secret version's data key: encrypts the value; stored only wrapped
    /// (standard tier) or split to custodians (sealed tier).
    DataKey
);
key_type!(
    /// Keys the HMACs of sensitive fields in audit entries.
    AuditHmacKey
);
key_type!(
    /// What one seal device wraps: RK itself, or one XOR half of it when two
    /// devices must both be present.
    SealShare
);

fn hkdf32(salt: Option<&[u8]>, ikm: &[u8; 32], info: &[u8]) -> Key32 {
    let mut okm = [0u8; 32];
    Hkdf::<Sha256>::new(salt, ikm)
        .expand(info, &mut okm)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    Key32::from_bytes(&mut okm)
}

impl RootKey {
    /// A fresh root key from the OS CSPRNG (the init ceremony).
    pub fn generate() -> RootKey {
        RootKey(Key32::generate())
    }

    /// Keyring key `kv` (HKDF with the version's public salt).
    pub fn keyring_key(&self, kv: &KeyringVersion) -> KeyringKey {
        let mut info = label::KEYRING.to_vec();
        info.extend_from_slice(&kv.version.to_be_bytes());
        KeyringKey(hkdf32(Some(&kv.salt), self.expose_secret(), &info))
    }

    /// The audit HMAC key: stable across restarts and keyring rotations,
    /// useless for anything else.
    pub fn audit_hmac_key(&self) -> AuditHmacKey {
        AuditHmacKey(hkdf32(None, self.expose_secret(), label::AUDIT_HMAC))
    }

    /// RK as the single share a device seals when one device holds it all.
    pub fn whole_share(&self) -> SealShare {
        SealShare(self.0.duplicate())
    }

    /// Splits RK into two shares, both needed: `(A, RK xor A)`.
    pub fn split_for_two_seals(&self) -> (SealShare, SealShare) {
        let a = Key32::generate();
        let b = self.0.xor(&a);
        (SealShare(a), SealShare(b))
    }

    /// RK from the share one device unsealed (single-device modes). The
    /// caller checks the result against the sealed root's check value.
    pub fn from_whole_share(s: SealShare) -> RootKey {
        RootKey(s.0)
    }

    /// RK from the two shares of [`RootKey::split_for_two_seals`].
    pub fn from_two_shares(a: &SealShare, b: &SealShare) -> RootKey {
        RootKey(a.0.xor(&b.0))
    }

    /// RK from the bytes Shamir recovery rebuilt (custodian recovery); the
    /// caller checks them against the bundle's check value.
    pub(crate) fn from_recovered(k: Key32) -> RootKey {
        RootKey(k)
    }
}

impl DataKey {
    /// A fresh data key for one secret version.
    pub fn generate() -> DataKey {
        DataKey(Key32::generate())
    }

    /// A data key unwrapped or recombined from its stored form.
    pub(crate) fn from_key32(k: Key32) -> DataKey {
        DataKey(k)
    }
}

impl SealShare {
    /// Takes the bytes a device unwrapped (exactly 32, else `None`).
    pub fn from_slice(bytes: &[u8]) -> Option<SealShare> {
        Key32::from_slice(bytes).map(SealShare)
    }

    /// A random share, for testing seal devices.
    pub fn generate() -> SealShare {
        SealShare(Key32::generate())
    }

    /// The share as the primitive key a device layer wraps.
    pub fn as_key32(&self) -> &Key32 {
        &self.0
    }

    /// A share a device layer unwrapped.
    pub fn from_key32(k: Key32) -> SealShare {
        SealShare(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_distinct_and_none_prefixes_another() {
        for (i, a) in label::ALL.iter().enumerate() {
            for (j, b) in label::ALL.iter().enumerate() {
                if i != j {
                    assert!(!b.starts_with(a), "{:?} prefixes {:?}", a, b);
                }
            }
        }
    }

    #[test]
    fn derived_keys_are_separated() {
        let rk = RootKey::generate();
        let kv = KeyringVersion::new_random(1);
        let k1 = rk.keyring_key(&kv);
        assert!(k1.ct_eq(&rk.keyring_key(&kv)));
        assert!(!k1.ct_eq(&RootKey::generate().keyring_key(&kv)));
        let v2 = KeyringVersion {
            version: 2,
            ..kv.clone()
        };
        assert!(!k1.ct_eq(&rk.keyring_key(&v2)));
        assert_ne!(rk.audit_hmac_key().expose_secret(), k1.expose_secret());
        assert_ne!(rk.audit_hmac_key().expose_secret(), rk.expose_secret());
    }

    #[test]
    fn two_shares_recombine_and_one_says_nothing() {
        let rk = RootKey::generate();
        let (a, b) = rk.split_for_two_seals();
        assert!(RootKey::from_two_shares(&a, &b).ct_eq(&rk));
        assert_ne!(a.expose_secret(), rk.expose_secret());
        assert_ne!(b.expose_secret(), rk.expose_secret());
        assert!(RootKey::from_whole_share(rk.whole_share()).ct_eq(&rk));
        assert!(SealShare::from_slice(&[0u8; 31]).is_none());
    }
}
