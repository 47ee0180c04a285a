//! `piv-smoke SERIAL [SERIAL...]`: checks that the unmodified `yubikey` crate can use
//! the virtual PIV card(s) with these serials (pcscd + `piv-card` must be running).
//!
//! For each card: open by serial, version + serial, wrong PIN -> WrongPin{tries},
//! PIN 123456, default management key, P-256 keygen in 9c and 9d, sign_data with 9c
//! (verified with `p256`), decrypt_data (ECDH) with 9d (matches host-side ECDH),
//! a 1.2 KB object write/read (command chaining + GET RESPONSE).
//! With several serials it also checks that the cards generated different keys.
//!
//! Destructive: it overwrites the keys in slots 9c and 9d.

use anyhow::{bail, ensure, Context as _};
use p256::{
    ecdsa::{signature::hazmat::PrehashVerifier, Signature, VerifyingKey},
    elliptic_curve::sec1::ToEncodedPoint,
    PublicKey,
};
use rand_core::OsRng;
use sha2::{Digest, Sha256};
use std::time::Instant;
use yubikey::{
    piv::{self, AlgorithmId, SlotId},
    Error as YkError, MgmKey, PinPolicy, Serial, TouchPolicy, YubiKey,
};

const PIN: &[u8] = b"123456";

fn check_card(serial: u32) -> anyhow::Result<Vec<u8>> {
    let t0 = Instant::now();
    let mut yk = YubiKey::open_by_serial(Serial(serial))
        .with_context(|| format!("open_by_serial({serial})"))?;
    println!(
        "[{serial}] opened: version {}, serial {}",
        yk.version(),
        yk.serial()
    );
    ensure!(yk.serial() == Serial(serial), "serial mismatch");
    let v = yk.version();
    ensure!((v.major, v.minor) < (5, 7), "version {v} >= 5.7");

    // Wrong PIN first (so the counter is back at max afterwards).
    match yk.verify_pin(b"654321") {
        Err(YkError::WrongPin { tries }) => {
            println!("[{serial}] wrong PIN -> WrongPin {{ tries: {tries} }}")
        }
        other => bail!("wrong PIN: expected WrongPin, got {other:?}"),
    }
    yk.verify_pin(PIN).context("verify PIN 123456")?;
    println!("[{serial}] PIN 123456 verified");

    yk.authenticate(MgmKey::default())
        .context("authenticate with default management key")?;
    println!("[{serial}] default management key authenticated");

    // A 1.2 KB data object in the 9c certificate container: exercises command
    // chaining (PUT DATA > 255 bytes) and GET RESPONSE (reply > 256 bytes).
    let mut blob = vec![0u8; 1200];
    rand_core::RngCore::fill_bytes(&mut OsRng, &mut blob);
    let mut obj = vec![0x70, 0x82];
    obj.extend_from_slice(&(blob.len() as u16).to_be_bytes());
    obj.extend_from_slice(&blob);
    obj.extend_from_slice(&[0x71, 0x01, 0x00, 0xFE, 0x00]);
    yk.save_object(0x5F_C10A, &mut obj.clone())
        .context("save_object 9c certificate container (chained PUT DATA)")?;
    let back = yk
        .fetch_object(0x5F_C10A)
        .context("fetch_object (GET RESPONSE)")?;
    ensure!(
        back.as_slice() == obj.as_slice(),
        "object read back differs"
    );
    println!(
        "[{serial}] {}-byte object written (chained) and read back (GET RESPONSE)",
        obj.len()
    );

    let mut keys = Vec::new();
    for slot in [SlotId::Signature, SlotId::KeyManagement] {
        let spki = piv::generate(
            &mut yk,
            slot,
            AlgorithmId::EccP256,
            PinPolicy::Default,
            TouchPolicy::Default,
        )
        .with_context(|| format!("generate P-256 in {slot:?}"))?;
        let point = spki
            .subject_public_key
            .as_bytes()
            .context("public key bit string")?
            .to_vec();
        let pk = PublicKey::from_sec1_bytes(&point).context("card public key")?;
        println!(
            "[{serial}] generated P-256 in {slot:?}: {}",
            hex(&point[..9])
        );
        keys.push(pk);
    }
    let (sig_pk, kex_pk) = (keys[0], keys[1]);

    // Sign with 9c.
    let msg = format!("vault approval test for card {serial}");
    let digest = Sha256::digest(msg.as_bytes());
    yk.verify_pin(PIN)?;
    let der = piv::sign_data(&mut yk, &digest, AlgorithmId::EccP256, SlotId::Signature)
        .context("sign_data 9c")?;
    let sig = Signature::from_der(&der).context("signature DER")?;
    VerifyingKey::from(&sig_pk)
        .verify_prehash(&digest, &sig)
        .context("verify 9c signature with p256")?;
    println!("[{serial}] sign_data 9c: signature verifies with p256");

    // ECDH with 9d.
    let eph = p256::ecdh::EphemeralSecret::random(&mut OsRng);
    let eph_pub = eph.public_key().to_encoded_point(false);
    yk.verify_pin(PIN)?;
    let card_secret = piv::decrypt_data(
        &mut yk,
        eph_pub.as_bytes(),
        AlgorithmId::EccP256,
        SlotId::KeyManagement,
    )
    .context("decrypt_data (ECDH) 9d")?;
    let host_secret = eph.diffie_hellman(&kex_pk);
    ensure!(
        card_secret.as_slice() == host_secret.raw_secret_bytes().as_slice(),
        "ECDH mismatch: card {} host {}",
        hex(&card_secret),
        hex(host_secret.raw_secret_bytes())
    );
    println!("[{serial}] decrypt_data 9d: ECDH secret matches host");
    println!("[{serial}] OK in {} ms", t0.elapsed().as_millis());
    Ok(sig_pk.to_encoded_point(false).as_bytes().to_vec())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn main() -> anyhow::Result<()> {
    let serials: Vec<u32> = std::env::args()
        .skip(1)
        .map(|s| s.parse().context("serial must be a number"))
        .collect::<Result<_, _>>()?;
    if serials.is_empty() {
        bail!("usage: piv-smoke SERIAL [SERIAL...]");
    }
    let mut pubkeys = Vec::new();
    for s in &serials {
        pubkeys.push(check_card(*s)?);
    }
    for i in 0..pubkeys.len() {
        for j in i + 1..pubkeys.len() {
            ensure!(
                pubkeys[i] != pubkeys[j],
                "cards {} and {} generated the same key (RNG not seeded?)",
                serials[i],
                serials[j]
            );
        }
    }
    println!("piv-smoke: all {} card(s) OK", serials.len());
    Ok(())
}
