//! The barrier: AES-256-GCM with a format prefix and caller-supplied
//! associated data.
//!
//! Blob layout: `0x01 ‖ nonce (12) ‖ ciphertext ‖ tag (16)`. The format byte
//! is itself authenticated (it is prepended to the AAD), so a blob cannot be
//! reinterpreted under another format. Nonces are random: every key here
//! encrypts few messages (one per data key, a bounded number per keyring key),
//! far below the 2^32 random-nonce limit for AES-GCM.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;

use crate::secret::{Key32, SecretBytes};

pub const FORMAT_V1: u8 = 0x01;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Smallest valid blob: format byte, nonce, tag.
pub const MIN_BLOB_LEN: usize = 1 + NONCE_LEN + TAG_LEN;

/// Decryption failed: wrong key, wrong context, or modified ciphertext.
/// Deliberately carries no detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ciphertext failed authentication")]
pub struct IntegrityError;

fn full_aad(aad: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(aad.len() + 1);
    v.push(FORMAT_V1);
    v.extend_from_slice(aad);
    v
}

/// Encrypts `plaintext` under `key`, binding it to `aad`.
pub fn encrypt(key: &Key32, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new(key.expose_secret().into());
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let aad = full_aad(aad);
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .expect("AES-GCM encryption cannot fail for in-memory buffers below 64 GiB");
    let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// Decrypts a blob made by [`encrypt`] with the same key and `aad`.
pub fn decrypt(key: &Key32, aad: &[u8], blob: &[u8]) -> Result<SecretBytes, IntegrityError> {
    if blob.len() < MIN_BLOB_LEN || blob[0] != FORMAT_V1 {
        return Err(IntegrityError);
    }
    let cipher = Aes256Gcm::new(key.expose_secret().into());
    let nonce = Nonce::from_slice(&blob[1..1 + NONCE_LEN]);
    let aad = full_aad(aad);
    cipher
        .decrypt(
            nonce,
            Payload {
                msg: &blob[1 + NONCE_LEN..],
                aad: &aad,
            },
        )
        .map(SecretBytes::new)
        .map_err(|_| IntegrityError)
}

/// Decrypts into a 32-byte key (wrapped data keys, keyring keys).
pub fn decrypt_key(key: &Key32, aad: &[u8], blob: &[u8]) -> Result<Key32, IntegrityError> {
    let pt = decrypt(key, aad, blob)?;
    Key32::from_slice(pt.expose_secret()).ok_or(IntegrityError)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let k = Key32::generate();
        let blob = encrypt(&k, b"ctx", b"hunter2");
        assert_eq!(
            decrypt(&k, b"ctx", &blob).unwrap().expose_secret(),
            b"hunter2"
        );
    }

    #[test]
    fn every_flipped_bit_is_rejected() {
        let k = Key32::generate();
        let blob = encrypt(&k, b"ctx", b"value");
        for i in 0..blob.len() {
            for bit in 0..8 {
                let mut b = blob.clone();
                b[i] ^= 1 << bit;
                assert_eq!(
                    decrypt(&k, b"ctx", &b).err(),
                    Some(IntegrityError),
                    "byte {i} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn wrong_aad_wrong_key_and_truncation_rejected() {
        let k = Key32::generate();
        let blob = encrypt(&k, b"ctx", b"value");
        assert!(decrypt(&k, b"ctx2", &blob).is_err());
        assert!(decrypt(&Key32::generate(), b"ctx", &blob).is_err());
        for n in 0..blob.len() {
            assert!(decrypt(&k, b"ctx", &blob[..n]).is_err(), "len {n}");
        }
    }

    #[test]
    fn nonces_are_fresh() {
        let k = Key32::generate();
        assert_ne!(encrypt(&k, b"", b"x"), encrypt(&k, b"", b"x"));
    }
}
