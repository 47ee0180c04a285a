//! Durable audit appends per second (a benchmark, not a test).
//!
//! Every append is committed with `synchronous = FULL` before its caller
//! returns. With one caller each append pays its own fsync; with many
//! concurrent callers the writer group-commits them (one fsync per batch).
//!
//! cargo bench -p vault-store --bench audit_append [-- SECONDS]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vault_store::Backend as _;

use vault_core::audit::entry::{Draft, Outcome};
use vault_store::{Store, StoreOptions};

fn draft(i: u64) -> Draft {
    Draft {
        time: "2026-11-22T08:00:00Z".into(),
        request_id: format!("{i:032x}"),
        principal: "pam01".into(),
        role: "pam".into(),
        fingerprint: "ab".repeat(32),
        action: "secret.checkout".into(),
        target: format!("prod/db/{}", i % 1000),
        outcome: Outcome::Success,
        error: String::new(),
        details: BTreeMap::from([
            (
                "checkout_id".into(),
                "0b5cb5b2-7f34-4d1f-9c55-3c2b8a51c1de".into(),
            ),
            ("reason".into(), "change CHG-1234".into()),
            ("ttl_seconds".into(), "900".into()),
            ("version".into(), "3".into()),
        ]),
        hmac: BTreeMap::new(),
    }
}

fn run(threads: usize, secs: u64) -> (f64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Arc::new(Store::open(&dir.path().join("bench.db"), StoreOptions::default()).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let (store, stop, count) = (store.clone(), stop.clone(), count.clone());
            std::thread::spawn(move || {
                let mut i = (t as u64) << 32;
                while !stop.load(Ordering::Relaxed) {
                    store.audit(draft(i)).unwrap();
                    count.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        h.join().unwrap();
    }
    let n = count.load(Ordering::Relaxed);
    let size = store.audit_log().size();
    assert_eq!(size, n, "every acknowledged append is in the log");
    (n as f64 / start.elapsed().as_secs_f64(), n)
}

fn main() {
    let secs: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    println!("durable audit appends (synchronous=FULL, WAL), {secs} s each");
    for threads in [1, 8, 64] {
        let (rate, n) = run(threads, secs);
        println!("  {threads:>3} concurrent writers: {rate:>9.0} appends/s ({n} appends)");
    }
}
