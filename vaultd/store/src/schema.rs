//! Schema migrations. Each entry runs once, in order, inside a transaction;
//! `PRAGMA user_version` records how far a file has been migrated. A file
//! from a newer version of vaultd is refused rather than guessed at.

use rusqlite::Connection;

use crate::StoreError;

const MIGRATIONS: &[&str] = &[
    // 1: initial schema
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value BLOB NOT NULL
    ) STRICT;
    CREATE TABLE keyring (
        version    INTEGER PRIMARY KEY,
        salt       BLOB NOT NULL,
        created_at INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE secrets (
        path            TEXT PRIMARY KEY,
        exclusive       INTEGER NOT NULL,
        current_version INTEGER NOT NULL,
        metadata        TEXT NOT NULL,
        created_at      INTEGER NOT NULL,
        updated_at      INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE secret_versions (
        path        TEXT NOT NULL REFERENCES secrets(path),
        version     INTEGER NOT NULL,
        key_version INTEGER NOT NULL,
        wrapped_dek BLOB NOT NULL,
        ciphertext  BLOB NOT NULL,
        created_at  INTEGER NOT NULL,
        created_by  TEXT NOT NULL,
        PRIMARY KEY (path, version)
    ) STRICT;
    CREATE INDEX secret_versions_key_version ON secret_versions(key_version);
    CREATE TABLE checkouts (
        id            TEXT PRIMARY KEY,
        path          TEXT NOT NULL,
        version       INTEGER NOT NULL,
        principal     TEXT NOT NULL,
        reason        TEXT NOT NULL,
        exclusive     INTEGER NOT NULL,
        created_at    INTEGER NOT NULL,
        expires_at    INTEGER NOT NULL,
        checked_in_at INTEGER
    ) STRICT;
    CREATE INDEX checkouts_open ON checkouts(path) WHERE checked_in_at IS NULL;
    CREATE TABLE principals (
        fingerprint TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        role        TEXT NOT NULL,
        serial      TEXT NOT NULL,
        not_after   INTEGER NOT NULL,
        issued_at   INTEGER NOT NULL,
        revoked     INTEGER NOT NULL DEFAULT 0
    ) STRICT;
    "#,
    // 2: the audit log (entries are canonical bytes; leaf_hash = RFC 9162 leaf hash)
    r#"
    CREATE TABLE audit_log (
        idx       INTEGER PRIMARY KEY,
        entry     BLOB NOT NULL,
        leaf_hash BLOB NOT NULL
    ) STRICT;
    CREATE TABLE audit_checkpoints (
        tree_size  INTEGER PRIMARY KEY,
        note       TEXT NOT NULL,
        created_at INTEGER NOT NULL
    ) STRICT;
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as u32)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "applied schema migration");
    }
    Ok(())
}
