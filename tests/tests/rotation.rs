//! Credential rotation (issue 12, items 2 and 3) end to end: the real
//! vaultd rotates a real PostgreSQL role's password (a server started in a
//! temp dir) on check-in and on demand; a target that is down leaves the
//! old value in service and is reported; the connector's credential is
//! use-only; a vaultd killed at every step of a rotation recovers with
//! the target accepting exactly the value the vault hands out; one-time
//! mode hands each password out once; a cron schedule (UTC) rotates; and a
//! heartbeat reports (and reconciles) a password changed behind the vault.

use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{json, Value};
use vault_e2e::postgres::Postgres;
use vault_e2e::{checkout, json_of, put, req, runtime, Appliance};

fn code(r: &vault_client::Response) -> (u16, String) {
    (r.status, r.error_code().unwrap_or_default())
}

/// Whether the role logs in with `password`.
fn login(pg: &Postgres, role: &str, password: &str) -> bool {
    runtime().block_on(async {
        tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(pg.port)
            .dbname("postgres")
            .user(role)
            .password(password)
            .connect_timeout(Duration::from_secs(5))
            .connect(tokio_postgres::NoTls)
            .await
            .is_ok()
    })
}

fn policy(pg: &Postgres, triggers: Value) -> Value {
    json!({"policy": {
        "connector": {"kind": "postgres", "host": "127.0.0.1", "port": pg.port, "dbname": "postgres",
                      "role": "app", "connector_user": "rotator", "credential": "pg/rotator"},
        "triggers": triggers,
        "password": {"length": 24, "classes": ["lower", "upper", "digit"]}}})
}

/// A PostgreSQL server with the connector role `rotator` and the role
/// `app`, and an appliance holding both passwords (`pg/rotator`, `pg/app`):
/// the server, the appliance, its admin, a writer and a PAM server.
fn pg_and_vault() -> (
    Postgres,
    Appliance,
    vault_client::Client,
    vault_client::Client,
    vault_client::Client,
) {
    let pg = Postgres::start();
    pg.psql("CREATE ROLE rotator LOGIN CREATEROLE PASSWORD 'rotator-pw'");
    pg.psql("GRANT pg_signal_backend TO rotator");
    pg.psql("CREATE ROLE app LOGIN PASSWORD 'app-initial-pw'");
    let a = Appliance::start(Default::default());
    let admin = a.admin();
    let writer = a.issue("writer", "w1");
    let pam = a.issue("pam", "p1");
    assert_eq!(put(&writer, "pg/rotator", "rotator-pw", false).status, 200);
    assert_eq!(put(&writer, "pg/app", "app-initial-pw", false).status, 200);
    (pg, a, admin, writer, pam)
}

/// The triggers of the rotations vaultd promoted, oldest first (its
/// `secret.rotate` entries).
fn rotation_triggers(a: &Appliance) -> Vec<String> {
    a.audit_entries()
        .iter()
        .filter(|e| e.action == "secret.rotate" && e.principal == "vaultd")
        .map(|e| e.details["trigger"].clone())
        .collect()
}

fn current_version(c: &vault_client::Client, path: &str) -> u64 {
    json_of(&req(c, Method::GET, &format!("/v1/secrets/{path}"), None))["current_version"]
        .as_u64()
        .unwrap()
}

/// Waits until the secret's current version is `v` (the rotation engine
/// runs every second).
fn wait_version(a: &Appliance, c: &vault_client::Client, path: &str, v: u64) {
    wait_version_for(a, c, path, v, Duration::from_secs(60))
}

fn wait_version_for(a: &Appliance, c: &vault_client::Client, path: &str, v: u64, d: Duration) {
    let deadline = Instant::now() + d;
    while current_version(c, path) < v {
        assert!(
            Instant::now() < deadline,
            "{path} never reached version {v}: {}\n{}",
            json_of(&req(c, Method::GET, &format!("/v1/rotation/{path}"), None)),
            a.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(current_version(c, path), v, "one rotation, one version");
}

/// Checks the secret out and in; its value (for policies without a
/// check-in trigger).
fn value_of(pam: &vault_client::Client, path: &str) -> String {
    let r = checkout(pam, path);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = json_of(&r);
    vault_e2e::checkin(pam, v["checkout_id"].as_str().unwrap());
    v["value"].as_str().unwrap().to_owned()
}

#[test]
fn a_postgres_role_rotates_on_checkin_and_on_demand_and_a_down_target_keeps_the_old_value() {
    let (mut pg, a, admin, writer, pam) = pg_and_vault();
    let aud = a.issue("auditor", "aud");

    // Only the admin sets a policy; a bad one is refused with its reason.
    let set = |c: &vault_client::Client, body: Value| {
        req(c, Method::PUT, "/v1/rotation/pg/app", Some(body))
    };
    for (who, c) in [("writer", &writer), ("pam", &pam), ("auditor", &aud)] {
        assert_eq!(
            code(&set(c, policy(&pg, json!(["checkin"])))),
            (403, "forbidden".into()),
            "{who}"
        );
    }
    let mut bad = policy(&pg, json!(["checkin"]));
    bad["policy"]["connector"]["credential"] = json!("pg/app");
    assert_eq!(
        code(&set(&admin, bad)),
        (400, "invalid_rotation_policy".into())
    );
    let mut missing = policy(&pg, json!(["checkin"]));
    missing["policy"]["connector"]["credential"] = json!("pg/none");
    assert_eq!(code(&set(&admin, missing)), (404, "not_found".into()));
    let r = set(&admin, policy(&pg, json!(["checkin"])));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    // The connector's credential is use-only: nobody checks it out.
    assert_eq!(
        code(&checkout(&pam, "pg/rotator")),
        (409, "use_only".into())
    );

    // A check-in rotates: the value handed out before no longer logs in,
    // the new one does.
    let co = |c: &vault_client::Client| -> (String, String) {
        let r = checkout(c, "pg/app");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v = json_of(&r);
        (
            v["checkout_id"].as_str().unwrap().to_owned(),
            v["value"].as_str().unwrap().to_owned(),
        )
    };
    let checkin = |id: &str| vault_e2e::checkin(&pam, id);
    let (id, v1) = co(&pam);
    assert_eq!(v1, "app-initial-pw");
    checkin(&id);
    wait_version(&a, &admin, "pg/app", 2);
    let (id, v2) = co(&pam);
    assert_eq!(v2.len(), 24);
    assert!(
        login(&pg, "app", &v2),
        "the target takes the value the vault hands out"
    );
    assert!(!login(&pg, "app", &v1), "the old value still logs in");
    // The new value never reached the server in clear (a SCRAM verifier).
    assert!(
        !pg.log().contains(&v2),
        "the plaintext is in the server log"
    );
    checkin(&id);
    wait_version(&a, &admin, "pg/app", 3);
    let (id, v3) = co(&pam);
    assert!(login(&pg, "app", &v3) && !login(&pg, "app", &v2));

    // On demand (admin only); it waits while a lease is open, so a session
    // using the value is not cut off.
    assert_eq!(
        req(&pam, Method::POST, "/v1/rotation/pg/app", None).status,
        403
    );
    let r = req(&admin, Method::POST, "/v1/rotation/pg/app", None);
    assert_eq!(r.status, 200);
    assert_eq!(json_of(&r)["rotation"]["state"], "due");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        current_version(&admin, "pg/app"),
        3,
        "rotated under an open lease"
    );
    assert!(login(&pg, "app", &v3));
    checkin(&id);
    wait_version(&a, &admin, "pg/app", 4);
    let shown = json_of(&req(&admin, Method::GET, "/v1/rotation/pg/app", None));
    assert!(shown["last_rotated_at"].is_string(), "{shown}");
    assert_eq!(shown["policy"]["triggers"], json!(["checkin"]));

    // A target that is down: the old value stays in service, the failure
    // is shown, and the rotation completes once the target is back.
    pg.stop();
    assert_eq!(
        req(&admin, Method::POST, "/v1/rotation/pg/app", None).status,
        200
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let shown = loop {
        let v = json_of(&req(&admin, Method::GET, "/v1/rotation/pg/app", None));
        if v["rotation"]["tries"].as_u64().unwrap_or(0) >= 1 {
            break v;
        }
        assert!(Instant::now() < deadline, "no failed try shown: {v}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(shown["rotation"]["state"], "pending", "{shown}");
    assert!(
        shown["rotation"]["last_error"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{shown}"
    );
    assert_eq!(current_version(&admin, "pg/app"), 4, "nothing promoted");
    let (id, v4) = co(&pam);
    checkin(&id);
    pg.spawn();
    wait_version(&a, &admin, "pg/app", 5);
    let (id, v5) = co(&pam);
    assert!(login(&pg, "app", &v5) && !login(&pg, "app", &v4));

    // Removing the policy stops rotations (with the lease still open, no
    // rotation is in flight).
    assert_eq!(
        req(&admin, Method::DELETE, "/v1/rotation/pg/app", None).status,
        200
    );
    checkin(&id);
    assert_eq!(
        code(&req(&admin, Method::GET, "/v1/rotation/pg/app", None)),
        (404, "not_found".into())
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(current_version(&admin, "pg/app"), 5);

    // Audited: each rotation by vaultd, with its trigger, and the policy.
    let entries = a.audit_entries();
    let rotated = rotation_triggers(&a);
    assert_eq!(rotated, ["checkin", "checkin", "manual", "manual"]);
    assert!(entries.iter().any(|e| e.action == "rotation.set"));
    assert!(entries.iter().any(|e| e.action == "rotation.remove"));
}

#[test]
fn a_vaultd_killed_at_every_rotation_step_recovers_with_the_value_the_target_takes() {
    let (pg, mut a, admin, _writer, pam) = pg_and_vault();
    let r = req(
        &admin,
        Method::PUT,
        "/v1/rotation/pg/app",
        Some(policy(&pg, json!([]))),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let mut version = 1;
    for point in [
        "after_pending",
        "after_applying",
        "after_apply",
        "after_promote",
    ] {
        a.stop();
        a.spawn_with(&[("VAULTD_FAULT_ROTATION", point)]);
        a.wait_ready();
        assert_eq!(
            req(&admin, Method::POST, "/v1/rotation/pg/app", None).status,
            200
        );
        assert!(
            a.wait_exit(Duration::from_secs(30)),
            "vaultd did not stop at {point}"
        );
        assert!(a
            .log()
            .contains(&format!("fault injection at rotation step {point}")));
        a.spawn();
        a.wait_ready();
        version += 1;
        wait_version(&a, &admin, "pg/app", version);
        let v = value_of(&pam, "pg/app");
        assert!(
            login(&pg, "app", &v),
            "after a crash {point}: the target refuses the value handed out"
        );
    }
    // Each crash left one rotation, promoted once.
    let promoted = a
        .audit_entries()
        .iter()
        .filter(|e| e.action == "secret.rotate")
        .count();
    assert_eq!(promoted, 4);
}

/// An exec hook whose "target" is a file: `apply` stores the value,
/// `verify` compares with it.
fn file_hook(at: &std::path::Path, dir: &std::path::Path, name: &str) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let p = at.join(name);
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\nd='{}'\ncase \"$1\" in\n  apply) cat > \"$d/{name}.current\" ;;\n  verify) cat > \"$d/{name}.try\"; cmp -s \"$d/{name}.try\" \"$d/{name}.current\" ;;\n  end-sessions) echo ended >> \"$d/{name}.ended\" ;;\nesac\n",
            dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p.display().to_string()
}

#[test]
fn vaultctl_drives_an_exec_hook_rotation_and_after_genesis_a_policy_needs_the_quorum() {
    use vault_e2e::piv::{alice_and_bob_genesis, approve_and_apply, TestRoot};
    let root = TestRoot::new("Test PIV Root");
    // Hooks run only from rotation.exec_hook_dir (the signed root on the
    // appliance).
    let dir = tempfile::tempdir().unwrap();
    let hooks = dir.path().join("hooks");
    std::fs::create_dir(&hooks).unwrap();
    let mut opts = root.options();
    opts.extra_config.push_str(&format!(
        "\n[rotation]\nexec_hook_dir = \"{}\"\n",
        hooks.display()
    ));
    let a = Appliance::start(opts);
    let admin = a.admin();
    let writer = a.issue("writer", "w1");
    let pam = a.issue("pam", "p1");
    assert_eq!(put(&writer, "svc/key", "initial", false).status, 200);
    let first = file_hook(&hooks, dir.path(), "first");
    let second = file_hook(&hooks, dir.path(), "second");
    // A program outside the hook directory (or reached through a symlink
    // from inside it) is refused.
    let outside = file_hook(dir.path(), dir.path(), "outside");
    std::os::unix::fs::symlink(&outside, hooks.join("link")).unwrap();
    for program in [
        outside.clone(),
        hooks.join("link").display().to_string(),
        "/bin/sh".into(),
    ] {
        let r = req(
            &admin,
            Method::PUT,
            "/v1/rotation/svc/key",
            Some(json!({"policy": {"connector": {"kind": "exec", "program": program}}})),
        );
        assert_eq!(
            code(&r),
            (400, "invalid_rotation_policy".into()),
            "{program}"
        );
    }
    let policy_file = |program: &str| {
        let f = dir.path().join("policy.json");
        std::fs::write(
            &f,
            json!({"connector": {"kind": "exec", "program": program}, "triggers": ["checkin"]})
                .to_string(),
        )
        .unwrap();
        f.display().to_string()
    };
    let ctl = |args: &[&str]| a.vaultctl("admin", args, None);

    // Before genesis: the admin sets it at once and rotates.
    let f = policy_file(&first);
    let out = vault_e2e::ok(&ctl(&["rotation", "set", "svc/key", "--policy-file", &f]));
    assert!(out.contains("rotation policy of svc/key set"), "{out}");
    vault_e2e::ok(&ctl(&["rotation", "now", "svc/key"]));
    wait_version(&a, &admin, "svc/key", 2);
    // (read under the lease: its check-in triggers the next rotation)
    let held = |file: &str| -> (String, String) {
        let r = checkout(&pam, "svc/key");
        let v = json_of(&r);
        let on_target = std::fs::read_to_string(dir.path().join(file)).unwrap();
        vault_e2e::checkin(&pam, v["checkout_id"].as_str().unwrap());
        (v["value"].as_str().unwrap().to_owned(), on_target)
    };
    let (v, on_target) = held("first.current");
    assert_eq!(
        on_target, v,
        "the hook's target holds the value the vault hands out"
    );
    assert!(
        dir.path().join("first.ended").exists(),
        "the old value's sessions were ended"
    );
    // (the check-in above triggers the next rotation)
    wait_version(&a, &admin, "svc/key", 3);
    let shown: Value = serde_json::from_str(&vault_e2e::ok(&ctl(&[
        "--json", "rotation", "show", "svc/key",
    ])))
    .unwrap();
    assert_eq!(shown["policy"]["connector"]["program"], first);
    assert!(shown["last_rotated_at"].is_string());

    // After genesis one admin cannot point the new values elsewhere.
    let (mut alice, mut bob) = alice_and_bob_genesis(&a, &root, [4301, 4302]);
    let f = policy_file(&second);
    let o = ctl(&["--json", "rotation", "set", "svc/key", "--policy-file", &f]);
    let v: Value = serde_json::from_str(&vault_e2e::ok(&o)).unwrap();
    let id = v["request_id"].as_str().unwrap().to_owned();
    let change: Value = serde_json::from_str(v["change"].as_str().unwrap()).unwrap();
    assert_eq!(change["change"], "set_rotation_policy");
    assert_eq!(change["policy"]["connector"]["program"], second);
    let shown = json_of(&req(&admin, Method::GET, "/v1/rotation/svc/key", None));
    assert_eq!(
        shown["policy"]["connector"]["program"], first,
        "in force before the quorum"
    );
    let r = approve_and_apply(&a, &id, &mut [("alice", &mut alice), ("bob", &mut bob)]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    vault_e2e::ok(&ctl(&["rotation", "now", "svc/key"]));
    wait_version(&a, &admin, "svc/key", 4);
    let (v, on_target) = held("second.current");
    assert_eq!(on_target, v);
    // Removal stays immediate (it sends values nowhere).
    wait_version(&a, &admin, "svc/key", 5);
    vault_e2e::ok(&ctl(&["rotation", "remove", "svc/key"]));
    let o = ctl(&["rotation", "show", "svc/key"]);
    assert_eq!(o.status.code(), Some(1));
}

/// Waits until the rotation of `path` has failed at least once (its target
/// is down); the rotation as shown.
fn wait_failed_try(c: &vault_client::Client, path: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = json_of(&req(c, Method::GET, &format!("/v1/rotation/{path}"), None));
        if v["rotation"]["tries"].as_u64().unwrap_or(0) >= 1 {
            return v;
        }
        assert!(Instant::now() < deadline, "no failed try shown: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_postgres_role_in_one_time_mode_hands_each_password_out_once() {
    // (pg/app is not exclusive: one-time mode alone keeps a value to one
    // checkout.)
    let (mut pg, a, admin, _writer, pam) = pg_and_vault();
    let other = a.issue("pam", "p2");
    let r = req(
        &admin,
        Method::PUT,
        "/v1/rotation/pg/app",
        Some(policy(&pg, json!(["one_time"]))),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let co = |c: &vault_client::Client, ttl: u64| {
        req(
            c,
            Method::POST,
            "/v1/secrets/pg/app/checkout",
            Some(json!({"reason": "one-time test", "ttl_seconds": ttl})),
        )
    };
    let taken = |r: &vault_client::Response| -> (String, String) {
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v = json_of(r);
        (
            v["checkout_id"].as_str().unwrap().to_owned(),
            v["value"].as_str().unwrap().to_owned(),
        )
    };
    // A refusal never carries a value; a rotation on its way says when to
    // ask again.
    let refused = |r: &vault_client::Response, what: &str| {
        let (status, code) = code(r);
        assert_eq!(status, 409, "{what}: {}", String::from_utf8_lossy(&r.body));
        assert!(
            code == "one_time_used" || code == "rotation_in_progress",
            "{what}: {code}"
        );
        if code == "rotation_in_progress" {
            assert_eq!(r.retry_after, Some(2), "{what}");
        }
        assert!(json_of(r).get("value").is_none());
    };

    // The value never handed out is handed out once: a second PAM server
    // (or the same one) is refused while it is held, and an older version
    // is never one-time.
    let (id, v1) = taken(&co(&pam, 60));
    assert_eq!(v1, "app-initial-pw");
    let r = co(&other, 60);
    assert_eq!(code(&r), (409, "one_time_used".into()));
    assert_eq!(r.retry_after, None, "its rotation waits for the lease");
    refused(&co(&pam, 60), "the holder again");
    let r = req(
        &pam,
        Method::POST,
        "/v1/secrets/pg/app/checkout",
        Some(json!({"reason": "older", "version": 1})),
    );
    assert_eq!(code(&r), (409, "one_time_used".into()));

    // Its check-in rotates it; until the new value is in service every
    // checkout is refused with a retry hint.
    vault_e2e::checkin(&pam, &id);
    wait_version(&a, &admin, "pg/app", 2);
    let (id, v2) = taken(&co(&other, 60));
    assert!(login(&pg, "app", &v2) && !login(&pg, "app", &v1));
    refused(&co(&pam, 60), "v2 held");
    vault_e2e::checkin(&other, &id);
    wait_version(&a, &admin, "pg/app", 3);

    // A lease that ends at its TTL rotates too (the reaper runs every 5 s).
    let (_, v3) = taken(&co(&pam, 2));
    assert!(login(&pg, "app", &v3));
    wait_version(&a, &admin, "pg/app", 4);
    assert!(
        !login(&pg, "app", &v3),
        "the expired lease's value still logs in"
    );

    // A target that is down: the used value is never handed out again,
    // and the rotation completes once the target is back.
    let (id, v4) = taken(&co(&pam, 60));
    pg.stop();
    vault_e2e::checkin(&pam, &id);
    let shown = wait_failed_try(&admin, "pg/app");
    assert_eq!(shown["rotation"]["trigger"], "checkin", "{shown}");
    refused(&co(&other, 60), "target down");
    assert_eq!(current_version(&admin, "pg/app"), 4, "nothing promoted");
    pg.spawn();
    wait_version(&a, &admin, "pg/app", 5);
    let (_, v5) = taken(&co(&other, 60));
    assert!(login(&pg, "app", &v5) && !login(&pg, "app", &v4));

    let rotated = rotation_triggers(&a);
    assert_eq!(rotated, ["checkin", "checkin", "expiry", "checkin"]);
}

#[test]
fn a_postgres_role_rotates_on_a_cron_schedule_in_utc() {
    let (pg, a, admin, _writer, pam) = pg_and_vault();
    let with_cron = |cron: &str| {
        let mut p = policy(&pg, json!([]));
        p["policy"]["cron"] = json!(cron);
        req(&admin, Method::PUT, "/v1/rotation/pg/app", Some(p))
    };
    // A schedule that never comes, or that is not cron, is refused with
    // the reason.
    for (bad, says) in [
        ("0 0 30 2 *", "never matches"),
        ("0 3 * * MON", "names are not accepted"),
        ("0 3 * *", "5 fields"),
    ] {
        let r = with_cron(bad);
        assert_eq!(code(&r), (400, "invalid_rotation_policy".into()), "{bad}");
        assert!(
            String::from_utf8_lossy(&r.body).contains(says),
            "{bad}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    let mut both = policy(&pg, json!([]));
    both["policy"]["cron"] = json!("@hourly");
    both["policy"]["interval_seconds"] = json!(3600);
    assert_eq!(
        code(&req(&admin, Method::PUT, "/v1/rotation/pg/app", Some(both))),
        (400, "invalid_rotation_policy".into())
    );
    // Every minute: the first rotation comes at the next minute (UTC).
    let r = with_cron(" *  * * * * ");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let shown = json_of(&req(&admin, Method::GET, "/v1/rotation/pg/app", None));
    assert_eq!(shown["policy"]["cron"], "* * * * *", "stored in one form");
    wait_version_for(&a, &admin, "pg/app", 2, Duration::from_secs(90));
    let v = value_of(&pam, "pg/app");
    assert!(login(&pg, "app", &v) && !login(&pg, "app", "app-initial-pw"));
    let rotated = rotation_triggers(&a);
    assert_eq!(rotated[0], "schedule", "{rotated:?}");
}

/// A gauge's value in a scrape of `/metrics`.
fn gauge(prom: &vault_client::Client, name: &str) -> f64 {
    let r = req(prom, Method::GET, "/metrics", None);
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn a_heartbeat_reports_a_password_changed_behind_the_vault_and_reconciles_it() {
    let (pg, a, admin, writer, pam) = pg_and_vault();
    pg.psql("CREATE ROLE other LOGIN PASSWORD 'other-initial-pw'");
    let prom = a.issue("metrics", "prom");
    assert_eq!(
        put(&writer, "pg/other", "other-initial-pw", false).status,
        200
    );
    let with_heartbeat = |path: &str, role: &str, reconcile: bool| {
        let mut p = policy(&pg, json!([]));
        p["policy"]["connector"]["role"] = json!(role);
        p["policy"]["heartbeat_seconds"] = json!(60);
        if reconcile {
            p["policy"]["reconcile_drift"] = json!(true);
        }
        req(
            &admin,
            Method::PUT,
            &format!("/v1/rotation/{path}"),
            Some(p),
        )
    };
    let mut fast = policy(&pg, json!([]));
    fast["policy"]["heartbeat_seconds"] = json!(10);
    assert_eq!(
        code(&req(&admin, Method::PUT, "/v1/rotation/pg/app", Some(fast))),
        (400, "invalid_rotation_policy".into())
    );
    assert_eq!(with_heartbeat("pg/app", "app", true).status, 200);
    assert_eq!(with_heartbeat("pg/other", "other", false).status, 200);
    // Someone changes both passwords on the server, behind the vault.
    pg.psql("ALTER ROLE app PASSWORD 'changed-behind-the-vault'");
    pg.psql("ALTER ROLE other PASSWORD 'changed-behind-the-vault'");
    assert_eq!(gauge(&prom, "vaultd_rotation_drift"), 0.0);

    // Within a heartbeat: the reconciling policy rotates a fresh value in
    // (trigger `drift`), the other only reports the drift.
    wait_version_for(&a, &admin, "pg/app", 2, Duration::from_secs(120));
    let v = value_of(&pam, "pg/app");
    assert!(
        login(&pg, "app", &v),
        "the vault's value is in service again"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let shown = loop {
        let v = json_of(&req(&admin, Method::GET, "/v1/rotation/pg/other", None));
        if v["drift_since"].is_string() {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "no drift shown: {v}\n{}",
            a.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(shown["last_heartbeat_at"].is_string(), "{shown}");
    assert_eq!(current_version(&admin, "pg/other"), 1, "reported only");
    let info = json_of(&req(&pam, Method::GET, "/v1/secrets/pg/other", None));
    assert_eq!(info["drift_since"], shown["drift_since"], "{info}");
    let app = json_of(&req(&admin, Method::GET, "/v1/secrets/pg/app", None));
    assert!(app["drift_since"].is_null(), "reconciled: {app}");
    assert_eq!(gauge(&prom, "vaultd_rotation_drift"), 1.0);

    // Rotating it ends the drift.
    assert_eq!(
        req(&admin, Method::POST, "/v1/rotation/pg/other", None).status,
        200
    );
    wait_version(&a, &admin, "pg/other", 2);
    let v = value_of(&pam, "pg/other");
    assert!(login(&pg, "other", &v));
    let info = json_of(&req(&admin, Method::GET, "/v1/secrets/pg/other", None));
    assert!(info["drift_since"].is_null(), "{info}");
    assert_eq!(gauge(&prom, "vaultd_rotation_drift"), 0.0);

    // Audited: each drift once, by vaultd, and the reconciling rotation.
    let entries = a.audit_entries();
    let drift: Vec<(&str, &str)> = entries
        .iter()
        .filter(|e| e.action == "secret.drift")
        .map(|e| (e.target.as_str(), e.details["reconcile"].as_str()))
        .collect();
    assert_eq!(drift.len(), 2, "{drift:?}");
    assert!(drift.contains(&("pg/app", "true")) && drift.contains(&("pg/other", "false")));
    assert!(entries.iter().any(|e| e.action == "secret.rotate"
        && e.target == "pg/app"
        && e.details["trigger"] == "drift"));
    assert!(!a.log().contains(&v), "a value in the log");
}
