//! Proof verification on arbitrary input: never a panic; an honest proof
//! from a small tree verifies.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vault_core::audit::merkle::{leaf_hash, verify_consistency, verify_inclusion, Hash, Tree};

fuzz_target!(|data: &[u8]| {
    if data.len() < 20 {
        return;
    }
    let a = u64::from_le_bytes(data[0..8].try_into().unwrap());
    let b = u64::from_le_bytes(data[8..16].try_into().unwrap());
    let hashes: Vec<Hash> = data[16..].chunks_exact(32).map(|c| c.try_into().unwrap()).collect();
    let leaf = leaf_hash(&data[16..20]);
    let root = hashes.first().copied().unwrap_or([0; 32]);
    let _ = verify_inclusion(&leaf, a, b, &hashes, &root);
    let _ = verify_consistency(a, b, &root, &leaf, &hashes);
    // A small honest tree built from the input.
    let n = (data[16] as u64 % 40) + 1;
    let mut t = Tree::new();
    for i in 0..n {
        t.push(leaf_hash(&i.to_le_bytes()));
    }
    let (i, m) = (a % n, (b % n) + 1);
    let p = t.inclusion_proof(i, n).unwrap();
    verify_inclusion(&t.leaf(i).unwrap(), i, n, &p, &t.root()).unwrap();
    let c = t.consistency_proof(m, n).unwrap();
    verify_consistency(m, n, &t.root_at(m).unwrap(), &t.root(), &c).unwrap();
});
