//! TPM2 policy arithmetic and the signed boot policy.
//!
//! # Digests (SHA-256 bank, TPM 2.0 Part 3 §23)
//!
//! * `PolicyPCR` from the zero digest:
//!   `H(0^32 || TPM_CC_PolicyPCR || TPML_PCR_SELECTION || H(PCR values in
//!   ascending PCR order))`, with a one-entry selection list (SHA-256, three
//!   octets of bitmap), exactly as the TPM marshals it.
//! * `PolicyAuthorize` resets the digest, then applies PolicyUpdate:
//!   `H(H(0^32 || TPM_CC_PolicyAuthorize || keyName) || policyRef)`, here
//!   always with an empty `policyRef`.
//! * What the image key signs is `aHash = H(approvedPolicy || policyRef)`.
//! * The key's TPM Name is `0x000B || H(TPMT_PUBLIC)` for the external ECC
//!   P-256 key with scheme ECDSA-SHA256, attributes `sign` only, empty
//!   authPolicy, no symmetric algorithm and KDF NULL (see [`tpm_key_name`]).
//!
//! # Signed boot policy (JSON, format 1)
//!
//! ```json
//! {
//!   "format": 1,
//!   "version": "2024.06.1",
//!   "key_id": "<64 lowercase hex: SHA-256 of the signing key's SPKI DER>",
//!   "pcrs": [ { "pcr": 11, "sha256": "<64 lowercase hex: predicted PCR value>" } ],
//!   "policy": "<64 lowercase hex: PolicyPCR digest of `pcrs`>",
//!   "signature": "<128 lowercase hex: ECDSA P-256 r || s over aHash = SHA-256(policy)>"
//! }
//! ```
//!
//! Parsing ([`SignedPolicy::from_json`]) is strict: unknown or duplicate
//! fields, upper-case or odd-length hex, wrong lengths, an unsorted or
//! out-of-range PCR list and a `policy` that differs from the digest
//! recomputed from `pcrs` are all `policy_malformed`. It does **not** check
//! the signature: that is [`SignedPolicy::verify`] (or the TPM's
//! `TPM2_VerifySignature`).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::key::{ImagePublicKey, ImageSigningKey};
use super::text::{lower_hex, valid_version};
use super::BootFormatError;

const TPM_CC_POLICY_PCR: u32 = 0x0000_017F;
const TPM_CC_POLICY_AUTHORIZE: u32 = 0x0000_016A;
const TPM_ALG_SHA256: u16 = 0x000B;
const TPM_ALG_ECC: u16 = 0x0023;
const TPM_ALG_NULL: u16 = 0x0010;
const TPM_ALG_ECDSA: u16 = 0x0018;
const TPM_ECC_NIST_P256: u16 = 0x0003;
/// TPMA_OBJECT with only `sign` set (bit 18).
pub const IMAGE_KEY_ATTRIBUTES: u32 = 1 << 18;
/// Highest PCR index in a PC-client SHA-256 bank.
const MAX_PCR: u8 = 23;
/// Format number of the signed policy JSON.
const POLICY_FORMAT: u32 = 1;

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// PolicyPCR digest starting from the all-zero digest, SHA-256 bank.
///
/// The list is taken in ascending PCR order (sorted here); if an index is
/// listed twice only its first value counts. Indices above 23 widen the
/// bitmap (a real TPM would refuse them; [`SignedPolicy`] rejects them).
pub fn pcr_policy_digest(pcrs: &[(u8, [u8; 32])]) -> [u8; 32] {
    let mut sorted: Vec<(u8, [u8; 32])> = pcrs.to_vec();
    sorted.sort_by_key(|(i, _)| *i);
    sorted.dedup_by_key(|(i, _)| *i);
    let max = sorted.last().map_or(0, |(i, _)| *i);
    let size_of_select = std::cmp::max(3, usize::from(max) / 8 + 1);
    let mut bitmap = vec![0u8; size_of_select];
    let mut values = Sha256::new();
    for (i, v) in &sorted {
        bitmap[usize::from(*i) / 8] |= 1 << (i % 8);
        values.update(v);
    }
    let values: [u8; 32] = values.finalize().into();
    // TPML_PCR_SELECTION: count, then TPMS_PCR_SELECTION { hash, sizeofSelect, pcrSelect }.
    let mut selection = Vec::with_capacity(7 + bitmap.len());
    selection.extend_from_slice(&1u32.to_be_bytes());
    selection.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes());
    selection.push(size_of_select as u8);
    selection.extend_from_slice(&bitmap);
    sha256(&[
        &[0u8; 32],
        &TPM_CC_POLICY_PCR.to_be_bytes(),
        &selection,
        &values,
    ])
}

/// PolicyAuthorize digest from the zero digest with an empty policyRef:
/// `H(H(0^32 || TPM_CC_PolicyAuthorize || keyName) || "")`.
pub fn authorize_policy_digest(key_name: &[u8]) -> [u8; 32] {
    let inner = sha256(&[&[0u8; 32], &TPM_CC_POLICY_AUTHORIZE.to_be_bytes(), key_name]);
    sha256(&[&inner])
}

/// `aHash = H(approvedPolicy || policyRef)` with an empty policyRef: the
/// digest the image key signs.
pub fn approved_hash(policy: &[u8; 32]) -> [u8; 32] {
    sha256(&[policy])
}

/// The marshalled `TPMT_PUBLIC` of the image key as the TPM sees it after
/// `TPM2_LoadExternal` (public area only).
pub fn tpm_public_area(pk: &ImagePublicKey) -> Vec<u8> {
    let (x, y) = pk.affine_xy();
    let mut out = Vec::with_capacity(96);
    out.extend_from_slice(&TPM_ALG_ECC.to_be_bytes()); // type
    out.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes()); // nameAlg
    out.extend_from_slice(&IMAGE_KEY_ATTRIBUTES.to_be_bytes()); // objectAttributes
    out.extend_from_slice(&0u16.to_be_bytes()); // authPolicy: empty
    out.extend_from_slice(&TPM_ALG_NULL.to_be_bytes()); // symmetric
    out.extend_from_slice(&TPM_ALG_ECDSA.to_be_bytes()); // scheme
    out.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes()); //   hashAlg
    out.extend_from_slice(&TPM_ECC_NIST_P256.to_be_bytes()); // curveID
    out.extend_from_slice(&TPM_ALG_NULL.to_be_bytes()); // kdf
    for c in [x, y] {
        out.extend_from_slice(&32u16.to_be_bytes());
        out.extend_from_slice(&c);
    }
    out
}

/// The TPM Name of the image key loaded as an external ECC P-256
/// ECDSA-SHA256 signing key: `0x000B || SHA-256(TPMT_PUBLIC)`.
pub fn tpm_key_name(pk: &ImagePublicKey) -> Vec<u8> {
    let mut name = TPM_ALG_SHA256.to_be_bytes().to_vec();
    name.extend_from_slice(&sha256(&[&tpm_public_area(pk)]));
    name
}

/// `H(pcr || digest)`: a PCR value after one extend.
pub fn extend(pcr: [u8; 32], digest: &[u8; 32]) -> [u8; 32] {
    sha256(&[&pcr, digest])
}

/// A PolicyPCR digest signed by the image key. See the module docs for the
/// JSON format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedPolicy {
    pub version: String,
    /// Sorted by PCR index, unique, indices 0..=23.
    pub pcrs: Vec<(u8, [u8; 32])>,
    /// `pcr_policy_digest(pcrs)`.
    pub policy: [u8; 32],
    pub key_id: String,
    /// ECDSA P-256 `r || s` over `approved_hash(policy)`.
    pub signature: [u8; 64],
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyJson {
    format: u32,
    version: String,
    key_id: String,
    pcrs: Vec<PcrJson>,
    policy: String,
    signature: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PcrJson {
    pcr: u8,
    sha256: String,
}

fn malformed(msg: impl Into<String>) -> BootFormatError {
    BootFormatError::PolicyMalformed(msg.into())
}

/// Checks a PCR list: non-empty, indices 0..=23, strictly ascending.
fn check_pcrs(pcrs: &[(u8, [u8; 32])]) -> Result<(), BootFormatError> {
    if pcrs.is_empty() {
        return Err(malformed("no PCRs"));
    }
    if let Some((i, _)) = pcrs.iter().find(|(i, _)| *i > MAX_PCR) {
        return Err(malformed(format!("PCR index {i} is out of range (0..=23)")));
    }
    if pcrs.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(malformed("PCR list is not strictly ascending"));
    }
    Ok(())
}

impl SignedPolicy {
    /// Signs the PolicyPCR digest of `pcrs` (any order; indices 0..=23,
    /// no duplicates) for image `version`.
    pub fn sign(
        key: &ImageSigningKey,
        version: &str,
        pcrs: &[(u8, [u8; 32])],
    ) -> Result<Self, BootFormatError> {
        if !valid_version(version) {
            return Err(malformed(format!(
                "invalid version {version:?}: 1..=64 characters from [0-9A-Za-z.+_-]"
            )));
        }
        let mut sorted = pcrs.to_vec();
        sorted.sort_by_key(|(i, _)| *i);
        check_pcrs(&sorted)?;
        let policy = pcr_policy_digest(&sorted);
        let signature = key.sign_prehash(&approved_hash(&policy))?;
        Ok(SignedPolicy {
            version: version.to_string(),
            pcrs: sorted,
            policy,
            key_id: key.public().key_id(),
            signature,
        })
    }

    /// The JSON document (pretty-printed, fields in the documented order,
    /// trailing newline).
    pub fn to_json(&self) -> String {
        let doc = PolicyJson {
            format: POLICY_FORMAT,
            version: self.version.clone(),
            key_id: self.key_id.clone(),
            pcrs: self
                .pcrs
                .iter()
                .map(|(i, v)| PcrJson {
                    pcr: *i,
                    sha256: hex::encode(v),
                })
                .collect(),
            policy: hex::encode(self.policy),
            signature: hex::encode(self.signature),
        };
        let mut s = serde_json::to_string_pretty(&doc).expect("plain structs serialise");
        s.push('\n');
        s
    }

    /// Parses a signed policy strictly (see the module docs). Does not
    /// verify the signature.
    pub fn from_json(text: &str) -> Result<Self, BootFormatError> {
        if text.len() > 64 * 1024 {
            return Err(malformed("document is larger than 64 KiB"));
        }
        let doc: PolicyJson =
            serde_json::from_str(text).map_err(|e| malformed(format!("invalid JSON: {e}")))?;
        if doc.format != POLICY_FORMAT {
            return Err(malformed(format!("unsupported format {}", doc.format)));
        }
        if !valid_version(&doc.version) {
            return Err(malformed(format!("invalid version {:?}", doc.version)));
        }
        if lower_hex::<32>(&doc.key_id).is_none() {
            return Err(malformed("key_id is not 64 lowercase hex digits"));
        }
        let pcrs = doc
            .pcrs
            .iter()
            .map(|p| {
                lower_hex::<32>(&p.sha256)
                    .map(|v| (p.pcr, v))
                    .ok_or_else(|| {
                        malformed(format!(
                            "PCR {} value is not 64 lowercase hex digits",
                            p.pcr
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        check_pcrs(&pcrs)?;
        let policy = lower_hex::<32>(&doc.policy)
            .ok_or_else(|| malformed("policy is not 64 lowercase hex digits"))?;
        if policy != pcr_policy_digest(&pcrs) {
            return Err(malformed(
                "policy is not the PolicyPCR digest of the listed PCR values",
            ));
        }
        let signature = lower_hex::<64>(&doc.signature)
            .ok_or_else(|| malformed("signature is not 128 lowercase hex digits"))?;
        Ok(SignedPolicy {
            version: doc.version,
            pcrs,
            policy,
            key_id: doc.key_id,
            signature,
        })
    }

    /// Checks that the policy names `pk`, that `policy` is the PolicyPCR
    /// digest of `pcrs` and that the signature over `approved_hash(policy)`
    /// verifies under `pk`.
    pub fn verify(&self, pk: &ImagePublicKey) -> Result<(), BootFormatError> {
        let id = pk.key_id();
        if self.key_id != id {
            return Err(BootFormatError::PolicyBadSignature(format!(
                "policy names key {} but the verifying key is {id}",
                self.key_id
            )));
        }
        if check_pcrs(&self.pcrs).is_err() || self.policy != pcr_policy_digest(&self.pcrs) {
            return Err(malformed(
                "policy is not the PolicyPCR digest of the listed PCR values",
            ));
        }
        pk.verify_prehash(&approved_hash(&self.policy), &self.signature)
            .map_err(|e| BootFormatError::PolicyBadSignature(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> [u8; 32] {
        let mut o = [0u8; 32];
        hex::decode_to_slice(s, &mut o).unwrap();
        o
    }

    // Expected values computed by swtpm 0.8 through tpm2-tools 5 (trial
    // sessions: `tpm2_policypcr -l sha256:11`, `tpm2_policyauthorize -n`),
    // not by this code. The vault-tpm tests cross-check live as well.
    #[test]
    fn known_answers_from_a_tpm() {
        // PCR 11 at reset (all zero).
        assert_eq!(
            hex::encode(pcr_policy_digest(&[(11, [0; 32])])),
            "fd32fa22c52cfc8e1a0c29eb38519f87084cab0b04b0d8f020a4d38b2f4e223e"
        );
        // PCR 11 after extending with SHA-256("abc").
        let abc = h("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let pcr11 = extend([0; 32], &abc);
        assert_eq!(
            hex::encode(pcr11),
            "589f9ffed4c477966bfb8d41f37895b08c69047df8f911d6f3b57fbe08faee8d"
        );
        assert_eq!(
            hex::encode(pcr_policy_digest(&[(11, pcr11)])),
            "b69a28b0dc5cbfd43a39f791530222f3b6908411eb57918d73908bac98c38786"
        );
        // PCRs 0 (zero) and 11 (extended), in either input order.
        let want = "e00f11e1d04c841b2a8990f68a71458b8e8e63af59dc55b9b801eb377b5dbdc5";
        assert_eq!(
            hex::encode(pcr_policy_digest(&[(0, [0; 32]), (11, pcr11)])),
            want
        );
        assert_eq!(
            hex::encode(pcr_policy_digest(&[(11, pcr11), (0, [0; 32])])),
            want
        );
        // PolicyAuthorize with keyName = 000b || 11*32.
        let mut name = vec![0x00, 0x0b];
        name.extend_from_slice(&[0x11; 32]);
        assert_eq!(
            hex::encode(authorize_policy_digest(&name)),
            "4a1abcfbbd695141639ae9da442c5b6121baadc246ba3aaa129076f5f508af1b"
        );
    }

    #[test]
    fn key_name_shape() {
        let pk = ImageSigningKey::generate().public();
        let name = tpm_key_name(&pk);
        assert_eq!(name.len(), 34);
        assert_eq!(&name[..2], &[0x00, 0x0b]);
        assert_eq!(
            tpm_public_area(&pk).len(),
            2 + 2 + 4 + 2 + 2 + 4 + 2 + 2 + 34 + 34
        );
        assert_ne!(name, tpm_key_name(&ImageSigningKey::generate().public()));
    }

    fn sample() -> (ImageSigningKey, SignedPolicy) {
        let k = ImageSigningKey::generate();
        let p = SignedPolicy::sign(&k, "1.2.3", &[(11, [0xab; 32])]).unwrap();
        (k, p)
    }

    #[test]
    fn sign_verify_round_trip() {
        let (k, p) = sample();
        p.verify(&k.public()).unwrap();
        let json = p.to_json();
        let back = SignedPolicy::from_json(&json).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.to_json(), json);
        back.verify(&k.public()).unwrap();
        assert!(json.contains("\"pcr\": 11"), "{json}");
        // Unsorted input is sorted.
        let p2 = SignedPolicy::sign(&k, "v", &[(11, [1; 32]), (0, [2; 32])]).unwrap();
        assert_eq!(p2.pcrs[0].0, 0);
        p2.verify(&k.public()).unwrap();
    }

    #[test]
    fn verify_rejects_other_key_and_tampering() {
        let (_, p) = sample();
        let other = ImageSigningKey::generate();
        assert_eq!(
            p.verify(&other.public()).unwrap_err().code(),
            "policy_bad_signature"
        );
        // Same key id claimed, signature by another key.
        let (k, _) = sample();
        let mut forged = SignedPolicy::sign(&other, "1.2.3", &[(11, [0xab; 32])]).unwrap();
        forged.key_id = k.public().key_id();
        assert_eq!(
            forged.verify(&k.public()).unwrap_err().code(),
            "policy_bad_signature"
        );
        let mut bad = SignedPolicy::sign(&k, "1", &[(11, [0xab; 32])]).unwrap();
        bad.signature[10] ^= 1;
        assert_eq!(
            bad.verify(&k.public()).unwrap_err().code(),
            "policy_bad_signature"
        );
        // Version is not covered by the signature (the TPM only sees the
        // digest), but PCR values are.
        let mut moved = SignedPolicy::sign(&k, "1", &[(11, [0xab; 32])]).unwrap();
        moved.pcrs[0].1[0] ^= 1;
        assert_eq!(
            moved.verify(&k.public()).unwrap_err().code(),
            "policy_malformed"
        );
        moved.policy = pcr_policy_digest(&moved.pcrs);
        assert_eq!(
            moved.verify(&k.public()).unwrap_err().code(),
            "policy_bad_signature"
        );
    }

    #[test]
    fn sign_rejects_bad_input() {
        let k = ImageSigningKey::generate();
        for (v, pcrs) in [
            ("", vec![(11u8, [0u8; 32])]),
            ("a b", vec![(11, [0; 32])]),
            (&"x".repeat(65)[..], vec![(11, [0; 32])]),
            ("1", vec![]),
            ("1", vec![(24, [0; 32])]),
            ("1", vec![(11, [0; 32]), (11, [1; 32])]),
        ] {
            assert_eq!(
                SignedPolicy::sign(&k, v, &pcrs).unwrap_err().code(),
                "policy_malformed",
                "{v:?} {pcrs:?}"
            );
        }
    }

    #[test]
    fn from_json_is_strict() {
        let (_, p) = sample();
        let good: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
        let edit = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v = good.clone();
            f(&mut v);
            SignedPolicy::from_json(&v.to_string())
        };
        assert!(edit(&|_| {}).is_ok());
        type Edit = Box<dyn Fn(&mut serde_json::Value)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("unknown field", Box::new(|v| v["extra"] = 1.into())),
            (
                "unknown pcr field",
                Box::new(|v| v["pcrs"][0]["bank"] = "sha1".into()),
            ),
            (
                "missing field",
                Box::new(|v| {
                    v.as_object_mut().unwrap().remove("key_id");
                }),
            ),
            ("format 2", Box::new(|v| v["format"] = 2.into())),
            ("bad version", Box::new(|v| v["version"] = "1 2".into())),
            ("empty version", Box::new(|v| v["version"] = "".into())),
            ("short key id", Box::new(|v| v["key_id"] = "abcd".into())),
            (
                "upper hex policy",
                Box::new(|v| {
                    let s = v["policy"].as_str().unwrap().to_uppercase();
                    v["policy"] = s.into();
                }),
            ),
            (
                "bad hex signature",
                Box::new(|v| {
                    let s = v["signature"].as_str().unwrap().replacen(|_| true, "g", 1);
                    v["signature"] = s.into();
                }),
            ),
            (
                "short signature",
                Box::new(|v| {
                    let s = v["signature"].as_str().unwrap()[2..].to_string();
                    v["signature"] = s.into();
                }),
            ),
            (
                "policy != digest",
                Box::new(|v| v["policy"] = hex::encode([0u8; 32]).into()),
            ),
            (
                "pcr value changed",
                Box::new(|v| v["pcrs"][0]["sha256"] = hex::encode([1u8; 32]).into()),
            ),
            (
                "pcr index changed",
                Box::new(|v| v["pcrs"][0]["pcr"] = 7.into()),
            ),
            (
                "pcr out of range",
                Box::new(|v| v["pcrs"][0]["pcr"] = 24.into()),
            ),
            (
                "pcr index not u8",
                Box::new(|v| v["pcrs"][0]["pcr"] = 300.into()),
            ),
            ("no pcrs", Box::new(|v| v["pcrs"] = serde_json::json!([]))),
            (
                "duplicate pcr",
                Box::new(|v| {
                    let e = v["pcrs"][0].clone();
                    v["pcrs"].as_array_mut().unwrap().push(e);
                }),
            ),
            ("not an object", Box::new(|v| *v = serde_json::json!([1]))),
        ];
        for (name, f) in cases {
            let e = edit(&*f).expect_err(name);
            assert_eq!(e.code(), "policy_malformed", "{name}: {e}");
        }
        for junk in ["", "{", "null", "\u{0}", &"[".repeat(100_000)] {
            assert_eq!(
                SignedPolicy::from_json(junk).unwrap_err().code(),
                "policy_malformed"
            );
        }
        // Duplicate keys in the raw text.
        let dup = p
            .to_json()
            .replacen("\"format\": 1,", "\"format\": 1, \"format\": 1,", 1);
        assert_eq!(
            SignedPolicy::from_json(&dup).unwrap_err().code(),
            "policy_malformed"
        );
    }

    #[test]
    fn from_json_does_not_check_the_signature() {
        let (k, mut p) = sample();
        p.signature[20] ^= 0x55;
        let back = SignedPolicy::from_json(&p.to_json()).unwrap();
        assert_eq!(
            back.verify(&k.public()).unwrap_err().code(),
            "policy_bad_signature"
        );
    }
}
