//! `piv-smoke [--attestation-ca DIR] SERIAL [SERIAL...]`: checks that the unmodified
//! `yubikey` crate can use the virtual PIV card(s) with these serials (pcscd +
//! `piv-card` must be running).
//!
//! For each card: open by serial, version + serial, wrong PIN -> WrongPin{tries},
//! PIN 123456, default management key, P-256 keygen in 9c (default policies) and 9d
//! (PIN always, touch cached), sign_data with 9c (verified with `p256`), decrypt_data
//! (ECDH) with 9d (matches host-side ECDH), a 1.2 KB object write/read (command
//! chaining + GET RESPONSE).
//! With `--attestation-ca DIR` (the directory the cards were started with): attest
//! (INS F9) 9c and 9d, read the f9 certificate (object 5FFF01) with
//! `Certificate::read`, and check that it is DIR/f9.pem, that leaf <- f9 <- DIR/root.pem
//! verify, that each leaf's key is the generated key and that its Yubico extensions
//! carry the card's firmware, serial and the requested policies.
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
use std::{path::PathBuf, time::Instant};
use x509_parser::prelude::{FromDer as _, X509Certificate};
use yubikey::{
    certificate::Certificate,
    piv::{self, AlgorithmId, SlotId},
    Error as YkError, MgmKey, PinPolicy, Serial, TouchPolicy, YubiKey,
};

const PIN: &[u8] = b"123456";

/// The test attestation CA the cards were started with (`--attestation-ca DIR`).
struct Ca {
    root: Vec<u8>,
    f9: Vec<u8>,
}

fn read_pem(path: PathBuf) -> anyhow::Result<Vec<u8>> {
    let text = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(pem.contents)
}

fn ext<'a>(c: &'a X509Certificate<'_>, last: u32) -> anyhow::Result<&'a [u8]> {
    let oid = format!("1.3.6.1.4.1.41482.3.{last}");
    c.extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == oid)
        .map(|e| e.value)
        .with_context(|| format!("attestation lacks extension {oid}"))
}

/// Attests `slot` and checks the certificate against the CA, the generated key
/// (SEC1 point), the card's version/serial and the expected policy bytes.
fn check_attestation(
    yk: &mut YubiKey,
    ca: &Ca,
    slot: SlotId,
    point: &[u8],
    policy: [u8; 2],
) -> anyhow::Result<()> {
    let serial = yk.serial().0;
    let v = yk.version();
    let leaf_der = piv::attest(yk, slot).with_context(|| format!("attest {slot:?}"))?;
    let (rest, leaf) = X509Certificate::from_der(&leaf_der).context("attestation DER")?;
    ensure!(rest.is_empty(), "trailing bytes after the attestation");
    let (_, f9) = X509Certificate::from_der(&ca.f9).context("f9.pem")?;
    let (_, root) = X509Certificate::from_der(&ca.root).context("root.pem")?;
    leaf.verify_signature(Some(f9.public_key()))
        .context("attestation not signed by the f9 key")?;
    f9.verify_signature(Some(root.public_key()))
        .context("f9 not signed by the root")?;
    ensure!(leaf.issuer() == f9.subject(), "leaf issuer != f9 subject");
    let want_cn = format!("CN=YubiKey PIV Attestation {:02x}", u8::from(slot));
    ensure!(
        leaf.subject().to_string() == want_cn,
        "subject {} != {want_cn}",
        leaf.subject()
    );
    ensure!(
        leaf.public_key().subject_public_key.data.as_ref() == point,
        "attested key differs from the generated key"
    );
    ensure!(
        ext(&leaf, 3)? == [v.major, v.minor, v.patch],
        "firmware extension"
    );
    let s = ext(&leaf, 7)?;
    let (_, n) = x509_parser::der_parser::der::parse_der_integer(s)
        .map_err(|e| anyhow::anyhow!("serial extension: {e}"))?;
    ensure!(
        n.as_u32().ok() == Some(serial),
        "serial extension {s:02x?} != {serial}"
    );
    ensure!(ext(&leaf, 8)? == policy, "policy extension != {policy:?}");
    println!(
        "[{serial}] attest {slot:?}: {} bytes, key matches, chain verifies, policy {policy:?}",
        leaf_der.len()
    );
    Ok(())
}

fn check_card(serial: u32, ca: Option<&Ca>) -> anyhow::Result<Vec<u8>> {
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
    // 9c with the defaults (a YubiKey attests them as PIN always, touch never);
    // 9d with explicit policies (recorded and attested; not enforced by the card).
    let plan = [
        (
            SlotId::Signature,
            PinPolicy::Default,
            TouchPolicy::Default,
            [3, 1],
        ),
        (
            SlotId::KeyManagement,
            PinPolicy::Always,
            TouchPolicy::Cached,
            [3, 3],
        ),
    ];
    for (slot, pin_policy, touch_policy, attested_policy) in plan {
        let spki = piv::generate(
            &mut yk,
            slot,
            AlgorithmId::EccP256,
            pin_policy,
            touch_policy,
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
        if let Some(ca) = ca {
            check_attestation(&mut yk, ca, slot, &point, attested_policy)?;
        }
        keys.push(pk);
    }
    if let Some(ca) = ca {
        let f9 = Certificate::read(&mut yk, SlotId::Attestation)
            .context("Certificate::read(Attestation): object 5FFF01")?;
        let der = x509_cert::der::Encode::to_der(&f9.cert).context("f9 DER")?;
        ensure!(der == ca.f9, "f9 certificate on the card != f9.pem");
        println!("[{serial}] f9 certificate read (5FFF01): {}", f9.subject());
    } else {
        // piv-authenticator answers 6A81 (function not supported): GenericError.
        match piv::attest(&mut yk, SlotId::Signature) {
            Err(e) => println!("[{serial}] attest: {e:?} (no --attestation-ca given)"),
            Ok(_) => bail!("attest without --attestation-ca succeeded"),
        }
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
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut ca = None;
    if args.first().map(String::as_str) == Some("--attestation-ca") {
        let dir = PathBuf::from(args.get(1).context("--attestation-ca DIR")?);
        ca = Some(Ca {
            root: read_pem(dir.join("root.pem"))?,
            f9: read_pem(dir.join("f9.pem"))?,
        });
        args.drain(..2);
    }
    let serials: Vec<u32> = args
        .iter()
        .map(|s| s.parse().context("serial must be a number"))
        .collect::<Result<_, _>>()?;
    if serials.is_empty() {
        bail!("usage: piv-smoke [--attestation-ca DIR] SERIAL [SERIAL...]");
    }
    let mut pubkeys = Vec::new();
    for s in &serials {
        pubkeys.push(check_card(*s, ca.as_ref())?);
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
