//! Throughput of `audit::merkle` on a 1,000,000-entry log (plain binary,
//! `harness = false`, std::time only). Run with
//! `cargo bench -p vault-core --bench merkle`.
//!
//! (a) CompactRange over all entries: leaf hashing + root, i.e. what an
//!     offline verifier of a 1M-entry export does (target < 1 s, one core);
//! (b) Tree::push of 1M leaf hashes;
//! (c) 10,000 inclusion proofs and 10,000 consistency proofs on the 1M tree
//!     (generation and verification timed separately).

use std::hint::black_box;
use std::time::{Duration, Instant};

use vault_core::audit::merkle::{
    leaf_hash, verify_consistency, verify_inclusion, CompactRange, Hash, Tree,
};

const N: usize = 1_000_000;
const ENTRY: usize = 300;
const PROOFS: usize = 10_000;

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
}

fn fmt(d: Duration) -> String {
    format!("{:9.3} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    // 1M synthetic ~300-byte entries (JSON-ish, varying length 280..=320).
    let t0 = Instant::now();
    let mut rng = Rng(0x5eed);
    let entries: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            let len = ENTRY - 20 + (rng.below(41) as usize);
            let mut e = format!(
                "{{\"seq\":{i},\"time\":\"2026-01-01T00:00:00Z\",\"action\":\"secret.read\",\"target\":\"db/{i}\",\"pad\":\""
            )
            .into_bytes();
            while e.len() < len - 2 {
                e.push(b'a' + (rng.next() % 26) as u8);
            }
            e.extend_from_slice(b"\"}");
            e
        })
        .collect();
    let bytes: usize = entries.iter().map(Vec::len).sum();
    println!(
        "setup: {N} entries, {:.1} MB, built in {}",
        bytes as f64 / 1e6,
        fmt(t0.elapsed())
    );

    // (a) CompactRange over all entries (leaf hashing + root), best of 3.
    let mut best = Duration::MAX;
    let mut root_a = [0u8; 32];
    for _ in 0..3 {
        let t = Instant::now();
        let mut cr = CompactRange::new();
        for e in &entries {
            cr.push(leaf_hash(e));
        }
        root_a = black_box(cr.root());
        best = best.min(t.elapsed());
    }
    println!(
        "(a) CompactRange, leaf hash + root of {N} entries: {}  ({:.0} ns/entry, {:.0} MB/s)  [target < 1000 ms] {}",
        fmt(best),
        best.as_nanos() as f64 / N as f64,
        bytes as f64 / best.as_secs_f64() / 1e6,
        if best < Duration::from_secs(1) { "OK" } else { "OVER TARGET" }
    );

    // Leaf hashing alone, to split (a) into its parts.
    let t = Instant::now();
    let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();
    let leaf_time = t.elapsed();
    println!(
        "    of which leaf hashing alone:             {}",
        fmt(leaf_time)
    );
    let t = Instant::now();
    let mut cr = CompactRange::new();
    for l in &leaves {
        cr.push(*l);
    }
    assert_eq!(black_box(cr.root()), root_a);
    println!(
        "    CompactRange over precomputed leaf hashes: {}",
        fmt(t.elapsed())
    );

    // (b) Tree::push of 1M leaf hashes, best of 3.
    let mut best = Duration::MAX;
    let mut tree = Tree::new();
    for _ in 0..3 {
        let t = Instant::now();
        let mut tr = Tree::new();
        for l in &leaves {
            tr.push(*l);
        }
        best = best.min(t.elapsed());
        tree = black_box(tr);
    }
    println!(
        "(b) Tree::push x {N}:                         {}  ({:.0} ns/push)",
        fmt(best),
        best.as_nanos() as f64 / N as f64
    );
    let t = Instant::now();
    let root = tree.root();
    println!(
        "    Tree::root():                           {}",
        fmt(t.elapsed())
    );
    assert_eq!(root, root_a, "Tree and CompactRange disagree");

    // (c) 10,000 inclusion proofs at random (index, size).
    let size = N as u64;
    let mut rng = Rng(0xc0ffee);
    let queries: Vec<(u64, u64)> = (0..PROOFS)
        .map(|_| {
            let n = 1 + rng.below(size);
            (rng.below(n), n)
        })
        .collect();
    let roots: Vec<Hash> = queries
        .iter()
        .map(|&(_, n)| tree.root_at(n).unwrap())
        .collect();
    let t = Instant::now();
    let proofs: Vec<Vec<Hash>> = queries
        .iter()
        .map(|&(i, n)| tree.inclusion_proof(i, n).unwrap())
        .collect();
    let gen = t.elapsed();
    let t = Instant::now();
    for ((&(i, n), p), r) in queries.iter().zip(&proofs).zip(&roots) {
        verify_inclusion(&leaves[i as usize], i, n, p, r).unwrap();
    }
    let ver = t.elapsed();
    // Also at the full size only (the common case: prove against the head).
    let t = Instant::now();
    for &(i, _) in &queries {
        black_box(tree.inclusion_proof(i, size).unwrap());
    }
    let gen_head = t.elapsed();
    println!(
        "(c) {PROOFS} inclusion proofs (random index, size): generate {}  ({:.1} us each), verify {}",
        fmt(gen),
        gen.as_secs_f64() * 1e6 / PROOFS as f64,
        fmt(ver)
    );
    println!(
        "    {PROOFS} inclusion proofs at size {N}:            generate {}  ({:.1} us each)",
        fmt(gen_head),
        gen_head.as_secs_f64() * 1e6 / PROOFS as f64
    );

    // (c) 10,000 consistency proofs at random (first, second).
    let pairs: Vec<(u64, u64)> = (0..PROOFS)
        .map(|_| {
            let n = 1 + rng.below(size);
            (1 + rng.below(n), n)
        })
        .collect();
    let proot: Vec<(Hash, Hash)> = pairs
        .iter()
        .map(|&(m, n)| (tree.root_at(m).unwrap(), tree.root_at(n).unwrap()))
        .collect();
    let t = Instant::now();
    let cproofs: Vec<Vec<Hash>> = pairs
        .iter()
        .map(|&(m, n)| tree.consistency_proof(m, n).unwrap())
        .collect();
    let gen = t.elapsed();
    let t = Instant::now();
    for ((&(m, n), p), (r1, r2)) in pairs.iter().zip(&cproofs).zip(&proot) {
        verify_consistency(m, n, r1, r2, p).unwrap();
    }
    let ver = t.elapsed();
    println!(
        "(c) {PROOFS} consistency proofs (random first, second): generate {}  ({:.1} us each), verify {}",
        fmt(gen),
        gen.as_secs_f64() * 1e6 / PROOFS as f64,
        fmt(ver)
    );
    let t = Instant::now();
    for &(m, n) in &pairs {
        black_box(tree.root_at(m).unwrap());
        black_box(tree.root_at(n).unwrap());
    }
    println!(
        "    {} root_at calls:                        {}",
        2 * PROOFS,
        fmt(t.elapsed())
    );
}
