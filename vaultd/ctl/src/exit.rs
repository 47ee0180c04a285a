//! How `vaultctl` ends: one stable exit code per kind of failure, and with
//! `--json` the failure as one JSON object on stderr, so that scripts never
//! parse human text.

use std::process::ExitCode;

use serde_json::json;

use crate::util::{ServerError, JSON_SCHEMA};

/// The exit codes (documented in docs/QUICKSTART.md; never renumbered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// The server refused, or nothing was done (a checkout awaiting
    /// approval).
    Refused = 1,
    /// A usage error, or a local one (bad or missing files, bad input).
    Usage = 2,
    /// The appliance could not be reached: connection, TLS handshake.
    Unreachable = 3,
    /// The appliance is sealed.
    Sealed = 4,
    /// Stored data failed an integrity check on the appliance, or an audit
    /// log did not verify here.
    Integrity = 5,
    /// The appliance is up but cannot serve: any other 5xx.
    Unavailable = 6,
}

/// A failure, as the exit code, the line for people and the JSON for
/// scripts.
pub struct Failure {
    exit: Exit,
    code: String,
    message: String,
    /// The HTTP status, for a server's answer.
    status: Option<u16>,
}

impl Failure {
    pub fn usage(message: String) -> Failure {
        Failure {
            exit: Exit::Usage,
            code: "usage".into(),
            message: message.trim_end().to_owned(),
            status: None,
        }
    }

    /// A local error: unreachable if connecting or the handshake failed.
    pub fn local(e: &anyhow::Error) -> Failure {
        let unreachable = e.chain().any(|c| {
            matches!(
                c.downcast_ref::<vault_client::ClientError>(),
                Some(
                    vault_client::ClientError::Connect(..)
                        | vault_client::ClientError::Handshake(..)
                        | vault_client::ClientError::Http(_)
                )
            )
        });
        let (exit, code) = if unreachable {
            (Exit::Unreachable, "unreachable")
        } else {
            (Exit::Usage, "local_error")
        };
        Failure {
            exit,
            code: code.into(),
            message: format!("{e:#}"),
            status: None,
        }
    }

    /// The server's refusal, or (status 0) a local "nothing was done".
    pub fn server(ServerError(status, code, message): ServerError) -> Failure {
        let exit = match (status, code.as_str()) {
            (_, "sealed") => Exit::Sealed,
            (_, "integrity" | "verification_failed" | "recording_not_verified") => Exit::Integrity,
            (500..=599, _) => Exit::Unavailable,
            _ => Exit::Refused,
        };
        Failure {
            exit,
            code,
            message,
            status: (status != 0).then_some(status),
        }
    }

    /// Prints the failure on stderr and gives its exit code.
    pub fn report(self, json: bool) -> ExitCode {
        if json {
            eprintln!(
                "{}",
                json!({
                    "error": {"code": self.code, "message": self.message, "status": self.status},
                    "schema_version": JSON_SCHEMA,
                })
            );
        } else {
            match self.status {
                Some(s) => eprintln!(
                    "vaultctl: server refused ({s} {}): {}",
                    self.code, self.message
                ),
                None => eprintln!("vaultctl: {}", self.message),
            }
        }
        ExitCode::from(self.exit as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit_of(status: u16, code: &str) -> Exit {
        Failure::server(ServerError(status, code.into(), String::new())).exit
    }

    #[test]
    fn every_kind_of_failure_has_its_exit_code() {
        assert_eq!(exit_of(403, "forbidden"), Exit::Refused);
        assert_eq!(exit_of(409, "checked_out"), Exit::Refused);
        assert_eq!(exit_of(0, "pending_approval"), Exit::Refused);
        assert_eq!(exit_of(503, "sealed"), Exit::Sealed);
        assert_eq!(exit_of(500, "integrity"), Exit::Integrity);
        assert_eq!(exit_of(0, "verification_failed"), Exit::Integrity);
        assert_eq!(exit_of(503, "audit_unavailable"), Exit::Unavailable);
        assert_eq!(exit_of(500, "internal"), Exit::Unavailable);
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = anyhow::Error::from(vault_client::ClientError::Connect("x".into(), refused))
            .context("status");
        assert_eq!(Failure::local(&e).exit, Exit::Unreachable);
        assert_eq!(
            Failure::local(&anyhow::anyhow!("no such file")).exit,
            Exit::Usage
        );
        // The numbers are part of the interface.
        let all = [
            (Exit::Refused, 1),
            (Exit::Usage, 2),
            (Exit::Unreachable, 3),
            (Exit::Sealed, 4),
            (Exit::Integrity, 5),
            (Exit::Unavailable, 6),
        ];
        for (e, n) in all {
            assert_eq!(e as u8, n, "{e:?}");
        }
    }
}
