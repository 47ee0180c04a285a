//! The image-signing key (ECDSA P-256) and its public half.
//!
//! * The secret key is stored as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
//! * The public key is distributed as SPKI PEM (`-----BEGIN PUBLIC KEY-----`)
//!   and identified by its **key id**: the lowercase hex SHA-256 of the SPKI
//!   DER encoding.
//! * Signatures are raw `r || s` (64 bytes, big-endian) over a SHA-256
//!   digest the caller computes ("prehash"), which is what the TPM's
//!   `TPM2_VerifySignature` checks.

use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::BootFormatError;

/// The secret image-signing key. No `Debug`, no `Serialize`; the scalar is
/// zeroized on drop (by `p256::ecdsa::SigningKey`'s own `Drop`).
pub struct ImageSigningKey(SigningKey);

impl ImageSigningKey {
    /// A fresh key from the OS random number generator.
    pub fn generate() -> Self {
        ImageSigningKey(SigningKey::random(&mut rand::rngs::OsRng))
    }

    /// Parses a PKCS#8 PEM private key (P-256 only).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, BootFormatError> {
        SigningKey::from_pkcs8_pem(pem.trim())
            .map(ImageSigningKey)
            .map_err(|e| {
                BootFormatError::KeyMalformed(format!("not a PKCS#8 PEM P-256 private key ({e})"))
            })
    }

    /// The PKCS#8 PEM encoding, in a buffer zeroized on drop.
    pub fn to_pkcs8_pem(&self) -> Zeroizing<String> {
        self.0
            .to_pkcs8_pem(LineEnding::LF)
            .expect("a valid P-256 key always encodes as PKCS#8")
    }

    /// The public half.
    pub fn public(&self) -> ImagePublicKey {
        ImagePublicKey(*self.0.verifying_key())
    }

    /// Signs a SHA-256 digest; returns `r || s`. The caller computes the
    /// digest and is responsible for its domain separation (signed policies
    /// sign `aHash`, `vault-image` bundles a prefixed manifest hash).
    pub fn sign_prehash(&self, digest: &[u8; 32]) -> Result<[u8; 64], BootFormatError> {
        let sig: Signature = self
            .0
            .sign_prehash(digest)
            .map_err(|e| BootFormatError::KeyMalformed(format!("ECDSA signing failed ({e})")))?;
        let mut out = [0u8; 64];
        out.copy_from_slice(&sig.to_bytes());
        Ok(out)
    }
}

/// The public image-signing key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImagePublicKey(VerifyingKey);

impl ImagePublicKey {
    /// Parses an SPKI PEM public key (`-----BEGIN PUBLIC KEY-----`, P-256).
    pub fn from_pem(pem: &str) -> Result<Self, BootFormatError> {
        VerifyingKey::from_public_key_pem(pem.trim())
            .map(ImagePublicKey)
            .map_err(|e| {
                BootFormatError::KeyMalformed(format!("not an SPKI PEM P-256 public key ({e})"))
            })
    }

    /// The SPKI PEM encoding (LF line endings, trailing newline).
    pub fn to_pem(&self) -> String {
        self.0
            .to_public_key_pem(LineEnding::LF)
            .expect("a valid P-256 point always encodes as SPKI")
    }

    fn spki_der(&self) -> Vec<u8> {
        self.0
            .to_public_key_der()
            .expect("a valid P-256 point always encodes as SPKI")
            .as_bytes()
            .to_vec()
    }

    /// Lowercase hex SHA-256 of the SPKI DER encoding.
    pub fn key_id(&self) -> String {
        hex::encode(Sha256::digest(self.spki_der()))
    }

    /// The affine coordinates (big-endian, 32 bytes each, leading zeros
    /// kept), as the TPM's `TPMS_ECC_POINT` wants them.
    pub fn affine_xy(&self) -> ([u8; 32], [u8; 32]) {
        let point = self.0.to_encoded_point(false);
        let mut x = [0u8; 32];
        let mut y = [0u8; 32];
        // An uncompressed encoding of a non-identity point has both.
        if let (Some(px), Some(py)) = (point.x(), point.y()) {
            x.copy_from_slice(px);
            y.copy_from_slice(py);
        }
        (x, y)
    }

    /// Verifies a raw `r || s` ECDSA signature over a SHA-256 digest.
    pub fn verify_prehash(
        &self,
        digest: &[u8; 32],
        sig_rs: &[u8; 64],
    ) -> Result<(), BootFormatError> {
        let sig = Signature::from_slice(sig_rs).map_err(|_| {
            BootFormatError::SignatureInvalid("r or s is out of range for P-256".into())
        })?;
        self.0.verify_prehash(digest, &sig).map_err(|_| {
            BootFormatError::SignatureInvalid(format!("not signed by key {}", self.key_id()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips() {
        let k = ImageSigningKey::generate();
        let pem = k.to_pkcs8_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let k2 = ImageSigningKey::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(k.public(), k2.public());
        let pub_pem = k.public().to_pem();
        assert!(pub_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        let p = ImagePublicKey::from_pem(&pub_pem).unwrap();
        assert_eq!(p, k.public());
        assert_eq!(p.key_id().len(), 64);
        assert_ne!(p.key_id(), ImageSigningKey::generate().public().key_id());
    }

    #[test]
    fn key_id_is_sha256_of_spki_der() {
        let k = ImageSigningKey::generate().public();
        // SPKI DER of a P-256 key is a fixed 26-byte header plus 0x04 || x || y.
        let (x, y) = k.affine_xy();
        let mut der = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").unwrap();
        der.push(0x04);
        der.extend_from_slice(&x);
        der.extend_from_slice(&y);
        assert_eq!(k.key_id(), hex::encode(Sha256::digest(&der)));
    }

    #[test]
    fn bad_keys_are_key_malformed() {
        for s in [
            "",
            "garbage",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        ] {
            assert_eq!(
                ImagePublicKey::from_pem(s).unwrap_err().code(),
                "key_malformed"
            );
            assert_eq!(
                ImageSigningKey::from_pkcs8_pem(s).err().unwrap().code(),
                "key_malformed"
            );
        }
        // A private key is not a public key and vice versa.
        let k = ImageSigningKey::generate();
        assert!(ImagePublicKey::from_pem(&k.to_pkcs8_pem()).is_err());
        assert!(ImageSigningKey::from_pkcs8_pem(&k.public().to_pem()).is_err());
    }

    #[test]
    fn prehash_signatures_verify() {
        let k = ImageSigningKey::generate();
        let d = [7u8; 32];
        let sig = k.sign_prehash(&d).unwrap();
        k.public().verify_prehash(&d, &sig).unwrap();
        let mut bad = sig;
        bad[40] ^= 1;
        assert_eq!(
            k.public().verify_prehash(&d, &bad).unwrap_err().code(),
            "signature_invalid"
        );
        assert!(k.public().verify_prehash(&[8u8; 32], &sig).is_err());
        assert!(ImageSigningKey::generate()
            .public()
            .verify_prehash(&d, &sig)
            .is_err());
        assert!(k.public().verify_prehash(&d, &[0u8; 64]).is_err());
        assert!(k.public().verify_prehash(&d, &[0xff; 64]).is_err());
    }
}
