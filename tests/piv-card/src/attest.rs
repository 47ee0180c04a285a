//! Emulated YubiKey PIV attestation for `piv-card` (piv-authenticator has none).
//!
//! A YubiKey answers ATTEST (INS F9, P1 = slot) with an X.509 certificate for the
//! key generated in that slot, signed by its device attestation key (slot f9), whose
//! certificate (PIV object 5FFF01) is signed by Yubico's PIV attestation root. The
//! leaf carries Yubico's extensions:
//!
//! | OID | content (raw extnValue bytes) |
//! | --- | --- |
//! | 1.3.6.1.4.1.41482.3.3 | firmware: major, minor, patch |
//! | 1.3.6.1.4.1.41482.3.7 | serial: DER INTEGER |
//! | 1.3.6.1.4.1.41482.3.8 | PIN policy, touch policy (1 byte each) |
//! | 1.3.6.1.4.1.41482.3.9 | form factor (1 byte; firmware 5 only) |
//!
//! Here a throw-away test CA made by `piv-card make-attestation-ca DIR` stands in for
//! Yubico's: `DIR/root.pem` (the trust anchor for tests), `DIR/f9.pem` and
//! `DIR/f9-key.pem` (the card's attestation key). The adapter records the public key
//! and the PIN/touch policy bytes of every GENERATE ASYMMETRIC KEY PAIR (INS 47), so it
//! can attest them later, across restarts when `--state-dir` is given
//! (`DIR/attestation.json`).

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SerialNumber, SignatureAlgorithm, PKCS_ECDSA_P256_SHA256,
    PKCS_ECDSA_P384_SHA384,
};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

pub const ROOT_CERT: &str = "root.pem";
pub const F9_CERT: &str = "f9.pem";
pub const F9_KEY: &str = "f9-key.pem";
const STATE_FILE: &str = "attestation.json";

/// Yubico's private enterprise arc, 1.3.6.1.4.1.41482.3.x (PIV attestation).
const YUBICO_PIV: [u64; 8] = [1, 3, 6, 1, 4, 1, 41482, 3];
/// Form factor reported in 1.3.6.1.4.1.41482.3.9: 0x01 = USB-A keychain (a YubiKey 5 NFC).
const FORM_FACTOR_USB_A_KEYCHAIN: u8 = 0x01;

/// YubiKey policy bytes (GENERATE tags 0xAA / 0xAB and the 3.8 extension).
pub const PIN_NEVER: u8 = 1;
pub const PIN_ONCE: u8 = 2;
pub const PIN_ALWAYS: u8 = 3;
pub const TOUCH_NEVER: u8 = 1;

/// A YubiKey's default PIN policy for a slot, as its attestation reports it:
/// 9c (digital signature) always, 9e (card authentication) never, others once.
pub fn default_pin_policy(slot: u8) -> u8 {
    match slot {
        0x9C => PIN_ALWAYS,
        0x9E => PIN_NEVER,
        _ => PIN_ONCE,
    }
}

// ---------------------------------------------------------------------------
// Minimal BER-TLV helpers (PIV uses 1- or 2-byte tags, lengths up to 0x82 xx xx).

/// Splits one TLV off `b`: (tag, value, rest). `None` on malformed input.
pub fn split_tlv(b: &[u8]) -> Option<(u16, &[u8], &[u8])> {
    let (&t0, mut rest) = b.split_first()?;
    let mut tag = u16::from(t0);
    if t0 & 0x1F == 0x1F {
        let (&t1, r) = rest.split_first()?;
        if t1 & 0x80 != 0 {
            return None; // 3-byte tags do not occur in PIV
        }
        tag = (tag << 8) | u16::from(t1);
        rest = r;
    }
    let (&l0, r) = rest.split_first()?;
    rest = r;
    let len = match l0 {
        0..=0x7F => usize::from(l0),
        0x81 => {
            let (&l, r) = rest.split_first()?;
            rest = r;
            usize::from(l)
        }
        0x82 => {
            if rest.len() < 2 {
                return None;
            }
            let l = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            rest = &rest[2..];
            l
        }
        _ => return None,
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// Finds the first TLV with `tag` in a sequence of TLVs.
pub fn find_tlv(mut b: &[u8], tag: u16) -> Option<&[u8]> {
    while !b.is_empty() {
        let (t, v, rest) = split_tlv(b)?;
        if t == tag {
            return Some(v);
        }
        b = rest;
    }
    None
}

/// Encodes one TLV with a 1-byte tag.
pub fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match value.len() {
        n @ 0..=0x7F => out.push(n as u8),
        n @ 0x80..=0xFF => out.extend_from_slice(&[0x81, n as u8]),
        n => {
            let n = u16::try_from(n).unwrap_or(u16::MAX);
            out.push(0x82);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
    out.extend_from_slice(value);
    out
}

/// The PIN and touch policy bytes of a GENERATE ASYMMETRIC KEY PAIR command
/// (`AC { 80 alg, [AA pin], [AB touch] }`); absent or 0 (= default) become the
/// slot's YubiKey defaults.
pub fn requested_policies(slot: u8, data: &[u8]) -> (u8, u8) {
    let inner = find_tlv(data, 0xAC).unwrap_or(&[]);
    let pin = match find_tlv(inner, 0xAA) {
        Some([p]) if *p != 0 => *p,
        _ => default_pin_policy(slot),
    };
    let touch = match find_tlv(inner, 0xAB) {
        Some([t]) if *t != 0 => *t,
        _ => TOUCH_NEVER,
    };
    (pin, touch)
}

/// The EC point (SEC1 uncompressed) in a GENERATE reply (`7F49 { 86 point }`);
/// `None` for RSA keys or malformed replies.
pub fn generated_point(reply: &[u8]) -> Option<Vec<u8>> {
    let inner = find_tlv(reply, 0x7F49)?;
    let point = find_tlv(inner, 0x86)?;
    match point {
        [0x04, ..] if point.len() == 65 || point.len() == 97 => Some(point.to_vec()),
        _ => None,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

// ---------------------------------------------------------------------------
// Recorded keys

/// What GENERATE left in a slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotKey {
    /// SEC1 uncompressed point, hex.
    pub public_key: String,
    /// YubiKey numbering: 1 never, 2 once, 3 always.
    pub pin_policy: u8,
    /// YubiKey numbering: 1 never, 2 always, 3 cached.
    pub touch_policy: u8,
}

#[derive(Default, Serialize, Deserialize)]
struct StateFile {
    /// Slot (hex, e.g. "9c") -> key.
    slots: BTreeMap<String, SlotKey>,
}

/// The keys generated on this card, per slot; saved to `DIR/attestation.json`
/// (beside the flash images) when the card has a state directory.
pub struct Keys {
    slots: BTreeMap<u8, SlotKey>,
    file: Option<PathBuf>,
}

impl Keys {
    pub fn load(state_dir: Option<&Path>) -> anyhow::Result<Keys> {
        let file = state_dir.map(|d| d.join(STATE_FILE));
        let mut slots = BTreeMap::new();
        if let Some(f) = &file {
            if f.exists() {
                let text =
                    fs::read_to_string(f).with_context(|| format!("read {}", f.display()))?;
                let state: StateFile = serde_json::from_str(&text)
                    .with_context(|| format!("parse {}", f.display()))?;
                for (k, v) in state.slots {
                    let slot = u8::from_str_radix(&k, 16)
                        .with_context(|| format!("{}: bad slot {k:?}", f.display()))?;
                    if unhex(&v.public_key).is_none() {
                        bail!("{}: bad public key for slot {k}", f.display());
                    }
                    slots.insert(slot, v);
                }
            }
        }
        Ok(Keys { slots, file })
    }

    pub fn get(&self, slot: u8) -> Option<&SlotKey> {
        self.slots.get(&slot)
    }

    pub fn record(&mut self, slot: u8, point: &[u8], pin_policy: u8, touch_policy: u8) {
        self.slots.insert(
            slot,
            SlotKey {
                public_key: hex(point),
                pin_policy,
                touch_policy,
            },
        );
        self.save();
    }

    pub fn remove(&mut self, slot: u8) {
        if self.slots.remove(&slot).is_some() {
            self.save();
        }
    }

    pub fn clear(&mut self) {
        self.slots.clear();
        self.save();
    }

    fn save(&self) {
        let Some(f) = &self.file else { return };
        let state = StateFile {
            slots: self
                .slots
                .iter()
                .map(|(s, k)| (format!("{s:02x}"), k.clone()))
                .collect(),
        };
        let write = || -> anyhow::Result<()> {
            let tmp = f.with_extension("json.tmp");
            fs::write(&tmp, serde_json::to_vec_pretty(&state)?)?;
            fs::rename(&tmp, f)?;
            Ok(())
        };
        if let Err(e) = write() {
            log::warn!("could not save {}: {e:#}", f.display());
        }
    }
}

// ---------------------------------------------------------------------------
// The attestation CA

/// An EC public key given as a SEC1 point, for rcgen.
struct EcPoint {
    point: Vec<u8>,
    alg: &'static SignatureAlgorithm,
}

impl PublicKeyData for EcPoint {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}

/// The card's attestation key (f9) and certificate.
pub struct AttestationCa {
    f9_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

fn read_pem_cert(path: &Path) -> anyhow::Result<(String, Vec<u8>)> {
    let pem = fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("{}: not a PEM certificate: {e}", path.display()))?;
    if parsed.label != "CERTIFICATE" {
        bail!(
            "{}: PEM label {:?}, want CERTIFICATE",
            path.display(),
            parsed.label
        );
    }
    Ok((pem, parsed.contents))
}

impl AttestationCa {
    /// Loads `DIR/f9.pem` and `DIR/f9-key.pem` (and checks that `DIR/root.pem`, if
    /// present, signed the f9 certificate).
    pub fn load(dir: &Path) -> anyhow::Result<AttestationCa> {
        let (f9_pem, f9_der) = read_pem_cert(&dir.join(F9_CERT))?;
        let key_path = dir.join(F9_KEY);
        let key_pem = fs::read_to_string(&key_path)
            .with_context(|| format!("read {}", key_path.display()))?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| anyhow::anyhow!("{}: {e}", key_path.display()))?;
        let (_, f9) = x509_parser::parse_x509_certificate(&f9_der)
            .map_err(|e| anyhow::anyhow!("{F9_CERT}: {e}"))?;
        if f9.public_key().raw != key.subject_public_key_info().as_slice() {
            bail!("{F9_KEY} is not the key of {F9_CERT}");
        }
        let root_path = dir.join(ROOT_CERT);
        if root_path.exists() {
            let (_, root_der) = read_pem_cert(&root_path)?;
            let (_, root) = x509_parser::parse_x509_certificate(&root_der)
                .map_err(|e| anyhow::anyhow!("{ROOT_CERT}: {e}"))?;
            f9.verify_signature(Some(root.public_key()))
                .map_err(|e| anyhow::anyhow!("{F9_CERT} is not signed by {ROOT_CERT}: {e}"))?;
        }
        let not_before = f9.validity().not_before.to_datetime();
        let not_after = f9.validity().not_after.to_datetime();
        let issuer = Issuer::from_ca_cert_pem(&f9_pem, key)
            .map_err(|e| anyhow::anyhow!("{F9_CERT}: {e}"))?;
        Ok(AttestationCa {
            f9_der: f9_der.clone(),
            issuer,
            not_before,
            not_after,
        })
    }

    /// GET DATA 5FFF01: `53 { 70 cert, 71 00 (uncompressed), FE (LRC, empty) }`.
    pub fn f9_object(&self) -> Vec<u8> {
        let mut inner = tlv(0x70, &self.f9_der);
        inner.extend_from_slice(&tlv(0x71, &[0x00]));
        inner.extend_from_slice(&tlv(0xFE, &[]));
        tlv(0x53, &inner)
    }

    /// The attestation certificate (DER) of `key` in `slot`, laid out like a
    /// YubiKey 5's: issuer = the f9 subject, validity copied from the f9
    /// certificate, subject `CN=YubiKey PIV Attestation <slot>`, a random serial,
    /// and only Yubico's extensions (non-critical).
    pub fn attest(
        &self,
        slot: u8,
        key: &SlotKey,
        serial: u32,
        version: [u8; 3],
    ) -> anyhow::Result<Vec<u8>> {
        let point = unhex(&key.public_key).context("recorded public key")?;
        let alg = match point.len() {
            65 => &PKCS_ECDSA_P256_SHA256,
            97 => &PKCS_ECDSA_P384_SHA384,
            n => bail!("unsupported key ({n}-byte point)"),
        };
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(
            DnType::CommonName,
            format!("YubiKey PIV Attestation {slot:02x}"),
        );
        p.not_before = self.not_before;
        p.not_after = self.not_after;
        let mut sn = [0u8; 16];
        getrandom::getrandom(&mut sn).context("OS RNG")?;
        sn[0] &= 0x7F;
        sn[0] |= 0x01; // positive, 16 significant bytes
        p.serial_number = Some(SerialNumber::from_slice(&sn));
        let ext = |last: u64, content: Vec<u8>| {
            let mut oid = YUBICO_PIV.to_vec();
            oid.push(last);
            CustomExtension::from_oid_content(&oid, content)
        };
        p.custom_extensions.push(ext(3, version.to_vec()));
        p.custom_extensions.push(ext(7, der_integer(serial)));
        p.custom_extensions
            .push(ext(8, vec![key.pin_policy, key.touch_policy]));
        if version[0] >= 5 {
            p.custom_extensions
                .push(ext(9, vec![FORM_FACTOR_USB_A_KEYCHAIN]));
        }
        let cert = p
            .signed_by(&EcPoint { point, alg }, &self.issuer)
            .map_err(|e| anyhow::anyhow!("sign attestation: {e}"))?;
        Ok(cert.der().to_vec())
    }
}

/// A non-negative integer as a minimal DER INTEGER.
pub fn der_integer(n: u32) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(3);
    let mut v = bytes[first..].to_vec();
    if v[0] & 0x80 != 0 {
        v.insert(0, 0);
    }
    let mut out = vec![0x02, v.len() as u8];
    out.extend_from_slice(&v);
    out
}

/// `piv-card make-attestation-ca DIR`: a P-256 test root and an f9 attestation
/// key + certificate signed by it, valid from yesterday for 30 years.
pub fn make_ca(dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    for f in [ROOT_CERT, F9_CERT, F9_KEY] {
        if dir.join(f).exists() {
            bail!(
                "{} exists already; use another directory",
                dir.join(f).display()
            );
        }
    }
    let now = OffsetDateTime::now_utc();
    let ca = |cn: &str| {
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.not_before = now - Duration::days(1);
        p.not_after = now + Duration::days(30 * 365);
        p
    };
    let keygen = || {
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| anyhow::anyhow!("keygen: {e}"))
    };
    let root_key = keygen()?;
    let root_params = ca("piv-card Test PIV Attestation Root");
    let root = root_params
        .self_signed(&root_key)
        .map_err(|e| anyhow::anyhow!("root: {e}"))?;
    let root_issuer = Issuer::new(root_params, root_key);
    let f9_key = keygen()?;
    let f9 = ca("piv-card Test PIV Attestation f9")
        .signed_by(&f9_key, &root_issuer)
        .map_err(|e| anyhow::anyhow!("f9: {e}"))?;
    fs::write(dir.join(ROOT_CERT), root.pem())?;
    fs::write(dir.join(F9_CERT), f9.pem())?;
    write_private(&dir.join(F9_KEY), f9_key.serialize_pem().as_bytes())?;
    // The root key is not kept: nothing else is ever signed by this test root.
    Ok(())
}

fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    f.write_all(data)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlv_round_trip_and_policies() {
        // 00 47 00 9C: AC 09 { 80 01 11, AA 01 03, AB 01 02 }
        let data = [
            0xAC, 0x09, 0x80, 0x01, 0x11, 0xAA, 0x01, 0x03, 0xAB, 0x01, 0x02,
        ];
        assert_eq!(requested_policies(0x9D, &data), (3, 2));
        let data = [0xAC, 0x03, 0x80, 0x01, 0x11];
        assert_eq!(requested_policies(0x9D, &data), (PIN_ONCE, TOUCH_NEVER));
        assert_eq!(requested_policies(0x9C, &data), (PIN_ALWAYS, TOUCH_NEVER));
        assert_eq!(requested_policies(0x9E, &[]), (PIN_NEVER, TOUCH_NEVER));
        let mut reply = vec![0x7F, 0x49, 0x43, 0x86, 0x41, 0x04];
        reply.extend_from_slice(&[7u8; 64]);
        assert_eq!(generated_point(&reply).unwrap().len(), 65);
        assert!(generated_point(&reply[..20]).is_none());
        let long = vec![1u8; 300];
        let t = tlv(0x70, &long);
        assert_eq!(&t[..4], &[0x70, 0x82, 0x01, 0x2C]);
        assert_eq!(split_tlv(&t).unwrap().1, &long[..]);
    }

    #[test]
    fn der_integers() {
        assert_eq!(der_integer(0), [2, 1, 0]);
        assert_eq!(der_integer(127), [2, 1, 127]);
        assert_eq!(der_integer(128), [2, 2, 0, 128]);
        assert_eq!(der_integer(11_111_111), [2, 4, 0x00, 0xA9, 0x8A, 0xC7]);
        assert_eq!(der_integer(u32::MAX), [2, 5, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
    }
}
