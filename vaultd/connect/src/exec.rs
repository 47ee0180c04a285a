//! The generic exec hook: a program of the operator's that changes a
//! credential wherever the vault has no connector for. It is called as
//! `PROGRAM [ARGS…] ACTION` with `ACTION` one of `apply`, `verify` or
//! `end-sessions`; the value (the new one for `apply`, the one to try for
//! `verify`; nothing for `end-sessions`) arrives on stdin, followed by
//! end of file, and never in argv or the environment. The environment is
//! cleared but for `PATH=/usr/sbin:/usr/bin:/sbin:/bin` and
//! `VAULT_HOOK_ACTION`. Exit status: 0 done (for `verify`: accepted), 1
//! (for `verify`) rejected, anything else an error; a hook that runs past
//! its timeout is killed and is an error. Any failure once the hook runs
//! is `target_uncertain` (it may have changed the target before failing);
//! a hook that cannot be started is `target_unreachable`. What the hook
//! writes on stderr
//! becomes the error's words (at most 512 bytes, the value cut out if the
//! hook echoed it); stdout is ignored.
//!
//! On the image, hooks come only from the signed root file system (the
//! daemon checks the path when it configures a hook; the next step).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use vault_core::secret::SecretBytes;

use crate::{ConnectorError, Verdict};

/// The most stderr kept for an error message.
const MAX_STDERR: usize = 512;

#[derive(Debug, Clone)]
pub struct ExecHook {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub timeout: Duration,
}

impl ExecHook {
    /// Runs the hook for `action` with `value` on stdin: its exit code.
    async fn run(&self, action: &str, value: Option<&SecretBytes>) -> Result<i32, ConnectorError> {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args)
            .arg(action)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("VAULT_HOOK_ACTION", action)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            ConnectorError::Unreachable(format!(
                "the hook {} cannot run: {e}",
                self.program.display()
            ))
        })?;
        let mut stdin = child.stdin.take();
        let run = async {
            if let (Some(s), Some(v)) = (stdin.as_mut(), value) {
                // A hook that exits without reading gets a broken pipe:
                // its exit status says what happened.
                let _ = s.write_all(v.expose_secret()).await;
            }
            drop(stdin);
            child.wait_with_output().await
        };
        // Once the hook runs, a failure says nothing certain about the
        // target: the hook may have changed it before it failed.
        let out = tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| {
                ConnectorError::Uncertain(format!(
                    "the hook {action} ran past {} s and was killed",
                    self.timeout.as_secs()
                ))
            })?
            .map_err(|e| ConnectorError::Uncertain(format!("the hook {action}: {e}")))?;
        match out.status.code() {
            Some(c) => {
                if c != 0 && !(c == 1 && action == "verify") {
                    return Err(ConnectorError::Uncertain(format!(
                        "the hook {action} exited {c}: {}",
                        words(&out.stderr, value)
                    )));
                }
                Ok(c)
            }
            None => Err(ConnectorError::Uncertain(format!(
                "the hook {action} was killed by a signal: {}",
                words(&out.stderr, value)
            ))),
        }
    }

    /// Has the hook set the credential to `new`.
    pub async fn apply(&self, new: &SecretBytes) -> Result<(), ConnectorError> {
        self.run("apply", Some(new)).await.map(|_| ())
    }

    /// Asks the hook whether the target accepts `value`.
    pub async fn verify(&self, value: &SecretBytes) -> Result<Verdict, ConnectorError> {
        match self.run("verify", Some(value)).await? {
            0 => Ok(Verdict::Accepted),
            _ => Ok(Verdict::Rejected),
        }
    }

    /// Has the hook end the sessions the old value opened.
    pub async fn end_sessions(&self) -> Result<(), ConnectorError> {
        self.run("end-sessions", None).await.map(|_| ())
    }
}

/// The hook's stderr as error words: lossy UTF-8, at most [`MAX_STDERR`]
/// bytes, with any occurrence of the value cut out.
fn words(stderr: &[u8], value: Option<&SecretBytes>) -> String {
    let mut s = String::from_utf8_lossy(stderr).into_owned();
    if let Some(v) = value.map(|v| String::from_utf8_lossy(v.expose_secret()).into_owned()) {
        if !v.is_empty() {
            s = s.replace(&v, "[value removed]");
        }
    }
    let mut s = s.trim().to_owned();
    if s.len() > MAX_STDERR {
        let mut cut = MAX_STDERR;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    if s.is_empty() {
        "(nothing on stderr)".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_words_never_carry_the_value() {
        let v = SecretBytes::new(b"hunter2".to_vec());
        assert_eq!(words(b"bad: hunter2\n", Some(&v)), "bad: [value removed]");
        assert_eq!(words(b"", None), "(nothing on stderr)");
        let long = vec![b'x'; 2000];
        assert_eq!(words(&long, None).len(), MAX_STDERR + '…'.len_utf8());
    }
}
