//! Attestation chains built like a YubiKey's (root → device f9 → slot key
//! with Yubico's extensions), from a throw-away test root, one genuine
//! YubiKey chain, and the forgeries path validation must refuse.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, CustomExtension, DnType, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384,
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
    // The default fails closed (touch and PIN always), which this key meets.
    DevicePolicy::default().check(&a).unwrap();
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
    let only = |touch, pin| DevicePolicy {
        require_touch: touch,
        require_pin_always: pin,
        min_firmware: None,
    };
    assert!(only(true, false).check(&a).is_err());
    assert!(only(false, true).check(&a).is_err());
    assert!(only(false, false).check(&a).is_ok());
    // The default requires both.
    assert_eq!(
        DevicePolicy::default().check(&a).unwrap_err().code(),
        "device_policy"
    );
}

// ------------------------------------------------------------ a genuine chain

fn pem_certs(text: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = text.as_bytes();
    while let Some(i) = text[text.len() - rest.len()..].find("-----BEGIN CERTIFICATE-----") {
        rest = &rest[i..];
        let (r, pem) = x509_parser::pem::parse_x509_pem(rest).unwrap();
        out.push(pem.contents);
        rest = r;
    }
    out
}

/// A real YubiKey 5 (firmware 5.4.3) chain under Yubico's PIV root: the
/// checks must not refuse what Yubico ships.
#[test]
fn a_genuine_yubikey_chain_verifies() {
    let chain = pem_certs(include_str!("data/yubikey-5.4.3-attestation.pem"));
    let roots = pem_certs(include_str!("../../server/src/yubico-piv-roots.pem"));
    assert_eq!((chain.len(), roots.len()), (2, 2));
    let (f9, leaf) = (&chain[0], &chain[1]);
    let roots: Vec<&[u8]> = roots.iter().map(|r| r.as_slice()).collect();
    let a = verify(leaf, &[&f9[..]], &roots, NOW).unwrap();
    assert_eq!(a.serial, 0x00F0_0F14);
    assert_eq!(a.firmware, (5, 4, 3));
    assert_eq!(a.pin_policy, PinPolicy::Once);
    assert_eq!(a.touch_policy, TouchPolicy::Never);
    // This key was made with PIN once and no touch: the default policy
    // refuses it.
    assert_eq!(
        DevicePolicy::default().check(&a).unwrap_err().code(),
        "device_policy"
    );
    // A slot attestation put where an issuer goes does not chain: its own
    // issuer is the f9 certificate.
    assert_eq!(
        verify(leaf, &[&leaf[..], &f9[..]], &roots, NOW).unwrap_err(),
        AttestationError::NameMismatch {
            child: "CN=YubiKey PIV Attestation 9a".into(),
            issuer: "CN=YubiKey PIV Attestation 9a".into(),
        }
    );
}

// ------------------------------------------------------------ forged paths

/// A certificate of the chain with its key, so tests can sign with it.
struct Node {
    params: CertificateParams,
    key: KeyPair,
    der: Vec<u8>,
}

impl Node {
    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }
}

fn p256() -> KeyPair {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap()
}

fn root_node(params: CertificateParams) -> Node {
    let key = p256();
    let der = params.self_signed(&key).unwrap().der().to_vec();
    Node { params, key, der }
}

fn node(params: CertificateParams, by: &Node) -> Node {
    let key = p256();
    let der = params.signed_by(&key, &by.issuer()).unwrap().der().to_vec();
    Node { params, key, der }
}

fn ca_with(cn: &str, is_ca: IsCa) -> CertificateParams {
    let mut p = ca(cn);
    p.is_ca = is_ca;
    p
}

fn slot(serial: u32) -> CertificateParams {
    leaf_params(serial, [5, 7, 4], [3, 2], None)
}

fn check(leaf: &Node, chain: &[&Node], root: &Node) -> Result<(), AttestationError> {
    let chain: Vec<&[u8]> = chain.iter().map(|n| n.der.as_slice()).collect();
    verify(&leaf.der, &chain, &[&root.der[..]], NOW).map(|_| ())
}

#[test]
fn a_chain_with_an_intermediate_verifies_within_path_lengths() {
    // Firmware 5.7.4 and later: root → "PIV Attestation B 1" → f9 → slot,
    // each with the tightest path length that still allows the chain.
    let root = root_node(ca_with(
        "Test Attestation Root",
        IsCa::Ca(BasicConstraints::Constrained(2)),
    ));
    let mut ip = ca_with(
        "Test PIV Attestation B 1",
        IsCa::Ca(BasicConstraints::Constrained(1)),
    );
    ip.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let inter = node(ip, &root);
    let f9 = node(
        ca_with("Test f9", IsCa::Ca(BasicConstraints::Constrained(0))),
        &inter,
    );
    let leaf = node(slot(7), &f9);
    check(&leaf, &[&f9, &inter], &root).unwrap();
    // The intermediate is needed: without it the f9 does not chain.
    assert_eq!(
        check(&leaf, &[&f9], &root),
        Err(AttestationError::UnknownRoot)
    );
}

/// The attack of issue 11: a custodian with one genuine YubiKey signs, with
/// its attested 9c key, an "attestation" for a software key (any serial,
/// any policy), and presents its own 9c attestation as the issuer.
#[test]
fn a_slot_key_cannot_attest_another_key() {
    let root = root_node(ca("Test PIV Root"));
    let f9 = node(ca("Test Attestation f9"), &root);
    for is_ca in [IsCa::NoCa, IsCa::ExplicitNoCa] {
        let mut p = slot(1111);
        p.is_ca = is_ca;
        let genuine_9c = node(p, &f9);
        // The genuine 9c attestation verifies.
        check(&genuine_9c, &[&f9], &root).unwrap();
        // A software key "attested" by the 9c key, claiming touch and PIN
        // always and another serial.
        let soft = node(leaf_params(2222, [5, 7, 4], [3, 2], None), &genuine_9c);
        let e = check(&soft, &[&genuine_9c, &f9], &root).unwrap_err();
        assert_eq!(
            e,
            AttestationError::IssuerNotCa("CN=YubiKey PIV Attestation 9c".into())
        );
        assert_eq!(e.code(), "attestation_issuer_not_ca");
    }
}

#[test]
fn issuers_must_be_cas() {
    let root = root_node(ca("Test PIV Root"));
    // An f9 certificate without basicConstraints, or with CA=false.
    for is_ca in [IsCa::NoCa, IsCa::ExplicitNoCa] {
        let f9 = node(ca_with("Test f9", is_ca), &root);
        let leaf = node(slot(1), &f9);
        assert_eq!(
            check(&leaf, &[&f9], &root).unwrap_err().code(),
            "attestation_issuer_not_ca"
        );
    }
    // An intermediate between the f9 certificate and the root that is not a CA.
    for is_ca in [IsCa::NoCa, IsCa::ExplicitNoCa] {
        let inter = node(ca_with("Test intermediate", is_ca), &root);
        let f9 = node(ca("Test f9"), &inter);
        let leaf = node(slot(1), &f9);
        assert_eq!(
            check(&leaf, &[&f9, &inter], &root),
            Err(AttestationError::IssuerNotCa("CN=Test intermediate".into()))
        );
    }
    // A configured root that is not a CA is not trusted to issue.
    let not_ca = root_node(ca_with("Test PIV Root", IsCa::ExplicitNoCa));
    let f9 = node(ca("Test f9"), &not_ca);
    let leaf = node(slot(1), &f9);
    assert_eq!(
        check(&leaf, &[&f9], &not_ca).unwrap_err().code(),
        "attestation_issuer_not_ca"
    );
}

#[test]
fn issuers_key_usage_must_allow_certificate_signing() {
    let root = root_node(ca("Test PIV Root"));
    let mut p = ca("Test f9");
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let f9 = node(p, &root);
    let leaf = node(slot(1), &f9);
    let e = check(&leaf, &[&f9], &root).unwrap_err();
    assert_eq!(e, AttestationError::IssuerKeyUsage("CN=Test f9".into()));
    assert_eq!(e.code(), "attestation_issuer_key_usage");
    // With keyCertSign it passes.
    let mut p = ca("Test f9");
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
    ];
    let f9 = node(p, &root);
    let leaf = node(slot(1), &f9);
    check(&leaf, &[&f9], &root).unwrap();
}

#[test]
fn issuer_names_must_chain() {
    let root = root_node(ca("Test PIV Root"));
    let f9 = node(ca("Test f9"), &root);
    // Signed with the f9 key, but naming another issuer.
    let liar = Issuer::new(ca("Someone Else"), &f9.key);
    let key = p256();
    let der = slot(1).signed_by(&key, &liar).unwrap().der().to_vec();
    let leaf = Node {
        params: slot(1),
        key,
        der,
    };
    let e = check(&leaf, &[&f9], &root).unwrap_err();
    assert_eq!(
        e,
        AttestationError::NameMismatch {
            child: "CN=YubiKey PIV Attestation 9c".into(),
            issuer: "CN=Test f9".into(),
        }
    );
    assert_eq!(e.code(), "attestation_name_mismatch");
    // An f9 certificate signed by the root key under another name.
    let liar = Issuer::new(ca("Not The Root"), &root.key);
    let key = p256();
    let der = ca("Test f9").signed_by(&key, &liar).unwrap().der().to_vec();
    let f9 = Node {
        params: ca("Test f9"),
        key,
        der,
    };
    let leaf = node(slot(1), &f9);
    // No configured root has that subject.
    assert_eq!(
        check(&leaf, &[&f9], &root),
        Err(AttestationError::UnknownRoot)
    );
}

#[test]
fn path_lengths_are_respected() {
    let constrained = |cn: &str, n: u8| ca_with(cn, IsCa::Ca(BasicConstraints::Constrained(n)));
    // A root that allows no intermediate: the f9 certificate is one.
    let root = root_node(constrained("Test PIV Root", 0));
    let f9 = node(ca("Test f9"), &root);
    let leaf = node(slot(1), &f9);
    let e = check(&leaf, &[&f9], &root).unwrap_err();
    assert_eq!(
        e,
        AttestationError::PathLength {
            issuer: "CN=Test PIV Root".into(),
            allowed: 0,
            have: 1,
        }
    );
    assert_eq!(e.code(), "attestation_path_length");
    // A root that allows one, above an intermediate and the f9 certificate.
    let root = root_node(constrained("Test PIV Root", 1));
    let inter = node(ca("Test intermediate"), &root);
    let f9 = node(ca("Test f9"), &inter);
    let leaf = node(slot(1), &f9);
    assert_eq!(
        check(&leaf, &[&f9, &inter], &root).unwrap_err().code(),
        "attestation_path_length"
    );
    // An intermediate with pathlen 0 above the f9 certificate.
    let root = root_node(ca("Test PIV Root"));
    let inter = node(constrained("Test intermediate", 0), &root);
    let f9 = node(ca("Test f9"), &inter);
    let leaf = node(slot(1), &f9);
    assert_eq!(
        check(&leaf, &[&f9, &inter], &root),
        Err(AttestationError::PathLength {
            issuer: "CN=Test intermediate".into(),
            allowed: 0,
            have: 1,
        })
    );
    // An f9 certificate with pathlen 0 (as Yubico issues them) under it:
    // a certificate below the slot attestation is one too many.
    let f9 = node(constrained("Test f9", 0), &root);
    let mut p = slot(1);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_leaf = node(p, &f9);
    let below = node(slot(2), &ca_leaf);
    assert_eq!(
        check(&below, &[&ca_leaf, &f9], &root),
        Err(AttestationError::PathLength {
            issuer: "CN=Test f9".into(),
            allowed: 0,
            have: 1,
        })
    );
}

#[test]
fn the_leaf_must_not_be_a_ca() {
    let root = root_node(ca("Test PIV Root"));
    let f9 = node(ca("Test f9"), &root);
    let mut p = slot(1);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let leaf = node(p, &f9);
    let e = check(&leaf, &[&f9], &root).unwrap_err();
    assert_eq!(e, AttestationError::LeafIsCa);
    assert_eq!(e.code(), "attestation_leaf_is_ca");
}

#[test]
fn every_certificate_of_the_path_must_be_valid_now() {
    let day = Duration::days(1);
    let at = OffsetDateTime::from_unix_timestamp(NOW).unwrap();
    let mut rp = ca("Test PIV Root");
    rp.not_after = at - day;
    let old_root = root_node(rp);
    let f9 = node(ca("Test f9"), &old_root);
    let leaf = node(slot(1), &f9);
    assert_eq!(
        check(&leaf, &[&f9], &old_root),
        Err(AttestationError::Expired)
    );
    let root = root_node(ca("Test PIV Root"));
    let mut fp = ca("Test f9");
    fp.not_before = at + day;
    let young_f9 = node(fp, &root);
    let leaf = node(slot(1), &young_f9);
    assert_eq!(
        check(&leaf, &[&young_f9], &root),
        Err(AttestationError::Expired)
    );
}
