//! Test support: a software seal and the seal conformance suite.
//!
//! Compiled only for this crate's tests and behind the `conformance`
//! feature, which backend crates enable in `[dev-dependencies]` only. There is
//! no software seal in the daemon.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::barrier;
use crate::keys::SealShare;
use crate::seal::{Seal, SealError, SealKind, SealProvider};
use crate::secret::Key32;

/// AES-GCM under an in-memory key. For unit tests of seal composition only.
pub struct SoftSeal {
    kind: SealKind,
    key: Key32,
}

impl SoftSeal {
    pub fn new(kind: SealKind) -> Self {
        SoftSeal {
            kind,
            key: Key32::generate(),
        }
    }
    fn share(&self) -> SoftSeal {
        SoftSeal {
            kind: self.kind,
            key: self.key.duplicate(),
        }
    }
}

impl Seal for SoftSeal {
    fn kind(&self) -> SealKind {
        self.kind
    }
    fn seal(&self, key: &SealShare) -> Result<Vec<u8>, SealError> {
        Ok(barrier::encrypt(
            &self.key,
            b"softseal",
            key.expose_secret(),
        ))
    }
    fn unseal(&self, blob: &[u8]) -> Result<SealShare, SealError> {
        barrier::decrypt(&self.key, b"softseal", blob)
            .ok()
            .and_then(|pt| SealShare::from_slice(pt.expose_secret()))
            .ok_or_else(|| SealError::BlobCorrupt("soft seal authentication failed".into()))
    }
}

/// Provides [`SoftSeal`]s, each of which can be made unavailable.
pub struct SoftProvider {
    tpm: SoftSeal,
    tpm_ok: AtomicBool,
    hsm: SoftSeal,
    hsm_ok: AtomicBool,
}

impl SoftProvider {
    pub fn new(tpm: &SoftSeal, tpm_ok: bool, hsm: &SoftSeal, hsm_ok: bool) -> Self {
        SoftProvider {
            tpm: tpm.share(),
            tpm_ok: AtomicBool::new(tpm_ok),
            hsm: hsm.share(),
            hsm_ok: AtomicBool::new(hsm_ok),
        }
    }
}

impl SealProvider for SoftProvider {
    fn open(&self, kind: SealKind) -> Result<Box<dyn Seal>, SealError> {
        match kind {
            SealKind::Tpm if self.tpm_ok.load(Ordering::SeqCst) => Ok(Box::new(self.tpm.share())),
            SealKind::Tpm => Err(SealError::TpmUnavailable("soft tpm switched off".into())),
            SealKind::Pkcs11 if self.hsm_ok.load(Ordering::SeqCst) => {
                Ok(Box::new(self.hsm.share()))
            }
            SealKind::Pkcs11 => Err(SealError::TokenMissing("soft token switched off".into())),
        }
    }
}

/// The conformance suite every [`Seal`] backend must pass.
///
/// `open` must return a new handle to the same device each call (a new
/// session/context), so the suite can check that a blob sealed by one handle
/// opens in another, as it must across daemon restarts.
pub fn seal_conformance(open: &dyn Fn() -> Box<dyn Seal>) {
    let seal = open();
    let kind = seal.kind();

    // 1. Round trip, in the same and in a fresh handle.
    let k = SealShare::generate();
    let blob = seal.seal(&k).expect("seal");
    assert!(
        seal.unseal(&blob).expect("unseal").ct_eq(&k),
        "{kind}: round trip"
    );
    drop(seal);
    let seal = open();
    assert!(
        seal.unseal(&blob).expect("unseal in new handle").ct_eq(&k),
        "{kind}: fresh handle"
    );

    // 2. The blob does not contain the key in clear.
    assert!(
        !blob.windows(32).any(|w| w == k.expose_secret()),
        "{kind}: key visible in blob"
    );

    // 3. Sealing twice gives different blobs that both open to the same key.
    let blob2 = seal.seal(&k).expect("seal again");
    assert_ne!(blob, blob2, "{kind}: sealing must be randomised");
    assert!(seal.unseal(&blob2).expect("unseal 2").ct_eq(&k));

    // 4. A different key gives a blob that opens to that key, not the first.
    let k2 = SealShare::generate();
    let b2 = seal.seal(&k2).expect("seal k2");
    assert!(seal.unseal(&b2).expect("unseal k2").ct_eq(&k2));

    // 5. Malformed blobs are refused as corrupt, never a wrong key, never a panic.
    for bad in [
        Vec::new(),
        vec![0u8; 1],
        blob[..blob.len() / 2].to_vec(),
        vec![0xff; blob.len()],
    ] {
        match seal.unseal(&bad) {
            Err(SealError::BlobCorrupt(_)) => {}
            Err(e) => panic!(
                "{kind}: malformed blob gave {} ({e}), want seal_blob_corrupt",
                e.code()
            ),
            Ok(_) => panic!("{kind}: malformed blob unsealed"),
        }
    }

    // 6. Every single-byte flip is refused (no wrong key ever comes back).
    let step = (blob.len() / 24).max(1);
    for i in (0..blob.len()).step_by(step) {
        let mut b = blob.clone();
        b[i] ^= 0x01;
        match seal.unseal(&b) {
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    !msg.contains(&hex_lower(k.expose_secret())),
                    "{kind}: error text leaks key"
                );
            }
            Ok(got) => assert!(
                got.ct_eq(&k),
                "{kind}: flipped byte {i} gave a different key"
            ),
        }
    }
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_seal_passes_conformance() {
        let s = SoftSeal::new(SealKind::Pkcs11);
        let shared = s.share();
        seal_conformance(&move || Box::new(shared.share()));
    }
}
