//! Prometheus text-format counters. No labels carry secret data: only
//! route templates, status classes and error codes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Default)]
pub struct Metrics {
    pub sealed: AtomicU64,
    pub tls_handshake_failures: AtomicU64,
    pub connections_open: AtomicU64,
    pub checkouts: AtomicU64,
    pub rewrapped: AtomicU64,
    /// SIEM export sinks (`crate::siem`).
    pub siem_jsonl: SiemSinkMetrics,
    pub siem_syslog: SiemSinkMetrics,
    /// (route, status) → count
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// error code → count
    errors: Mutex<BTreeMap<&'static str, u64>>,
}

/// Counters of one SIEM sink; rendered only once the sink is `enabled`.
#[derive(Default)]
pub struct SiemSinkMetrics {
    pub enabled: AtomicBool,
    /// Entries handed to the sink (file written and fsynced, datagram or
    /// frame sent).
    pub delivered: AtomicU64,
    /// Log size minus the sink's cursor, updated every round.
    pub lag: AtomicU64,
    /// Entries that can never be delivered (syslog/UDP: too large).
    pub dropped: AtomicU64,
    /// Failed delivery attempts (each is retried after a back-off).
    pub errors: AtomicU64,
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
        let sinks = [("jsonl", &self.siem_jsonl), ("syslog", &self.siem_syslog)];
        type Pick = fn(&SiemSinkMetrics) -> &AtomicU64;
        let families: [(&str, &str, &str, Pick); 4] = [
            (
                "vaultd_siem_delivered_total",
                "audit entries delivered to the SIEM sink",
                "counter",
                |m| &m.delivered,
            ),
            (
                "vaultd_siem_lag_entries",
                "audit entries not yet delivered to the SIEM sink",
                "gauge",
                |m| &m.lag,
            ),
            (
                "vaultd_siem_dropped_total",
                "audit entries the SIEM sink can never take (skipped)",
                "counter",
                |m| &m.dropped,
            ),
            (
                "vaultd_siem_errors_total",
                "failed SIEM delivery attempts (retried)",
                "counter",
                |m| &m.errors,
            ),
        ];
        for (name, help, kind, pick) in families {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (sink, m) in sinks {
                if m.enabled.load(Ordering::Relaxed) {
                    let v = pick(m).load(Ordering::Relaxed);
                    let _ = writeln!(s, "{name}{{sink=\"{sink}\"}} {v}");
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siem_series_only_for_enabled_sinks() {
        let m = Metrics::default();
        assert!(!m.render().contains("sink=\""));
        m.siem_syslog.enabled.store(true, Ordering::Relaxed);
        m.siem_syslog.lag.store(7, Ordering::Relaxed);
        let r = m.render();
        assert!(
            r.contains("vaultd_siem_lag_entries{sink=\"syslog\"} 7\n"),
            "{r}"
        );
        assert!(
            r.contains("vaultd_siem_dropped_total{sink=\"syslog\"} 0\n"),
            "{r}"
        );
        assert!(!r.contains("sink=\"jsonl\""), "{r}");
    }
}
