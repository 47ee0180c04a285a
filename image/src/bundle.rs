//! Signed update bundles.
//!
//! # File layout (format 1)
//!
//! ```text
//! b"VAULTUPD"                      8 bytes magic
//! manifest length                  u32 big-endian, 1..=65536
//! manifest                         JSON (see below), exactly `length` bytes
//! signature                        64 bytes r || s: ECDSA P-256 over
//!                                  SHA-256(b"vault-image bundle v1\0" || manifest)
//! part 1 .. part n                 each part's bytes, in manifest order
//! (end of file)                    nothing may follow the last part
//! ```
//!
//! The manifest (`{"format":1,"version":…,"build":…,"roothash":…,"key_id":…,
//! "parts":[{"name":…,"size":…,"sha256":…}, …]}`) is parsed strictly
//! (unknown or duplicate fields are errors) and only **after** its signature
//! verifies. It must have: `format` 1; a `version` of 1..=64 characters from
//! `[0-9A-Za-z.+_-]`; a `roothash` of 64 lowercase hex digits (the dm-verity
//! root hash); a `key_id` equal to the verifying key's id; 1..=64 parts with
//! unique names matching `[a-z0-9][a-z0-9.-]{0,31}`, sizes ≤ 4 GiB and
//! `sha256` of 64 lowercase hex digits.
//!
//! [`BundleReader`] reads the header with bounded reads (at most 64 KiB of
//! manifest), then streams each part through SHA-256 into a caller-supplied
//! writer. A part is only good once [`BundleReader::copy_part`] returned
//! `Ok`; the bundle is only good once [`BundleReader::finish`] returned `Ok`.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vault_core::boot::text::{is_lower_hex, valid_version};

use crate::key::{ImagePublicKey, ImageSigningKey};
use crate::ImageError;

/// The bundle magic.
pub const MAGIC: &[u8; 8] = b"VAULTUPD";
/// Domain separation prefix of the signed message.
pub const SIGNATURE_DOMAIN: &[u8] = b"vault-image bundle v1\0";
/// The manifest format this crate writes and reads.
pub const FORMAT: u32 = 1;
/// Largest manifest accepted.
pub const MAX_MANIFEST: usize = 65536;
/// Largest part accepted (4 GiB).
pub const MAX_PART_SIZE: u64 = 4 << 30;
/// Most parts in one bundle.
pub const MAX_PARTS: usize = 64;

const CHUNK: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always 1.
    pub format: u32,
    pub version: String,
    /// Monotonic build number.
    pub build: u64,
    /// dm-verity root hash of the root filesystem, 64 lowercase hex.
    pub roothash: String,
    /// Key id of the image-signing key that signed the bundle.
    pub key_id: String,
    pub parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    pub name: String,
    pub size: u64,
    /// SHA-256 of the part's bytes, 64 lowercase hex.
    pub sha256: String,
}

fn malformed(msg: impl Into<String>) -> ImageError {
    ImageError::BundleMalformed(msg.into())
}

fn valid_part_name(n: &str) -> bool {
    let b = n.as_bytes();
    (1..=32).contains(&b.len())
        && matches!(b[0], b'a'..=b'z' | b'0'..=b'9')
        && b.iter()
            .all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-'))
}

impl Manifest {
    /// Checks every rule of the module docs except the key id.
    fn validate(&self) -> Result<(), ImageError> {
        if self.format != FORMAT {
            return Err(malformed(format!("unsupported format {}", self.format)));
        }
        if !valid_version(&self.version) {
            return Err(malformed(format!(
                "invalid version {:?}: 1..=64 characters from [0-9A-Za-z.+_-]",
                self.version
            )));
        }
        if !is_lower_hex(&self.roothash, 32) {
            return Err(malformed("roothash is not 64 lowercase hex digits"));
        }
        if !is_lower_hex(&self.key_id, 32) {
            return Err(malformed("key_id is not 64 lowercase hex digits"));
        }
        if self.parts.is_empty() || self.parts.len() > MAX_PARTS {
            return Err(malformed(format!(
                "{} parts (want 1..={MAX_PARTS})",
                self.parts.len()
            )));
        }
        let mut seen = HashSet::new();
        for p in &self.parts {
            if !valid_part_name(&p.name) {
                return Err(malformed(format!(
                    "invalid part name {:?}: want [a-z0-9][a-z0-9.-]{{0,31}}",
                    p.name
                )));
            }
            if !seen.insert(p.name.as_str()) {
                return Err(malformed(format!("part {:?} is listed twice", p.name)));
            }
            if p.size > MAX_PART_SIZE {
                return Err(malformed(format!(
                    "part {:?} is {} bytes (max 4 GiB)",
                    p.name, p.size
                )));
            }
            if !is_lower_hex(&p.sha256, 32) {
                return Err(malformed(format!(
                    "part {:?}: sha256 is not 64 lowercase hex digits",
                    p.name
                )));
            }
        }
        Ok(())
    }
}

fn signed_digest(manifest_json: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(SIGNATURE_DOMAIN);
    h.update(manifest_json);
    h.finalize().into()
}

/// Hashes a file; returns (size, lowercase hex SHA-256).
fn hash_file(path: &Path) -> Result<(u64, String), ImageError> {
    let ctx = || format!("reading {}", path.display());
    let mut f = File::open(path).map_err(|e| ImageError::io(ctx(), e))?;
    let mut h = Sha256::new();
    let n = io::copy(&mut f, &mut HashWriter(&mut h)).map_err(|e| ImageError::io(ctx(), e))?;
    Ok((n, hex::encode(h.finalize())))
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes a bundle of `parts` (name, file) to `out`, signed with `key`.
///
/// Each file is hashed first, then copied while being hashed again: a file
/// that changes in between is `bundle_part_mismatch` (and `out` holds a
/// useless partial bundle the caller must discard).
pub fn write_bundle(
    out: &mut impl Write,
    key: &ImageSigningKey,
    version: &str,
    build: u64,
    roothash: &str,
    parts: &[(String, PathBuf)],
) -> Result<Manifest, ImageError> {
    let mut listed = Vec::with_capacity(parts.len());
    for (name, path) in parts {
        let (size, sha256) = hash_file(path)?;
        listed.push(Part {
            name: name.clone(),
            size,
            sha256,
        });
    }
    let manifest = Manifest {
        format: FORMAT,
        version: version.to_string(),
        build,
        roothash: roothash.to_string(),
        key_id: key.public().key_id(),
        parts: listed,
    };
    manifest.validate()?;
    let json = serde_json::to_vec(&manifest).expect("plain structs serialise");
    if json.len() > MAX_MANIFEST {
        return Err(malformed(format!(
            "manifest is {} bytes (max {MAX_MANIFEST})",
            json.len()
        )));
    }
    let sig = key.sign_prehash(&signed_digest(&json))?;
    let wctx = "writing bundle";
    let len = u32::try_from(json.len()).expect("at most 64 KiB");
    for chunk in [&MAGIC[..], &len.to_be_bytes(), &json, &sig] {
        out.write_all(chunk).map_err(|e| ImageError::io(wctx, e))?;
    }
    for ((_, path), part) in parts.iter().zip(&manifest.parts) {
        let ctx = || format!("reading {}", path.display());
        let f = File::open(path).map_err(|e| ImageError::io(ctx(), e))?;
        // Read one byte more than listed to notice a file that grew.
        let mut src = f.take(part.size + 1);
        let mut h = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut n: u64 = 0;
        loop {
            let k = match src.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ImageError::io(ctx(), e)),
            };
            n += k as u64;
            if n > part.size {
                break;
            }
            h.update(&buf[..k]);
            out.write_all(&buf[..k])
                .map_err(|e| ImageError::io(wctx, e))?;
        }
        if n != part.size || hex::encode(h.finalize()) != part.sha256 {
            return Err(ImageError::BundlePartMismatch(format!(
                "{} changed while the bundle was written",
                path.display()
            )));
        }
    }
    out.flush().map_err(|e| ImageError::io(wctx, e))?;
    Ok(manifest)
}

/// Reads exactly `buf.len()` bytes; a short read is `bundle_truncated`.
fn read_full(r: &mut impl Read, buf: &mut [u8], what: &str) -> Result<(), ImageError> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            ImageError::BundleTruncated(format!("file ends inside the {what}"))
        } else {
            ImageError::io(format!("reading bundle {what}"), e)
        }
    })
}

/// A bundle whose header, manifest and signature have been verified; the
/// parts follow. See the module docs.
pub struct BundleReader<R: Read> {
    r: R,
    manifest: Manifest,
    next: usize,
    failed: bool,
}

impl<R: Read> BundleReader<R> {
    /// Reads and verifies header, manifest and signature (bounded reads),
    /// leaving `r` at the first part.
    pub fn open(mut r: R, pk: &ImagePublicKey) -> Result<Self, ImageError> {
        let mut magic = [0u8; 8];
        read_full(&mut r, &mut magic, "magic")?;
        if &magic != MAGIC {
            return Err(malformed("not a vault update bundle (bad magic)"));
        }
        let mut len = [0u8; 4];
        read_full(&mut r, &mut len, "manifest length")?;
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 || len > MAX_MANIFEST {
            return Err(malformed(format!(
                "manifest length {len} out of range (1..={MAX_MANIFEST})"
            )));
        }
        let mut json = vec![0u8; len];
        read_full(&mut r, &mut json, "manifest")?;
        let mut sig = [0u8; 64];
        read_full(&mut r, &mut sig, "signature")?;
        // Authenticate before parsing anything inside the manifest.
        pk.verify_prehash(&signed_digest(&json), &sig)
            .map_err(|_| {
                ImageError::BundleBadSignature(format!(
                    "manifest is not signed by key {}",
                    pk.key_id()
                ))
            })?;
        let manifest: Manifest =
            serde_json::from_slice(&json).map_err(|e| malformed(format!("manifest JSON: {e}")))?;
        manifest.validate()?;
        if manifest.key_id != pk.key_id() {
            return Err(malformed(format!(
                "manifest names key {} but was verified with key {}",
                manifest.key_id,
                pk.key_id()
            )));
        }
        Ok(BundleReader {
            r,
            manifest,
            next: 0,
            failed: false,
        })
    }

    /// The verified manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Copies the next part to `dst` while hashing. Errors if it is not
    /// named `expect_name`, is short, or its SHA-256 differs; the caller must
    /// then discard what was written. After an error the reader refuses
    /// further parts.
    pub fn copy_part(&mut self, expect_name: &str, dst: &mut impl Write) -> Result<(), ImageError> {
        if self.failed {
            return Err(malformed("an earlier part failed; the bundle is rejected"));
        }
        let Some(part) = self.manifest.parts.get(self.next).cloned() else {
            return Err(malformed(format!(
                "no part {expect_name:?}: all {} parts were read",
                self.manifest.parts.len()
            )));
        };
        self.failed = true;
        if part.name != expect_name {
            return Err(ImageError::BundlePartMismatch(format!(
                "next part is {:?}, expected {expect_name:?}",
                part.name
            )));
        }
        let mut h = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut left = part.size;
        while left > 0 {
            let want = usize::try_from(left.min(CHUNK as u64)).expect("≤ 64 KiB");
            let k = match self.r.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(ImageError::BundleTruncated(format!(
                        "part {:?} is {} bytes short",
                        part.name, left
                    )))
                }
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ImageError::io(format!("reading part {:?}", part.name), e)),
            };
            h.update(&buf[..k]);
            dst.write_all(&buf[..k])
                .map_err(|e| ImageError::io(format!("writing part {:?}", part.name), e))?;
            left -= k as u64;
        }
        if hex::encode(h.finalize()) != part.sha256 {
            return Err(ImageError::BundlePartMismatch(format!(
                "part {:?}: SHA-256 differs from the signed manifest",
                part.name
            )));
        }
        dst.flush()
            .map_err(|e| ImageError::io(format!("writing part {:?}", part.name), e))?;
        self.failed = false;
        self.next += 1;
        Ok(())
    }

    /// After all parts: errors if a part was not read (or failed) or if any
    /// byte follows the last part.
    pub fn finish(mut self) -> Result<(), ImageError> {
        if self.failed {
            return Err(malformed("an earlier part failed; the bundle is rejected"));
        }
        if self.next != self.manifest.parts.len() {
            return Err(malformed(format!(
                "only {} of {} parts were read",
                self.next,
                self.manifest.parts.len()
            )));
        }
        let mut one = [0u8; 1];
        loop {
            return match self.r.read(&mut one) {
                Ok(0) => Ok(()),
                Ok(_) => Err(malformed("trailing bytes after the last part")),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(ImageError::io("reading bundle end", e)),
            };
        }
    }
}

/// Full check of a bundle file: signature, every part's size and hash, no
/// trailing bytes.
pub fn verify_file(path: &Path, pk: &ImagePublicKey) -> Result<Manifest, ImageError> {
    let f =
        File::open(path).map_err(|e| ImageError::io(format!("opening {}", path.display()), e))?;
    let mut r = BundleReader::open(BufReader::with_capacity(CHUNK, f), pk)?;
    let names: Vec<String> = r.manifest().parts.iter().map(|p| p.name.clone()).collect();
    for name in &names {
        r.copy_part(name, &mut io::sink())?;
    }
    let manifest = r.manifest().clone();
    r.finish()?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const ROOT: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    struct Fixture {
        _dir: tempfile::TempDir,
        key: ImageSigningKey,
        bytes: Vec<u8>,
        manifest: Manifest,
        parts: Vec<(String, Vec<u8>)>,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let key = ImageSigningKey::generate();
        let parts: Vec<(String, Vec<u8>)> = vec![
            (
                "uki.efi".into(),
                (0..300u32).map(|i| (i * 7) as u8).collect(),
            ),
            ("empty".into(), Vec::new()),
            ("root.img".into(), vec![0x5a; 200]),
        ];
        let paths: Vec<(String, PathBuf)> = parts
            .iter()
            .map(|(n, b)| {
                let p = dir.path().join(n);
                std::fs::write(&p, b).unwrap();
                (n.clone(), p)
            })
            .collect();
        let mut bytes = Vec::new();
        let manifest = write_bundle(&mut bytes, &key, "2024.6-rc1", 42, ROOT, &paths).unwrap();
        Fixture {
            _dir: dir,
            key,
            bytes,
            manifest,
            parts,
        }
    }

    /// Reads every part; returns the first error.
    fn read_all(bytes: &[u8], pk: &ImagePublicKey) -> Result<Vec<Vec<u8>>, ImageError> {
        let mut r = BundleReader::open(Cursor::new(bytes), pk)?;
        let names: Vec<String> = r.manifest().parts.iter().map(|p| p.name.clone()).collect();
        let mut out = Vec::new();
        for n in names {
            let mut v = Vec::new();
            r.copy_part(&n, &mut v)?;
            out.push(v);
        }
        r.finish()?;
        Ok(out)
    }

    fn header_len(f: &Fixture) -> usize {
        8 + 4 + serde_json::to_vec(&f.manifest).unwrap().len() + 64
    }

    #[test]
    fn round_trip() {
        let f = fixture();
        let got = read_all(&f.bytes, &f.key.public()).unwrap();
        assert_eq!(
            got,
            f.parts.iter().map(|(_, b)| b.clone()).collect::<Vec<_>>()
        );
        let r = BundleReader::open(Cursor::new(&f.bytes), &f.key.public()).unwrap();
        assert_eq!(r.manifest(), &f.manifest);
        assert_eq!(f.manifest.build, 42);
        assert_eq!(f.manifest.key_id, f.key.public().key_id());
        assert_eq!(f.manifest.parts[0].size, 300);
        assert_eq!(
            f.manifest.parts[1].sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(f.bytes.len(), header_len(&f) + 500);
        assert_eq!(&f.bytes[..8], b"VAULTUPD");
    }

    #[test]
    fn every_truncation_fails() {
        let f = fixture();
        let pk = f.key.public();
        for n in 0..f.bytes.len() {
            let e = read_all(&f.bytes[..n], &pk).expect_err(&format!("prefix {n}"));
            assert_eq!(e.code(), "bundle_truncated", "prefix {n}: {e}");
        }
    }

    #[test]
    fn flipped_bytes_get_the_right_code() {
        let f = fixture();
        let pk = f.key.public();
        let h = header_len(&f);
        let code_after_flip = |i: usize| {
            let mut b = f.bytes.clone();
            b[i] ^= 0x01;
            read_all(&b, &pk).map(|_| ()).unwrap_err().code()
        };
        for i in 0..8 {
            assert_eq!(code_after_flip(i), "bundle_malformed", "magic {i}");
        }
        for i in 12..h - 64 {
            assert_eq!(
                code_after_flip(i),
                "bundle_bad_signature",
                "manifest byte {i}"
            );
        }
        for i in h - 64..h {
            assert_eq!(
                code_after_flip(i),
                "bundle_bad_signature",
                "signature byte {i}"
            );
        }
        for i in h..f.bytes.len() {
            assert_eq!(code_after_flip(i), "bundle_part_mismatch", "part byte {i}");
        }
    }

    #[test]
    fn other_key_is_bad_signature() {
        let f = fixture();
        let other = ImageSigningKey::generate();
        assert_eq!(
            read_all(&f.bytes, &other.public()).unwrap_err().code(),
            "bundle_bad_signature"
        );
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let f = fixture();
        let mut b = f.bytes.clone();
        b.push(0);
        let e = read_all(&b, &f.key.public()).unwrap_err();
        assert_eq!(e.code(), "bundle_malformed");
        assert!(e.to_string().contains("trailing"), "{e}");
    }

    #[test]
    fn reader_enforces_order_and_completeness() {
        let f = fixture();
        let pk = f.key.public();
        // Wrong name.
        let mut r = BundleReader::open(Cursor::new(&f.bytes), &pk).unwrap();
        assert_eq!(
            r.copy_part("root.img", &mut Vec::new()).unwrap_err().code(),
            "bundle_part_mismatch"
        );
        // Poisoned afterwards, even with the right name.
        assert!(r.copy_part("uki.efi", &mut Vec::new()).is_err());
        assert!(r.finish().is_err());
        // finish() before all parts.
        let mut r = BundleReader::open(Cursor::new(&f.bytes), &pk).unwrap();
        r.copy_part("uki.efi", &mut Vec::new()).unwrap();
        assert_eq!(r.finish().unwrap_err().code(), "bundle_malformed");
        // Too many copy_part calls.
        let mut r = BundleReader::open(Cursor::new(&f.bytes), &pk).unwrap();
        for (n, _) in &f.parts {
            r.copy_part(n, &mut Vec::new()).unwrap();
        }
        assert_eq!(
            r.copy_part("extra", &mut Vec::new()).unwrap_err().code(),
            "bundle_malformed"
        );
    }

    /// Builds a correctly signed bundle around an arbitrary manifest text.
    fn signed_raw(key: &ImageSigningKey, json: &[u8], tail: &[u8]) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&(json.len() as u32).to_be_bytes());
        b.extend_from_slice(json);
        b.extend_from_slice(&key.sign_prehash(&signed_digest(json)).unwrap());
        b.extend_from_slice(tail);
        b
    }

    #[test]
    fn signed_but_invalid_manifests_are_malformed() {
        let f = fixture();
        let pk = f.key.public();
        let good = serde_json::to_value(&f.manifest).unwrap();
        let tail: Vec<u8> = f.parts.iter().flat_map(|(_, b)| b.clone()).collect();
        assert!(read_all(&signed_raw(&f.key, good.to_string().as_bytes(), &tail), &pk).is_ok());
        type Edit = Box<dyn Fn(&mut serde_json::Value)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("format", Box::new(|v| v["format"] = 2.into())),
            ("unknown field", Box::new(|v| v["x"] = 1.into())),
            (
                "unknown part field",
                Box::new(|v| v["parts"][0]["mode"] = 1.into()),
            ),
            ("empty version", Box::new(|v| v["version"] = "".into())),
            ("version charset", Box::new(|v| v["version"] = "1/2".into())),
            (
                "long version",
                Box::new(|v| v["version"] = "1".repeat(65).into()),
            ),
            ("roothash short", Box::new(|v| v["roothash"] = "00".into())),
            (
                "roothash upper",
                Box::new(|v| v["roothash"] = ROOT.to_uppercase().into()),
            ),
            (
                "key id other",
                Box::new(|v| v["key_id"] = "ab".repeat(32).into()),
            ),
            ("no parts", Box::new(|v| v["parts"] = serde_json::json!([]))),
            (
                "dup part",
                Box::new(|v| v["parts"][1]["name"] = "uki.efi".into()),
            ),
            (
                "part name upper",
                Box::new(|v| v["parts"][0]["name"] = "UKI".into()),
            ),
            (
                "part name slash",
                Box::new(|v| v["parts"][0]["name"] = "a/b".into()),
            ),
            (
                "part name dots",
                Box::new(|v| v["parts"][0]["name"] = "..".into()),
            ),
            (
                "part name long",
                Box::new(|v| v["parts"][0]["name"] = "a".repeat(33).into()),
            ),
            (
                "part too big",
                Box::new(|v| v["parts"][0]["size"] = (MAX_PART_SIZE + 1).into()),
            ),
            (
                "part sha upper",
                Box::new(|v| {
                    let s = v["parts"][0]["sha256"].as_str().unwrap().to_uppercase();
                    v["parts"][0]["sha256"] = s.into();
                }),
            ),
            ("build negative", Box::new(|v| v["build"] = (-1).into())),
        ];
        for (name, edit) in cases {
            let mut v = good.clone();
            edit(&mut v);
            let e = read_all(&signed_raw(&f.key, v.to_string().as_bytes(), &tail), &pk)
                .expect_err(name);
            assert_eq!(e.code(), "bundle_malformed", "{name}: {e}");
        }
        for junk in [&b"{"[..], b"null", b"[]", b"\xff\xfe"] {
            let e = read_all(&signed_raw(&f.key, junk, &tail), &pk).unwrap_err();
            assert_eq!(e.code(), "bundle_malformed");
        }
        // Length field out of range.
        for len in [0u32, MAX_MANIFEST as u32 + 1, u32::MAX] {
            let mut b = f.bytes.clone();
            b[8..12].copy_from_slice(&len.to_be_bytes());
            assert_eq!(read_all(&b, &pk).unwrap_err().code(), "bundle_malformed");
        }
    }

    #[test]
    fn write_bundle_validates_input() {
        let f = fixture();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, b"x").unwrap();
        let one = |n: &str| vec![(n.to_string(), p.clone())];
        let mut sink = Vec::new();
        let k = &f.key;
        assert_eq!(
            write_bundle(&mut sink, k, "", 1, ROOT, &one("a"))
                .unwrap_err()
                .code(),
            "bundle_malformed"
        );
        assert_eq!(
            write_bundle(&mut sink, k, "1", 1, "zz", &one("a"))
                .unwrap_err()
                .code(),
            "bundle_malformed"
        );
        assert_eq!(
            write_bundle(&mut sink, k, "1", 1, ROOT, &one("A"))
                .unwrap_err()
                .code(),
            "bundle_malformed"
        );
        assert_eq!(
            write_bundle(&mut sink, k, "1", 1, ROOT, &[])
                .unwrap_err()
                .code(),
            "bundle_malformed"
        );
        let dup = vec![("a".to_string(), p.clone()), ("a".to_string(), p.clone())];
        assert_eq!(
            write_bundle(&mut sink, k, "1", 1, ROOT, &dup)
                .unwrap_err()
                .code(),
            "bundle_malformed"
        );
        let missing = vec![("a".to_string(), dir.path().join("missing"))];
        assert_eq!(
            write_bundle(&mut sink, k, "1", 1, ROOT, &missing)
                .unwrap_err()
                .code(),
            "io_error"
        );
        assert!(sink.is_empty(), "nothing written on validation errors");
    }

    #[test]
    fn verify_file_checks_everything() {
        let f = fixture();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.vupd");
        std::fs::write(&p, &f.bytes).unwrap();
        assert_eq!(verify_file(&p, &f.key.public()).unwrap(), f.manifest);
        let mut b = f.bytes.clone();
        let n = b.len();
        b[n - 1] ^= 0x80;
        std::fs::write(&p, &b).unwrap();
        assert_eq!(
            verify_file(&p, &f.key.public()).unwrap_err().code(),
            "bundle_part_mismatch"
        );
        assert_eq!(
            verify_file(&dir.path().join("nope"), &f.key.public())
                .unwrap_err()
                .code(),
            "io_error"
        );
    }
}
