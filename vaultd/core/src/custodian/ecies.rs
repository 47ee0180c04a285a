//! Encrypting a share to a custodian's P-256 key (ECIES).
//!
//! ```text
//! envelope = 0x01 ‖ E (65 bytes, SEC1 uncompressed ephemeral public key) ‖ nonce (12) ‖ AES-256-GCM(ct ‖ tag)
//! Z        = x-coordinate of ECDH(e, R)                     (32 bytes)
//! key      = HKDF-SHA256(ikm = Z, salt = E ‖ R, info = "vaultd custodian ecies v1")   (32 bytes)
//! AAD      = 0x01 ‖ caller's associated data
//! ```
//!
//! R is the recipient's public key (SEC1 uncompressed). Opening needs only
//! the ECDH operation, which the custodian's YubiKey performs in slot 9d
//! ([`super::token::CustodianToken::ecdh`]): the private key never leaves
//! the card. The caller's associated data binds the share to its secret,
//! version and custodian.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::{PublicKey, SecretKey};
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

pub const VERSION: u8 = 0x01;
const INFO: &[u8] = crate::keys::label::ECIES_INFO;
const POINT: usize = 65;
const NONCE: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EciesError {
    #[error("malformed envelope")]
    Malformed,
    #[error("the envelope does not open with this key and context")]
    Authentication,
    #[error("key agreement failed: {0}")]
    Ecdh(String),
}

/// The shared x-coordinate of ECDH with the recipient's private key.
pub type SharedX = Zeroizing<[u8; 32]>;

fn sec1(p: &PublicKey) -> Vec<u8> {
    p.to_encoded_point(false).as_bytes().to_vec()
}

fn derive(z: &[u8; 32], eph: &[u8], recipient: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut salt = Vec::with_capacity(2 * POINT);
    salt.extend_from_slice(eph);
    salt.extend_from_slice(recipient);
    let hk = Hkdf::<Sha256>::new(Some(&salt), z);
    let mut key = Zeroizing::new([0u8; 32]);
    hk.expand(INFO, key.as_mut())
        .expect("32 bytes is a valid HKDF length");
    key
}

fn full_aad(aad: &[u8]) -> Vec<u8> {
    let mut v = vec![VERSION];
    v.extend_from_slice(aad);
    v
}

/// Encrypts `plaintext` to `recipient` with a fresh ephemeral key.
pub fn seal_to(
    recipient: &PublicKey,
    aad: &[u8],
    plaintext: &[u8],
    rng: &mut dyn RngCore,
) -> Vec<u8> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    let eph = loop {
        rng.fill_bytes(bytes.as_mut());
        if let Ok(k) = SecretKey::from_slice(bytes.as_ref()) {
            break k;
        }
    };
    let mut nonce = [0u8; NONCE];
    rng.fill_bytes(&mut nonce);
    seal_to_with(recipient, aad, plaintext, &eph, nonce)
}

/// Deterministic form of [`seal_to`] (for test vectors only: reusing an
/// ephemeral key or nonce breaks confidentiality).
pub fn seal_to_with(
    recipient: &PublicKey,
    aad: &[u8],
    plaintext: &[u8],
    eph: &SecretKey,
    nonce: [u8; NONCE],
) -> Vec<u8> {
    let e = sec1(&eph.public_key());
    let r = sec1(recipient);
    let shared = p256::ecdh::diffie_hellman(eph.to_nonzero_scalar(), recipient.as_affine());
    let mut z = Zeroizing::new([0u8; 32]);
    z.copy_from_slice(shared.raw_secret_bytes());
    let key = derive(&z, &e, &r);
    let ct = Aes256Gcm::new(key.as_ref().into())
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &full_aad(aad),
            },
        )
        .expect("in-memory AES-GCM cannot fail");
    let mut out = Vec::with_capacity(1 + POINT + NONCE + ct.len());
    out.push(VERSION);
    out.extend_from_slice(&e);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// Opens an envelope addressed to `recipient`; `ecdh` computes the shared
/// x-coordinate with the recipient's private key (on the token).
pub fn open_with(
    envelope: &[u8],
    recipient: &PublicKey,
    aad: &[u8],
    ecdh: &mut dyn FnMut(&PublicKey) -> Result<SharedX, String>,
) -> Result<Zeroizing<Vec<u8>>, EciesError> {
    if envelope.len() < 1 + POINT + NONCE + 16 || envelope[0] != VERSION {
        return Err(EciesError::Malformed);
    }
    let e = &envelope[1..1 + POINT];
    let eph = PublicKey::from_sec1_bytes(e).map_err(|_| EciesError::Malformed)?;
    if e[0] != 0x04 {
        return Err(EciesError::Malformed);
    }
    let nonce = &envelope[1 + POINT..1 + POINT + NONCE];
    let z = ecdh(&eph).map_err(EciesError::Ecdh)?;
    let key = derive(&z, e, &sec1(recipient));
    Aes256Gcm::new(key.as_ref().into())
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: &envelope[1 + POINT + NONCE..],
                aad: &full_aad(aad),
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| EciesError::Authentication)
}

/// ECDH with a software secret key (the software token and tests).
pub fn soft_ecdh(secret: &SecretKey, peer: &PublicKey) -> Zeroizing<[u8; 32]> {
    let shared = p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), peer.as_affine());
    let mut z = Zeroizing::new([0u8; 32]);
    z.copy_from_slice(shared.raw_secret_bytes());
    z
}

/// A one-time recipient key (break-glass and recovery): the private key as
/// PKCS#8 PEM (zeroized on drop; the caller writes it 0600 and deletes it
/// after use) and the public key, SEC1 uncompressed.
pub fn one_time_key(
    rng: &mut (impl RngCore + rand::CryptoRng),
) -> Result<(Zeroizing<String>, Vec<u8>), EciesError> {
    use p256::pkcs8::{EncodePrivateKey as _, LineEnding};
    let sk = SecretKey::random(rng);
    let pem = sk
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|_| EciesError::Malformed)?;
    let public = sk.public_key().to_encoded_point(false).as_bytes().to_vec();
    Ok((Zeroizing::new(pem.to_string()), public))
}

/// The SHA-256 of a public key (SEC1 bytes), lowercase hex: what custodians
/// and operators compare out of band.
pub fn key_fingerprint(sec1: &[u8]) -> String {
    use sha2::Digest as _;
    Sha256::digest(sec1)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let sk = SecretKey::random(&mut rand::rngs::OsRng);
        let pk = sk.public_key();
        let env = seal_to(&pk, b"ctx", b"share bytes", &mut rand::rngs::OsRng);
        let mut ecdh = |p: &PublicKey| Ok(soft_ecdh(&sk, p));
        assert_eq!(
            &open_with(&env, &pk, b"ctx", &mut ecdh).unwrap()[..],
            b"share bytes"
        );
        assert_eq!(
            open_with(&env, &pk, b"other", &mut ecdh).err(),
            Some(EciesError::Authentication)
        );
        let other = SecretKey::random(&mut rand::rngs::OsRng);
        let mut wrong = |p: &PublicKey| Ok(soft_ecdh(&other, p));
        assert_eq!(
            open_with(&env, &pk, b"ctx", &mut wrong).err(),
            Some(EciesError::Authentication)
        );
        for i in [0, 1, 70, env.len() - 1] {
            let mut e = env.clone();
            e[i] ^= 0x01;
            assert!(open_with(&e, &pk, b"ctx", &mut ecdh).is_err(), "byte {i}");
        }
        assert_eq!(
            open_with(&env[..50], &pk, b"ctx", &mut ecdh).err(),
            Some(EciesError::Malformed)
        );
    }
}
