//! The stored sealed-root record: never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vault_core::seal::SealedRoot;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<SealedRoot>(data);
});
