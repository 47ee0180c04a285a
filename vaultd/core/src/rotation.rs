//! A secret's rotation policy (what changes its value on the target, when,
//! and what new values look like) and the password generator. The daemon
//! drives the rotation; `vault-connect` does the target side.
//!
//! A policy is part of the control plane: the new values go wherever its
//! connector points, so setting one is a governance change once the
//! custodian quorum exists. It is parsed strictly (unknown fields refused)
//! and written back in one canonical form.

use rand::seq::SliceRandom as _;
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use crate::policy::validate_path;
use crate::secret::SecretBytes;

/// What rotates a value on its target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Connector {
    /// A PostgreSQL role's password, changed with the connector role whose
    /// password is the vaulted secret `credential` (use-only: no principal
    /// checks it out).
    Postgres {
        host: String,
        port: u16,
        dbname: String,
        role: String,
        connector_user: String,
        credential: String,
    },
    /// A program that receives the value on stdin (`PROGRAM ARGS…
    /// apply|verify|end-sessions`).
    Exec {
        program: String,
        #[serde(default)]
        args: Vec<String>,
    },
}

/// When a rotation happens, besides `POST /v1/rotation/{path}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// When a checkout of the secret is checked in.
    Checkin,
    /// When a checkout's lease ends at its TTL (or is revoked).
    Expiry,
    /// One-time passwords: a value is handed out once. A checkout of a
    /// value that was handed out before, or during a rotation, is refused
    /// (409 `one_time_used` / `rotation_in_progress`, with `Retry-After`),
    /// and every end of a lease (check-in, expiry, revocation) rotates.
    OneTime,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Checkin => "checkin",
            Trigger::Expiry => "expiry",
            Trigger::OneTime => "one_time",
        }
    }
}

/// Character classes of generated passwords.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Lower,
    Upper,
    Digit,
    Symbol,
}

impl Class {
    fn chars(self) -> &'static str {
        match self {
            Class::Lower => "abcdefghijklmnopqrstuvwxyz",
            Class::Upper => "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
            Class::Digit => "0123456789",
            Class::Symbol => "!#%+,-.:=?@^_~",
        }
    }
}

/// What generated values look like.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordPolicy {
    #[serde(default = "default_length")]
    pub length: usize,
    /// Each class appears at least once.
    #[serde(default = "default_classes")]
    pub classes: Vec<Class>,
    /// Characters never used.
    #[serde(default)]
    pub exclude: String,
}

fn default_length() -> usize {
    32
}

fn default_classes() -> Vec<Class> {
    vec![Class::Lower, Class::Upper, Class::Digit]
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        PasswordPolicy {
            length: default_length(),
            classes: default_classes(),
            exclude: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationPolicy {
    pub connector: Connector,
    #[serde(default)]
    pub triggers: Vec<Trigger>,
    /// A rotation at most this long after the last one (none: no
    /// schedule).
    #[serde(default)]
    pub interval_seconds: Option<u64>,
    /// A cron schedule in UTC ([`crate::cron`]), instead of an interval:
    /// a rotation at the first time it names after the last rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// A heartbeat: this often, vaultd logs in to the target with the
    /// current value; a refusal is drift (`secret.drift`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_seconds: Option<u64>,
    /// On drift, rotate at once (the connector sets a fresh value with its
    /// own credential) instead of only reporting it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reconcile_drift: bool,
    #[serde(default)]
    pub password: PasswordPolicy,
}

/// The shortest schedule.
pub const MIN_INTERVAL: u64 = 60;

/// The longest schedule or heartbeat: ten years (and far from overflowing
/// the store's signed seconds).
pub const MAX_INTERVAL: u64 = 315_360_000;

impl RotationPolicy {
    /// Parses and checks a policy for the secret at `path`, in canonical
    /// form (triggers and classes sorted, once each).
    pub fn parse(path: &str, v: &serde_json::Value) -> Result<RotationPolicy, String> {
        let mut p: RotationPolicy = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
        p.triggers.sort();
        p.triggers.dedup();
        p.password.classes.sort();
        p.password.classes.dedup();
        if let Some(c) = &p.cron {
            p.cron = Some(
                crate::cron::Cron::parse(c)
                    .map_err(|e| format!("cron: {e}"))?
                    .text()
                    .to_owned(),
            );
        }
        p.check(path)?;
        Ok(p)
    }

    fn check(&self, path: &str) -> Result<(), String> {
        match &self.connector {
            Connector::Postgres {
                host,
                port,
                dbname,
                role,
                connector_user,
                credential,
            } => {
                if host.is_empty()
                    || host.len() > 253
                    || host.chars().any(|c| c.is_whitespace() || c == '/')
                {
                    return Err("connector.host is a host name or address".into());
                }
                if *port == 0 {
                    return Err("connector.port is 1-65535".into());
                }
                for (what, s) in [
                    ("dbname", dbname),
                    ("role", role),
                    ("connector_user", connector_user),
                ] {
                    if s.is_empty() || s.len() > 63 || s.contains('\0') {
                        return Err(format!("connector.{what} is 1-63 bytes"));
                    }
                }
                validate_path(credential).map_err(|e| format!("connector.credential: {e}"))?;
                if credential == path {
                    return Err(
                        "connector.credential is another secret than the rotated one".into(),
                    );
                }
            }
            Connector::Exec { program, args } => {
                if !program.starts_with('/') || program.contains("/../") || program.contains('\0') {
                    return Err("connector.program is an absolute path".into());
                }
                if args.len() > 16 || args.iter().any(|a| a.len() > 256 || a.contains('\0')) {
                    return Err("connector.args: at most 16, each at most 256 bytes".into());
                }
            }
        }
        if self.interval_seconds.is_some() && self.cron.is_some() {
            return Err("a schedule is interval_seconds or cron, not both".into());
        }
        for (what, v) in [
            ("interval_seconds", self.interval_seconds),
            ("heartbeat_seconds", self.heartbeat_seconds),
        ] {
            if v.is_some_and(|i| !(MIN_INTERVAL..=MAX_INTERVAL).contains(&i)) {
                return Err(format!("{what} is {MIN_INTERVAL}-{MAX_INTERVAL}"));
            }
        }
        if self.reconcile_drift && self.heartbeat_seconds.is_none() {
            return Err("reconcile_drift needs heartbeat_seconds".into());
        }
        let pw = &self.password;
        if !(16..=128).contains(&pw.length) {
            return Err("password.length is 16-128".into());
        }
        if pw.classes.is_empty() {
            return Err("password.classes names at least one class".into());
        }
        if pw.classes.len() > pw.length {
            return Err("password.length is shorter than its classes".into());
        }
        for c in &pw.classes {
            if c.chars().chars().all(|ch| pw.exclude.contains(ch)) {
                return Err(format!(
                    "password.exclude leaves no character of class {c:?}"
                ));
            }
        }
        Ok(())
    }

    /// The vaulted secret the connector logs in with, if any.
    pub fn credential(&self) -> Option<&str> {
        match &self.connector {
            Connector::Postgres { credential, .. } => Some(credential),
            Connector::Exec { .. } => None,
        }
    }

    /// The canonical JSON text.
    pub fn text(&self) -> String {
        serde_json::to_string(self).expect("a policy always serialises")
    }
}

/// A new password under `p`: at least one character of each class, the
/// rest from all of them, shuffled; excluded characters never used.
pub fn generate(p: &PasswordPolicy, rng: &mut impl rand::RngCore) -> SecretBytes {
    let allowed = |c: Class| -> Vec<u8> {
        c.chars()
            .bytes()
            .filter(|b| !p.exclude.as_bytes().contains(b))
            .collect()
    };
    let all: Vec<u8> = p.classes.iter().flat_map(|c| allowed(*c)).collect();
    let mut out = Vec::with_capacity(p.length);
    for c in &p.classes {
        let set = allowed(*c);
        out.push(set[rng.gen_range(0..set.len())]);
    }
    while out.len() < p.length {
        out.push(all[rng.gen_range(0..all.len())]);
    }
    out.shuffle(rng);
    SecretBytes::new(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pg() -> serde_json::Value {
        json!({"kind": "postgres", "host": "db1", "port": 5432, "dbname": "app",
               "role": "app", "connector_user": "rotator", "credential": "pg/rotator"})
    }

    #[test]
    fn policies_parse_strictly_into_one_form() {
        let p = RotationPolicy::parse(
            "pg/app",
            &json!({"connector": pg(), "triggers": ["expiry", "checkin", "expiry"]}),
        )
        .unwrap();
        assert_eq!(p.triggers, [Trigger::Checkin, Trigger::Expiry]);
        let otp = RotationPolicy::parse(
            "pg/app",
            &json!({"connector": pg(), "triggers": ["one_time"]}),
        )
        .unwrap();
        assert_eq!(otp.triggers, [Trigger::OneTime]);
        assert!(otp.text().contains(r#""triggers":["one_time"]"#));
        let cron = RotationPolicy::parse("pg/app", &json!({"connector": pg(), "cron": " @daily "}))
            .unwrap();
        assert_eq!(cron.cron.as_deref(), Some("0 0 * * *"));
        assert!(cron.text().contains(r#""cron":"0 0 * * *""#));
        assert!(!p.text().contains("cron"), "no schedule, no field");
        assert!(!p.text().contains("heartbeat") && !p.text().contains("reconcile"));
        let hb = RotationPolicy::parse(
            "pg/app",
            &json!({"connector": pg(), "heartbeat_seconds": 3600, "reconcile_drift": true}),
        )
        .unwrap();
        assert!(hb
            .text()
            .contains(r#""heartbeat_seconds":3600,"reconcile_drift":true"#));
        assert_eq!(p.password, PasswordPolicy::default());
        assert_eq!(p.credential(), Some("pg/rotator"));
        let again =
            RotationPolicy::parse("pg/app", &serde_json::from_str(&p.text()).unwrap()).unwrap();
        assert_eq!(again.text(), p.text());
        for bad in [
            json!({"connector": pg(), "extra": 1}),
            json!({"connector": {"kind": "ldap"}}),
            json!({"connector": pg(), "triggers": ["sometimes"]}),
            json!({"connector": pg(), "interval_seconds": 5}),
            json!({"connector": pg(), "cron": "0 0 30 2 *"}),
            json!({"connector": pg(), "heartbeat_seconds": 10}),
            json!({"connector": pg(), "heartbeat_seconds": u64::MAX}),
            json!({"connector": pg(), "interval_seconds": 9_223_372_036_854_775_808u64}),
            json!({"connector": pg(), "reconcile_drift": true}),
            json!({"connector": pg(), "cron": "0 3 * * *", "interval_seconds": 3600}),
            json!({"connector": pg(), "password": {"length": 8}}),
            json!({"connector": pg(), "password": {"classes": []}}),
            json!({"connector": pg(), "password": {"classes": ["digit"], "exclude": "0123456789"}}),
            json!({"connector": {"kind": "exec", "program": "relative/hook"}}),
        ] {
            assert!(RotationPolicy::parse("pg/app", &bad).is_err(), "{bad}");
        }
        let own = json!({"connector": pg()});
        assert!(
            RotationPolicy::parse("pg/rotator", &own).is_err(),
            "its own credential"
        );
    }

    #[test]
    fn generated_passwords_follow_the_policy() {
        let p = PasswordPolicy {
            length: 20,
            classes: vec![Class::Lower, Class::Digit, Class::Symbol],
            exclude: "0O1l".into(),
        };
        let mut rng = rand::rngs::OsRng;
        for _ in 0..200 {
            let v = generate(&p, &mut rng);
            let s = std::str::from_utf8(v.expose_secret()).unwrap();
            assert_eq!(s.len(), 20);
            assert!(s.bytes().any(|b| b.is_ascii_lowercase()));
            assert!(s.bytes().any(|b| b.is_ascii_digit()));
            assert!(s
                .bytes()
                .any(|b| Class::Symbol.chars().as_bytes().contains(&b)));
            assert!(!s.bytes().any(|b| b.is_ascii_uppercase()));
            assert!(!s.contains(['0', 'O', '1', 'l']));
        }
        let a = generate(&p, &mut rng);
        let b = generate(&p, &mut rng);
        assert_ne!(a.expose_secret(), b.expose_secret());
    }
}
