//! The on-disk form of a TPM-sealed key.
//!
//! ```text
//! version 1 (PolicyPCR):
//! "VTPM" | 1 | pcr_count u8 | pcr indices (ascending) |
//! u32 BE len | TPMT_PUBLIC (marshalled) | u32 BE len | TPM2B_PRIVATE buffer
//!
//! version 2 (PolicyAuthorize by the image-signing key):
//! "VTPM" | 2 | key id (32 bytes: SHA-256 of the key's SPKI DER) |
//! u32 BE len | TPMT_PUBLIC (marshalled) | u32 BE len | TPM2B_PRIVATE buffer
//! ```
//!
//! Parsing is strict: unknown magic or version, out-of-range lengths, a
//! non-canonical PCR list or trailing bytes are all `BlobCorrupt`.

use tss_esapi::structures::{Private, Public};
use tss_esapi::traits::{Marshall, UnMarshall};
use vault_core::seal::SealError;

use crate::config::MAX_PCR;

pub(crate) const MAGIC: &[u8; 4] = b"VTPM";
pub(crate) const VERSION_PCR: u8 = 1;
pub(crate) const VERSION_AUTHORIZED: u8 = 2;
/// Upper bound for a marshalled TPMT_PUBLIC (the real maximum is smaller).
const MAX_PUBLIC: usize = 1024;
/// Upper bound for a TPM2B_PRIVATE buffer.
const MAX_PRIVATE: usize = 1024;

/// What the sealed object's authPolicy is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Binding {
    /// Plain PolicyPCR over these PCRs (canonical: sorted, unique).
    Pcrs(Vec<u8>),
    /// PolicyAuthorize by the image-signing key with this key id.
    Authorized { key_id: [u8; 32] },
}

/// A parsed blob.
pub(crate) struct TpmBlob {
    pub binding: Binding,
    pub public: Public,
    pub private: Private,
}

fn corrupt(msg: impl Into<String>) -> SealError {
    SealError::BlobCorrupt(msg.into())
}

/// Serialises a sealed object. A PCR list must be canonical (sorted,
/// unique).
pub(crate) fn encode(
    binding: &Binding,
    public: &Public,
    private: &Private,
) -> Result<Vec<u8>, SealError> {
    let public = public.marshall().map_err(|e| SealError::Device {
        kind: vault_core::seal::SealKind::Tpm,
        call: "Tss2_MU_TPMT_PUBLIC_Marshal",
        message: e.to_string(),
    })?;
    let private = private.value();
    let mut out = Vec::with_capacity(6 + 32 + 8 + public.len() + private.len());
    out.extend_from_slice(MAGIC);
    match binding {
        Binding::Pcrs(pcrs) => {
            out.push(VERSION_PCR);
            out.push(u8::try_from(pcrs.len()).expect("at most 24 PCRs"));
            out.extend_from_slice(pcrs);
        }
        Binding::Authorized { key_id } => {
            out.push(VERSION_AUTHORIZED);
            out.extend_from_slice(key_id);
        }
    }
    for part in [&public[..], private] {
        out.extend_from_slice(&u32::try_from(part.len()).expect("small").to_be_bytes());
        out.extend_from_slice(part);
    }
    Ok(out)
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], SealError> {
        if self.buf.len() < n {
            return Err(corrupt(format!("truncated TPM blob (reading {what})")));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u8(&mut self, what: &str) -> Result<u8, SealError> {
        Ok(self.take(1, what)?[0])
    }
    fn sized(&mut self, max: usize, what: &str) -> Result<&'a [u8], SealError> {
        let len = self.take(4, what)?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if len == 0 || len > max {
            return Err(corrupt(format!(
                "TPM blob: {what} length {len} out of range"
            )));
        }
        self.take(len, what)
    }
}

/// Parses a blob strictly.
pub(crate) fn decode(blob: &[u8]) -> Result<TpmBlob, SealError> {
    let mut r = Reader { buf: blob };
    if r.take(4, "magic")? != MAGIC {
        return Err(corrupt("not a TPM seal blob (bad magic)"));
    }
    let binding = match r.u8("version")? {
        VERSION_PCR => {
            let n = r.u8("PCR count")? as usize;
            if n == 0 || n > usize::from(MAX_PCR) + 1 {
                return Err(corrupt(format!("TPM blob: PCR count {n} out of range")));
            }
            let pcrs = r.take(n, "PCR list")?.to_vec();
            if pcrs.iter().any(|&p| p > MAX_PCR) || pcrs.windows(2).any(|w| w[0] >= w[1]) {
                return Err(corrupt(
                    "TPM blob: PCR list is not a sorted list of PCRs 0..=23",
                ));
            }
            Binding::Pcrs(pcrs)
        }
        VERSION_AUTHORIZED => {
            let mut key_id = [0u8; 32];
            key_id.copy_from_slice(r.take(32, "key id")?);
            Binding::Authorized { key_id }
        }
        version => return Err(corrupt(format!("unsupported TPM blob version {version}"))),
    };
    let public_bytes = r.sized(MAX_PUBLIC, "public area")?;
    let private_bytes = r.sized(MAX_PRIVATE, "private area")?;
    if !r.buf.is_empty() {
        return Err(corrupt(format!("TPM blob: {} trailing bytes", r.buf.len())));
    }
    let public = Public::unmarshall(public_bytes)
        .map_err(|e| corrupt(format!("TPM blob: public area does not parse ({e})")))?;
    // The unmarshaller ignores trailing bytes: insist on a canonical encoding.
    if public.marshall().ok().as_deref() != Some(public_bytes) {
        return Err(corrupt("TPM blob: public area is not canonically encoded"));
    }
    if !matches!(public, Public::KeyedHash { .. }) {
        return Err(corrupt("TPM blob: object is not a sealed data object"));
    }
    let private = Private::try_from(private_bytes)
        .map_err(|e| corrupt(format!("TPM blob: private area invalid ({e})")))?;
    Ok(TpmBlob {
        binding,
        public,
        private,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::sealed_object_template;
    use tss_esapi::structures::Digest;

    fn sample_with(binding: &Binding) -> Vec<u8> {
        let public = sealed_object_template(Digest::try_from(vec![0x11; 32]).unwrap()).unwrap();
        let private = Private::try_from(vec![0x22; 100]).unwrap();
        encode(binding, &public, &private).unwrap()
    }

    fn sample() -> Vec<u8> {
        sample_with(&Binding::Pcrs(vec![0, 7]))
    }

    fn sample_v2() -> Vec<u8> {
        sample_with(&Binding::Authorized { key_id: [0xa5; 32] })
    }

    #[test]
    fn round_trip() {
        for (b, want) in [
            (sample(), Binding::Pcrs(vec![0, 7])),
            (sample_v2(), Binding::Authorized { key_id: [0xa5; 32] }),
        ] {
            let t = decode(&b).unwrap();
            assert_eq!(t.binding, want);
            assert_eq!(t.private.value(), &[0x22; 100][..]);
            assert_eq!(encode(&t.binding, &t.public, &t.private).unwrap(), b);
        }
        assert_eq!(sample_v2()[4], 2);
        assert_eq!(&sample_v2()[5..37], &[0xa5; 32]);
    }

    fn is_corrupt(b: &[u8]) -> bool {
        matches!(decode(b), Err(SealError::BlobCorrupt(_)))
    }

    #[test]
    fn strict_parse() {
        let b = sample();
        assert!(is_corrupt(&[]));
        assert!(is_corrupt(b"VTPM"));
        for n in 0..b.len() {
            assert!(is_corrupt(&b[..n]), "prefix {n}");
        }
        let mut t = b.clone();
        t.push(0);
        assert!(is_corrupt(&t), "trailing byte");
        let mut t = b.clone();
        t[0] = b'X';
        assert!(is_corrupt(&t), "magic");
        for v in [0, 3, 0xff] {
            let mut t = b.clone();
            t[4] = v;
            assert!(is_corrupt(&t), "version {v}");
        }
        let mut t = b.clone();
        t[5] = 0;
        assert!(is_corrupt(&t), "pcr count 0");
        let mut t = b.clone();
        t[7] = 0;
        assert!(is_corrupt(&t), "pcr list not ascending");
        let mut t = b.clone();
        t[7] = 24;
        assert!(is_corrupt(&t), "pcr out of range");
        let mut t = b.clone();
        t[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(is_corrupt(&t), "huge length");
        assert!(is_corrupt(&vec![0xff; b.len()]));
    }

    #[test]
    fn strict_parse_v2() {
        let b = sample_v2();
        for n in 0..b.len() {
            assert!(is_corrupt(&b[..n]), "prefix {n}");
        }
        let mut t = b.clone();
        t.push(0);
        assert!(is_corrupt(&t), "trailing byte");
        // Lengths: the public length field follows the 32-byte key id.
        let mut t = b.clone();
        t[37..41].copy_from_slice(&0u32.to_be_bytes());
        assert!(is_corrupt(&t), "zero length");
        let mut t = b.clone();
        t[37..41].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(is_corrupt(&t), "huge length");
        // A v1 blob relabelled as v2 (and vice versa) does not parse.
        let mut t = sample();
        t[4] = 2;
        assert!(is_corrupt(&t), "v1 as v2");
        let mut t = b.clone();
        t[4] = 1;
        assert!(is_corrupt(&t), "v2 as v1");
        // The public area must be canonical and a sealed data object.
        let mut t = b.clone();
        t[41] ^= 0xff;
        assert!(is_corrupt(&t), "public area type");
    }
}
