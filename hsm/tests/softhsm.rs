//! End-to-end tests against SoftHSM2.
//!
//! SoftHSM reads `SOFTHSM2_CONF` and its token list once per process, at
//! `C_Initialize`, and the tests of this file are threads of one process: so
//! one fixture creates every token up front and sets the variable before the
//! first module load.

use std::path::PathBuf;
use std::sync::OnceLock;

use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use vault_core::keys::SealShare;
use vault_core::seal::{Seal, SealError, SealKind};
use vault_core::secret::Pin;
use vault_hsm::cryptoki::error::{Error as CkError, RvError};
use vault_hsm::cryptoki::mechanism::Mechanism;
use vault_hsm::cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use vault_hsm::cryptoki::session::UserType;
use vault_hsm::cryptoki::types::AuthPin;
use vault_hsm::softhsm::{SoftHsmDir, SOFTHSM2_MODULE};
use vault_hsm::{Pkcs11Config, Pkcs11Seal, Pkcs11Signer, SignerError};

const PIN: &str = "314159";
const WRONG_PIN: &str = "271828";
const SO_PIN: &str = "87654321";
// "dup" twice on purpose: ambiguous labels must be refused.
const TOKENS: &[&str] = &[
    "seal", "seal-b", "signer", "nokey", "wrongpin", "dup", "dup",
];

struct Fixture {
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let hsm = SoftHsmDir::create(dir.path()).expect("softhsm dir");
        for label in TOKENS {
            hsm.init_token(label, SO_PIN, PIN).expect("init token");
        }
        // Before any C_Initialize in this process (all tests go through here).
        std::env::set_var("SOFTHSM2_CONF", hsm.conf_path());
        Fixture { _dir: dir }
    })
}

fn cfg(token: &str, key: &str) -> Pkcs11Config {
    fixture();
    Pkcs11Config {
        module: PathBuf::from(SOFTHSM2_MODULE),
        token_label: token.into(),
        key_label: key.into(),
    }
}

fn pin() -> Pin {
    Pin::new(PIN.into())
}

fn assert_no_pin(msg: &str) {
    assert!(
        !msg.contains(PIN) && !msg.contains(WRONG_PIN),
        "error text leaks a PIN: {msg}"
    );
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Pkcs11Seal>();
    check::<Pkcs11Signer>();
}

#[test]
fn seal_passes_conformance() {
    let c = cfg("seal", "conformance");
    drop(Pkcs11Seal::open_or_create(&c, &pin()).expect("create key"));
    vault_core::testing::seal_conformance(&|| {
        Box::new(Pkcs11Seal::open(&c, &pin()).expect("open"))
    });
}

#[test]
fn key_is_found_again_and_kind_is_pkcs11() {
    let c = cfg("seal", "persist");
    let k = SealShare::generate();
    let blob = {
        let s = Pkcs11Seal::open_or_create(&c, &pin()).expect("create");
        assert_eq!(s.kind(), SealKind::Pkcs11);
        s.seal(&k).expect("seal")
    };
    assert_eq!(blob.len(), 1 + 12 + 32 + 16);
    assert_eq!(blob[0], 0x01);
    let s = Pkcs11Seal::open(&c, &pin()).expect("open existing key");
    assert!(s.unseal(&blob).expect("unseal").ct_eq(&k));
    // open_or_create finds the same key rather than making a new one.
    let s2 = Pkcs11Seal::open_or_create(&c, &pin()).expect("open_or_create again");
    assert!(s2.unseal(&blob).expect("unseal").ct_eq(&k));
}

#[test]
fn concurrent_open_or_create_makes_one_key() {
    let c = cfg("seal", "race");
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || Pkcs11Seal::open_or_create(&c, &pin()).map(drop))
        })
        .collect();
    for h in handles {
        h.join().unwrap().expect("open_or_create");
    }
    // `open` refuses ambiguous labels, so success means exactly one key.
    let s = Pkcs11Seal::open(&c, &pin()).expect("exactly one key");
    let k = SealShare::generate();
    assert!(s.unseal(&s.seal(&k).unwrap()).unwrap().ct_eq(&k));
}

#[test]
fn seal_key_is_sensitive_and_not_extractable() {
    let c = cfg("seal", "protected");
    let _seal = Pkcs11Seal::open_or_create(&c, &pin()).expect("create");

    let ctx = vault_hsm::pkcs11_module(&c.module).expect("shared context");
    let slot = ctx
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == "seal")
        .expect("slot");
    let session = ctx.open_rw_session(slot).unwrap();
    match session.login(UserType::User, Some(&AuthPin::from(PIN))) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("login: {e}"),
    }
    let keys = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(b"protected".to_vec()),
        ])
        .unwrap();
    assert_eq!(keys.len(), 1);
    let key = keys[0];

    let attrs = session
        .get_attributes(
            key,
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::AlwaysSensitive,
                AttributeType::NeverExtractable,
                AttributeType::Token,
                AttributeType::Private,
                AttributeType::ValueLen,
                AttributeType::Id,
            ],
        )
        .unwrap();
    let mut seen = 0;
    for a in &attrs {
        match a {
            Attribute::Sensitive(v)
            | Attribute::AlwaysSensitive(v)
            | Attribute::Token(v)
            | Attribute::Private(v) => {
                assert!(*v, "{a:?}");
                seen += 1;
            }
            Attribute::Extractable(v) => {
                assert!(!*v, "extractable");
                seen += 1;
            }
            Attribute::NeverExtractable(v) => {
                assert!(*v, "never extractable");
                seen += 1;
            }
            Attribute::ValueLen(n) => {
                assert_eq!(u64::from(*n), 32);
                seen += 1;
            }
            Attribute::Id(id) => {
                assert_eq!(id.len(), 16);
                seen += 1;
            }
            _ => {}
        }
    }
    assert_eq!(seen, 8, "{attrs:?}");

    // CKA_VALUE cannot be read: either an error or no value at all.
    match session.get_attributes(key, &[AttributeType::Value]) {
        Ok(v) => assert!(
            !v.iter().any(|a| matches!(a, Attribute::Value(_))),
            "CKA_VALUE was readable"
        ),
        Err(CkError::Pkcs11(RvError::AttributeSensitive, _)) => {}
        Err(e) => panic!("unexpected error reading CKA_VALUE: {e}"),
    }

    // Wrapping it out under a session key fails.
    let wrapper = session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32.into()),
                Attribute::Token(false),
                Attribute::Wrap(true),
            ],
        )
        .unwrap();
    match session.wrap_key(&Mechanism::AesKeyWrapPad, wrapper, key) {
        Err(CkError::Pkcs11(RvError::KeyUnextractable, _)) => {}
        Err(e) => panic!("wrap failed, but not as unextractable: {e}"),
        Ok(_) => panic!("seal key could be wrapped out of the token"),
    }
}

#[test]
fn wrong_pin_is_pin_incorrect() {
    let c = cfg("wrongpin", "k");
    let e = Pkcs11Seal::open_or_create(&c, &Pin::new(WRONG_PIN.into())).unwrap_err();
    assert!(matches!(e, SealError::PinIncorrect), "{e}");
    assert_eq!(e.code(), "pkcs11_pin_incorrect");
    assert_no_pin(&e.to_string());
    assert_no_pin(&format!("{e:?}"));
    let e = Pkcs11Signer::open_or_create(&c, &Pin::new(WRONG_PIN.into()), "ca").unwrap_err();
    assert!(matches!(e, SignerError::PinIncorrect), "{e}");
    assert_eq!(e.code(), "pkcs11_pin_incorrect");
    assert_no_pin(&e.to_string());
}

#[test]
fn unknown_token_is_token_missing() {
    let c = cfg("no-such-token", "k");
    let e = Pkcs11Seal::open_or_create(&c, &pin()).unwrap_err();
    assert!(matches!(e, SealError::TokenMissing(_)), "{e}");
    assert_eq!(e.code(), "pkcs11_token_missing");
    assert!(e.to_string().contains("no-such-token"), "{e}");
    assert_no_pin(&e.to_string());
    let e = Pkcs11Signer::open(&c, &pin(), "ca").unwrap_err();
    assert!(matches!(e, SignerError::TokenMissing(_)), "{e}");
}

#[test]
fn duplicate_token_label_is_refused() {
    let e = Pkcs11Seal::open_or_create(&cfg("dup", "k"), &pin()).unwrap_err();
    assert!(matches!(e, SealError::TokenMissing(_)), "{e}");
    assert!(e.to_string().contains("unique"), "{e}");
}

#[test]
fn bad_module_is_token_missing() {
    let mut c = cfg("seal", "k");
    c.module = PathBuf::from("/nonexistent/libpkcs11-missing.so");
    let e = Pkcs11Seal::open(&c, &pin()).unwrap_err();
    assert!(matches!(e, SealError::TokenMissing(_)), "{e}");
    assert!(
        e.to_string().contains("/nonexistent/libpkcs11-missing.so"),
        "{e}"
    );
    assert_no_pin(&e.to_string());
    let e = Pkcs11Signer::open(&c, &pin(), "ca").unwrap_err();
    assert_eq!(e.code(), "pkcs11_token_missing", "{e}");
}

#[test]
fn missing_key_is_key_missing() {
    let c = cfg("nokey", "never-created");
    let e = Pkcs11Seal::open(&c, &pin()).unwrap_err();
    assert!(matches!(e, SealError::KeyMissing(_)), "{e}");
    assert_eq!(e.code(), "seal_key_missing");
    assert!(e.to_string().contains("never-created"), "{e}");
    assert_no_pin(&e.to_string());
    let e = Pkcs11Signer::open(&c, &pin(), "never-created").unwrap_err();
    assert!(matches!(e, SignerError::KeyMissing(_)), "{e}");
    assert_eq!(e.code(), "signer_key_missing");
    assert_no_pin(&e.to_string());
}

#[test]
fn blob_from_other_token_is_corrupt() {
    let a = Pkcs11Seal::open_or_create(&cfg("seal", "cross"), &pin()).unwrap();
    let b = Pkcs11Seal::open_or_create(&cfg("seal-b", "cross"), &pin()).unwrap();
    let k = SealShare::generate();
    let blob = a.seal(&k).unwrap();
    let e = b
        .unseal(&blob)
        .err()
        .expect("token B must not open token A's blob");
    assert!(matches!(e, SealError::BlobCorrupt(_)), "{e}");
    assert_eq!(e.code(), "seal_blob_corrupt");
    assert_no_pin(&e.to_string());
    // Wrong version byte and trailing garbage are refused too.
    let mut v = blob.clone();
    v[0] = 0x02;
    assert!(matches!(a.unseal(&v), Err(SealError::BlobCorrupt(_))));
    let mut long = blob.clone();
    long.push(0);
    assert!(matches!(a.unseal(&long), Err(SealError::BlobCorrupt(_))));
    assert!(a.unseal(&blob).unwrap().ct_eq(&k));
}

#[test]
fn signer_signatures_verify() {
    let c = cfg("signer", "unused-seal-label");
    let s = Pkcs11Signer::open_or_create(&c, &pin(), "ca").expect("create signer");
    let spki = s.public_key_spki_der();
    let vk = VerifyingKey::from_public_key_der(&spki).expect("spki parses");
    let sec1 = s.public_key_sec1();
    assert_eq!(sec1.len(), 65);
    assert_eq!(sec1[0], 0x04);
    assert_eq!(vk.to_encoded_point(false).as_bytes(), sec1.as_slice());

    let msg = b"tree head 42";
    let raw = s.sign_sha256_raw(msg).expect("sign raw");
    let sig = Signature::from_slice(&raw).unwrap();
    vk.verify(msg, &sig).expect("raw signature verifies");
    assert!(
        vk.verify(b"tree head 43", &sig).is_err(),
        "tampered message verified"
    );

    let der = s.sign_sha256_der(msg).expect("sign der");
    let sig = Signature::from_der(&der).unwrap();
    vk.verify(msg, &sig).expect("DER signature verifies");
    assert!(
        vk.verify(b"tree head 43", &sig).is_err(),
        "tampered message verified"
    );

    // Found again by label, same public key; a second create does not replace it.
    let again = Pkcs11Signer::open(&c, &pin(), "ca").expect("open existing");
    assert_eq!(again.public_key_spki_der(), spki);
    let again = Pkcs11Signer::open_or_create(&c, &pin(), "ca").expect("open_or_create existing");
    assert_eq!(again.public_key_spki_der(), spki);
    vk.verify(
        msg,
        &Signature::from_slice(&again.sign_sha256_raw(msg).unwrap()).unwrap(),
    )
    .expect("signature by reopened handle verifies");

    // A different label is a different key.
    let other = Pkcs11Signer::open_or_create(&c, &pin(), "audit").unwrap();
    assert_ne!(other.public_key_spki_der(), spki);
}

#[test]
fn signer_is_usable_from_many_threads() {
    let s = std::sync::Arc::new(
        Pkcs11Signer::open_or_create(&cfg("signer", "x"), &pin(), "threads").unwrap(),
    );
    let vk = VerifyingKey::from_public_key_der(&s.public_key_spki_der()).unwrap();
    let handles: Vec<_> = (0..4u8)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                let msg = [i; 8];
                (msg, s.sign_sha256_raw(&msg).unwrap())
            })
        })
        .collect();
    for h in handles {
        let (msg, raw) = h.join().unwrap();
        vk.verify(&msg, &Signature::from_slice(&raw).unwrap())
            .unwrap();
    }
}

#[test]
fn debug_output_has_no_pin() {
    let c = cfg("seal", "debug");
    let s = Pkcs11Seal::open_or_create(&c, &pin()).unwrap();
    assert_no_pin(&format!("{s:?}"));
    let g = Pkcs11Signer::open_or_create(&cfg("signer", "debug"), &pin(), "debug").unwrap();
    assert_no_pin(&format!("{g:?}"));
}
