//! A PostgreSQL role's password. The new password is turned into a
//! SCRAM-SHA-256 verifier here (random salt, 4096 iterations, as
//! PostgreSQL's own `\password` does) and set with `ALTER ROLE … PASSWORD
//! 'SCRAM-SHA-256$…'`, so the plaintext never reaches the server, its
//! statement log or `pg_stat_activity`. The change is made with the
//! connector's credential (a role with `CREATEROLE`, itself a vaulted
//! secret); verifying logs in as the role with the value (SCRAM: the value
//! does not cross the wire either). Ending sessions terminates the role's
//! backends (`pg_terminate_backend`).
//!
//! Not yet: TLS to the target (the connection is plain TCP; over it SCRAM
//! sends no password, but the verifier of `ALTER ROLE` crosses in clear, so
//! a target must be reached over a trusted network until TLS is added),
//! and the client library keeps its copy of a password in a buffer it does
//! not zeroize.

use std::time::Duration;

use postgres_protocol::escape::{escape_identifier, escape_literal};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};
use vault_core::secret::SecretBytes;

use crate::{ConnectorError, Verdict};

/// Where a role lives, and which role.
#[derive(Debug, Clone)]
pub struct PostgresRole {
    pub host: String,
    pub port: u16,
    /// A database the role may connect to.
    pub dbname: String,
    /// The role whose password rotates.
    pub role: String,
    /// The connector's own role (`CREATEROLE`, or the role itself).
    pub connector_user: String,
    pub connect_timeout: Duration,
}

impl PostgresRole {
    async fn connect(
        &self,
        user: &str,
        password: &SecretBytes,
    ) -> Result<Client, tokio_postgres::Error> {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.host)
            .port(self.port)
            .dbname(&self.dbname)
            .user(user)
            .password(password.expose_secret())
            .application_name("vaultd-rotation")
            .connect_timeout(self.connect_timeout);
        let (client, conn) = c.connect(NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// The connector's session, or why not.
    async fn admin(&self, credential: &SecretBytes) -> Result<Client, ConnectorError> {
        self.connect(&self.connector_user, credential)
            .await
            .map_err(|e| match auth_failure(&e) {
                true => ConnectorError::CredentialRefused(describe(&e)),
                false => ConnectorError::Unreachable(describe(&e)),
            })
    }

    /// Sets the role's password to `new`, as a verifier computed here.
    pub async fn apply(
        &self,
        credential: &SecretBytes,
        new: &SecretBytes,
    ) -> Result<(), ConnectorError> {
        let verifier = postgres_protocol::password::scram_sha_256(new.expose_secret());
        let client = self.admin(credential).await?;
        let sql = format!(
            "ALTER ROLE {} PASSWORD {}",
            escape_identifier(&self.role),
            escape_literal(&verifier)
        );
        // One statement, atomic: a refusal from the server changed nothing;
        // a connection lost on the way may have.
        client.batch_execute(&sql).await.map_err(|e| {
            if e.as_db_error().is_some() {
                ConnectorError::Refused(describe(&e))
            } else {
                ConnectorError::Uncertain(describe(&e))
            }
        })
    }

    /// Logs in as the role with `value`.
    pub async fn verify(&self, value: &SecretBytes) -> Result<Verdict, ConnectorError> {
        match self.connect(&self.role, value).await {
            Ok(client) => {
                client
                    .simple_query("SELECT 1")
                    .await
                    .map_err(|e| ConnectorError::Unreachable(describe(&e)))?;
                Ok(Verdict::Accepted)
            }
            Err(e) if auth_failure(&e) => Ok(Verdict::Rejected),
            Err(e) => Err(ConnectorError::Unreachable(describe(&e))),
        }
    }

    /// Terminates every session of the role (what an old value opened);
    /// how many were ended.
    pub async fn end_sessions(&self, credential: &SecretBytes) -> Result<u64, ConnectorError> {
        let client = self.admin(credential).await?;
        let rows = client
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE usename = $1 AND pid <> pg_backend_pid()",
                &[&self.role],
            )
            .await
            .map_err(|e| ConnectorError::Refused(describe(&e)))?;
        Ok(rows.iter().filter(|r| r.get::<_, bool>(0)).count() as u64)
    }
}

/// A refused password (or a role that may not log in).
fn auth_failure(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::INVALID_PASSWORD || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    )
}

/// The error's words: the server's message, or the client library's.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}
