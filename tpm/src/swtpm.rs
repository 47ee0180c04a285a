//! A private software TPM (swtpm) for tests.
//!
//! Each [`Swtpm`] runs its own `swtpm socket --tpm2` child process on a free
//! loopback port pair with its own state directory, so tests never share
//! PCRs, dictionary-attack lockout or transient object slots.

use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
const PORT_ATTEMPTS: usize = 20;

/// A running swtpm child process. Dropping it kills and reaps the process
/// (and removes the state directory if [`Swtpm::start`] created it).
#[derive(Debug)]
pub struct Swtpm {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl Swtpm {
    /// Starts a swtpm on a fresh temporary state directory.
    pub fn start() -> io::Result<Swtpm> {
        let temp = tempfile::Builder::new().prefix("vault-swtpm-").tempdir()?;
        let mut s = Swtpm::start_in(temp.path())?;
        s._temp = Some(temp);
        Ok(s)
    }

    /// Starts a swtpm on an existing state directory (e.g. to simulate a
    /// reboot: persistent state survives, PCRs are reset by startup-clear).
    /// The directory is not removed on drop.
    pub fn start_in(dir: &Path) -> io::Result<Swtpm> {
        let mut s = Swtpm {
            child: None,
            port: 0,
            dir: dir.to_path_buf(),
            _temp: None,
        };
        s.spawn()?;
        Ok(s)
    }

    /// TCTI string for tss-esapi, e.g. `swtpm:host=127.0.0.1,port=40123`.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// The server (command) port; the control port is `port() + 1`.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state_dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the child process is running (as far as we know).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Shuts the TPM down cleanly (`swtpm_ioctl -s`), waits for the process
    /// to exit and kills it if it does not. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("swtpm_ioctl")
            .args(["--tcp", &self.ctrl_addr(), "-s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stops the TPM and starts it again on the same state directory (a
    /// reboot). The port may change: read [`Swtpm::tcti`] afterwards.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.spawn()
    }

    /// The last lines of swtpm's log file.
    pub fn log_tail(&self) -> String {
        log_tail(&self.dir)
    }

    fn ctrl_addr(&self) -> String {
        format!("127.0.0.1:{}", u32::from(self.port) + 1)
    }

    fn spawn(&mut self) -> io::Result<()> {
        let mut last_err = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port_pair()?;
            match self.try_spawn(port) {
                Ok(()) => return Ok(()),
                // The port was taken between probing and binding: try another.
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("no free port pair for swtpm")))
    }

    fn try_spawn(&mut self, port: u16) -> io::Result<()> {
        let d = self.dir.display().to_string();
        let mut child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={d}"))
            .arg("--server")
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
            .args(["--flags", "not-need-init,startup-clear", "--pid"])
            .arg(format!("file={d}/pid"))
            .arg("--log")
            .arg(format!("file={d}/log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        self.port = port;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                let mut stderr = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = io::Read::read_to_string(&mut e, &mut stderr);
                }
                let text = format!(
                    "swtpm exited with {status}: {} {}",
                    stderr.trim(),
                    log_tail(&self.dir)
                );
                let kind = if text.contains("Address already in use") {
                    io::ErrorKind::AddrInUse
                } else {
                    io::ErrorKind::Other
                };
                return Err(io::Error::new(kind, text));
            }
            let ok = Command::new("swtpm_ioctl")
                .args(["--tcp", &self.ctrl_addr(), "-g"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())?;
            if ok {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "swtpm did not answer within {START_TIMEOUT:?}: {}",
                        log_tail(&self.dir)
                    ),
                ));
            }
            sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A port P such that P and P+1 are both free on 127.0.0.1 right now.
fn free_port_pair() -> io::Result<u16> {
    for _ in 0..100 {
        let a = TcpListener::bind("127.0.0.1:0")?;
        let p = a.local_addr()?.port();
        if p == u16::MAX {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return Ok(p);
        }
    }
    Err(io::Error::other("no free port pair found"))
}

fn log_tail(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    if tail.is_empty() {
        String::new()
    } else {
        format!("(swtpm log: {tail})")
    }
}
