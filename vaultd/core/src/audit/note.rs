//! Checkpoints in the C2SP tlog-checkpoint signed-note format.
//!
//! ```text
//! <origin>\n<tree size, decimal>\n<root hash, base64>\n
//! \n
//! — <key name> <base64(key id ‖ signature)>\n
//! ```
//!
//! Signatures are ECDSA P-256 over SHA-256 of the note text (everything up
//! to and including the third newline), DER-encoded: signature type 0x02 of
//! C2SP signed-note ("ECDSA as implemented by transparency-dev/witness"),
//! whose key ID is the first four bytes of SHA-256 of the DER
//! SubjectPublicKeyInfo. The key name is the origin.

use base64::Engine as _;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;
use sha2::{Digest, Sha256};

use super::merkle::Hash;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    #[error("malformed checkpoint: {0}")]
    Malformed(String),
    #[error("no signature by key {0}")]
    NoSignature(String),
    #[error("signature by key {0} does not verify")]
    BadSignature(String),
    #[error("invalid public key: {0}")]
    BadKey(String),
}

/// Key ID for an ECDSA key: `SHA-256(SPKI DER)[:4]`.
pub fn key_id(spki_der: &[u8]) -> [u8; 4] {
    let d = Sha256::digest(spki_der);
    [d[0], d[1], d[2], d[3]]
}

impl Checkpoint {
    /// The signed text.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            b64().encode(self.root)
        )
    }

    /// The full signed note, given a DER signature over `body()`.
    pub fn signed(&self, key_name: &str, spki_der: &[u8], der_sig: &[u8]) -> String {
        let mut sig = key_id(spki_der).to_vec();
        sig.extend_from_slice(der_sig);
        format!(
            "{}\n\u{2014} {} {}\n",
            self.body(),
            key_name,
            b64().encode(sig)
        )
    }

    fn parse_body(body: &str) -> Result<Checkpoint, NoteError> {
        let m = |s: &str| NoteError::Malformed(s.into());
        let mut lines = body.split('\n');
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or_else(|| m("no origin line"))?;
        let size_s = lines.next().ok_or_else(|| m("no size line"))?;
        if size_s.is_empty()
            || !size_s.bytes().all(|b| b.is_ascii_digit())
            || (size_s.len() > 1 && size_s.starts_with('0'))
        {
            return Err(m("size is not a canonical decimal"));
        }
        let size: u64 = size_s.parse().map_err(|_| m("size out of range"))?;
        let root = b64()
            .decode(lines.next().ok_or_else(|| m("no root line"))?)
            .map_err(|_| m("root is not base64"))?;
        let root: Hash = root.try_into().map_err(|_| m("root is not 32 bytes"))?;
        Ok(Checkpoint {
            origin: origin.into(),
            size,
            root,
        })
    }

    /// Parses a signed note and verifies the signature of `key_name` with
    /// the ECDSA P-256 public key `spki_der`.
    pub fn verify(note: &str, key_name: &str, spki_der: &[u8]) -> Result<Checkpoint, NoteError> {
        if note.bytes().any(|b| b < 0x20 && b != b'\n') {
            return Err(NoteError::Malformed("control characters".into()));
        }
        let (body, sigs) = note
            .split_once("\n\n")
            .ok_or_else(|| NoteError::Malformed("no blank line before signatures".into()))?;
        let body = format!("{body}\n");
        let cp = Checkpoint::parse_body(&body)?;
        let vk = VerifyingKey::from_public_key_der(spki_der)
            .map_err(|e| NoteError::BadKey(e.to_string()))?;
        let want_id = key_id(spki_der);
        let mut seen = false;
        for line in sigs.lines() {
            let rest = line.strip_prefix("\u{2014} ").ok_or_else(|| {
                NoteError::Malformed("signature line must start with an em dash".into())
            })?;
            let (name, sig) = rest
                .split_once(' ')
                .ok_or_else(|| NoteError::Malformed("signature line has no signature".into()))?;
            let sig = b64()
                .decode(sig)
                .map_err(|_| NoteError::Malformed("signature is not base64".into()))?;
            if name != key_name || sig.len() < 5 || sig[..4] != want_id {
                continue; // another key's signature: ignored, per the spec
            }
            seen = true;
            let s = Signature::from_der(&sig[4..])
                .map_err(|_| NoteError::BadSignature(key_name.into()))?;
            vk.verify(body.as_bytes(), &s)
                .map_err(|_| NoteError::BadSignature(key_name.into()))?;
        }
        if !seen {
            return Err(NoteError::NoSignature(key_name.into()));
        }
        Ok(cp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer as _;
    use p256::ecdsa::SigningKey;
    use p256::pkcs8::EncodePublicKey as _;

    fn key() -> (SigningKey, Vec<u8>) {
        let sk = SigningKey::random(&mut rand::rngs::OsRng);
        let spki = sk
            .verifying_key()
            .to_public_key_der()
            .unwrap()
            .as_bytes()
            .to_vec();
        (sk, spki)
    }

    fn sign(cp: &Checkpoint, sk: &SigningKey, spki: &[u8]) -> String {
        let sig: Signature = sk.sign(cp.body().as_bytes());
        cp.signed(&cp.origin, spki, sig.to_der().as_bytes())
    }

    #[test]
    fn signed_note_round_trip_and_format() {
        let (sk, spki) = key();
        let cp = Checkpoint {
            origin: "vaultd.example/abc".into(),
            size: 42,
            root: [7u8; 32],
        };
        let note = sign(&cp, &sk, &spki);
        let lines: Vec<&str> = note.split('\n').collect();
        assert_eq!(lines[0], "vaultd.example/abc");
        assert_eq!(lines[1], "42");
        assert_eq!(lines[3], "");
        assert!(lines[4].starts_with("\u{2014} vaultd.example/abc "));
        assert!(note.ends_with('\n'));
        assert_eq!(Checkpoint::verify(&note, &cp.origin, &spki).unwrap(), cp);
    }

    #[test]
    fn tampered_or_foreign_notes_fail() {
        let (sk, spki) = key();
        let (_, other) = key();
        let cp = Checkpoint {
            origin: "o".into(),
            size: 5,
            root: [1u8; 32],
        };
        let note = sign(&cp, &sk, &spki);
        assert!(matches!(
            Checkpoint::verify(&note.replacen("\n5\n", "\n6\n", 1), "o", &spki),
            Err(NoteError::BadSignature(_))
        ));
        assert!(matches!(
            Checkpoint::verify(&note, "o", &other),
            Err(NoteError::NoSignature(_))
        ));
        assert!(matches!(
            Checkpoint::verify(&note, "x", &spki),
            Err(NoteError::NoSignature(_))
        ));
        assert!(Checkpoint::verify("o\n05\nAAAA\n\n", "o", &spki).is_err());
        assert!(Checkpoint::verify("garbage", "o", &spki).is_err());
    }
}
