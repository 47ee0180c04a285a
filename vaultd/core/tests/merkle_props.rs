//! `audit::merkle` against an independent reference written straight from
//! the RFC 9162 §2.1 text (naive recursive MTH, PATH, PROOF/SUBPROOF over the
//! leaf *data*), plus structural reference verifiers that walk the same
//! recursion the generators use (not the RFC's bit-twiddling loops).
//!
//! * every tree size 1..=64, every index and every (m, n) pair: roots,
//!   inclusion and consistency proofs equal the reference's and verify;
//! * random sizes up to 5000 (deterministic xorshift), same checks;
//! * every honest proof, altered (bit flips, dropped / added / swapped
//!   hashes, wrong index, size, root or leaf) is rejected, never panics,
//!   and the module's verdict equals the structural reference's;
//! * truncate + push equals never having pushed;
//! * error cases return the right `ProofError`.

use sha2::{Digest, Sha256};
use vault_core::audit::merkle::{
    empty_root, leaf_hash, node_hash, verify_consistency, verify_inclusion, CompactRange, Hash,
    ProofError, Tree,
};

// ---------------------------------------------------------------------------
// Reference implementation, RFC 9162 §2.1 verbatim, over leaf data.
// ---------------------------------------------------------------------------

mod rfc {
    use super::*;

    /// `HASH(0x00 || d)`.
    pub fn leaf(d: &[u8]) -> Hash {
        let mut h = Sha256::new();
        h.update([0u8]);
        h.update(d);
        h.finalize().into()
    }

    /// `HASH(0x01 || l || r)`.
    pub fn node(l: &Hash, r: &Hash) -> Hash {
        let mut h = Sha256::new();
        h.update([1u8]);
        h.update(l);
        h.update(r);
        h.finalize().into()
    }

    /// "k be the largest power of two smaller than n (i.e., k < n <= 2k)".
    pub fn k(n: u64) -> u64 {
        assert!(n > 1);
        let mut k = 1u64;
        while k <= (n - 1) / 2 {
            k *= 2;
        }
        assert!(k < n && n - k <= k);
        k
    }

    /// MTH(D[n]).
    pub fn mth(d: &[Vec<u8>]) -> Hash {
        match d.len() {
            0 => Sha256::digest(b"").into(),
            1 => leaf(&d[0]),
            n => {
                let k = k(n as u64) as usize;
                node(&mth(&d[..k]), &mth(&d[k..]))
            }
        }
    }

    /// PATH(m, D[n]).
    pub fn path(m: usize, d: &[Vec<u8>]) -> Vec<Hash> {
        let n = d.len();
        assert!(m < n);
        if n == 1 {
            return Vec::new();
        }
        let k = k(n as u64) as usize;
        if m < k {
            let mut p = path(m, &d[..k]);
            p.push(mth(&d[k..]));
            p
        } else {
            let mut p = path(m - k, &d[k..]);
            p.push(mth(&d[..k]));
            p
        }
    }

    /// PROOF(m, D[n]) = SUBPROOF(m, D[n], true).
    pub fn proof(m: usize, d: &[Vec<u8>]) -> Vec<Hash> {
        assert!(0 < m && m <= d.len());
        subproof(m, d, true)
    }

    fn subproof(m: usize, d: &[Vec<u8>], b: bool) -> Vec<Hash> {
        let n = d.len();
        if m == n {
            return if b { Vec::new() } else { vec![mth(d)] };
        }
        let k = k(n as u64) as usize;
        if m <= k {
            let mut p = subproof(m, &d[..k], b);
            p.push(mth(&d[k..]));
            p
        } else {
            let mut p = subproof(m - k, &d[k..], false);
            p.push(mth(&d[..k]));
            p
        }
    }

    /// Structural inclusion check: rebuild the root by walking PATH's
    /// recursion (the proof's last element is the top sibling).
    pub fn inclusion_ok(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
        fn walk(m: u64, n: u64, leaf: &Hash, proof: &[Hash]) -> Option<Hash> {
            if n == 1 {
                return proof.is_empty().then_some(*leaf);
            }
            let (last, rest) = proof.split_last()?;
            let k = k(n);
            Some(if m < k {
                node(&walk(m, k, leaf, rest)?, last)
            } else {
                node(last, &walk(m - k, n - k, leaf, rest)?)
            })
        }
        index < size && walk(index, size, leaf, proof).as_ref() == Some(root)
    }

    /// Structural consistency check: walk SUBPROOF's recursion, computing
    /// (old root, new root) from the proof.
    pub fn consistency_ok(first: u64, second: u64, r1: &Hash, r2: &Hash, proof: &[Hash]) -> bool {
        fn walk(m: u64, n: u64, b: bool, r1: &Hash, proof: &[Hash]) -> Option<(Hash, Hash)> {
            if m == n {
                return match (b, proof) {
                    (true, []) => Some((*r1, *r1)),
                    (false, [h]) => Some((*h, *h)),
                    _ => None,
                };
            }
            let (last, rest) = proof.split_last()?;
            let k = k(n);
            if m <= k {
                let (f, s) = walk(m, k, b, r1, rest)?;
                Some((f, node(&s, last)))
            } else {
                let (f, s) = walk(m - k, n - k, false, r1, rest)?;
                Some((node(last, &f), node(last, &s)))
            }
        }
        if first == 0 || first > second {
            return false;
        }
        if first == second {
            return proof.is_empty() && r1 == r2;
        }
        walk(first, second, true, r1, proof) == Some((*r1, *r2))
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// xorshift64* — deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn hash(&mut self) -> Hash {
        let mut h = [0u8; 32];
        for c in h.chunks_mut(8) {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        h
    }
}

/// Distinct leaf data of varying lengths (0..=40 bytes, including empty).
fn entries(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut v = format!("entry {i} ").into_bytes();
            v.resize(v.len() + i % 29, (i % 251) as u8);
            if i == 0 {
                v.clear();
            }
            v
        })
        .collect()
}

fn build(d: &[Vec<u8>]) -> Tree {
    let mut t = Tree::new();
    for e in d {
        t.push(leaf_hash(e));
    }
    t
}

fn flip(h: &Hash, bit: usize) -> Hash {
    let mut h = *h;
    h[bit / 8] ^= 1 << (bit % 8);
    h
}

/// The module's verdict must equal the structural reference's, never panic.
fn incl_agrees(leaf: &Hash, i: u64, n: u64, p: &[Hash], root: &Hash, what: &str) -> bool {
    let got = verify_inclusion(leaf, i, n, p, root);
    let want = rfc::inclusion_ok(leaf, i, n, p, root);
    assert_eq!(
        got.is_ok(),
        want,
        "verify_inclusion({i}, {n}) {what}: module {got:?}, reference accepts={want}"
    );
    want
}

fn cons_agrees(m: u64, n: u64, r1: &Hash, r2: &Hash, p: &[Hash], what: &str) -> bool {
    let got = verify_consistency(m, n, r1, r2, p);
    let want = rfc::consistency_ok(m, n, r1, r2, p);
    assert_eq!(
        got.is_ok(),
        want,
        "verify_consistency({m}, {n}) {what}: module {got:?}, reference accepts={want}"
    );
    want
}

// ---------------------------------------------------------------------------
// The reference itself against the published vectors
// ---------------------------------------------------------------------------

#[test]
fn reference_reproduces_published_roots() {
    let d: serde_json::Value =
        serde_json::from_str(include_str!("data/ct_merkle_vectors.json")).unwrap();
    let unhex = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    };
    let leaves: Vec<Vec<u8>> = d["leaves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| unhex(v.as_str().unwrap()))
        .collect();
    for (n, r) in d["roots"].as_array().unwrap().iter().enumerate() {
        assert_eq!(rfc::mth(&leaves[..n]).to_vec(), unhex(r.as_str().unwrap()));
    }
    // And the reference hashing agrees with the module's primitives.
    assert_eq!(rfc::leaf(b"abc"), leaf_hash(b"abc"));
    let (a, b) = (rfc::leaf(b"a"), rfc::leaf(b"b"));
    assert_eq!(rfc::node(&a, &b), node_hash(&a, &b));
    assert_eq!(rfc::mth(&[]), empty_root());
}

// ---------------------------------------------------------------------------
// Exhaustive small trees: every size 1..=64, every index, every pair
// ---------------------------------------------------------------------------

const SMALL: usize = 64;

#[test]
fn exhaustive_roots_and_compact_range() {
    let d = entries(SMALL);
    let full = build(&d);
    let mut inc = Tree::new();
    let mut inc_default = Tree::default();
    let mut cr = CompactRange::new();
    assert_eq!(full.root_at(0), Ok(empty_root()));
    for n in 1..=SMALL {
        let want = rfc::mth(&d[..n]);
        inc.push(leaf_hash(&d[n - 1]));
        inc_default.push(leaf_hash(&d[n - 1]));
        cr.push(leaf_hash(&d[n - 1]));
        assert_eq!(full.root_at(n as u64), Ok(want), "root_at({n}) of {SMALL}");
        assert_eq!(inc.root(), want, "root() at {n}");
        assert_eq!(inc_default.root(), want, "Tree::default root() at {n}");
        assert_eq!(cr.root(), want, "CompactRange at {n}");
        assert_eq!(cr.size(), n as u64);
        assert_eq!(inc.size(), n as u64);
        for s in 0..=n {
            assert_eq!(inc.root_at(s as u64), full.root_at(s as u64));
        }
        assert_eq!(inc.leaf(n as u64 - 1), Some(rfc::leaf(&d[n - 1])));
        assert_eq!(inc.leaf(n as u64), None);
    }
}

#[test]
fn exhaustive_inclusion_proofs() {
    let d = entries(SMALL);
    let full = build(&d);
    let mut inc = Tree::new();
    for n in 1..=SMALL {
        inc.push(leaf_hash(&d[n - 1]));
        let root = rfc::mth(&d[..n]);
        for i in 0..n {
            let want = rfc::path(i, &d[..n]);
            let (i64_, n64) = (i as u64, n as u64);
            assert_eq!(
                full.inclusion_proof(i64_, n64).unwrap(),
                want,
                "PATH({i}, {n}) in full"
            );
            assert_eq!(
                inc.inclusion_proof(i64_, n64).unwrap(),
                want,
                "PATH({i}, {n}) in inc"
            );
            let leaf = rfc::leaf(&d[i]);
            assert_eq!(verify_inclusion(&leaf, i64_, n64, &want, &root), Ok(()));
            assert!(rfc::inclusion_ok(&leaf, i64_, n64, &want, &root));
        }
    }
}

#[test]
fn exhaustive_consistency_proofs() {
    let d = entries(SMALL);
    let full = build(&d);
    let roots: Vec<Hash> = (0..=SMALL).map(|n| rfc::mth(&d[..n])).collect();
    for n in 1..=SMALL {
        let small = build(&d[..n]);
        for m in 1..=n {
            let want = rfc::proof(m, &d[..n]);
            let (m64, n64) = (m as u64, n as u64);
            assert_eq!(
                full.consistency_proof(m64, n64).unwrap(),
                want,
                "PROOF({m}, {n})"
            );
            assert_eq!(
                small.consistency_proof(m64, n64).unwrap(),
                want,
                "PROOF({m}, {n})"
            );
            assert_eq!(
                verify_consistency(m64, n64, &roots[m], &roots[n], &want),
                Ok(()),
                "verify PROOF({m}, {n})"
            );
            assert!(rfc::consistency_ok(m64, n64, &roots[m], &roots[n], &want));
        }
    }
}

// ---------------------------------------------------------------------------
// Random larger trees
// ---------------------------------------------------------------------------

const LARGE: usize = 5000;

#[test]
fn random_large_trees() {
    let d = entries(LARGE);
    let full = build(&d);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);

    // CompactRange and Tree agree at every size; a Tree pushed leaf by leaf
    // agrees with the full one.
    let mut cr = CompactRange::new();
    for (n, e) in d.iter().enumerate() {
        cr.push(leaf_hash(e));
        assert_eq!(Ok(cr.root()), full.root_at(n as u64 + 1), "size {}", n + 1);
    }

    // The naive reference costs O(n) hashes per proof in a debug build, so
    // this samples; the exhaustive tests above cover every shape up to 64.
    let mut sizes: Vec<usize> = vec![65, 257, 1024, 1025, 4095, 4097, LARGE];
    for _ in 0..5 {
        sizes.push(SMALL + 1 + rng.below((LARGE - SMALL) as u64) as usize);
    }
    for &n in &sizes {
        let dn = &d[..n];
        let root = rfc::mth(dn);
        assert_eq!(full.root_at(n as u64), Ok(root), "root_at({n})");
        let mut idx = vec![0, n - 1];
        for _ in 0..2 {
            idx.push(rng.below(n as u64) as usize);
        }
        for i in idx {
            let want = rfc::path(i, dn);
            let got = full.inclusion_proof(i as u64, n as u64).unwrap();
            assert_eq!(got, want, "PATH({i}, {n})");
            assert_eq!(
                verify_inclusion(&rfc::leaf(&d[i]), i as u64, n as u64, &got, &root),
                Ok(())
            );
        }
        let mut firsts = vec![1, n - 1, n.next_power_of_two() / 2];
        for _ in 0..2 {
            firsts.push(1 + rng.below(n as u64) as usize);
        }
        for m in firsts {
            let want = rfc::proof(m, dn);
            let got = full.consistency_proof(m as u64, n as u64).unwrap();
            assert_eq!(got, want, "PROOF({m}, {n})");
            let r1 = full.root_at(m as u64).unwrap();
            assert_eq!(r1, rfc::mth(&d[..m]), "root_at({m})");
            assert_eq!(
                verify_consistency(m as u64, n as u64, &r1, &root, &got),
                Ok(())
            );
        }
    }
}

/// Many more random queries on the 5000-leaf tree, checked by verification
/// against roots (CompactRange-checked above), plus every mutation.
#[test]
fn random_large_trees_verify_and_mutations() {
    let d = entries(LARGE);
    let full = build(&d);
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let roots: Vec<Hash> = (0..=LARGE as u64)
        .map(|s| full.root_at(s).unwrap())
        .collect();
    for _ in 0..300 {
        let n = 1 + rng.below(LARGE as u64);
        let i = rng.below(n);
        let p = full.inclusion_proof(i, n).unwrap();
        let leaf = full.leaf(i).unwrap();
        assert_eq!(
            verify_inclusion(&leaf, i, n, &p, &roots[n as usize]),
            Ok(())
        );
        incl_mutations(&leaf, i, n, &p, &roots, &mut rng, false);
        let m = 1 + rng.below(n);
        let p = full.consistency_proof(m, n).unwrap();
        let (r1, r2) = (roots[m as usize], roots[n as usize]);
        assert_eq!(verify_consistency(m, n, &r1, &r2, &p), Ok(()));
        cons_mutations(m, n, &p, &roots, &mut rng, false);
    }
}

// ---------------------------------------------------------------------------
// Negative properties
// ---------------------------------------------------------------------------

/// Every alteration of an honest inclusion proof. Returns the number of
/// wrong-size variants the RFC algorithm (and the reference) accepts.
fn incl_mutations(
    leaf: &Hash,
    i: u64,
    n: u64,
    p: &[Hash],
    roots: &[Hash],
    rng: &mut Rng,
    exhaustive: bool,
) -> usize {
    let root = &roots[n as usize];
    let rej = |lf: &Hash, i2: u64, n2: u64, q: &[Hash], r: &Hash, what: &str| {
        assert!(
            !incl_agrees(lf, i2, n2, q, r, what),
            "accepted: {what} (index {i}, size {n})"
        );
    };
    let must = |want: ProofError, q: &[Hash], what: &str| {
        assert_eq!(
            verify_inclusion(leaf, i, n, q, root),
            Err(want),
            "{what} ({i}, {n})"
        );
    };

    // Bit flips in every proof hash (a few bits each; every bit if exhaustive).
    for k in 0..p.len() {
        let bits: Vec<usize> = if exhaustive {
            (0..256).collect()
        } else {
            vec![0, 255, rng.below(256) as usize]
        };
        for bit in bits {
            let mut q = p.to_vec();
            q[k] = flip(&q[k], bit);
            must(ProofError::RootMismatch, &q, "bit flip in proof");
        }
    }
    // Drop any hash.
    for k in 0..p.len() {
        let mut q = p.to_vec();
        q.remove(k);
        must(ProofError::WrongLength, &q, "dropped hash");
    }
    // Add a hash anywhere (random, the root, the leaf, a duplicate).
    for k in 0..=p.len() {
        let mut extra = vec![rng.hash(), *root, *leaf];
        if let Some(h) = p.get(k).or(p.last()) {
            extra.push(*h);
        }
        for h in extra {
            let mut q = p.to_vec();
            q.insert(k, h);
            must(ProofError::WrongLength, &q, "added hash");
        }
    }
    // Swap two (distinct) hashes.
    for a in 0..p.len() {
        for b in a + 1..p.len() {
            if p[a] != p[b] {
                let mut q = p.to_vec();
                q.swap(a, b);
                must(ProofError::RootMismatch, &q, "swapped hashes");
            }
        }
    }
    // Reverse order.
    if p.len() > 1 {
        let q: Vec<Hash> = p.iter().rev().copied().collect();
        rej(leaf, i, n, &q, root, "reversed proof");
    }
    // Wrong index: a leaf's position is bound by the proof's shape, so every
    // other index is rejected.
    let other_idx: Vec<u64> = if exhaustive {
        (0..=n + 1).filter(|&j| j != i).collect()
    } else {
        vec![
            i ^ 1,
            i.wrapping_sub(1),
            i + 1,
            i ^ 2,
            rng.below(n),
            n,
            u64::MAX,
        ]
    };
    for j in other_idx {
        if j != i {
            rej(leaf, j, n, p, root, "wrong index");
        }
    }
    // Wrong size with the same root: the RFC verifier (and any verifier)
    // cannot tell sizes whose PATH has the same shape apart, e.g. PATH(0, 3)
    // and PATH(0, 4) are both [right sibling, right sibling]; the tree size
    // is bound by the checkpoint, not the proof. So: the module must agree
    // with the structural reference, and we count the ambiguous cases.
    let other_sizes: Vec<u64> = if exhaustive {
        (0..=2 * n + 2).filter(|&s| s != n).collect()
    } else {
        vec![n - 1, n + 1, n * 2, n / 2, 1 + rng.below(2 * n), u64::MAX]
    };
    let mut ambiguous = 0;
    for s in other_sizes {
        if s != n && incl_agrees(leaf, i, s, p, root, "wrong size") {
            ambiguous += 1;
        }
    }
    // Wrong root: other sizes' roots, random, bit flips, the leaf itself.
    let mut bad_roots = vec![
        rng.hash(),
        flip(root, 0),
        flip(root, 255),
        *leaf,
        empty_root(),
    ];
    for s in [n - 1, n + 1] {
        if let Some(r) = roots.get(s as usize) {
            bad_roots.push(*r);
        }
    }
    for r in bad_roots {
        if &r != root {
            rej(leaf, i, n, p, &r, "wrong root");
        }
    }
    // Wrong leaf: random, flipped, neighbours', and the *data* hash without
    // the 0x00 prefix.
    let mut bad_leaves = vec![rng.hash(), flip(leaf, 0), flip(leaf, 129), *root];
    if let Some(h) = p.first() {
        bad_leaves.push(*h);
    }
    for l in bad_leaves {
        if &l != leaf {
            rej(&l, i, n, p, root, "wrong leaf");
        }
    }
    ambiguous
}

/// Every alteration of an honest consistency proof; returns the number of
/// accepted wrong-size variants (see `incl_mutations`).
fn cons_mutations(
    m: u64,
    n: u64,
    p: &[Hash],
    roots: &[Hash],
    rng: &mut Rng,
    exhaustive: bool,
) -> usize {
    let (r1, r2) = (&roots[m as usize], &roots[n as usize]);
    let rej = |m2: u64, n2: u64, a: &Hash, b: &Hash, q: &[Hash], what: &str| {
        assert!(
            !cons_agrees(m2, n2, a, b, q, what),
            "accepted: {what} (first {m}, second {n})"
        );
    };
    let must = |want: ProofError, q: &[Hash], what: &str| {
        assert_eq!(
            verify_consistency(m, n, r1, r2, q),
            Err(want),
            "{what} ({m}, {n})"
        );
    };

    for k in 0..p.len() {
        let bits: Vec<usize> = if exhaustive {
            (0..256).step_by(7).chain([255]).collect()
        } else {
            vec![0, 255, rng.below(256) as usize]
        };
        for bit in bits {
            let mut q = p.to_vec();
            q[k] = flip(&q[k], bit);
            must(ProofError::RootMismatch, &q, "bit flip in proof");
        }
    }
    for k in 0..p.len() {
        let mut q = p.to_vec();
        q.remove(k);
        must(ProofError::WrongLength, &q, "dropped hash");
    }
    for k in 0..=p.len() {
        let mut extra = vec![rng.hash(), *r1, *r2];
        if let Some(h) = p.get(k).or(p.last()) {
            extra.push(*h);
        }
        for h in extra {
            let mut q = p.to_vec();
            q.insert(k, h);
            must(ProofError::WrongLength, &q, "added hash");
        }
    }
    for a in 0..p.len() {
        for b in a + 1..p.len() {
            if p[a] != p[b] {
                let mut q = p.to_vec();
                q.swap(a, b);
                must(ProofError::RootMismatch, &q, "swapped hashes");
            }
        }
    }
    if p.len() > 1 {
        let q: Vec<Hash> = p.iter().rev().copied().collect();
        rej(m, n, r1, r2, &q, "reversed proof");
    }
    // Wrong roots.
    let mut bad = vec![rng.hash(), empty_root(), flip(r1, 3), flip(r2, 200)];
    bad.extend(
        [m - 1, m + 1, n - 1, n + 1]
            .iter()
            .filter_map(|&s| roots.get(s as usize)),
    );
    for b in &bad {
        if b != r1 {
            rej(m, n, b, r2, p, "wrong first root");
        }
        if b != r2 {
            rej(m, n, r1, b, p, "wrong second root");
        }
    }
    if r1 != r2 {
        rej(m, n, r2, r1, p, "swapped roots");
    }
    // Wrong sizes (roots unchanged): must agree with the reference.
    let (firsts, seconds): (Vec<u64>, Vec<u64>) = if exhaustive {
        (
            (0..=n + 1).filter(|&s| s != m).collect(),
            (0..=2 * n + 2).filter(|&s| s != n).collect(),
        )
    } else {
        (
            vec![m - 1, m + 1, m ^ 2, rng.below(n + 1), u64::MAX],
            vec![n - 1, n + 1, n * 2, n / 2, m + rng.below(n), u64::MAX],
        )
    };
    let mut ambiguous = 0;
    for s in firsts {
        if s != m && cons_agrees(s, n, r1, r2, p, "wrong first size") {
            ambiguous += 1;
        }
    }
    for s in seconds {
        if s != n && cons_agrees(m, s, r1, r2, p, "wrong second size") {
            ambiguous += 1;
        }
    }
    ambiguous
}

#[test]
fn exhaustive_inclusion_mutations_rejected() {
    let d = entries(SMALL);
    let t = build(&d);
    let roots: Vec<Hash> = (0..=SMALL as u64).map(|s| t.root_at(s).unwrap()).collect();
    let mut rng = Rng(7);
    let mut ambiguous = 0;
    for n in 1..=SMALL as u64 {
        for i in 0..n {
            let p = t.inclusion_proof(i, n).unwrap();
            let leaf = t.leaf(i).unwrap();
            ambiguous += incl_mutations(&leaf, i, n, &p, &roots, &mut rng, n <= 16);
        }
    }
    // The known shape collision, e.g. index 0 of size 3 vs 4.
    let p = t.inclusion_proof(0, 3).unwrap();
    assert_eq!(
        verify_inclusion(&t.leaf(0).unwrap(), 0, 4, &p, &roots[3]),
        Ok(())
    );
    assert!(ambiguous > 0);
    println!(
        "wrong-size inclusion variants accepted by RFC algorithm and reference alike: {ambiguous}"
    );
}

#[test]
fn exhaustive_consistency_mutations_rejected() {
    let d = entries(SMALL);
    let t = build(&d);
    let roots: Vec<Hash> = (0..=SMALL as u64).map(|s| t.root_at(s).unwrap()).collect();
    let mut rng = Rng(11);
    let mut ambiguous = 0;
    for n in 1..=SMALL as u64 {
        for m in 1..=n {
            let p = t.consistency_proof(m, n).unwrap();
            ambiguous += cons_mutations(m, n, &p, &roots, &mut rng, n <= 16);
        }
    }
    println!("wrong-size consistency variants accepted by RFC algorithm and reference alike: {ambiguous}");
}

/// Arbitrary garbage (including huge sizes) never panics, and the verdict
/// always matches the reference.
#[test]
fn garbage_never_panics() {
    let mut rng = Rng(0xdead_beef);
    let pool: Vec<Hash> = (0..8).map(|_| rng.hash()).collect();
    let specials = [
        0,
        1,
        2,
        3,
        u64::MAX,
        u64::MAX - 1,
        1 << 63,
        (1 << 63) + 1,
        (1 << 63) - 1,
    ];
    for round in 0..20_000 {
        let pick = |rng: &mut Rng| -> u64 {
            match rng.below(3) {
                0 => specials[rng.below(specials.len() as u64) as usize],
                1 => rng.below(100),
                _ => rng.next(),
            }
        };
        let (a, b) = (pick(&mut rng), pick(&mut rng));
        let len = rng.below(70) as usize;
        let proof: Vec<Hash> = (0..len)
            .map(|_| pool[rng.below(pool.len() as u64) as usize])
            .collect();
        let (h1, h2) = (pool[round % 8], pool[(round / 8) % 8]);
        incl_agrees(&h1, a, b, &proof, &h2, "garbage");
        cons_agrees(a, b, &h1, &h2, &proof, "garbage");
        cons_agrees(a, b, &h1, &h1, &proof, "garbage");
    }
}

// ---------------------------------------------------------------------------
// truncate
// ---------------------------------------------------------------------------

#[test]
fn truncate_then_push_equals_never_pushed() {
    let d = entries(300);
    let other: Vec<Vec<u8>> = (0..300)
        .map(|i| format!("other {i}").into_bytes())
        .collect();
    let mut rng = Rng(42);
    let mut cases: Vec<(usize, usize, usize)> = vec![
        (0, 0, 5),
        (1, 0, 1),
        (8, 4, 9),
        (8, 7, 8),
        (64, 63, 64),
        (64, 32, 100),
        (255, 128, 256),
        (256, 0, 256),
        (5, 5, 9),  // truncate to the same size is a no-op
        (5, 9, 12), // truncate above the size is a no-op
    ];
    for _ in 0..60 {
        let n = rng.below(300) as usize + 1;
        let k = rng.below(n as u64 + 1) as usize;
        let after = k.min(n) + rng.below((300 - k.min(n)) as u64 + 1) as usize;
        cases.push((n, k, after));
    }
    for (n, k, after) in cases {
        let kept = k.min(n);
        let mut t = build(&d[..n]);
        t.truncate(k as u64);
        assert_eq!(t.size(), kept as u64, "truncate({k}) of {n}");
        // Continue with *different* leaves than the removed ones.
        let mut expected: Vec<Vec<u8>> = d[..kept].to_vec();
        for e in &other[kept..after] {
            t.push(leaf_hash(e));
            expected.push(e.clone());
        }
        let fresh = build(&expected);
        assert_eq!(t.size(), fresh.size());
        for s in 0..=after as u64 {
            assert_eq!(
                t.root_at(s),
                fresh.root_at(s),
                "({n},{k},{after}) root_at({s})"
            );
        }
        assert_eq!(t.root(), rfc::mth(&expected), "({n},{k},{after})");
        for _ in 0..5 {
            if after == 0 {
                break;
            }
            let s = 1 + rng.below(after as u64);
            let i = rng.below(s);
            assert_eq!(t.inclusion_proof(i, s), fresh.inclusion_proof(i, s));
            let m = 1 + rng.below(s);
            assert_eq!(t.consistency_proof(m, s), fresh.consistency_proof(m, s));
        }
        assert!(t.root_at(after as u64 + 1).is_err());
    }
    // Truncate to zero, then rebuild.
    let mut t = build(&d[..100]);
    t.truncate(0);
    assert_eq!(t.root(), empty_root());
    assert_eq!(t.size(), 0);
    for e in &d[..100] {
        t.push(leaf_hash(e));
    }
    assert_eq!(t.root(), rfc::mth(&d[..100]));
    // On a default (level-less) tree.
    let mut t = Tree::default();
    t.truncate(3);
    t.push(leaf_hash(b"x"));
    assert_eq!(t.root(), rfc::leaf(b"x"));
}

// ---------------------------------------------------------------------------
// Error cases
// ---------------------------------------------------------------------------

#[test]
fn error_cases() {
    let d = entries(10);
    let t = build(&d);
    let h = leaf_hash(b"x");

    // root_at beyond the log.
    assert_eq!(
        t.root_at(11),
        Err(ProofError::SizeTooLarge { size: 11, have: 10 })
    );
    assert_eq!(
        Tree::new().root_at(1),
        Err(ProofError::SizeTooLarge { size: 1, have: 0 })
    );

    // inclusion_proof: index >= size, size > tree size.
    assert_eq!(
        t.inclusion_proof(10, 10),
        Err(ProofError::IndexOutOfRange {
            index: 10,
            size: 10
        })
    );
    assert_eq!(
        t.inclusion_proof(5, 5),
        Err(ProofError::IndexOutOfRange { index: 5, size: 5 })
    );
    assert_eq!(
        t.inclusion_proof(0, 0),
        Err(ProofError::IndexOutOfRange { index: 0, size: 0 })
    );
    assert_eq!(
        t.inclusion_proof(0, 11),
        Err(ProofError::SizeTooLarge { size: 11, have: 10 })
    );
    assert_eq!(
        t.inclusion_proof(3, u64::MAX),
        Err(ProofError::SizeTooLarge {
            size: u64::MAX,
            have: 10
        })
    );
    assert_eq!(
        Tree::new().inclusion_proof(0, 0),
        Err(ProofError::IndexOutOfRange { index: 0, size: 0 })
    );
    assert_eq!(
        Tree::default().inclusion_proof(0, 1),
        Err(ProofError::SizeTooLarge { size: 1, have: 0 })
    );

    // consistency_proof: first == 0, first > second, second > tree size.
    assert_eq!(
        t.consistency_proof(0, 5),
        Err(ProofError::BadRange {
            first: 0,
            second: 5
        })
    );
    assert_eq!(
        t.consistency_proof(0, 0),
        Err(ProofError::BadRange {
            first: 0,
            second: 0
        })
    );
    assert_eq!(
        t.consistency_proof(6, 5),
        Err(ProofError::BadRange {
            first: 6,
            second: 5
        })
    );
    assert_eq!(
        t.consistency_proof(1, 11),
        Err(ProofError::SizeTooLarge { size: 11, have: 10 })
    );
    assert_eq!(
        t.consistency_proof(12, 11),
        Err(ProofError::SizeTooLarge { size: 11, have: 10 })
    );
    assert_eq!(t.consistency_proof(10, 10), Ok(vec![]));
    assert_eq!(t.consistency_proof(1, 1), Ok(vec![]));

    // verify_inclusion: index >= size.
    assert_eq!(
        verify_inclusion(&h, 0, 0, &[], &h),
        Err(ProofError::IndexOutOfRange { index: 0, size: 0 })
    );
    assert_eq!(
        verify_inclusion(&h, 7, 7, &[h; 3], &h),
        Err(ProofError::IndexOutOfRange { index: 7, size: 7 })
    );
    assert_eq!(
        verify_inclusion(&h, u64::MAX, 3, &[], &h),
        Err(ProofError::IndexOutOfRange {
            index: u64::MAX,
            size: 3
        })
    );
    assert_eq!(verify_inclusion(&h, 0, 1, &[], &h), Ok(()));
    assert_eq!(
        verify_inclusion(&h, 0, 1, &[h], &h),
        Err(ProofError::WrongLength)
    );
    assert_eq!(
        verify_inclusion(&h, 0, 2, &[], &h),
        Err(ProofError::WrongLength)
    );
    assert_eq!(
        verify_inclusion(&h, 0, 1, &[], &empty_root()),
        Err(ProofError::RootMismatch)
    );

    // verify_consistency: first == 0, first > second; trivial cases.
    let r = empty_root();
    assert_eq!(
        verify_consistency(0, 0, &r, &r, &[]),
        Err(ProofError::BadRange {
            first: 0,
            second: 0
        })
    );
    assert_eq!(
        verify_consistency(0, 5, &r, &h, &[h]),
        Err(ProofError::BadRange {
            first: 0,
            second: 5
        })
    );
    assert_eq!(
        verify_consistency(6, 5, &r, &h, &[h]),
        Err(ProofError::BadRange {
            first: 6,
            second: 5
        })
    );
    assert_eq!(verify_consistency(3, 3, &h, &h, &[]), Ok(()));
    assert_eq!(
        verify_consistency(3, 3, &h, &r, &[]),
        Err(ProofError::RootMismatch)
    );
    assert_eq!(
        verify_consistency(3, 3, &h, &h, &[h]),
        Err(ProofError::WrongLength)
    );
    assert_eq!(
        verify_consistency(3, 4, &h, &r, &[]),
        Err(ProofError::WrongLength)
    );
    // Displays don't panic and say something.
    for e in [
        ProofError::IndexOutOfRange { index: 1, size: 1 },
        ProofError::SizeTooLarge { size: 2, have: 1 },
        ProofError::BadRange {
            first: 0,
            second: 0,
        },
        ProofError::WrongLength,
        ProofError::RootMismatch,
    ] {
        assert!(!e.to_string().is_empty());
    }
}
