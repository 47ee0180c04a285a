//! Checkpoint notes from an export or the network: never a panic, never
//! accepted without a valid signature by the fixed key.
#![no_main]
use libfuzzer_sys::fuzz_target;
use p256::pkcs8::EncodePublicKey as _;
use vault_core::audit::note::Checkpoint;

fuzz_target!(|data: &[u8]| {
    let sk = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
    let spki = sk.verifying_key().to_public_key_der().unwrap();
    if let Ok(text) = std::str::from_utf8(data) {
        let name = text.split('\n').next().unwrap_or("");
        // The fuzzer cannot forge ECDSA: any Ok here would be a bug.
        assert!(Checkpoint::verify(text, name, spki.as_bytes()).is_err());
    }
});
