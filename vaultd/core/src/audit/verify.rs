//! Offline verification of an exported audit log.
//!
//! Input: the entries (exact leaf bytes, in index order), every signed
//! checkpoint that came with them, the auditor's pinned public keys (one,
//! or several when the appliance's audit key was replaced by a custodian
//! recovery), and optionally a checkpoint the auditor saved earlier. Nothing
//! is trusted that no pinned key signed.
//!
//! Checks, and what a failure is called:
//! * every checkpoint verifies under a pinned key (`bad_checkpoint`); two signed
//!   checkpoints of one size with different roots (`forked`);
//! * entry `i` says `seq == i`: a gap is `missing`, an out-of-order index
//!   `reordered`;
//! * entry `i`'s `prev` is the leaf hash of entry `i-1` (the hash chain):
//!   a break names the entry that was `modified`;
//! * the RFC 9162 root of the first `n` entries equals every signed
//!   checkpoint of size `n` (`modified`, for rewrites the chain cannot see);
//! * the log is exactly as long as the newest checkpoint: fewer entries is
//!   `truncated`, more is `appended` (entries no checkpoint vouches for);
//! * the auditor's trusted checkpoint is a prefix of this log (`forked`), or
//!   the log became shorter than it (`truncated`).

use super::entry::Entry;
use super::merkle::{leaf_hash, CompactRange, Hash};
use super::note::Checkpoint;

/// What is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    Modified,
    Missing,
    Reordered,
    Truncated,
    Appended,
    Forked,
    BadCheckpoint,
}

impl FailureKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            FailureKind::Modified => "modified",
            FailureKind::Missing => "missing",
            FailureKind::Reordered => "reordered",
            FailureKind::Truncated => "truncated",
            FailureKind::Appended => "appended",
            FailureKind::Forked => "forked",
            FailureKind::BadCheckpoint => "bad_checkpoint",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    /// The first bad index, when it can be known.
    pub index: Option<u64>,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub entries: u64,
    pub checkpoints: usize,
    /// Size of the newest signed checkpoint.
    pub signed_size: u64,
    /// Root of all entries.
    pub root: Hash,
    pub failure: Option<Failure>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }
}

fn fail(kind: FailureKind, index: Option<u64>, message: String) -> Option<Failure> {
    Some(Failure {
        kind,
        index,
        message,
    })
}

/// `seq` and `prev` from the canonical prefix `{"v":1,"seq":N,"prev":"HEX",`
/// without a full JSON parse (the fast path for large logs).
fn prefix(bytes: &[u8]) -> Option<(u64, Option<Hash>)> {
    let rest = bytes.strip_prefix(b"{\"v\":1,\"seq\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 || (digits > 1 && rest[0] == b'0') {
        return None;
    }
    let seq: u64 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let rest = rest[digits..].strip_prefix(b",\"prev\":\"")?;
    if let Some(r) = rest.strip_prefix(b"\",") {
        let _ = r;
        return Some((seq, None));
    }
    if rest.len() < 66 || &rest[64..66] != b"\"," {
        return None;
    }
    let mut h = [0u8; 32];
    for (i, out) in h.iter_mut().enumerate() {
        let hi = (rest[2 * i] as char).to_digit(16)?;
        let lo = (rest[2 * i + 1] as char).to_digit(16)?;
        if rest[2 * i].is_ascii_uppercase() || rest[2 * i + 1].is_ascii_uppercase() {
            return None;
        }
        *out = (hi * 16 + lo) as u8;
    }
    Some((seq, Some(h)))
}

/// Parses and checks the position fields of entry bytes.
fn position(bytes: &[u8]) -> Result<(u64, Option<Hash>), String> {
    match prefix(bytes) {
        Some(p) => Ok(p),
        None => match Entry::parse(bytes) {
            Ok(e) => Ok((e.seq, e.prev_hash().map_err(|x| x.to_string())?)),
            Err(e) => Err(e.to_string()),
        },
    }
}

/// A checkpoint signed by any of `keys` (the first key's error otherwise).
fn verify_any(
    note: &str,
    name: &str,
    keys: &[&[u8]],
) -> Result<Checkpoint, super::note::NoteError> {
    let mut first = None;
    for k in keys {
        match Checkpoint::verify(note, name, k) {
            Ok(cp) => return Ok(cp),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    Err(first.unwrap_or_else(|| super::note::NoteError::BadKey("no key given".into())))
}

/// Verifies a log. `progress` is called with the number of entries done.
pub fn verify(
    entries: &[&[u8]],
    checkpoints: &[&str],
    keys: &[&[u8]],
    trusted: Option<&str>,
    progress: &mut dyn FnMut(u64),
) -> Report {
    let n = entries.len() as u64;
    let mut report = Report {
        entries: n,
        checkpoints: checkpoints.len(),
        signed_size: 0,
        root: super::merkle::empty_root(),
        failure: None,
    };

    // 1. Checkpoints: each signed by the pinned key, one origin, no equivocation.
    let mut cps: Vec<Checkpoint> = Vec::new();
    let mut origin: Option<String> = None;
    for (i, note) in checkpoints.iter().enumerate() {
        let name = note.split('\n').next().unwrap_or("");
        match verify_any(note, name, keys) {
            Ok(cp) => {
                if origin.get_or_insert_with(|| cp.origin.clone()) != &cp.origin {
                    report.failure = fail(
                        FailureKind::BadCheckpoint,
                        None,
                        format!(
                            "checkpoint #{i} has origin {:?}, others {:?}",
                            cp.origin, origin
                        ),
                    );
                    return report;
                }
                cps.push(cp)
            }
            Err(e) => {
                report.failure = fail(
                    FailureKind::BadCheckpoint,
                    None,
                    format!("checkpoint #{i}: {e}"),
                );
                return report;
            }
        }
    }
    let trusted = match trusted.map(|t| (t, t.split('\n').next().unwrap_or(""))) {
        None => None,
        Some((t, name)) => match verify_any(t, name, keys) {
            Ok(cp) => Some(cp),
            Err(e) => {
                report.failure = fail(
                    FailureKind::BadCheckpoint,
                    None,
                    format!("trusted checkpoint: {e}"),
                );
                return report;
            }
        },
    };
    cps.sort_by_key(|c| c.size);
    for w in cps.windows(2) {
        if w[0].size == w[1].size && w[0].root != w[1].root {
            report.failure = fail(
                FailureKind::Forked,
                None,
                format!(
                    "two signed checkpoints of size {} with different roots",
                    w[0].size
                ),
            );
            return report;
        }
    }
    cps.dedup_by_key(|c| c.size);
    report.signed_size = cps.last().map_or(0, |c| c.size);

    // 2. Stream the entries.
    let mut cr = CompactRange::new();
    let mut leaves_prev: Option<Hash> = None;
    let mut next_cp = 0usize;
    let mut good_size = 0u64; // largest checkpoint size verified so far
    let mut pending_root_failure: Option<Failure> = None;
    let mut trusted_root: Option<Hash> = None;
    let check_roots =
        |size: u64, root: &Hash, next_cp: &mut usize, good: &mut u64| -> Option<Failure> {
            while *next_cp < cps.len() && cps[*next_cp].size == size {
                if &cps[*next_cp].root != root {
                    return fail(
                        FailureKind::Modified,
                        Some(*good),
                        format!(
                        "entries in [{}, {size}) do not match the signed checkpoint of size {size}",
                        *good
                    ),
                    );
                }
                *good = size;
                *next_cp += 1;
            }
            while *next_cp < cps.len() && cps[*next_cp].size < size {
                *next_cp += 1;
            }
            None
        };
    // A checkpoint of size 0 is checked before any entry.
    if let Some(f) = check_roots(0, &cr.root(), &mut next_cp, &mut good_size) {
        report.failure = Some(f);
        return report;
    }
    for (i, bytes) in entries.iter().enumerate() {
        let i = i as u64;
        if i.is_multiple_of(65536) {
            progress(i);
        }
        let (seq, prev) = match position(bytes) {
            Ok(p) => p,
            Err(e) => {
                report.failure = fail(
                    FailureKind::Modified,
                    Some(i),
                    format!("entry {i} is malformed: {e}"),
                );
                return report;
            }
        };
        if seq != i {
            let later = entries[i as usize + 1..]
                .iter()
                .any(|b| position(b).map(|(s, _)| s == i).unwrap_or(false));
            let (kind, msg) = if seq < i || later {
                (
                    FailureKind::Reordered,
                    format!("position {i} holds entry {seq}"),
                )
            } else {
                (
                    FailureKind::Missing,
                    format!("entry {i} is missing (next is {seq})"),
                )
            };
            report.failure = fail(kind, Some(i), msg);
            return report;
        }
        if prev != leaves_prev {
            // Entry i-1 changed (its successor no longer matches it), unless
            // entry i itself changed too (then i+1 does not match i either).
            let this = leaf_hash(bytes);
            let next_breaks = entries
                .get(i as usize + 1)
                .and_then(|b| position(b).ok())
                .map(|(_, p)| p != Some(this))
                .unwrap_or(false);
            let bad = if next_breaks || i == 0 { i } else { i - 1 };
            report.failure = fail(
                FailureKind::Modified,
                Some(bad),
                format!("entry {bad} was modified (hash chain breaks at {i})"),
            );
            return report;
        }
        let h = leaf_hash(bytes);
        leaves_prev = Some(h);
        cr.push(h);
        let size = i + 1;
        // Roots are computed only where a signed size needs one.
        if pending_root_failure.is_none() && next_cp < cps.len() && cps[next_cp].size <= size {
            pending_root_failure = check_roots(size, &cr.root(), &mut next_cp, &mut good_size);
        }
        if let Some(t) = &trusted {
            if t.size == size {
                trusted_root = Some(cr.root());
            }
        }
    }
    progress(n);
    report.root = cr.root();
    if let Some(f) = pending_root_failure {
        report.failure = Some(f);
        return report;
    }

    // 3. Coverage by the newest checkpoint.
    if n < report.signed_size {
        report.failure = fail(
            FailureKind::Truncated,
            Some(n),
            format!(
                "the log has {n} entries but a checkpoint of size {} is signed",
                report.signed_size
            ),
        );
        return report;
    }
    if n > report.signed_size {
        report.failure = fail(
            FailureKind::Appended,
            Some(report.signed_size),
            format!(
                "entries {}..{n} are not covered by any signed checkpoint",
                report.signed_size
            ),
        );
        return report;
    }

    // 4. The auditor's own earlier checkpoint.
    if let Some(t) = trusted {
        if origin.as_deref().is_some_and(|o| o != t.origin) {
            report.failure = fail(
                FailureKind::Forked,
                None,
                "the trusted checkpoint is from another log".into(),
            );
        } else if t.size > n {
            report.failure = fail(
                FailureKind::Truncated,
                Some(n),
                format!(
                    "the log has {n} entries, fewer than your trusted checkpoint ({})",
                    t.size
                ),
            );
        } else {
            let root = if t.size == 0 {
                Some(super::merkle::empty_root())
            } else {
                trusted_root
            };
            if root != Some(t.root) {
                report.failure = fail(
                    FailureKind::Forked,
                    None,
                    format!(
                        "history differs from your trusted checkpoint of size {}: the first {} entries were rewritten and re-signed",
                        t.size, t.size
                    ),
                );
            }
        }
    }
    report
}
