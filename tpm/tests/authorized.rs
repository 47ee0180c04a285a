//! PolicyAuthorize mode against a private swtpm per test: the sealed
//! object's authPolicy commits only to the image-signing key; signed boot
//! policies for the current PCR 11 unlock it.

use std::path::Path;

use sha2::{Digest as _, Sha256};
use vault_core::boot::policy::{
    approved_hash, authorize_policy_digest, extend, pcr_policy_digest, tpm_key_name,
};
use vault_core::boot::{ImageSigningKey, SignedPolicy};
use vault_core::keys::SealShare;
use vault_core::seal::{Seal, SealError};
use vault_tpm::swtpm::Swtpm;
use vault_tpm::{diag, extend_pcr, read_pcrs, AuthorizedPolicy, TpmConfig, TpmSeal};

fn swtpm() -> Swtpm {
    Swtpm::start().expect("start swtpm (is swtpm installed?)")
}

fn authorized(tpm: &Swtpm, key: &ImageSigningKey, dir: &Path) -> TpmSeal {
    let cfg = TpmConfig::new(tpm.tcti(), [11]).with_authorized(AuthorizedPolicy {
        public_key_pem: key.public().to_pem(),
        signatures_dir: dir.to_path_buf(),
    });
    TpmSeal::open(cfg).expect("open authorized TpmSeal")
}

/// Signs a policy for the TPM's current PCR 11 and writes it to `dir/name`.
fn sign_current(tpm: &Swtpm, key: &ImageSigningKey, dir: &Path, name: &str) -> SignedPolicy {
    let pcrs = read_pcrs(&tpm.tcti(), &[11]).unwrap();
    let p = SignedPolicy::sign(key, "test", &pcrs).unwrap();
    std::fs::write(dir.join(name), p.to_json()).unwrap();
    p
}

fn code<T>(r: Result<T, SealError>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("{} ({e})", e.code()),
    }
}

fn sha(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

#[test]
fn software_digests_match_the_tpm() {
    let tpm = swtpm();
    let tcti = tpm.tcti();
    // PCR 11 at reset, then after two "UKI" measurements.
    assert_eq!(read_pcrs(&tcti, &[11]).unwrap(), vec![(11, [0u8; 32])]);
    assert_eq!(
        diag::trial_pcr_policy(&tcti, &[11]).unwrap(),
        pcr_policy_digest(&[(11, [0; 32])])
    );
    extend_pcr(&tcti, 11, b"uki v1").unwrap();
    extend_pcr(&tcti, 11, b"uki v1 stage 2").unwrap();
    let want = extend(extend([0; 32], &sha(b"uki v1")), &sha(b"uki v1 stage 2"));
    assert_eq!(read_pcrs(&tcti, &[11]).unwrap(), vec![(11, want)]);
    assert_eq!(
        diag::trial_pcr_policy(&tcti, &[11]).unwrap(),
        pcr_policy_digest(&[(11, want)])
    );
    // Several PCRs across octets of the bitmap, in any order.
    extend_pcr(&tcti, 4, b"boot loader").unwrap();
    let many = read_pcrs(&tcti, &[23, 0, 11, 4]).unwrap();
    assert_eq!(
        many.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![0, 4, 11, 23]
    );
    assert_eq!(many[1].1, extend([0; 32], &sha(b"boot loader")));
    assert_eq!(
        diag::trial_pcr_policy(&tcti, &[0, 4, 11, 23]).unwrap(),
        pcr_policy_digest(&many)
    );

    // The image key's Name and the PolicyAuthorize digest.
    for _ in 0..4 {
        let pk = ImageSigningKey::generate().public();
        let name = diag::image_key_name(&tcti, &pk).unwrap();
        assert_eq!(name, tpm_key_name(&pk));
        assert_eq!(
            diag::trial_authorize_digest(&tcti, &name).unwrap(),
            authorize_policy_digest(&name)
        );
    }
    // And the authPolicy of a sealed object.
    let key = ImageSigningKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let blob = authorized(&tpm, &key, dir.path())
        .seal(&SealShare::generate())
        .unwrap();
    assert_eq!(
        diag::blob_auth_policy(&blob).unwrap(),
        authorize_policy_digest(&tpm_key_name(&key.public())).to_vec()
    );
    assert_eq!(blob[4], 2, "authorized blobs are version 2");
}

#[test]
fn signed_policy_unseals_and_survives_a_signed_update() {
    let tpm = swtpm();
    let tcti = tpm.tcti();
    let key = ImageSigningKey::generate();
    let dir = tempfile::tempdir().unwrap();
    extend_pcr(&tcti, 11, b"uki 1.0").unwrap();
    // No PCR is read at seal time: seal before any policy exists.
    let seal = authorized(&tpm, &key, dir.path());
    let k = SealShare::generate();
    let blob = seal.seal(&k).unwrap();
    let p1 = sign_current(&tpm, &key, dir.path(), "1.0.json");
    assert_eq!(p1.pcrs[0].1, extend([0; 32], &sha(b"uki 1.0")));
    assert!(seal.unseal(&blob).unwrap().ct_eq(&k));

    // A different boot (another UKI): refused while only 1.0 is signed.
    extend_pcr(&tcti, 11, b"uki 2.0").unwrap();
    match seal.unseal(&blob) {
        Err(e @ SealError::PcrMismatch(_)) => {
            assert_eq!(e.code(), "tpm_pcr_mismatch");
            let m = e.to_string();
            assert!(m.contains("no signed boot policy"), "{m}");
            assert!(m.contains("1 for other PCR values"), "{m}");
        }
        other => panic!("want PcrMismatch, got {}", code(other)),
    }
    // The signed update: a new policy for the new value opens the SAME blob.
    sign_current(&tpm, &key, dir.path(), "2.0.json");
    assert!(seal.unseal(&blob).unwrap().ct_eq(&k));
    // In a fresh handle too, and repeatedly (no leaked handles).
    let seal = authorized(&tpm, &key, dir.path());
    for _ in 0..5 {
        assert!(seal.unseal(&blob).unwrap().ct_eq(&k));
    }
}

#[test]
fn policy_signed_by_another_key_is_refused() {
    let tpm = swtpm();
    let a = ImageSigningKey::generate();
    let b = ImageSigningKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let seal = authorized(&tpm, &a, dir.path());
    let k = SealShare::generate();
    let blob = seal.seal(&k).unwrap();
    // B's own policy names B: never considered.
    sign_current(&tpm, &b, dir.path(), "b.json");
    match seal.unseal(&blob) {
        Err(e @ SealError::PcrMismatch(_)) => {
            assert!(e.to_string().contains("1 for another image key"), "{e}")
        }
        other => panic!("want PcrMismatch, got {}", code(other)),
    }
    // B's signature under A's key id: the TPM rejects it.
    let mut forged = SignedPolicy::sign(&b, "x", &read_pcrs(&tpm.tcti(), &[11]).unwrap()).unwrap();
    forged.key_id = a.public().key_id();
    std::fs::write(dir.path().join("forged.json"), forged.to_json()).unwrap();
    match seal.unseal(&blob) {
        Err(e @ SealError::PolicySignatureInvalid(_)) => {
            assert_eq!(e.code(), "tpm_policy_signature_invalid");
            assert!(e.to_string().contains("forged.json"), "{e}");
        }
        other => panic!("want PolicySignatureInvalid, got {}", code(other)),
    }
    // A's genuine policy next to the bad ones still works.
    sign_current(&tpm, &a, dir.path(), "z-good.json");
    assert!(seal.unseal(&blob).unwrap().ct_eq(&k));
}

#[test]
fn flipped_signature_is_rejected_by_the_tpm() {
    let tpm = swtpm();
    let key = ImageSigningKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let seal = authorized(&tpm, &key, dir.path());
    let k = SealShare::generate();
    let blob = seal.seal(&k).unwrap();
    let mut p = SignedPolicy::sign(&key, "1", &read_pcrs(&tpm.tcti(), &[11]).unwrap()).unwrap();
    for (i, bit) in [(5usize, 0x01u8), (40, 0x80), (63, 0x10)] {
        let mut bad = p.clone();
        bad.signature[i] ^= bit;
        // It parses (structure only) but does not verify.
        let text = bad.to_json();
        assert_eq!(SignedPolicy::from_json(&text).unwrap(), bad);
        assert!(bad.verify(&key.public()).is_err());
        std::fs::write(dir.path().join("boot.json"), text).unwrap();
        match seal.unseal(&blob) {
            Err(e @ SealError::PolicySignatureInvalid(_)) => {
                assert_eq!(e.code(), "tpm_policy_signature_invalid");
                assert!(e.to_string().contains("0x"), "{e}");
            }
            other => panic!("byte {i}: want PolicySignatureInvalid, got {}", code(other)),
        }
    }
    // The approved digest is what was signed: a valid signature over a
    // different digest is rejected as well.
    let other = SignedPolicy::sign(&key, "1", &[(11, [9; 32])]).unwrap();
    p.signature = other.signature;
    std::fs::write(dir.path().join("boot.json"), p.to_json()).unwrap();
    assert_eq!(
        seal.unseal(&blob).err().map(|e| e.code()),
        Some("tpm_policy_signature_invalid")
    );
    let good = SignedPolicy::sign(&key, "1", &read_pcrs(&tpm.tcti(), &[11]).unwrap()).unwrap();
    assert!(good.verify(&key.public()).is_ok());
    assert_eq!(approved_hash(&good.policy), approved_hash(&p.policy));
    std::fs::write(dir.path().join("boot.json"), good.to_json()).unwrap();
    assert!(seal.unseal(&blob).unwrap().ct_eq(&k));
}

#[test]
fn blob_sealed_to_another_key_is_a_key_mismatch() {
    let tpm = swtpm();
    let a = ImageSigningKey::generate();
    let b = ImageSigningKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let blob = authorized(&tpm, &a, dir.path())
        .seal(&SealShare::generate())
        .unwrap();
    sign_current(&tpm, &b, dir.path(), "b.json");
    match authorized(&tpm, &b, dir.path()).unseal(&blob) {
        Err(e @ SealError::PolicyKeyMismatch(_)) => {
            assert_eq!(e.code(), "tpm_policy_key_mismatch");
            let m = e.to_string();
            assert!(m.contains(&a.public().key_id()), "{m}");
            assert!(m.contains(&b.public().key_id()), "{m}");
        }
        other => panic!("want PolicyKeyMismatch, got {}", code(other)),
    }
}

#[test]
fn empty_or_missing_directory_is_a_pcr_mismatch_naming_it() {
    let tpm = swtpm();
    let key = ImageSigningKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let blob = authorized(&tpm, &key, &empty)
        .seal(&SealShare::generate())
        .unwrap();
    let missing = dir.path().join("missing");
    // Unparsable and non-JSON files are skipped, not fatal.
    std::fs::write(empty.join("junk.json"), "{ not json").unwrap();
    std::fs::write(empty.join("README"), "ignored").unwrap();
    std::fs::create_dir(empty.join("sub.json")).unwrap();
    for d in [&empty, &missing] {
        match authorized(&tpm, &key, d).unseal(&blob) {
            Err(e @ SealError::PcrMismatch(_)) => {
                let m = e.to_string();
                assert!(m.contains(&d.display().to_string()), "{m}");
                assert!(m.contains("PCR 11 = 0000"), "{m}");
            }
            other => panic!("{}: want PcrMismatch, got {}", d.display(), code(other)),
        }
    }
    let e = authorized(&tpm, &key, &empty).unseal(&blob).err().unwrap();
    assert!(e.to_string().contains("1 unparsable"), "{e}");
    let e = authorized(&tpm, &key, &missing)
        .unseal(&blob)
        .err()
        .unwrap();
    assert!(e.to_string().contains("does not exist"), "{e}");
}

#[test]
fn mode_mismatch_is_a_clear_error() {
    let tpm = swtpm();
    let key = ImageSigningKey::generate();
    let dir = tempfile::tempdir().unwrap();
    sign_current(&tpm, &key, dir.path(), "p.json");
    let plain = TpmSeal::open(TpmConfig::new(tpm.tcti(), [11])).unwrap();
    let auth = authorized(&tpm, &key, dir.path());
    let k = SealShare::generate();
    let v1 = plain.seal(&k).unwrap();
    let v2 = auth.seal(&k).unwrap();
    assert_eq!((v1[4], v2[4]), (1, 2));
    match auth.unseal(&v1) {
        Err(e @ SealError::BlobCorrupt(_)) => {
            assert!(e.to_string().contains("plain PolicyPCR"), "{e}")
        }
        other => panic!("want BlobCorrupt, got {}", code(other)),
    }
    match plain.unseal(&v2) {
        Err(e @ SealError::BlobCorrupt(_)) => {
            assert!(e.to_string().contains(&key.public().key_id()), "{e}")
        }
        other => panic!("want BlobCorrupt, got {}", code(other)),
    }
    assert!(plain.unseal(&v1).unwrap().ct_eq(&k));
    assert!(auth.unseal(&v2).unwrap().ct_eq(&k));
}

#[test]
fn error_paths_do_not_leak_handles() {
    let tpm = swtpm();
    let key = ImageSigningKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let seal = authorized(&tpm, &key, dir.path());
    let k = SealShare::generate();
    let blob = seal.seal(&k).unwrap();
    let mut p = sign_current(&tpm, &key, dir.path(), "p.json");
    p.signature[7] ^= 1;
    std::fs::write(dir.path().join("p.json"), p.to_json()).unwrap();
    for _ in 0..8 {
        assert!(matches!(
            seal.unseal(&blob),
            Err(SealError::PolicySignatureInvalid(_))
        ));
    }
    // A foreign blob (sealed on another TPM to the same key) fails at Load.
    let other = swtpm();
    let foreign = authorized(&other, &key, dir.path())
        .seal(&SealShare::generate())
        .unwrap();
    sign_current(&tpm, &key, dir.path(), "p.json");
    for _ in 0..8 {
        assert!(seal.unseal(&foreign).is_err());
    }
    assert!(seal.unseal(&blob).unwrap().ct_eq(&k));
}

#[test]
fn authorized_mode_passes_the_conformance_suite() {
    let tpm = swtpm();
    let key = ImageSigningKey::generate();
    let dir = tempfile::tempdir().unwrap();
    extend_pcr(&tpm.tcti(), 11, b"uki").unwrap();
    sign_current(&tpm, &key, dir.path(), "p.json");
    let cfg = TpmConfig::new(tpm.tcti(), [11]).with_authorized(AuthorizedPolicy {
        public_key_pem: key.public().to_pem(),
        signatures_dir: dir.path().to_path_buf(),
    });
    vault_core::testing::seal_conformance(&move || {
        Box::new(TpmSeal::open(cfg.clone()).expect("open"))
    });
}

#[test]
fn invalid_image_key_is_a_config_error() {
    let tpm = swtpm();
    let cfg = TpmConfig::new(tpm.tcti(), [11]).with_authorized(AuthorizedPolicy {
        public_key_pem: "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n".into(),
        signatures_dir: "/nonexistent".into(),
    });
    match TpmSeal::open(cfg) {
        Err(e @ SealError::Device { call: "config", .. }) => assert_eq!(e.code(), "tpm_error"),
        Err(e) => panic!("got {} ({e})", e.code()),
        Ok(_) => panic!("accepted a bad key"),
    }
    assert!(read_pcrs(&tpm.tcti(), &[24]).is_err());
    assert!(read_pcrs(&tpm.tcti(), &[]).is_err());
}

#[test]
fn the_tpm_itself_enforces_pcr_values_and_key() {
    let tpm = swtpm();
    let tcti = tpm.tcti();
    let a = ImageSigningKey::generate();
    let b = ImageSigningKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let k = SealShare::generate();
    let blob = authorized(&tpm, &a, dir.path()).seal(&k).unwrap();
    let now = SignedPolicy::sign(&a, "1", &read_pcrs(&tcti, &[11]).unwrap()).unwrap();
    assert!(
        diag::unseal_with_policy(&tcti, &[11], &blob, &a.public(), &now)
            .unwrap()
            .ct_eq(k.as_key32())
    );
    // A validly signed policy for other PCR values: PolicyAuthorize refuses
    // (approvedPolicy differs from the session's PolicyPCR digest).
    let stale = SignedPolicy::sign(&a, "1", &[(11, [7; 32])]).unwrap();
    match diag::unseal_with_policy(&tcti, &[11], &blob, &a.public(), &stale) {
        Err(e @ SealError::PcrMismatch(_)) => assert!(e.to_string().contains("PolicyAuthorize")),
        other => panic!("want PcrMismatch, got {}", code(other)),
    }
    // A valid ticket from key B for the right digest: the sealed object's
    // authPolicy names key A, so Unseal fails its policy check.
    let by_b = SignedPolicy::sign(&b, "1", &read_pcrs(&tcti, &[11]).unwrap()).unwrap();
    match diag::unseal_with_policy(&tcti, &[11], &blob, &b.public(), &by_b) {
        Err(e @ SealError::PcrMismatch(_)) => assert!(e.to_string().contains("Esys_Unseal")),
        other => panic!("want PcrMismatch from Unseal, got {}", code(other)),
    }
    // And after an extend, the policy that worked a moment ago does not.
    extend_pcr(&tcti, 11, b"other uki").unwrap();
    assert!(matches!(
        diag::unseal_with_policy(&tcti, &[11], &blob, &a.public(), &now),
        Err(SealError::PcrMismatch(_))
    ));
}
