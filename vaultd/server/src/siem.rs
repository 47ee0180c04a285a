//! SIEM export of the audit log: JSON lines to a file and RFC 5424 syslog
//! over UDP or TCP (RFC 6587 octet counting).
//!
//! Sinks are fed from the **durable** log, never from the request path: a
//! request commits its entry and returns; one background thread per sink
//! reads committed entries in batches of `audit.siem.batch_entries` (the
//! memory bound), delivers them in order and then records its cursor (the
//! index of the next entry to deliver) in the store's meta table
//! (`siem_cursor_jsonl`, `siem_cursor_syslog`). After a restart a sink
//! resumes from its cursor.
//!
//! Delivery is at least once: a crash between delivering a batch and
//! recording the cursor re-sends that batch. A sink that fails (file not
//! writable, collector down) retries the same entries with a back-off of
//! 1 s, 2 s, 4 s ... 30 s; nothing is skipped while a sink is down. The
//! only entries ever skipped are syslog/UDP messages larger than
//! [`MAX_UDP_MESSAGE`] (counted in `vaultd_siem_dropped_total`).
//!
//! At shutdown ([`SiemHandle`] dropped at the end of [`crate::run`]) each
//! sink finishes its batch, delivers what is left if it can within
//! [`DRAIN_DEADLINE`], and records its cursor. See `docs/SIEM.md`.

use std::fs::File;
use std::io::{self, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use vault_core::audit::entry::{Entry, Outcome};
use vault_core::audit::merkle::leaf_hash;
use vault_store::WriteOp;

use crate::config::SiemConfig;
use crate::metrics::SiemSinkMetrics;
use crate::state::AppState;

/// Pause between polls of an idle log.
const POLL: Duration = Duration::from_millis(200);
/// Back-off after a failed delivery: doubles from `BACKOFF_MIN` to `BACKOFF_MAX`.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// While a sink keeps failing, at most one warning this often.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// How long shutdown waits for the sinks to deliver what is left.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(5);
/// Largest syslog message sent in one UDP datagram; larger ones are dropped.
pub const MAX_UDP_MESSAGE: usize = 65_000;
/// Facility authpriv (10).
const FACILITY: u8 = 10;
/// Private enterprise number in the structured-data id (`vaultd@32473`;
/// 32473 is the documentation PEN of RFC 5612).
const SD_ID: &str = "vaultd@32473";
const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const TCP_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The meta key holding a sink's cursor (decimal index of the next entry).
pub fn cursor_key(sink: &str) -> String {
    format!("siem_cursor_{sink}")
}

/// Stop signal shared with the sink threads; sleeping threads wake on it.
#[derive(Default)]
struct Stop {
    set: Mutex<bool>,
    cv: Condvar,
}

impl Stop {
    fn is_set(&self) -> bool {
        *self.set.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn trigger(&self) {
        *self.set.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cv.notify_all();
    }

    /// Sleeps `d` or until stopped.
    fn sleep(&self, d: Duration) {
        let g = self.set.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self
            .cv
            .wait_timeout_while(g, d, |stopped| !*stopped)
            .unwrap_or_else(|e| e.into_inner());
    }
}

/// The running sinks. Dropping it stops them: each delivers what is left
/// (bounded by [`DRAIN_DEADLINE`]) and records its cursor.
pub struct SiemHandle {
    stop: Arc<Stop>,
    done: mpsc::Receiver<()>,
    threads: usize,
}

impl Drop for SiemHandle {
    fn drop(&mut self) {
        if self.threads == 0 {
            return;
        }
        self.stop.trigger();
        let deadline = Instant::now() + DRAIN_DEADLINE + Duration::from_secs(1);
        for _ in 0..self.threads {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.done.recv_timeout(left).is_err() {
                tracing::warn!("SIEM export did not stop in time; undelivered entries will be sent after the restart");
                return;
            }
        }
    }
}

/// Starts one background thread per sink configured in `[audit.siem]`.
pub fn spawn(st: Arc<AppState>) -> SiemHandle {
    let stop = Arc::new(Stop::default());
    let (tx, done) = mpsc::channel();
    let mut threads = 0;
    if let Some(cfg) = st.config.audit.siem.clone() {
        let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
        if let Some(path) = &cfg.jsonl_path {
            sinks.push(Box::new(JsonlSink {
                path: path.clone(),
                file: None,
            }));
        }
        if let Some(addr) = cfg.syslog_addr() {
            sinks.push(Box::new(SyslogSink::new(&cfg, addr)));
        }
        for sink in sinks {
            let (st, stop, tx) = (st.clone(), stop.clone(), tx.clone());
            let batch = cfg.batch_entries.max(1) as u64;
            let spawned = std::thread::Builder::new()
                .name(format!("siem-{}", sink.name()))
                .spawn(move || {
                    run_sink(&st, sink, batch, &stop);
                    let _ = tx.send(());
                });
            match spawned {
                Ok(_) => threads += 1,
                Err(e) => tracing::error!(error = %e, "cannot start a SIEM export thread"),
            }
        }
    }
    SiemHandle {
        stop,
        done,
        threads,
    }
}

/// One committed entry, ready to format.
struct Record {
    index: u64,
    bytes: Vec<u8>,
    /// None if the stored bytes are not a valid entry (exported anyway).
    entry: Result<Entry, String>,
    leaf_hash: String,
}

impl Record {
    fn new(index: u64, bytes: Vec<u8>) -> Record {
        let entry = Entry::parse(&bytes).map_err(|e| e.to_string());
        let leaf_hash = hex::encode(leaf_hash(&bytes));
        Record {
            index,
            bytes,
            entry,
            leaf_hash,
        }
    }
}

/// What a delivery attempt did.
struct Delivery {
    /// Leading entries of the batch that are done (delivered or dropped).
    done: usize,
    /// Why the rest was not delivered.
    error: Option<io::Error>,
}

trait Sink: Send {
    /// "jsonl" or "syslog": the metric label and cursor key suffix.
    fn name(&self) -> &'static str;
    /// Delivers `batch` in order; counts delivered/dropped entries in `m`.
    fn deliver(&mut self, batch: &[Record], m: &SiemSinkMetrics) -> Delivery;
}

fn sink_metrics<'a>(st: &'a AppState, name: &str) -> &'a SiemSinkMetrics {
    if name == "jsonl" {
        &st.metrics.siem_jsonl
    } else {
        &st.metrics.siem_syslog
    }
}

/// The sink's cursor (0 if it never ran); None if stopped while the store
/// was unreadable.
fn load_cursor(st: &AppState, key: &str, stop: &Stop) -> Option<u64> {
    let mut warned = false;
    loop {
        match st.store.get_meta(key) {
            Ok(None) => return Some(0),
            Ok(Some(v)) => {
                let n = std::str::from_utf8(&v).ok().and_then(|s| s.parse().ok());
                if n.is_none() {
                    tracing::error!(
                        key,
                        "SIEM cursor is not a decimal index; exporting from the start of the log"
                    );
                }
                return Some(n.unwrap_or(0));
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(key, error = %e, "cannot read the SIEM cursor; retrying");
                    warned = true;
                }
                if stop.is_set() {
                    return None;
                }
                stop.sleep(BACKOFF_MIN);
            }
        }
    }
}

fn save_cursor(st: &AppState, key: &str, cursor: u64) -> bool {
    match st.store.write(WriteOp::SetMeta {
        key: key.to_owned(),
        value: cursor.to_string().into_bytes(),
    }) {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(key, cursor, error = %e, "cannot record the SIEM cursor (will retry)");
            false
        }
    }
}

/// Rate-limited reporting of a failing sink.
struct Trouble {
    failing_since: Option<Instant>,
    last_warned: Option<Instant>,
    attempts: u64,
}

impl Trouble {
    fn failed(&mut self, sink: &str, cursor: u64, e: &dyn std::fmt::Display) {
        let now = Instant::now();
        self.attempts += 1;
        self.failing_since.get_or_insert(now);
        if self
            .last_warned
            .is_none_or(|t| now.duration_since(t) >= WARN_EVERY)
        {
            self.last_warned = Some(now);
            tracing::warn!(sink, cursor, attempts = self.attempts, error = %e,
                "SIEM delivery failing; retrying with back-off (no entry is skipped)");
        }
    }

    fn ok(&mut self, sink: &str, cursor: u64) {
        if let Some(since) = self.failing_since.take() {
            tracing::info!(
                sink,
                cursor,
                attempts = self.attempts,
                down_secs = since.elapsed().as_secs(),
                "SIEM delivery recovered"
            );
        }
        self.last_warned = None;
        self.attempts = 0;
    }
}

fn run_sink(st: &AppState, mut sink: Box<dyn Sink>, batch: u64, stop: &Stop) {
    let name = sink.name();
    let key = cursor_key(name);
    let m = sink_metrics(st, name);
    m.enabled.store(true, Ordering::Relaxed);
    let Some(mut cursor) = load_cursor(st, &key, stop) else {
        return;
    };
    let size = st.store.audit_log().size();
    if cursor > size {
        tracing::warn!(
            sink = name,
            cursor,
            size,
            "SIEM cursor is beyond the end of the audit log (restored database?); exporting new entries only"
        );
        cursor = size;
    }
    let mut saved = cursor;
    tracing::info!(sink = name, cursor, "SIEM export started");
    let mut backoff = BACKOFF_MIN;
    let mut trouble = Trouble {
        failing_since: None,
        last_warned: None,
        attempts: 0,
    };
    let mut drain_until: Option<Instant> = None;
    loop {
        if drain_until.is_none() && stop.is_set() {
            drain_until = Some(Instant::now() + DRAIN_DEADLINE);
        }
        if drain_until.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let size = st.store.audit_log().size();
        m.lag.store(size.saturating_sub(cursor), Ordering::Relaxed);
        if cursor >= size {
            if drain_until.is_some() {
                break;
            }
            stop.sleep(POLL);
            continue;
        }
        let end = size.min(cursor.saturating_add(batch));
        let result = match st.store.audit_entries(cursor, end) {
            Ok(rows) => {
                // The log is append-only and [cursor, size) is committed.
                let contiguous = rows.len() as u64 == end - cursor
                    && rows
                        .iter()
                        .enumerate()
                        .all(|(i, (idx, _))| *idx == cursor + i as u64);
                if contiguous {
                    let records: Vec<Record> =
                        rows.into_iter().map(|(i, b)| Record::new(i, b)).collect();
                    sink.deliver(&records, m)
                } else {
                    Delivery {
                        done: 0,
                        error: Some(io::Error::other(format!(
                            "audit entries [{cursor}, {end}) are not all readable"
                        ))),
                    }
                }
            }
            Err(e) => Delivery {
                done: 0,
                error: Some(io::Error::other(format!("reading the audit log: {e}"))),
            },
        };
        if result.done > 0 {
            cursor += result.done as u64;
            if save_cursor(st, &key, cursor) {
                saved = cursor;
            }
            m.lag.store(
                st.store.audit_log().size().saturating_sub(cursor),
                Ordering::Relaxed,
            );
        }
        match result.error {
            None => {
                trouble.ok(name, cursor);
                backoff = BACKOFF_MIN;
            }
            Some(e) => {
                m.errors.fetch_add(1, Ordering::Relaxed);
                trouble.failed(name, cursor, &e);
                if drain_until.is_some() {
                    break;
                }
                stop.sleep(backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
    if cursor != saved {
        save_cursor(st, &key, cursor);
    }
    tracing::info!(sink = name, cursor, "SIEM export stopped");
}

// ---------------------------------------------------------------- JSONL

struct JsonlSink {
    path: PathBuf,
    file: Option<File>,
}

/// One JSON line (with its newline): index, the entry object (its canonical
/// bytes verbatim), leaf hash.
fn jsonl_line(r: &Record) -> Vec<u8> {
    let mut out = Vec::with_capacity(r.bytes.len() + 128);
    match &r.entry {
        Ok(_) => {
            out.extend_from_slice(format!("{{\"index\":{},\"entry\":", r.index).as_bytes());
            out.extend_from_slice(&r.bytes);
            out.extend_from_slice(format!(",\"leaf_hash\":\"{}\"}}", r.leaf_hash).as_bytes());
        }
        Err(why) => {
            let v = serde_json::json!({
                "index": r.index,
                "entry": null,
                "entry_hex": hex::encode(&r.bytes),
                "leaf_hash": r.leaf_hash,
                "malformed": why,
            });
            out.extend_from_slice(v.to_string().as_bytes());
        }
    }
    out.push(b'\n');
    out
}

impl JsonlSink {
    /// The open file, reopened if the path was rotated away.
    fn file(&mut self) -> io::Result<&mut File> {
        use std::os::unix::fs::MetadataExt as _;
        if let Some(f) = &self.file {
            let same = match (f.metadata(), std::fs::metadata(&self.path)) {
                (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                _ => false,
            };
            if !same {
                self.file = None;
            }
        }
        if self.file.is_none() {
            use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
            let f = std::fs::OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .mode(0o640)
                .open(&self.path)?;
            // A torn last line (crash mid-write) must not swallow the next one.
            let len = f.metadata()?.len();
            if len > 0 {
                let mut last = [0u8; 1];
                f.read_exact_at(&mut last, len - 1)?;
                if last[0] != b'\n' {
                    (&f).write_all(b"\n")?;
                }
            }
            self.file = Some(f);
        }
        Ok(self.file.as_mut().expect("opened above"))
    }
}

impl Sink for JsonlSink {
    fn name(&self) -> &'static str {
        "jsonl"
    }

    fn deliver(&mut self, batch: &[Record], m: &SiemSinkMetrics) -> Delivery {
        let mut buf = Vec::new();
        for r in batch {
            buf.extend_from_slice(&jsonl_line(r));
        }
        let result = (|| {
            let f = self.file()?;
            let before = f.metadata()?.len();
            let r = f.write_all(&buf).and_then(|()| f.sync_data());
            if r.is_err() {
                // Take back a partial batch so the retry does not follow a torn line.
                let _ = f.set_len(before);
            }
            r
        })();
        match result {
            Ok(()) => {
                m.delivered.fetch_add(batch.len() as u64, Ordering::Relaxed);
                Delivery {
                    done: batch.len(),
                    error: None,
                }
            }
            Err(e) => {
                self.file = None;
                Delivery {
                    done: 0,
                    error: Some(io::Error::new(
                        e.kind(),
                        format!("{}: {e}", self.path.display()),
                    )),
                }
            }
        }
    }
}

// ---------------------------------------------------------------- syslog

enum Transport {
    Udp(Option<UdpSocket>),
    Tcp(Option<TcpStream>),
}

struct SyslogSink {
    addr: SocketAddr,
    transport: Transport,
    app_name: String,
    hostname: String,
    procid: String,
}

/// The machine's host name if it is a valid RFC 5424 HOSTNAME, else "-".
fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .find(|h| !h.is_empty() && h.len() <= 255 && h.bytes().all(|b| (33..=126).contains(&b)))
        .unwrap_or_else(|| "-".into())
}

/// Escapes an SD-PARAM value (RFC 5424 section 6.3.3): `"`, `\` and `]`.
pub fn sd_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The entry's time if it is a valid RFC 5424 TIMESTAMP, else "-".
fn syslog_timestamp(t: &str) -> &str {
    use time::format_description::well_known::Rfc3339;
    let frac_ok = match t.find('.') {
        None => true,
        Some(i) => {
            t[i + 1..]
                .bytes()
                .take_while(|b| b.is_ascii_digit())
                .count()
                <= 6
        }
    };
    if frac_ok && time::OffsetDateTime::parse(t, &Rfc3339).is_ok() {
        t
    } else {
        "-"
    }
}

/// MSGID: the action if it is 1..=32 printable ASCII characters, else "-".
fn msgid(action: &str) -> &str {
    if !action.is_empty() && action.len() <= 32 && action.bytes().all(|b| (33..=126).contains(&b)) {
        action
    } else {
        "-"
    }
}

/// One RFC 5424 message (no framing, no trailing newline).
fn format_message(r: &Record, app_name: &str, hostname: &str, procid: &str) -> Vec<u8> {
    let mut out;
    match &r.entry {
        Ok(e) => {
            let (severity, outcome) = match e.outcome {
                Outcome::Success => (5, "success"),
                Outcome::Denied => (4, "denied"),
                Outcome::Error => (3, "error"),
            };
            out = format!(
                "<{}>1 {} {hostname} {app_name} {procid} {} [{SD_ID} index=\"{}\" outcome=\"{outcome}\" principal=\"{}\"] ",
                FACILITY * 8 + severity,
                syslog_timestamp(&e.time),
                msgid(&e.action),
                r.index,
                sd_escape(&e.principal),
            )
            .into_bytes();
            out.extend_from_slice(&r.bytes);
        }
        Err(why) => {
            out = format!(
                "<{}>1 - {hostname} {app_name} {procid} - [{SD_ID} index=\"{}\" outcome=\"malformed\"] ",
                FACILITY * 8 + 3,
                r.index,
            )
            .into_bytes();
            let v = serde_json::json!({
                "index": r.index,
                "malformed": why,
                "entry_hex": hex::encode(&r.bytes),
                "leaf_hash": r.leaf_hash,
            });
            out.extend_from_slice(v.to_string().as_bytes());
        }
    }
    out
}

impl SyslogSink {
    fn new(cfg: &SiemConfig, addr: SocketAddr) -> SyslogSink {
        SyslogSink {
            addr,
            transport: if cfg.syslog_protocol == "tcp" {
                Transport::Tcp(None)
            } else {
                Transport::Udp(None)
            },
            app_name: cfg.syslog_app_name.clone(),
            hostname: hostname(),
            procid: std::process::id().to_string(),
        }
    }

    fn deliver_udp(
        &self,
        sock: &mut Option<UdpSocket>,
        batch: &[Record],
        m: &SiemSinkMetrics,
    ) -> Delivery {
        if sock.is_none() {
            let local: SocketAddr = if self.addr.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            match UdpSocket::bind(local) {
                Ok(s) => *sock = Some(s),
                Err(e) => {
                    return Delivery {
                        done: 0,
                        error: Some(e),
                    }
                }
            }
        }
        let s = sock.as_ref().expect("bound above");
        for (i, r) in batch.iter().enumerate() {
            let msg = format_message(r, &self.app_name, &self.hostname, &self.procid);
            if msg.len() > MAX_UDP_MESSAGE {
                m.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    index = r.index,
                    bytes = msg.len(),
                    "audit entry too large for a syslog UDP datagram; dropped from the syslog export"
                );
                continue;
            }
            if let Err(e) = s.send_to(&msg, self.addr) {
                *sock = None;
                return Delivery {
                    done: i,
                    error: Some(io::Error::new(e.kind(), format!("udp {}: {e}", self.addr))),
                };
            }
            m.delivered.fetch_add(1, Ordering::Relaxed);
        }
        Delivery {
            done: batch.len(),
            error: None,
        }
    }

    fn deliver_tcp(
        &self,
        conn: &mut Option<TcpStream>,
        batch: &[Record],
        m: &SiemSinkMetrics,
    ) -> Delivery {
        // A collector that went away since the last batch: reconnect first
        // rather than write into a dead connection's buffer.
        if let Some(s) = conn.as_ref() {
            if !tcp_alive(s) {
                *conn = None;
            }
        }
        let mut buf = Vec::new();
        for r in batch {
            let msg = format_message(r, &self.app_name, &self.hostname, &self.procid);
            buf.extend_from_slice(format!("{} ", msg.len()).as_bytes());
            buf.extend_from_slice(&msg);
        }
        let result = (|| {
            if conn.is_none() {
                let s = TcpStream::connect_timeout(&self.addr, TCP_CONNECT_TIMEOUT)?;
                s.set_write_timeout(Some(TCP_WRITE_TIMEOUT))?;
                let _ = s.set_nodelay(true);
                *conn = Some(s);
            }
            let s = conn.as_mut().expect("connected above");
            s.write_all(&buf)?;
            s.flush()
        })();
        match result {
            Ok(()) => {
                m.delivered.fetch_add(batch.len() as u64, Ordering::Relaxed);
                Delivery {
                    done: batch.len(),
                    error: None,
                }
            }
            Err(e) => {
                *conn = None;
                Delivery {
                    done: 0,
                    error: Some(io::Error::new(e.kind(), format!("tcp {}: {e}", self.addr))),
                }
            }
        }
    }
}

/// False if the peer closed or reset the connection (collectors never send).
fn tcp_alive(s: &TcpStream) -> bool {
    if s.set_nonblocking(true).is_err() {
        return false;
    }
    let mut b = [0u8; 1];
    let alive = match s.peek(&mut b) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
    };
    s.set_nonblocking(false).is_ok() && alive
}

impl Sink for SyslogSink {
    fn name(&self) -> &'static str {
        "syslog"
    }

    fn deliver(&mut self, batch: &[Record], m: &SiemSinkMetrics) -> Delivery {
        let mut transport = std::mem::replace(&mut self.transport, Transport::Udp(None));
        let d = match &mut transport {
            Transport::Udp(sock) => self.deliver_udp(sock, batch, m),
            Transport::Tcp(conn) => self.deliver_tcp(conn, batch, m),
        };
        self.transport = transport;
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use vault_core::audit::entry::Draft;

    fn rfc5424(index: u64, bytes: &[u8], app: &str, host: &str, pid: &str) -> Vec<u8> {
        format_message(&Record::new(index, bytes.to_vec()), app, host, pid)
    }

    fn entry(action: &str, principal: &str, outcome: Outcome) -> Vec<u8> {
        Draft {
            time: "2026-01-02T03:04:05Z".into(),
            request_id: "r1".into(),
            principal: principal.into(),
            role: "pam".into(),
            fingerprint: String::new(),
            action: action.into(),
            target: "db/root".into(),
            outcome,
            error: String::new(),
            details: BTreeMap::new(),
            hmac: BTreeMap::new(),
        }
        .finalize(7, None)
    }

    #[test]
    fn rfc5424_message() {
        let b = entry("secret.checkout", "pam\"01]\\", Outcome::Denied);
        let m = String::from_utf8(rfc5424(7, &b, "vaultd", "host1", "42")).unwrap();
        let want = format!(
            "<84>1 2026-01-02T03:04:05Z host1 vaultd 42 secret.checkout [vaultd@32473 index=\"7\" outcome=\"denied\" principal=\"pam\\\"01\\]\\\\\"] {}",
            String::from_utf8(b.clone()).unwrap()
        );
        assert_eq!(m, want);
        let ok = rfc5424(7, &entry("a", "p", Outcome::Success), "v", "-", "1");
        assert!(ok.starts_with(b"<85>1 "));
        let err = rfc5424(7, &entry("a", "p", Outcome::Error), "v", "-", "1");
        assert!(err.starts_with(b"<83>1 "));
        let long = rfc5424(
            7,
            &entry(&"x".repeat(33), "p", Outcome::Error),
            "v",
            "-",
            "1",
        );
        assert!(String::from_utf8(long).unwrap().contains(" 1 - [vaultd@"));
    }

    #[test]
    fn timestamps_and_msgids() {
        assert_eq!(
            syslog_timestamp("2026-01-02T03:04:05.123456Z"),
            "2026-01-02T03:04:05.123456Z"
        );
        assert_eq!(syslog_timestamp("2026-01-02T03:04:05.1234567Z"), "-");
        assert_eq!(syslog_timestamp("yesterday"), "-");
        assert_eq!(msgid("secret.write"), "secret.write");
        assert_eq!(msgid("has space"), "-");
        assert_eq!(msgid(""), "-");
    }

    #[test]
    fn jsonl_line_embeds_canonical_bytes() {
        let b = entry("secret.write", "w1", Outcome::Success);
        let line = jsonl_line(&Record::new(7, b.clone()));
        assert_eq!(*line.last().unwrap(), b'\n');
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["index"], 7);
        assert_eq!(v["entry"]["action"], "secret.write");
        assert_eq!(v["leaf_hash"], hex::encode(leaf_hash(&b)));
        // The canonical bytes verbatim, so the leaf hash can be recomputed.
        let text = String::from_utf8(line.clone()).unwrap();
        assert!(text.contains(std::str::from_utf8(&b).unwrap()), "{text}");

        let bad = jsonl_line(&Record::new(8, b"\xffnot json".to_vec()));
        let v: serde_json::Value = serde_json::from_slice(&bad).unwrap();
        assert!(v["entry"].is_null());
        assert_eq!(v["entry_hex"], hex::encode(b"\xffnot json"));
    }

    #[test]
    fn jsonl_sink_appends_and_repairs_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        std::fs::write(&path, b"{\"torn").unwrap();
        let mut s = JsonlSink {
            path: path.clone(),
            file: None,
        };
        let m = SiemSinkMetrics::default();
        let recs: Vec<Record> = (0..3)
            .map(|i| Record::new(i, entry("a", "p", Outcome::Success)))
            .collect();
        let d = s.deliver(&recs, &m);
        assert!(d.error.is_none());
        assert_eq!(d.done, 3);
        // Rotated away: a new file is started.
        std::fs::rename(&path, dir.path().join("a.jsonl.1")).unwrap();
        assert_eq!(s.deliver(&recs[..1], &m).done, 1);
        assert_eq!(m.delivered.load(Ordering::Relaxed), 4);
        let old = std::fs::read_to_string(dir.path().join("a.jsonl.1")).unwrap();
        assert_eq!(old.lines().count(), 4);
        assert!(old.starts_with("{\"torn\n{\"index\":0,"));
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
    }
}
