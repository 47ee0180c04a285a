//! `YubiKeyToken` against a (virtual) PIV card. **Destructive**: generates keys in
//! 9c and 9d, and costs PIN tries.
//!
//! Run by `vaultd/piv/run-card-tests.sh` (private pcscd + `tests/piv-card` with a test
//! attestation CA). Needs:
//! - `VAULT_PIV_CARD_SERIAL`: the serial of the card to use (skipped when unset);
//! - `VAULT_PIV_ATTESTATION_ROOT`: the test attestation root (PEM) the card was
//!   started with (`piv-card make-attestation-ca DIR` -> DIR/root.pem);
//! - optional `VAULT_PIV_PIN` (default 123456) and `VAULT_PIV_MGM_KEY` (48 hex
//!   digits; default: the factory default key).
//!
//! `after_card_restart` runs only with `VAULT_PIV_AFTER_RESTART=1` (the script sets it
//! after restarting the card with the same state directory).

use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::PublicKey;
use vault_core::custodian::attestation::{self, verify, Attested};
use vault_core::custodian::ecies::{open_with, seal_to, EciesError};
use vault_core::secret::Pin;
use vault_piv::{
    CustodianToken, KeySource, ManagementKey, PinPolicy, Slot, TokenError, TouchPolicy,
    YubiKeyToken,
};

/// One card, one PIN state: the tests take turns.
static CARD: Mutex<()> = Mutex::new(());

struct Env {
    serial: u32,
    root: Vec<u8>,
    pin: String,
    mgm: Option<ManagementKey>,
    _turn: MutexGuard<'static, ()>,
}

/// Says why a test is skipped, visibly: the harness captures `eprintln!` of passing
/// tests, not writes to the stderr handle.
fn skip(why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{why}");
}

fn env(test: &str) -> Option<Env> {
    let Ok(serial) = std::env::var("VAULT_PIV_CARD_SERIAL") else {
        skip(&format!(
            "SKIPPED {test}: set VAULT_PIV_CARD_SERIAL (see vaultd/piv/run-card-tests.sh) \
             to run it against a virtual PIV card"
        ));
        return None;
    };
    let serial = serial.parse().expect("VAULT_PIV_CARD_SERIAL is a number");
    let root_path = std::env::var("VAULT_PIV_ATTESTATION_ROOT")
        .expect("VAULT_PIV_ATTESTATION_ROOT (the test attestation root, PEM)");
    let pem = std::fs::read(&root_path).expect("read VAULT_PIV_ATTESTATION_ROOT");
    let (_, root) = x509_parser::pem::parse_x509_pem(&pem).expect("a PEM certificate");
    let mgm = std::env::var("VAULT_PIV_MGM_KEY")
        .ok()
        .map(|h| ManagementKey::from_hex(&h).expect("VAULT_PIV_MGM_KEY: 48 hex digits"));
    Some(Env {
        serial,
        root: root.contents,
        pin: std::env::var("VAULT_PIV_PIN").unwrap_or_else(|_| "123456".into()),
        mgm,
        _turn: CARD.lock().unwrap_or_else(|p| p.into_inner()),
    })
}

impl Env {
    fn open(&self) -> YubiKeyToken {
        let t = YubiKeyToken::open(Some(self.serial)).expect("open the card by serial");
        assert_eq!(t.serial(), self.serial);
        t
    }
    fn pin(&self) -> Pin {
        Pin::new(self.pin.clone())
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Verifies the slot's attestation chain against the test root.
fn attested(t: &mut YubiKeyToken, e: &Env, slot: Slot) -> Attested {
    let leaf = t.attest(slot).expect("attest");
    let f9 = t.attestation_intermediate().expect("f9 certificate");
    verify(&leaf, &[&f9[..]], &[&e.root[..]], now()).expect("attestation verifies")
}

#[test]
fn open_reports_serial_and_version() {
    let Some(e) = env("open_reports_serial_and_version") else {
        return;
    };
    let t = e.open();
    let (maj, min, _) = t.version();
    assert!(
        (maj, min) >= (5, 0) && (maj, min) < (5, 7),
        "{:?}",
        t.version()
    );
    // Debug shows who, never secrets.
    let shown = format!("{t:?}");
    assert!(shown.contains(&e.serial.to_string()), "{shown}");
    // Opening a serial that is not attached is an error, not a panic.
    let err = YubiKeyToken::open(Some(4_000_000_000)).unwrap_err();
    assert!(matches!(err, TokenError::Device(_)), "{err:?}");
}

#[test]
fn pin_wrong_then_right_with_tries_left() {
    let Some(e) = env("pin_wrong_then_right_with_tries_left") else {
        return;
    };
    let mut t = e.open();
    let max = t.pin_retries().expect("retries");
    assert!(max >= 2, "need at least 2 PIN tries, have {max}");
    let wrong = if e.pin == "87654321" {
        "12345678"
    } else {
        "87654321"
    };
    assert_eq!(
        t.verify_pin(&Pin::new(wrong.into())),
        Err(TokenError::WrongPin { tries: max - 1 })
    );
    assert_eq!(t.pin_retries().unwrap(), max - 1);
    // Malformed PINs are refused locally and cost no try (an empty one would
    // otherwise "succeed" while a PIN is verified).
    for bad in ["", "12345", "123456789"] {
        assert!(matches!(
            t.verify_pin(&Pin::new(bad.into())),
            Err(TokenError::Device(_))
        ));
    }
    assert_eq!(t.pin_retries().unwrap(), max - 1);
    t.verify_pin(&e.pin()).expect("right PIN");
    assert_eq!(
        t.pin_retries().unwrap(),
        max,
        "counter reset by the right PIN"
    );
    // Errors never carry the PIN.
    let err = t.verify_pin(&Pin::new(wrong.into())).unwrap_err();
    assert!(!err.to_string().contains(wrong));
    t.verify_pin(&e.pin()).unwrap();
}

#[test]
fn generate_sign_ecdh_attest() {
    let Some(e) = env("generate_sign_ecdh_attest") else {
        return;
    };
    let mut t = e.open();
    let plan = [
        (Slot::Signature, PinPolicy::Always, TouchPolicy::Never),
        (Slot::KeyManagement, PinPolicy::Once, TouchPolicy::Cached),
    ];
    let mut keys = Vec::new();
    for (slot, pin, touch) in plan {
        let pk = t
            .generate(slot, pin, touch, e.mgm.as_ref())
            .expect("generate");
        assert_eq!(t.public_key(slot).unwrap(), pk);
        assert_eq!(t.key_source(slot), Some(KeySource::Attestation));
        let a = attested(&mut t, &e, slot);
        assert_eq!(a.public_key, pk, "the attested key is the generated key");
        assert_eq!(a.serial, e.serial);
        assert_eq!(a.firmware, t.version());
        assert_eq!(a.pin_policy, attestation::PinPolicy::from(pin));
        assert_eq!(a.touch_policy, attestation::TouchPolicy::from(touch));
        keys.push(pk);
    }
    assert_ne!(keys[0], keys[1]);

    // A fresh session finds the keys through attestation.
    drop(t);
    let mut t = e.open();
    assert_eq!(t.public_key(Slot::Signature).unwrap(), keys[0]);
    assert_eq!(t.public_key(Slot::KeyManagement).unwrap(), keys[1]);
    assert_eq!(t.key_source(Slot::Signature), Some(KeySource::Attestation));

    // Sign: ECDSA P-256 over SHA-256(msg), verified with p256.
    t.verify_pin(&e.pin()).unwrap();
    let msg = b"approve: release secret demo/db-root v3 to custodian quorum";
    let der = t.sign(msg).expect("sign");
    let sig = Signature::from_der(&der).expect("DER signature");
    VerifyingKey::from(&keys[0])
        .verify(msg, &sig)
        .expect("signature verifies with the 9c key");
    assert!(VerifyingKey::from(&keys[0])
        .verify(b"another message", &sig)
        .is_err());

    // ECDH: equals the host-side ECDH with the 9d public key.
    t.verify_pin(&e.pin()).unwrap();
    let eph = p256::ecdh::EphemeralSecret::random(&mut rand::rngs::OsRng);
    let card = t.ecdh(&eph.public_key()).expect("ecdh");
    let host = eph.diffie_hellman(&keys[1]);
    assert_eq!(&card[..], host.raw_secret_bytes().as_slice());
}

#[test]
fn ecies_round_trip_through_the_card() {
    let Some(e) = env("ecies_round_trip_through_the_card") else {
        return;
    };
    let mut t = e.open();
    let recipient = match t.public_key(Slot::KeyManagement) {
        Ok(k) => k,
        Err(TokenError::NoKey(_)) => t
            .generate(
                Slot::KeyManagement,
                PinPolicy::Once,
                TouchPolicy::Never,
                e.mgm.as_ref(),
            )
            .unwrap(),
        Err(err) => panic!("public key: {err}"),
    };
    let share = b"shamir share #2 of the root key";
    let aad = b"secret=demo/db-root;version=3;custodian=alice";
    let envelope = seal_to(&recipient, aad, share, &mut rand::rngs::OsRng);
    t.verify_pin(&e.pin()).unwrap();
    let mut ecdh = |p: &PublicKey| t.ecdh(p).map_err(|e| e.to_string());
    let opened = open_with(&envelope, &recipient, aad, &mut ecdh).expect("open with the card");
    assert_eq!(&opened[..], share);
    assert_eq!(
        open_with(&envelope, &recipient, b"other context", &mut ecdh).err(),
        Some(EciesError::Authentication)
    );
}

#[test]
fn operations_need_the_pin() {
    let Some(e) = env("operations_need_the_pin") else {
        return;
    };
    // A new session starts with the PIN logged out (the card is reset/re-selected).
    let mut t = e.open();
    if t.public_key(Slot::Signature).is_err() {
        t.generate(
            Slot::Signature,
            PinPolicy::Always,
            TouchPolicy::Never,
            e.mgm.as_ref(),
        )
        .unwrap();
        drop(t);
        t = e.open();
    }
    assert_eq!(t.sign(b"no PIN yet"), Err(TokenError::PinRequired));
    t.verify_pin(&e.pin()).unwrap();
    assert!(t.sign(b"now with the PIN").is_ok());
    // PIN always (what the card attests for this 9c key): every signature needs
    // a fresh VERIFY.
    if attested(&mut t, &e, Slot::Signature).pin_policy == attestation::PinPolicy::Always {
        assert_eq!(t.sign(b"again"), Err(TokenError::PinRequired));
        t.verify_pin(&e.pin()).unwrap();
        assert!(t.sign(b"again, with the PIN").is_ok());
    }
}

#[test]
fn wrong_management_key_is_refused() {
    let Some(e) = env("wrong_management_key_is_refused") else {
        return;
    };
    let mut t = e.open();
    let before = t.public_key(Slot::Signature).ok();
    let wrong =
        ManagementKey::from_hex("0f0e0d0c0b0a09080706050403020100a1a2a3a4a5a6a7a8").unwrap();
    let err = t
        .generate(
            Slot::Signature,
            PinPolicy::Once,
            TouchPolicy::Never,
            Some(&wrong),
        )
        .unwrap_err();
    assert!(
        matches!(&err, TokenError::Device(m) if m.contains("management key")),
        "{err:?}"
    );
    // Nothing was generated.
    drop(t);
    let t = e.open();
    assert_eq!(t.public_key(Slot::Signature).ok(), before);
}

/// After the card restarted with the same state directory: the keys (and what the
/// card attests about them) are still there.
#[test]
fn after_card_restart() {
    let Some(e) = env("after_card_restart") else {
        return;
    };
    if std::env::var("VAULT_PIV_AFTER_RESTART").as_deref() != Ok("1") {
        skip("SKIPPED after_card_restart: only with VAULT_PIV_AFTER_RESTART=1");
        return;
    }
    let mut t = e.open();
    for slot in [Slot::Signature, Slot::KeyManagement] {
        let pk = t.public_key(slot).expect("key found after restart");
        assert_eq!(t.key_source(slot), Some(KeySource::Attestation));
        assert_eq!(attested(&mut t, &e, slot).public_key, pk);
    }
    t.verify_pin(&e.pin()).unwrap();
    let der = t.sign(b"after restart").unwrap();
    VerifyingKey::from(&t.public_key(Slot::Signature).unwrap())
        .verify(b"after restart", &Signature::from_der(&der).unwrap())
        .unwrap();
}
