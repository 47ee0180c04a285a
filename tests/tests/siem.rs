//! SIEM export end to end: the real daemon feeding a JSON-lines file, a UDP
//! syslog collector and a TCP syslog collector that starts late; cursors
//! survive restarts.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::Value;
use vault_core::audit::entry::Entry;
use vault_core::audit::merkle::leaf_hash;
use vault_e2e::{checkout, free_port, put, req, Appliance, Options};

const DEADLINE: Duration = Duration::from_secs(90);

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Adds an `[audit.siem]` section and restarts the daemon with it.
fn enable_siem(a: &mut Appliance, section: &str) {
    let mut cfg = std::fs::read_to_string(&a.config).unwrap();
    cfg.push_str("\n[audit.siem]\n");
    cfg.push_str(section);
    std::fs::write(&a.config, cfg).unwrap();
    a.restart();
}

/// Every committed audit entry, straight from the database.
fn db_entries(a: &Appliance) -> Vec<(u64, Vec<u8>)> {
    let c = rusqlite::Connection::open(a.db_path()).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    let mut st = c
        .prepare("SELECT idx, entry FROM audit_log ORDER BY idx")
        .unwrap();
    let rows = st
        .query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))
        .unwrap();
    rows.collect::<Result<Vec<_>, _>>().unwrap()
}

fn db_meta(a: &Appliance, key: &str) -> Option<String> {
    let c = rusqlite::Connection::open(a.db_path()).unwrap();
    c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
        r.get::<_, Vec<u8>>(0)
    })
    .ok()
    .map(|v| String::from_utf8(v).unwrap())
}

/// The complete lines of the JSONL file: (index, line).
fn jsonl_lines(p: &Path) -> Vec<(u64, String)> {
    let text = std::fs::read_to_string(p).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            (v["index"].as_u64().unwrap(), l.to_owned())
        })
        .collect()
}

/// Checks the JSONL file holds every entry of the database exactly once
/// (`max_dups` extra copies at most), each with its canonical bytes and
/// leaf hash.
fn assert_jsonl_matches(path: &Path, db: &[(u64, Vec<u8>)], max_dups: usize) {
    let lines = jsonl_lines(path);
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    for (i, line) in &lines {
        *seen.entry(*i).or_default() += 1;
        let bytes = &db
            .get(*i as usize)
            .unwrap_or_else(|| panic!("index {i} is not in the log"))
            .1;
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["leaf_hash"], hex(&leaf_hash(bytes)), "{line}");
        assert!(
            line.contains(std::str::from_utf8(bytes).unwrap()),
            "entry {i} is not the canonical bytes: {line}"
        );
        let want: Value = serde_json::from_slice(bytes).unwrap();
        assert_eq!(v["entry"], want);
    }
    for (i, _) in db {
        assert!(
            seen.contains_key(i),
            "entry {i} missing from the JSONL file"
        );
    }
    let dups: usize = seen.values().map(|n| n - 1).sum();
    assert!(
        dups <= max_dups,
        "{dups} duplicate lines (at most {max_dups} allowed): {seen:?}"
    );
    // In order, apart from a re-sent batch.
    if max_dups == 0 {
        let idx: Vec<u64> = lines.iter().map(|(i, _)| *i).collect();
        assert_eq!(idx, (0..db.len() as u64).collect::<Vec<_>>());
    }
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn metric(a: &Appliance, name: &str, sink: &str) -> Option<u64> {
    let body = req(&a.admin(), Method::GET, "/metrics", None).body;
    let text = String::from_utf8(body.to_vec()).unwrap();
    let prefix = format!("{name}{{sink=\"{sink}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.parse().unwrap())
}

/// A parsed RFC 5424 message.
#[derive(Debug)]
struct Syslog {
    pri: u8,
    timestamp: String,
    app: String,
    msgid: String,
    sd: String,
    msg: Vec<u8>,
}

impl Syslog {
    fn index(&self) -> u64 {
        let s = self.sd.split("index=\"").nth(1).unwrap();
        s[..s.find('"').unwrap()].parse().unwrap()
    }
}

fn parse_5424(m: &[u8]) -> Syslog {
    let text = std::str::from_utf8(m).unwrap();
    assert!(text.starts_with('<'), "{text}");
    let close = text.find('>').unwrap();
    let pri: u8 = text[1..close].parse().unwrap();
    let mut rest = &text[close + 1..];
    let mut fields = Vec::new();
    for _ in 0..6 {
        let sp = rest
            .find(' ')
            .unwrap_or_else(|| panic!("short header: {text}"));
        fields.push(&rest[..sp]);
        rest = &rest[sp + 1..];
    }
    assert_eq!(fields[0], "1", "VERSION: {text}");
    assert!(!fields[2].is_empty(), "HOSTNAME: {text}");
    assert!(
        fields[4].bytes().all(|b| b.is_ascii_digit()),
        "PROCID: {text}"
    );
    // STRUCTURED-DATA: one element, ends at the first unescaped ']'.
    assert!(rest.starts_with("[vaultd@32473 "), "{text}");
    let b = rest.as_bytes();
    let mut i = 1;
    while b[i] != b']' {
        i += if b[i] == b'\\' { 2 } else { 1 };
    }
    let sd = rest[..=i].to_owned();
    assert_eq!(b[i + 1], b' ', "{text}");
    Syslog {
        pri,
        timestamp: fields[1].to_owned(),
        app: fields[3].to_owned(),
        msgid: fields[5].to_owned(),
        sd,
        msg: b[i + 2..].to_vec(),
    }
}

/// Checks one syslog message against the entry it carries.
fn check_syslog(m: &Syslog, db: &[(u64, Vec<u8>)], app: &str) {
    let i = m.index();
    let bytes = &db[i as usize].1;
    assert_eq!(&m.msg, bytes, "MSG of {i} is the canonical entry");
    let e = Entry::parse(bytes).unwrap();
    let sev = match e.outcome {
        vault_core::audit::entry::Outcome::Success => 5,
        vault_core::audit::entry::Outcome::Denied => 4,
        vault_core::audit::entry::Outcome::Error => 3,
    };
    assert_eq!(m.pri, 10 * 8 + sev, "PRI of {i} ({:?})", e.outcome);
    assert_eq!(m.msgid, e.action);
    assert_eq!(m.timestamp, e.time);
    assert_eq!(m.app, app);
    assert!(
        m.sd.contains(&format!(
            "outcome=\"{}\"",
            serde_json::to_value(e.outcome).unwrap().as_str().unwrap()
        )),
        "{}",
        m.sd
    );
}

#[test]
fn jsonl_and_udp_syslog_get_every_entry() {
    let mut a = Appliance::start(Options::default());
    let jsonl: PathBuf = a.dir.path().join("siem").join("audit.jsonl");
    std::fs::create_dir_all(jsonl.parent().unwrap()).unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let udp_addr = udp.local_addr().unwrap();
    let got: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let g = got.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 70_000];
        loop {
            if let Ok((n, _)) = udp.recv_from(&mut buf) {
                g.lock().unwrap().push(buf[..n].to_vec());
            }
        }
    });
    enable_siem(
        &mut a,
        &format!(
            "jsonl_path = \"{}\"\nsyslog_address = \"{udp_addr}\"\nsyslog_app_name = \"vaultd-e2e\"\nbatch_entries = 3\n",
            jsonl.display()
        ),
    );

    let writer = a.issue("writer", "w1");
    let pam = a.issue("pam", "pam01");
    assert_eq!(put(&writer, "svc/db", "s3cr3t-value", false).status, 200);
    assert_eq!(checkout(&pam, "svc/db").status, 200);
    // Denied: pam cannot write.
    assert_eq!(put(&pam, "svc/db", "x", false).status, 403);

    // Delivered while running.
    let n = db_entries(&a).len();
    wait_for("the JSONL file to catch up", || {
        jsonl_lines(&jsonl).len() >= n
    });
    assert!(
        metric(&a, "vaultd_siem_delivered_total", "jsonl").unwrap() >= n as u64,
        "delivered counter"
    );
    assert_eq!(metric(&a, "vaultd_siem_dropped_total", "syslog"), Some(0));

    // A clean stop delivers the last entries (sys.seal) before exiting.
    a.stop();
    let db = db_entries(&a);
    assert_eq!(
        db.last().map(|(_, b)| Entry::parse(b).unwrap().action),
        Some("sys.seal".into())
    );
    assert_jsonl_matches(&jsonl, &db, 0);
    assert!(!std::fs::read_to_string(&jsonl)
        .unwrap()
        .contains("s3cr3t-value"));
    assert_eq!(db_meta(&a, "siem_cursor_jsonl"), Some(db.len().to_string()));

    wait_for("every UDP datagram", || {
        got.lock().unwrap().len() >= db.len()
    });
    let msgs: Vec<Syslog> = got.lock().unwrap().iter().map(|m| parse_5424(m)).collect();
    assert_eq!(msgs.len(), db.len(), "one datagram per entry");
    let mut idx: Vec<u64> = msgs.iter().map(Syslog::index).collect();
    idx.sort_unstable();
    assert_eq!(idx, (0..db.len() as u64).collect::<Vec<_>>());
    for m in &msgs {
        check_syslog(m, &db, "vaultd-e2e");
    }
    assert!(
        msgs.iter()
            .any(|m| m.pri == 84 && m.msgid == "secret.write"),
        "the denied write is a warning"
    );
    assert!(msgs
        .iter()
        .any(|m| m.pri == 85 && m.msgid == "secret.checkout"));
}

/// Octet-counted frames (RFC 6587) from a byte stream.
fn frames(mut d: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(sp) = d.iter().position(|&b| b == b' ') {
        let len: usize = std::str::from_utf8(&d[..sp]).unwrap().parse().unwrap();
        if d.len() < sp + 1 + len {
            break; // incomplete
        }
        out.push(d[sp + 1..sp + 1 + len].to_vec());
        d = &d[sp + 1 + len..];
    }
    out
}

#[test]
fn tcp_collector_down_does_not_slow_requests() {
    let mut a = Appliance::start(Options::default());
    let port = free_port();
    enable_siem(
        &mut a,
        &format!("syslog_address = \"127.0.0.1:{port}\"\nsyslog_protocol = \"tcp\"\n"),
    );
    let writer = a.issue("writer", "w1");

    // The collector is down: requests are not slowed and do not fail.
    for i in 0..10 {
        let t = Instant::now();
        assert_eq!(put(&writer, &format!("svc/{i}"), "v", false).status, 200);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "request {i} took {:?}",
            t.elapsed()
        );
    }
    wait_for("a failed delivery in the metrics", || {
        metric(&a, "vaultd_siem_errors_total", "syslog").unwrap() > 0
    });
    let lag = metric(&a, "vaultd_siem_lag_entries", "syslog").unwrap();
    assert!(lag > 0, "lag {lag}");
    assert_eq!(metric(&a, "vaultd_siem_delivered_total", "syslog"), Some(0));
    assert_eq!(db_meta(&a, "siem_cursor_syslog"), None);

    // The collector comes up: everything arrives, in order.
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let stream: Arc<Mutex<Vec<u8>>> = Arc::default();
    let s = stream.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 65536];
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 {
                    break;
                }
                s.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        }
    });
    let n = db_entries(&a).len();
    wait_for("the TCP collector to catch up", || {
        frames(&stream.lock().unwrap()).len() >= n
    });
    wait_for("lag back to 0", || {
        metric(&a, "vaultd_siem_lag_entries", "syslog") == Some(0)
    });
    a.stop();
    let db = db_entries(&a);
    wait_for("the last frames", || {
        frames(&stream.lock().unwrap()).len() >= db.len()
    });
    let msgs: Vec<Syslog> = frames(&stream.lock().unwrap())
        .iter()
        .map(|f| parse_5424(f))
        .collect();
    let idx: Vec<u64> = msgs.iter().map(Syslog::index).collect();
    assert_eq!(
        idx,
        (0..db.len() as u64).collect::<Vec<_>>(),
        "in order, once"
    );
    for m in &msgs {
        check_syslog(m, &db, "vaultd");
    }
    assert_eq!(
        db_meta(&a, "siem_cursor_syslog"),
        Some(db.len().to_string())
    );
}

#[test]
fn restart_resumes_from_the_cursor() {
    let mut a = Appliance::start(Options::default());
    let jsonl = a.dir.path().join("audit.jsonl");
    let batch = 2;
    enable_siem(
        &mut a,
        &format!(
            "jsonl_path = \"{}\"\nbatch_entries = {batch}\n",
            jsonl.display()
        ),
    );
    let writer = a.issue("writer", "w1");
    assert_eq!(put(&writer, "svc/a", "v", false).status, 200);
    let n = db_entries(&a).len();
    wait_for("the JSONL file to catch up", || {
        jsonl_lines(&jsonl).len() >= n
    });

    // Clean restart: resumes exactly at the cursor, no duplicates.
    a.restart();
    let writer = a.client("w1");
    assert_eq!(put(&writer, "svc/b", "v", false).status, 200);
    a.stop();
    let db = db_entries(&a);
    assert_jsonl_matches(&jsonl, &db, 0);
    assert_eq!(db_meta(&a, "siem_cursor_jsonl"), Some(db.len().to_string()));

    // While stopped the file is rotated away; the next run starts a new one
    // with only the new entries.
    std::fs::rename(&jsonl, a.dir.path().join("audit.jsonl.1")).unwrap();
    a.spawn();
    a.wait_ready();
    for i in 0..5 {
        assert_eq!(put(&writer, &format!("svc/c{i}"), "v", false).status, 200);
    }
    let from = db.len() as u64;
    let n = db_entries(&a).len();
    wait_for("the new JSONL file", || {
        jsonl_lines(&jsonl).len() >= n - from as usize
    });
    let first = jsonl_lines(&jsonl)[0].0;
    assert_eq!(first, from, "resumed at the cursor");

    // kill -9: nothing is lost; at most one batch is sent again.
    a.kill9();
    a.spawn();
    a.wait_ready();
    assert_eq!(put(&writer, "svc/d", "v", false).status, 200);
    a.stop();
    let db = db_entries(&a);
    let old = jsonl_lines(&a.dir.path().join("audit.jsonl.1"));
    let new = jsonl_lines(&jsonl);
    let mut seen = BTreeMap::<u64, usize>::new();
    for (i, _) in old.iter().chain(new.iter()) {
        *seen.entry(*i).or_default() += 1;
    }
    for (i, _) in &db {
        assert!(seen.contains_key(i), "entry {i} lost");
    }
    let dups: usize = seen.values().map(|n| n - 1).sum();
    assert!(dups <= batch, "{dups} duplicates after kill -9");
    assert_eq!(db_meta(&a, "siem_cursor_jsonl"), Some(db.len().to_string()));
}
