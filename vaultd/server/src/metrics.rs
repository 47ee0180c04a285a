//! Prometheus text-format counters. No labels carry secret data: only
//! route templates, status classes and error codes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Default)]
pub struct Metrics {
    pub sealed: AtomicU64,
    pub tls_handshake_failures: AtomicU64,
    pub connections_open: AtomicU64,
    pub checkouts: AtomicU64,
    pub rewrapped: AtomicU64,
    /// (route, status) → count
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// error code → count
    errors: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    pub fn request(&self, route: &str, status: u16) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((route.to_owned(), status))
            .or_default() += 1;
    }

    pub fn error(&self, code: &'static str) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(code)
            .or_default() += 1;
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let g = |s: &mut String, name: &str, help: &str, kind: &str, v: u64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        g(
            &mut s,
            "vaultd_sealed",
            "1 if the vault is sealed",
            "gauge",
            self.sealed.load(Ordering::Relaxed),
        );
        g(
            &mut s,
            "vaultd_tls_handshake_failures_total",
            "TLS handshakes refused (bad, expired or foreign client certificates)",
            "counter",
            self.tls_handshake_failures.load(Ordering::Relaxed),
        );
        g(
            &mut s,
            "vaultd_connections_open",
            "open client connections",
            "gauge",
            self.connections_open.load(Ordering::Relaxed),
        );
        g(
            &mut s,
            "vaultd_checkouts_total",
            "successful checkouts",
            "counter",
            self.checkouts.load(Ordering::Relaxed),
        );
        g(
            &mut s,
            "vaultd_keyring_rewrapped_total",
            "data keys rewrapped to the active keyring version",
            "counter",
            self.rewrapped.load(Ordering::Relaxed),
        );
        let _ = writeln!(s, "# HELP vaultd_requests_total API requests by route and status\n# TYPE vaultd_requests_total counter");
        for ((route, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                s,
                "vaultd_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(s, "# HELP vaultd_errors_total API errors by stable code\n# TYPE vaultd_errors_total counter");
        for (code, n) in self.errors.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(s, "vaultd_errors_total{{code=\"{code}\"}} {n}");
        }
        s
    }
}
