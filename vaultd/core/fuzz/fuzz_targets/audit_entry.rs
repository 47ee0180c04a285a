//! Entry bytes from an export or the database: never a panic; what parses
//! re-encodes to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vault_core::audit::entry::Entry;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = Entry::parse(data) {
        assert_eq!(serde_json::to_vec(&e).unwrap(), data);
        let _ = e.prev_hash();
    }
});
