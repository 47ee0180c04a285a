//! Issue 14, item 4: `/metrics` for an operator's graphs. Only its own
//! least-privilege identity (role `metrics`), admins and auditors may
//! scrape it; every line parses as Prometheus text; names follow the
//! conventions; labels are route templates and codes, never secret paths;
//! the shipped Grafana dashboard uses only metrics that exist.
//!
//! The parser below follows the text exposition format (version 0.0.4)
//! strictly: `# HELP name text`, `# TYPE name counter|gauge|histogram`, and
//! samples `name{label="value",…} number` where a label value may hold any
//! character, `\\`, `\"` and `\n` escaped. (The `prometheus-parse` crate's
//! regular expressions reject a `}` inside a label value, which the format
//! allows and route templates such as `/v1/secrets/{*path}` contain.)

use std::collections::{BTreeMap, BTreeSet};

use hyper::Method;
use vault_e2e::{checkout, put, req, Appliance, Options};

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Default, Debug)]
struct Exposition {
    help: BTreeMap<String, String>,
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

fn is_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

/// `{a="x",b="y"}` at the start of `s`: the labels and the rest.
fn labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut out = BTreeMap::new();
    let mut rest = s.strip_prefix('{').ok_or("no {")?;
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((out, r));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let key = &rest[..eq];
        if !is_name(key) {
            return Err(format!("bad label name {key:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    c => return Err(format!("bad escape \\{c}")),
                },
                (_, c) => value.push(c),
            }
        };
        if out.insert(key.to_owned(), value).is_some() {
            return Err(format!("label {key} twice"));
        }
        rest = &rest[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

fn parse(text: &str) -> Result<Exposition, String> {
    let mut e = Exposition::default();
    for (n, line) in text.lines().enumerate() {
        let err = |m: String| format!("line {}: {m}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, doc) = rest
                .split_once(' ')
                .ok_or_else(|| err("HELP without text".into()))?;
            if !is_name(name) || e.help.insert(name.into(), doc.into()).is_some() {
                return Err(err("bad or repeated HELP".into()));
            }
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| err("TYPE without kind".into()))?;
            if !is_name(name)
                || !matches!(
                    kind,
                    "counter" | "gauge" | "histogram" | "summary" | "untyped"
                )
            {
                return Err(err("bad TYPE".into()));
            }
            if e.types.insert(name.into(), kind.into()).is_some() {
                return Err(err("repeated TYPE".into()));
            }
        } else if line.starts_with('#') || line.is_empty() {
            return Err(err("unexpected comment or empty line".into()));
        } else {
            let name_end = line
                .find(['{', ' '])
                .ok_or_else(|| err("no value".into()))?;
            let name = &line[..name_end];
            if !is_name(name) {
                return Err(err("bad metric name".into()));
            }
            let (labels, rest) = if line[name_end..].starts_with('{') {
                labels(&line[name_end..]).map_err(err)?
            } else {
                (BTreeMap::new(), &line[name_end..])
            };
            let v = rest
                .strip_prefix(' ')
                .ok_or_else(|| err("no space before the value".into()))?;
            let value = match v {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse::<f64>().map_err(|x| err(format!("value: {x}")))?,
            };
            e.samples.push(Sample {
                name: name.into(),
                labels,
                value,
            });
        }
    }
    Ok(e)
}

/// The family a sample belongs to (a histogram's `_bucket`, `_sum`,
/// `_count` series are its family's).
fn family<'a>(e: &Exposition, name: &'a str) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(f) = name.strip_suffix(suffix) {
            if e.types.get(f).is_some_and(|t| t == "histogram") {
                return f;
            }
        }
    }
    name
}

fn scrape(c: &vault_client::Client) -> String {
    let r = req(c, Method::GET, "/metrics", None);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    String::from_utf8(r.body.to_vec()).unwrap()
}

#[test]
fn metrics_parse_follow_the_conventions_and_need_their_own_identity() {
    let a = Appliance::start(Options::default());
    let writer = a.issue("writer", "w1");
    let pam = a.issue("pam", "p1");
    let prom = a.issue("metrics", "prom");
    assert_eq!(
        put(&writer, "svc/very-secret-path", "alpha", false).status,
        200
    );
    for _ in 0..3 {
        assert_eq!(checkout(&pam, "svc/very-secret-path").status, 200);
    }
    assert_eq!(checkout(&writer, "svc/very-secret-path").status, 403);
    // Least privilege both ways: pam and writers may not scrape, and the
    // scraper may do nothing else.
    for c in [&pam, &writer] {
        assert_eq!(req(c, Method::GET, "/metrics", None).status, 403);
    }
    for (m, p) in [
        (Method::GET, "/v1/secrets"),
        (Method::GET, "/v1/secrets/svc/very-secret-path"),
        (Method::GET, "/v1/audit/entries"),
        (Method::GET, "/v1/checkouts"),
    ] {
        assert_eq!(req(&prom, m, p, None).status, 403, "{p}");
    }
    // A signed checkpoint, so that its age is graphed.
    let auditor = a.issue("auditor", "aud1");
    assert_eq!(
        req(&auditor, Method::POST, "/v1/audit/checkpoint", None).status,
        200
    );
    let text = scrape(&prom);
    assert_eq!(scrape(&a.admin()).lines().next(), text.lines().next());

    let e = parse(&text).unwrap_or_else(|m| panic!("{m}\n{text}"));
    // Conventions: vaultd_ prefix, snake case, a HELP and a TYPE per
    // family, counters end in _total, durations in _seconds.
    let mut families = BTreeSet::new();
    for x in &e.samples {
        let f = family(&e, &x.name);
        assert!(
            f.starts_with("vaultd_") && f.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{f}"
        );
        let kind = e.types.get(f).unwrap_or_else(|| panic!("no TYPE for {f}"));
        assert!(e.help.contains_key(f), "no HELP for {f}");
        if kind == "counter" {
            assert!(f.ends_with("_total"), "counter {f}");
        }
        if f.contains("duration") {
            assert!(f.ends_with("_seconds"), "{f}");
        }
        families.insert(f.to_owned());
    }
    // No label is a secret's path.
    assert!(!text.contains("very-secret-path"), "{text}");
    let get = |name: &str, label: Option<(&str, &str)>| -> Vec<&Sample> {
        e.samples
            .iter()
            .filter(|x| {
                x.name == name
                    && label.is_none_or(|(k, v)| x.labels.get(k).map(String::as_str) == Some(v))
            })
            .collect()
    };
    let one = |name: &str, label: Option<(&str, &str)>| -> f64 {
        let v = get(name, label);
        assert_eq!(v.len(), 1, "{name} {label:?}: {v:?}");
        v[0].value
    };
    assert_eq!(one("vaultd_checkouts_open", None), 3.0);
    assert_eq!(one("vaultd_sealed", None), 0.0);
    assert_eq!(one("vaultd_approval_requests_pending", None), 0.0);
    assert!(one("vaultd_audit_entries", None) > 5.0);
    assert!(one("vaultd_audit_checkpoint_age_seconds", None) >= 0.0);
    assert!(one("vaultd_errors_total", Some(("code", "forbidden"))) >= 3.0);
    // The checkout route's latency histogram: cumulative buckets ending at
    // +Inf with its count.
    let route = Some(("route", "/v1/secrets/{*path}"));
    let buckets: Vec<(f64, f64)> = get("vaultd_request_duration_seconds_bucket", route)
        .iter()
        .map(|b| {
            let le = b.labels["le"].as_str();
            (
                if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                },
                b.value,
            )
        })
        .collect();
    assert!(buckets.len() >= 10, "{buckets:?}");
    assert!(buckets
        .windows(2)
        .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
    let (le, n) = *buckets.last().unwrap();
    assert!(le.is_infinite() && n >= 5.0, "{buckets:?}");
    assert_eq!(one("vaultd_request_duration_seconds_count", route), n);
    assert!(one("vaultd_request_duration_seconds_sum", route) > 0.0);
    let by_status: f64 = get("vaultd_requests_total", route)
        .iter()
        .map(|x| x.value)
        .sum();
    assert!(by_status >= n, "{by_status} < {n}");

    // The Grafana dashboard asks only for families that exist.
    let dash: serde_json::Value =
        serde_json::from_str(include_str!("../../docs/grafana-dashboard.json")).unwrap();
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            exprs.push(t["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(exprs.len() >= 10);
    let known: BTreeSet<String> = families
        .iter()
        .flat_map(|f| {
            [
                f.clone(),
                format!("{f}_bucket"),
                format!("{f}_sum"),
                format!("{f}_count"),
            ]
        })
        .collect();
    for e in &exprs {
        let names: Vec<&str> = e
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("vaultd_"))
            .collect();
        assert!(!names.is_empty(), "{e}");
        for n in names {
            // The SIEM lag exists only while a sink is configured.
            if n == "vaultd_siem_lag_entries" {
                continue;
            }
            assert!(
                known.contains(n),
                "the dashboard uses {n}, which /metrics does not have"
            );
        }
    }
}
