//! The offline verifier over arbitrary records: never a panic, and never
//! "ok" for a non-empty log without a signed checkpoint.
#![no_main]
use libfuzzer_sys::fuzz_target;
use p256::pkcs8::EncodePublicKey as _;
use vault_core::audit::verify::verify;

fuzz_target!(|data: &[u8]| {
    let sk = p256::ecdsa::SigningKey::from_slice(&[9u8; 32]).unwrap();
    let spki = sk.verifying_key().to_public_key_der().unwrap();
    let mut recs: Vec<&[u8]> = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 {
        let n = (u16::from_be_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
        recs.push(&rest[2..2 + n]);
        rest = &rest[2 + n..];
    }
    let r = verify(&recs, &[], &[spki.as_bytes()], None, &mut |_| {});
    assert!(recs.is_empty() || !r.ok());
});
