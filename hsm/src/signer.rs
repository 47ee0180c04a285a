//! [`Pkcs11Signer`]: an ECDSA P-256 key pair on the token.

use std::sync::Mutex;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use p256::pkcs8::EncodePublicKey;
use sha2::{Digest, Sha256};
use vault_core::secret::Pin;

use crate::config::Pkcs11Config;
use crate::error::{HsmError, SignerError};
use crate::token;

/// DER encoding of the OID prime256v1 (1.2.840.10045.3.1.7), for `CKA_EC_PARAMS`.
const P256_EC_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// An ECDSA P-256 signing key whose private half never leaves the token.
///
/// `Send + Sync`: the session sits behind a mutex, so signatures from several
/// threads are serialised (~10k signatures/s on SoftHSM; batch what you sign).
pub struct Pkcs11Signer {
    session: Mutex<Session>,
    private: ObjectHandle,
    public: p256::PublicKey,
    token_label: String,
    key_label: String,
}

impl std::fmt::Debug for Pkcs11Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Signer")
            .field("token_label", &self.token_label)
            .field("key_label", &self.key_label)
            .finish_non_exhaustive()
    }
}

fn template(class: ObjectClass, label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Class(class),
        Attribute::KeyType(KeyType::EC),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

impl Pkcs11Signer {
    /// Opens the token named by `cfg` (its `key_label`, the seal key, is not
    /// used) and finds the key pair labelled `key_label`.
    pub fn open(cfg: &Pkcs11Config, pin: &Pin, key_label: &str) -> Result<Self, SignerError> {
        Self::open_inner(cfg, pin, key_label, false).map_err(SignerError::from)
    }

    /// Like [`open`](Self::open), but generates the key pair if the private
    /// key is absent (private: token, private, sensitive, non-extractable,
    /// sign; public: token, verify).
    pub fn open_or_create(
        cfg: &Pkcs11Config,
        pin: &Pin,
        key_label: &str,
    ) -> Result<Self, SignerError> {
        Self::open_inner(cfg, pin, key_label, true).map_err(SignerError::from)
    }

    fn open_inner(
        cfg: &Pkcs11Config,
        pin: &Pin,
        key_label: &str,
        create: bool,
    ) -> Result<Self, HsmError> {
        let _ops = token::ops_lock();
        let session = token::open_session(&cfg.module, &cfg.token_label, pin)?;
        let what =
            |half: &str| format!("EC {half} key {key_label:?} on token {:?}", cfg.token_label);
        let priv_t = template(ObjectClass::PRIVATE_KEY, key_label);
        let pub_t = template(ObjectClass::PUBLIC_KEY, key_label);
        let (private, public) = match token::find_one(&session, &priv_t, &what("private"))? {
            Some(k) => (k, token::find_one(&session, &pub_t, &what("public"))?),
            None if create => match token::find_one(&session, &priv_t, &what("private"))? {
                Some(k) => (k, token::find_one(&session, &pub_t, &what("public"))?),
                None => {
                    let (public, private) = generate_pair(&session, key_label)?;
                    (private, Some(public))
                }
            },
            None => return Err(HsmError::KeyMissing(what("private"))),
        };
        let public = public.ok_or_else(|| HsmError::KeyMissing(what("public")))?;
        let public = read_public_key(&session, public)?;
        Ok(Pkcs11Signer {
            session: Mutex::new(session),
            private,
            public,
            token_label: cfg.token_label.clone(),
            key_label: key_label.to_owned(),
        })
    }

    /// The public key as DER `SubjectPublicKeyInfo`.
    pub fn public_key_spki_der(&self) -> Vec<u8> {
        self.public
            .to_public_key_der()
            .expect("a valid P-256 point always encodes as SPKI")
            .into_vec()
    }

    /// The public key as an uncompressed SEC1 point (65 bytes, `0x04 ‖ x ‖ y`).
    pub fn public_key_sec1(&self) -> Vec<u8> {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        self.public.to_encoded_point(false).as_bytes().to_vec()
    }

    /// The public key as a `p256` value.
    pub fn public_key(&self) -> &p256::PublicKey {
        &self.public
    }

    /// ECDSA P-256 over SHA-256(`msg`) (hashed on the host), as raw `r ‖ s`.
    pub fn sign_sha256_raw(&self, msg: &[u8]) -> Result<[u8; 64], SignerError> {
        let digest = Sha256::digest(msg);
        let sig = token::lock(&self.session)
            .sign(&Mechanism::Ecdsa, self.private, &digest)
            .map_err(|e| SignerError::from(HsmError::from_cryptoki("C_Sign", e)))?;
        <[u8; 64]>::try_from(sig.as_slice()).map_err(|_| SignerError::Device {
            call: "C_Sign",
            message: format!("signature has length {}, want 64", sig.len()),
        })
    }

    /// ECDSA P-256 over SHA-256(`msg`), DER-encoded (as in X.509 and TLS).
    pub fn sign_sha256_der(&self, msg: &[u8]) -> Result<Vec<u8>, SignerError> {
        let raw = self.sign_sha256_raw(msg)?;
        let sig = p256::ecdsa::Signature::from_slice(&raw).map_err(|e| SignerError::Device {
            call: "C_Sign",
            message: format!("token returned an invalid signature: {e}"),
        })?;
        Ok(sig.to_der().as_bytes().to_vec())
    }
}

fn generate_pair(session: &Session, label: &str) -> Result<(ObjectHandle, ObjectHandle), HsmError> {
    let id = token::key_id(label);
    let public = [
        Attribute::Token(true),
        Attribute::Verify(true),
        Attribute::EcParams(P256_EC_PARAMS.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.clone()),
    ];
    let private = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id),
    ];
    let pair = session
        .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
        .map_err(|e| HsmError::from_cryptoki("C_GenerateKeyPair", e))?;
    tracing::info!(
        key_label = label,
        "generated PKCS#11 signing key (ECDSA P-256)"
    );
    Ok(pair)
}

/// Reads `CKA_EC_POINT` (a DER OCTET STRING around the uncompressed point;
/// some tokens return the bare point) and parses it.
fn read_public_key(session: &Session, public: ObjectHandle) -> Result<p256::PublicKey, HsmError> {
    let bad = |message: String| HsmError::Device {
        call: "C_GetAttributeValue",
        message,
    };
    let attrs = session
        .get_attributes(public, &[AttributeType::EcPoint])
        .map_err(|e| HsmError::from_cryptoki("C_GetAttributeValue", e))?;
    let point = attrs
        .into_iter()
        .find_map(|a| match a {
            Attribute::EcPoint(p) => Some(p),
            _ => None,
        })
        .ok_or_else(|| bad("public key has no CKA_EC_POINT".into()))?;
    let sec1 = match point.as_slice() {
        [0x04, 0x41, rest @ ..] if rest.len() == 65 => rest,
        bare if bare.len() == 65 => bare,
        other => {
            return Err(bad(format!(
                "CKA_EC_POINT of unexpected length {}",
                other.len()
            )))
        }
    };
    p256::PublicKey::from_sec1_bytes(sec1)
        .map_err(|_| bad("CKA_EC_POINT is not a P-256 point".into()))
}
