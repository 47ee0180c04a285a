//! Attestation chains built like a YubiKey's (root → device f9 → slot key
//! with Yubico's extensions), from a throw-away test root.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, CustomExtension, DnType, IsCa, KeyPair,
    PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384,
};
use time::{Duration, OffsetDateTime};
use vault_core::custodian::attestation::{
    verify, AttestationError, DevicePolicy, PinPolicy, TouchPolicy,
};

const NOW: i64 = 1_800_000_000;

fn ca(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p
}

fn ext(oid: &[u64], content: Vec<u8>) -> CustomExtension {
    CustomExtension::from_oid_content(oid, content)
}

struct Chain {
    root: Vec<u8>,
    f9: Vec<u8>,
    leaf: Vec<u8>,
}

fn leaf_params(serial: u32, fw: [u8; 3], policy: [u8; 2], drop: Option<u64>) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name
        .push(DnType::CommonName, "YubiKey PIV Attestation 9c");
    let mut s = vec![0x02, 0x05, 0x00];
    s.extend_from_slice(&serial.to_be_bytes());
    for (last, content) in [(3u64, fw.to_vec()), (7, s), (8, policy.to_vec())] {
        if drop != Some(last) {
            p.custom_extensions
                .push(ext(&[1, 3, 6, 1, 4, 1, 41482, 3, last], content));
        }
    }
    p
}

fn chain_with(leaf: CertificateParams, leaf_alg: &'static rcgen::SignatureAlgorithm) -> Chain {
    let root = CertifiedIssuer::self_signed(
        ca("Test PIV Root"),
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
    )
    .unwrap();
    let f9 = CertifiedIssuer::signed_by(
        ca("Test Attestation f9"),
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
        &root,
    )
    .unwrap();
    let key = KeyPair::generate_for(leaf_alg).unwrap();
    let leaf = leaf.signed_by(&key, &f9).unwrap();
    Chain {
        root: root.der().to_vec(),
        f9: f9.der().to_vec(),
        leaf: leaf.der().to_vec(),
    }
}

fn good() -> Chain {
    chain_with(
        leaf_params(12_345_678, [5, 4, 3], [3, 2], None),
        &PKCS_ECDSA_P256_SHA256,
    )
}

#[test]
fn a_good_chain_verifies_and_reads_the_extensions() {
    let c = good();
    let a = verify(&c.leaf, &[&c.f9[..]], &[&c.root[..]], NOW).unwrap();
    assert_eq!(a.serial, 12_345_678);
    assert_eq!(a.firmware, (5, 4, 3));
    assert_eq!(a.pin_policy, PinPolicy::Always);
    assert_eq!(a.touch_policy, TouchPolicy::Always);
    DevicePolicy {
        require_touch: true,
        require_pin_always: true,
        min_firmware: Some((5, 2, 0)),
    }
    .check(&a)
    .unwrap();
    let e = DevicePolicy {
        min_firmware: Some((5, 7, 0)),
        ..Default::default()
    }
    .check(&a)
    .unwrap_err();
    assert_eq!(e.code(), "device_policy");
}

#[test]
fn refusals() {
    let c = good();
    let other = good();
    // Unknown root.
    assert_eq!(
        verify(&c.leaf, &[&c.f9[..]], &[&other.root[..]], NOW),
        Err(AttestationError::UnknownRoot)
    );
    // A leaf signed by another device's f9.
    assert_eq!(
        verify(&c.leaf, &[&other.f9[..]], &[&other.root[..]], NOW),
        Err(AttestationError::BadSignature)
    );
    // No f9 certificate, garbage, trailing bytes.
    assert!(matches!(
        verify(&c.leaf, &[], &[&c.root[..]], NOW),
        Err(AttestationError::Malformed(_))
    ));
    assert!(matches!(
        verify(b"not a cert", &[&c.f9[..]], &[&c.root[..]], NOW),
        Err(AttestationError::Malformed(_))
    ));
    let mut trailing = c.leaf.clone();
    trailing.push(0);
    assert!(matches!(
        verify(&trailing, &[&c.f9[..]], &[&c.root[..]], NOW),
        Err(AttestationError::Malformed(_))
    ));
    // A tampered leaf.
    let mut t = c.leaf.clone();
    let n = t.len();
    t[n - 40] ^= 0x01;
    assert!(verify(&t, &[&c.f9[..]], &[&c.root[..]], NOW).is_err());
    // Outside the validity period.
    let mut p = leaf_params(1, [5, 4, 3], [1, 1], None);
    p.not_after = OffsetDateTime::from_unix_timestamp(NOW).unwrap() - Duration::days(1);
    let e = chain_with(p, &PKCS_ECDSA_P256_SHA256);
    assert_eq!(
        verify(&e.leaf, &[&e.f9[..]], &[&e.root[..]], NOW),
        Err(AttestationError::Expired)
    );
    // Not a P-256 key.
    let w = chain_with(
        leaf_params(1, [5, 4, 3], [1, 1], None),
        &PKCS_ECDSA_P384_SHA384,
    );
    assert_eq!(
        verify(&w.leaf, &[&w.f9[..]], &[&w.root[..]], NOW),
        Err(AttestationError::WrongKeyType)
    );
    // Missing Yubico extensions: not an attestation.
    for oid in [3u64, 7, 8] {
        let m = chain_with(
            leaf_params(1, [5, 4, 3], [1, 1], Some(oid)),
            &PKCS_ECDSA_P256_SHA256,
        );
        let err = verify(&m.leaf, &[&m.f9[..]], &[&m.root[..]], NOW).unwrap_err();
        assert_eq!(err.code(), "unattested_key", "{oid}");
    }
    // Policy: no touch, PIN once.
    let lax = chain_with(
        leaf_params(1, [5, 4, 3], [2, 1], None),
        &PKCS_ECDSA_P256_SHA256,
    );
    let a = verify(&lax.leaf, &[&lax.f9[..]], &[&lax.root[..]], NOW).unwrap();
    assert!(DevicePolicy {
        require_touch: true,
        ..Default::default()
    }
    .check(&a)
    .is_err());
    assert!(DevicePolicy {
        require_pin_always: true,
        ..Default::default()
    }
    .check(&a)
    .is_err());
}
