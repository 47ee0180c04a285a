//! Share and envelope parsing: never a panic; an envelope never opens
//! without the right key.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vault_core::custodian::ecies::{open_with, soft_ecdh};
use vault_core::custodian::shamir::{combine, Share};

fuzz_target!(|data: &[u8]| {
    let sk = p256::SecretKey::from_slice(&[5u8; 32]).unwrap();
    let pk = sk.public_key();
    let mut ecdh = |e: &p256::PublicKey| Ok(soft_ecdh(&sk, e));
    assert!(open_with(data, &pk, b"ctx", &mut ecdh).is_err());
    let parts: Vec<Share> = data.chunks(9).filter_map(|c| Share::from_bytes(c).ok()).collect();
    let _ = combine(&parts, parts.len().min(3));
});
