//! Secret-holding types. None of them implement `Debug`, `Display`,
//! `Serialize` or `Clone` by accident: every read goes through a named
//! `expose_secret()` call, and every buffer is zeroized on drop.

use rand::RngCore;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

/// A 256-bit symmetric key (root key, keyring key, data key, seal share).
pub struct Key32(Zeroizing<[u8; 32]>);

impl Key32 {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(k.as_mut());
        Key32(k)
    }

    /// Takes ownership of key bytes; the caller's buffer is zeroized.
    pub fn from_bytes(bytes: &mut [u8; 32]) -> Self {
        let k = Zeroizing::new(*bytes);
        bytes.zeroize();
        Key32(k)
    }

    /// Copies from a slice that must be exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 32 {
            return None;
        }
        let mut k = Zeroizing::new([0u8; 32]);
        k.copy_from_slice(bytes);
        Some(Key32(k))
    }

    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }

    /// XOR of two keys, used to split the root key across two seals so that
    /// both are needed.
    pub fn xor(&self, other: &Key32) -> Key32 {
        let mut out = Zeroizing::new([0u8; 32]);
        for (i, b) in out.iter_mut().enumerate() {
            *b = self.0[i] ^ other.0[i];
        }
        Key32(out)
    }

    /// Constant-time equality.
    pub fn ct_eq(&self, other: &Key32) -> bool {
        self.0.as_ref().ct_eq(other.0.as_ref()).into()
    }

    /// A copy, made explicitly (no `Clone` impl so copies are visible in review).
    pub fn duplicate(&self) -> Key32 {
        Key32(Zeroizing::new(*self.0))
    }
}

/// A secret value of arbitrary length (a stored credential in clear).
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub fn new(v: Vec<u8>) -> Self {
        SecretBytes(Zeroizing::new(v))
    }
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A PIN or passphrase. Zeroized on drop, never printed.
pub struct Pin(Zeroizing<String>);

impl Pin {
    pub fn new(s: String) -> Self {
        Pin(Zeroizing::new(s))
    }
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

/// Constant-time comparison of two byte strings (length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xor_split_recombines() {
        let rk = Key32::generate();
        let a = Key32::generate();
        let b = rk.xor(&a);
        assert!(a.xor(&b).ct_eq(&rk));
        assert!(!a.ct_eq(&rk));
    }

    #[test]
    fn from_bytes_zeroizes_source() {
        let mut raw = [7u8; 32];
        let k = Key32::from_bytes(&mut raw);
        assert_eq!(raw, [0u8; 32]);
        assert_eq!(k.expose_secret(), &[7u8; 32]);
    }

    #[test]
    fn from_slice_rejects_wrong_length() {
        assert!(Key32::from_slice(&[0u8; 31]).is_none());
        assert!(Key32::from_slice(&[0u8; 33]).is_none());
    }
}
