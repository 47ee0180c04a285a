//! Attestation certificates submitted at enrolment: never a panic, never
//! accepted without a chain to the trusted root.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vault_core::custodian::attestation::verify;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |b| *b as usize).min(data.len().saturating_sub(1));
    let (leaf, f9) = data[1.min(data.len())..].split_at(split.min(data.len().saturating_sub(1)));
    // An empty root set: nothing can be trusted.
    assert!(verify(leaf, &[f9], &[], 1_800_000_000).is_err());
});
