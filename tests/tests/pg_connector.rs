//! The PostgreSQL role connector (issue 12, item 4) against a real
//! PostgreSQL server (`initdb` in a temp dir, a free port): the password is
//! changed with a SCRAM verifier computed on our side (the server's
//! statement log never sees the plaintext), verified by logging in, and the
//! sessions the old value opened are ended. A refused connector credential
//! and a target that is down are errors with stable codes, and leave the
//! role's password as it was.

use std::time::Duration;

use vault_connect::{PostgresRole, Verdict};
use vault_core::secret::SecretBytes;
use vault_e2e::postgres::Postgres;
use vault_e2e::runtime;

fn secret(s: &str) -> SecretBytes {
    SecretBytes::new(s.as_bytes().to_vec())
}

fn target(pg: &Postgres, role: &str) -> PostgresRole {
    PostgresRole {
        host: "127.0.0.1".into(),
        port: pg.port,
        dbname: "postgres".into(),
        role: role.into(),
        connector_user: "rotator".into(),
        connect_timeout: Duration::from_secs(5),
    }
}

#[test]
fn a_postgres_role_is_rotated_verified_and_its_sessions_ended() {
    let mut pg = Postgres::start();
    // The connector's own role: it may change passwords and end sessions,
    // nothing more (not a superuser).
    pg.psql("CREATE ROLE rotator LOGIN CREATEROLE PASSWORD 'rotator-pw'");
    pg.psql("GRANT pg_signal_backend TO rotator");
    pg.psql("CREATE ROLE app LOGIN PASSWORD 'app-old-pw'");
    let rt = runtime();
    let app = target(&pg, "app");
    let cred = secret("rotator-pw");
    let (old, new) = (secret("app-old-pw"), secret("n3w-Value-3f9c1b7e"));
    assert_eq!(rt.block_on(app.verify(&old)).unwrap(), Verdict::Accepted);
    assert_eq!(rt.block_on(app.verify(&new)).unwrap(), Verdict::Rejected);

    // A session opened with the old value, as a PAM user's would be.
    let session = rt.block_on(async {
        let (c, conn) = tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(pg.port)
            .dbname("postgres")
            .user("app")
            .password("app-old-pw")
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c
    });

    rt.block_on(app.apply(&cred, &new)).unwrap();
    assert_eq!(rt.block_on(app.verify(&new)).unwrap(), Verdict::Accepted);
    assert_eq!(rt.block_on(app.verify(&old)).unwrap(), Verdict::Rejected);
    // The server stores a SCRAM verifier, and was sent nothing else: its
    // statement log has the ALTER ROLE with the verifier, never the value.
    let stored = pg.psql("SELECT rolpassword FROM pg_authid WHERE rolname = 'app'");
    assert!(stored.starts_with("SCRAM-SHA-256$4096:"), "{stored}");
    let log = pg.log();
    assert!(
        log.contains("ALTER ROLE \"app\" PASSWORD 'SCRAM-SHA-256$4096:"),
        "{log}"
    );
    assert!(
        !log.contains("n3w-Value-3f9c1b7e"),
        "the plaintext reached the server log"
    );

    // What the old value opened is ended.
    assert!(
        rt.block_on(session.simple_query("SELECT 1")).is_ok(),
        "alive before"
    );
    let ended = rt.block_on(app.end_sessions(&cred)).unwrap();
    assert!(ended >= 1, "ended {ended}");
    assert!(
        rt.block_on(session.simple_query("SELECT 1")).is_err(),
        "the old session lives on"
    );

    // A role name that needs quoting is quoted, not interpreted.
    pg.psql(r#"CREATE ROLE "we""ird; role" LOGIN PASSWORD 'w-old'"#);
    let weird = target(&pg, "we\"ird; role");
    rt.block_on(weird.apply(&cred, &secret("w-new"))).unwrap();
    assert_eq!(
        rt.block_on(weird.verify(&secret("w-new"))).unwrap(),
        Verdict::Accepted
    );

    // A refused connector credential: a stable code, nothing changed.
    let e = rt
        .block_on(app.apply(&secret("wrong"), &secret("other")))
        .unwrap_err();
    assert_eq!(e.code(), "connector_credential_refused", "{e}");
    assert!(!e.to_string().contains("other"));
    assert_eq!(rt.block_on(app.verify(&new)).unwrap(), Verdict::Accepted);
    // A role the connector may not change (a superuser) is refused.
    let e = rt
        .block_on(target(&pg, vault_e2e::postgres::SUPERUSER).apply(&cred, &secret("x")))
        .unwrap_err();
    assert_eq!(e.code(), "target_refused", "{e}");

    // A target that is down: unreachable, never "rejected" (a rotation
    // must not take it for a wrong value), and the role keeps its value.
    pg.stop();
    let e = rt
        .block_on(app.apply(&cred, &secret("while-down")))
        .unwrap_err();
    assert_eq!(e.code(), "target_unreachable", "{e}");
    let e = rt.block_on(app.verify(&new)).unwrap_err();
    assert_eq!(e.code(), "target_unreachable", "{e}");
    pg.spawn();
    assert_eq!(rt.block_on(app.verify(&new)).unwrap(), Verdict::Accepted);
}
