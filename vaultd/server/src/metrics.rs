//! Prometheus text-format metrics (names after the Prometheus conventions:
//! `_total` counters, `_seconds` durations, base units). No label carries
//! secret data: only route templates (never a secret's path), status codes,
//! error codes and sink names.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Upper bounds (seconds) of the request latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The requests of one route: by status, and their latency. Lock-free:
/// every request increments a few atomics.
pub struct RouteStats {
    /// Index `status - 100` for statuses 100..=599.
    statuses: Box<[AtomicU64]>,
    /// Non-cumulative counts per bucket of [`LATENCY_BUCKETS`], then +Inf.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Default for RouteStats {
    fn default() -> Self {
        RouteStats {
            statuses: (100..600).map(|_| AtomicU64::new(0)).collect(),
            buckets: Default::default(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

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
    /// Route template → its requests.
    routes: RwLock<HashMap<String, Arc<RouteStats>>>,
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

/// Client certificates, from `AppState::certificate_summary`.
#[derive(Debug, Default, Clone, Copy)]
pub struct CertSummary {
    pub admin_expiry: Option<i64>,
    /// Indexed like `Role::ALL`.
    pub renewal_due: [u64; 6],
}

/// Values read from the store when scraped.
#[derive(Debug, Default, Clone, Copy)]
pub struct Scraped {
    pub open_checkouts: u64,
    pub pending_requests: u64,
    pub rotations_failed: u64,
    pub drifted: u64,
    pub audit_entries: u64,
    /// Seconds since the newest signed checkpoint (None: none yet).
    pub checkpoint_age_secs: Option<u64>,
    /// Unix time the served server certificate expires.
    pub server_cert_expiry: Option<i64>,
    pub certs: CertSummary,
}

impl Metrics {
    fn route(&self, route: &str) -> Arc<RouteStats> {
        if let Some(r) = self
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(route)
        {
            return r.clone();
        }
        self.routes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(route.to_owned())
            .or_default()
            .clone()
    }

    /// One answered request of a route template (`unmatched` for none).
    pub fn request(&self, route: &str, status: u16, elapsed: Duration) {
        let r = self.route(route);
        if let Some(c) = (status as usize)
            .checked_sub(100)
            .and_then(|i| r.statuses.get(i))
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let secs = elapsed.as_secs_f64();
        let b = LATENCY_BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(LATENCY_BUCKETS.len());
        r.buckets[b].fetch_add(1, Ordering::Relaxed);
        r.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        r.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render_routes(&self, s: &mut String) {
        let routes: BTreeMap<String, Arc<RouteStats>> = self
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let _ = writeln!(s, "# HELP vaultd_requests_total API requests by route and status\n# TYPE vaultd_requests_total counter");
        for (route, r) in &routes {
            for (i, c) in r.statuses.iter().enumerate() {
                let n = c.load(Ordering::Relaxed);
                if n > 0 {
                    let status = i + 100;
                    let _ = writeln!(
                        s,
                        "vaultd_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                    );
                }
            }
        }
        let name = "vaultd_request_duration_seconds";
        let _ = writeln!(s, "# HELP {name} API request latency, from the request's arrival to its response (audit write included)\n# TYPE {name} histogram");
        for (route, r) in &routes {
            let mut cumulative = 0;
            for (i, b) in r.buckets.iter().enumerate() {
                cumulative += b.load(Ordering::Relaxed);
                let le = LATENCY_BUCKETS
                    .get(i)
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "+Inf".into());
                let _ = writeln!(
                    s,
                    "{name}_bucket{{route=\"{route}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let sum = r.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(s, "{name}_sum{{route=\"{route}\"}} {sum}");
            let _ = writeln!(s, "{name}_count{{route=\"{route}\"}} {cumulative}");
        }
    }

    /// The gauges read from the store at scrape time.
    fn render_scraped(s: &mut String, v: &Scraped) {
        let g = |s: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        g(
            s,
            "vaultd_checkouts_open",
            "checkouts whose lease has not ended",
            v.open_checkouts,
        );
        g(
            s,
            "vaultd_approval_requests_pending",
            "approval and break-glass requests waiting for custodians",
            v.pending_requests,
        );
        g(
            s,
            "vaultd_rotations_failed",
            "credential rotations that gave up after their tries (the old value in service) and wait for an admin",
            v.rotations_failed,
        );
        g(
            s,
            "vaultd_rotation_drift",
            "secrets whose target refused the current value at the last heartbeat",
            v.drifted,
        );
        g(
            s,
            "vaultd_audit_entries",
            "entries in the audit log",
            v.audit_entries,
        );
        if let Some(age) = v.checkpoint_age_secs {
            g(
                s,
                "vaultd_audit_checkpoint_age_seconds",
                "seconds since the newest signed audit checkpoint",
                age,
            );
        }
        if let Some(t) = v.server_cert_expiry {
            g(
                s,
                "vaultd_server_certificate_expiry_timestamp_seconds",
                "when the served server certificate expires (Unix time; reissued before)",
                t.max(0) as u64,
            );
        }
        // Absent when no admin certificate is valid: alert on absence too.
        if let Some(t) = v.certs.admin_expiry {
            g(
                s,
                "vaultd_admin_certificate_expiry_timestamp_seconds",
                "when the last valid admin certificate expires (Unix time): every admin is locked out then unless one renews",
                t.max(0) as u64,
            );
        }
        let name = "vaultd_client_certificates_renewal_due";
        let _ = writeln!(s, "# HELP {name} valid client certificates in their renewal window that nobody has renewed, by role\n# TYPE {name} gauge");
        for (role, n) in vault_core::policy::Role::ALL
            .iter()
            .zip(v.certs.renewal_due)
        {
            let _ = writeln!(s, "{name}{{role=\"{}\"}} {n}", role.as_str());
        }
    }

    pub fn error(&self, code: &'static str) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(code)
            .or_default() += 1;
    }

    pub fn render(&self, scraped: &Scraped) -> String {
        let mut s = String::new();
        Self::render_scraped(&mut s, scraped);
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
            "TLS handshakes that did not finish (refused, timed out, evicted)",
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
        self.render_routes(&mut s);
        let _ = writeln!(s, "# HELP vaultd_errors_total API refusals and errors by stable code\n# TYPE vaultd_errors_total counter");
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
        assert!(!m.render(&Scraped::default()).contains("sink=\""));
        m.siem_syslog.enabled.store(true, Ordering::Relaxed);
        m.siem_syslog.lag.store(7, Ordering::Relaxed);
        let r = m.render(&Scraped::default());
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

    #[test]
    fn latency_lands_in_cumulative_buckets_per_route() {
        let m = Metrics::default();
        m.request("/v1/x", 200, Duration::from_micros(300));
        m.request("/v1/x", 200, Duration::from_millis(3));
        m.request("/v1/x", 404, Duration::from_secs(20));
        let r = m.render(&Scraped::default());
        let has = |l: &str| assert!(r.lines().any(|x| x == l), "{l} not in\n{r}");
        has("vaultd_requests_total{route=\"/v1/x\",status=\"200\"} 2");
        has("vaultd_requests_total{route=\"/v1/x\",status=\"404\"} 1");
        has("vaultd_request_duration_seconds_bucket{route=\"/v1/x\",le=\"0.0005\"} 1");
        has("vaultd_request_duration_seconds_bucket{route=\"/v1/x\",le=\"0.001\"} 1");
        has("vaultd_request_duration_seconds_bucket{route=\"/v1/x\",le=\"0.005\"} 2");
        has("vaultd_request_duration_seconds_bucket{route=\"/v1/x\",le=\"10\"} 2");
        has("vaultd_request_duration_seconds_bucket{route=\"/v1/x\",le=\"+Inf\"} 3");
        has("vaultd_request_duration_seconds_count{route=\"/v1/x\"} 3");
        has("vaultd_request_duration_seconds_sum{route=\"/v1/x\"} 20.0033");
    }
}
