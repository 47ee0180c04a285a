//! Test fixtures for end-to-end tests of the real `vaultd` binary.
//!
//! # Layout
//!
//! * [`Appliance`]: a temp dir with a SoftHSM2 token, a swtpm process, a
//!   vaultd config, an initialised vault and a running `vaultd` process on a
//!   free port; restart, kill -9, stop.
//! * [`issue`]: client certificates through the API (CSR made here).
//!
//! The binaries are taken from the same target directory as the test
//! (`cargo build --bins` first; `make test` does), or from `VAULTD_BIN` /
//! `VAULTCTL_BIN`.

#![forbid(unsafe_code)]

pub mod postgres;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{json, Value};
use vault_client::{Client, Response};
use vault_hsm::softhsm::{SoftHsmDir, SOFTHSM2_MODULE};
use vault_tpm::swtpm::Swtpm;

pub const TOKEN: &str = "vault-e2e";
pub const PIN: &str = "246810";
pub const SO_PIN: &str = "13579113";

fn bin(name: &str, env: &str) -> PathBuf {
    if let Ok(p) = std::env::var(env) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not found: run `cargo build --bins` first (make test does), or set {env}",
        p.display()
    );
    p
}

pub fn vaultd_bin() -> PathBuf {
    bin("vaultd", "VAULTD_BIN")
}

pub fn vaultctl_bin() -> PathBuf {
    bin("vaultctl", "VAULTCTL_BIN")
}

/// A command's stdout, after checking it succeeded (else everything it said).
pub fn ok(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Options for [`Appliance::start`].
#[derive(Clone)]
pub struct Options {
    pub mode: &'static str,
    pub pcrs: Vec<u8>,
    /// Appended to the generated vaultd.toml (extra sections).
    pub extra_config: String,
    /// Extra keys of `[seal.tpm]` (e.g. `policy_key = "…"`).
    pub tpm_extra: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: "tpm+pkcs11",
            pcrs: vec![7],
            extra_config: String::new(),
            tpm_extra: String::new(),
        }
    }
}

pub struct Appliance {
    pub dir: tempfile::TempDir,
    pub hsm: SoftHsmDir,
    pub tpm: Swtpm,
    pub port: u16,
    pub config: PathBuf,
    pub certs: PathBuf,
    child: Option<Child>,
}

impl Appliance {
    /// Token, swtpm, config, `vaultd init`, `vaultd` running and unsealed.
    pub fn start(opts: Options) -> Appliance {
        let mut a = Appliance::create(opts);
        let out = a
            .command(vaultd_bin())
            .arg("--config")
            .arg(&a.config)
            .arg("init")
            .arg("--out")
            .arg(&a.certs)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "vaultd init failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        a.spawn();
        a.wait_ready();
        a
    }

    /// A new box: its own token, swtpm and config; nothing initialised,
    /// nothing running.
    pub fn create(opts: Options) -> Appliance {
        let dir = tempfile::tempdir().unwrap();
        let hsm = SoftHsmDir::create(&dir.path().join("softhsm")).expect("softhsm dir");
        hsm.init_token(TOKEN, SO_PIN, PIN).expect("init token");
        let tpm = Swtpm::start().expect("swtpm");
        let port = free_port();
        let certs = dir.path().join("certs");
        std::fs::write(dir.path().join("pin"), format!("{PIN}\n")).unwrap();
        let config = dir.path().join("vaultd.toml");
        std::fs::write(
            &config,
            format!(
                r#"listen = "127.0.0.1:{port}"
data_dir = "{data}"
[seal]
mode = "{mode}"
[seal.tpm]
tcti = "{tcti}"
pcrs = {pcrs:?}
{tpm_extra}
[seal.pkcs11]
module = "{SOFTHSM2_MODULE}"
token_label = "{TOKEN}"
pin_file = "{pin}"
[limits]
max_body_bytes = 131072
[log]
level = "info"
{extra}
"#,
                data = dir.path().join("data").display(),
                mode = opts.mode,
                tcti = tpm.tcti(),
                pcrs = opts.pcrs,
                pin = dir.path().join("pin").display(),
                extra = opts.extra_config,
                tpm_extra = opts.tpm_extra,
            ),
        )
        .unwrap();
        Appliance {
            dir,
            hsm,
            tpm,
            port,
            config,
            certs,
            child: None,
        }
    }

    /// A command with this appliance's SoftHSM configuration.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env("SOFTHSM2_CONF", self.hsm.conf_path());
        c
    }

    /// Runs `vaultd ARGS` with this appliance's SoftHSM configuration: the
    /// local ceremonies (`init`, `recover begin|finish`) on the box itself.
    pub fn vaultd(&self, args: &[&str]) -> std::process::Output {
        self.command(vaultd_bin()).args(args).output().unwrap()
    }

    /// Runs `vaultctl ARGS` as the principal `who` (its certificate and key
    /// in `certs/`) against this appliance, with a clean environment and
    /// `stdin` piped in.
    pub fn vaultctl(&self, who: &str, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        use std::io::Write as _;
        let mut c = Command::new(vaultctl_bin());
        c.env_clear()
            .env("VAULT_ADDR", self.addr())
            .env("VAULT_CACERT", self.certs.join("ca.pem"))
            .env("VAULT_CERT", self.certs.join(format!("{who}.pem")))
            .env("VAULT_KEY", self.certs.join(format!("{who}-key.pem")))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        if let Some(s) = stdin {
            child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    }

    pub fn pin_file(&self) -> PathBuf {
        self.dir.path().join("pin")
    }

    /// Every audit entry, in order, read from the data file.
    pub fn audit_entries(&self) -> Vec<vault_core::audit::entry::Entry> {
        let c = rusqlite::Connection::open_with_flags(
            self.db_path(),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let mut st = c
            .prepare("SELECT entry FROM audit_log ORDER BY idx")
            .unwrap();
        let rows = st
            .query_map([], |r| r.get::<_, Vec<u8>>(0))
            .unwrap()
            .map(|b| vault_core::audit::entry::Entry::parse(&b.unwrap()).unwrap())
            .collect();
        rows
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("data").join("vault.db")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("vaultd.log")
    }

    pub fn addr(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.certs.join("ca.pem")).unwrap()
    }

    /// Starts `vaultd` (output appended to vaultd.log).
    pub fn spawn(&mut self) {
        self.spawn_with(&[]);
    }

    /// Starts `vaultd` with extra environment variables (a debug build's
    /// fault-injection hooks).
    pub fn spawn_with(&mut self, env: &[(&str, &str)]) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut cmd = self.command(vaultd_bin());
        let clock = self.clock_file();
        if clock.exists() {
            cmd.env("VAULTD_TEST_CLOCK_FILE", &clock);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .arg("--config")
            .arg(&self.config)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn clock_file(&self) -> PathBuf {
        self.dir.path().join("clock")
    }

    /// Moves the daemon's clock `offset` seconds ahead of the system's (a
    /// debug build's `VAULTD_TEST_CLOCK_FILE`). The daemon must be
    /// (re)started after the first call; later calls take effect while it
    /// runs, and this waits until its health answer shows the new time.
    pub fn set_clock(&self, offset: i64) {
        let tmp = self.dir.path().join("clock.tmp");
        std::fs::write(&tmp, offset.to_string()).unwrap();
        std::fs::rename(&tmp, self.clock_file()).unwrap();
        if self.child.is_none() {
            return;
        }
        let rt = runtime();
        let c = self.client_at("admin", offset);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            let t = rt
                .block_on(c.request(Method::GET, "/v1/sys/health", None))
                .ok()
                .and_then(|r| r.json().ok())
                .and_then(|v| v["time"].as_i64());
            if t.is_some_and(|t| (t - now - offset).abs() <= 2) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon's clock did not move to +{offset} s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// [`Appliance::client`], judging the server certificate at the
    /// system's time plus `offset` seconds.
    pub fn client_at(&self, name: &str, offset: i64) -> Client {
        let cert = std::fs::read_to_string(self.certs.join(format!("{name}.pem"))).unwrap();
        let key = std::fs::read_to_string(self.certs.join(format!("{name}-key.pem"))).unwrap();
        Client::new_at(&self.addr(), &self.ca_pem(), Some((&cert, &key)), offset).unwrap()
    }

    /// Waits until the API answers (sealed or not).
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let admin = self.admin();
        let rt = runtime();
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("vaultd exited with {status}: {}", self.log());
                }
            }
            if rt
                .block_on(admin.request(Method::GET, "/v1/sys/seal-status", None))
                .is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "vaultd not ready in 30 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Waits up to `timeout` for the daemon to exit by itself (a fault
    /// injection point); whether it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while let Some(c) = self.child.as_mut() {
            if let Ok(Some(_)) = c.try_wait() {
                self.child = None;
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }

    /// SIGKILL: no shutdown path at all.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
        self.wait_ready();
    }

    pub fn client(&self, name: &str) -> Client {
        let cert = std::fs::read_to_string(self.certs.join(format!("{name}.pem"))).unwrap();
        let key = std::fs::read_to_string(self.certs.join(format!("{name}-key.pem"))).unwrap();
        Client::new(&self.addr(), &self.ca_pem(), Some((&cert, &key))).unwrap()
    }

    pub fn admin(&self) -> Client {
        self.client("admin")
    }

    /// Issues a client certificate through the API and returns its client.
    pub fn issue(&self, role: &str, name: &str) -> Client {
        self.issue_by(&self.admin(), role, name)
    }

    /// [`Appliance::issue`] on a clock `offset` seconds ahead (the admin's
    /// and the new client's views of the server certificate).
    pub fn issue_at(&self, role: &str, name: &str, offset: i64) -> Client {
        self.issue_by(&self.client_at("admin", offset), role, name);
        self.client_at(name, offset)
    }

    fn issue_by(&self, admin: &Client, role: &str, name: &str) -> Client {
        let (key, csr) = key_and_csr(name);
        let r = runtime()
            .block_on(admin.request(
                Method::POST,
                "/v1/sys/certs",
                Some(&pam_body(name, role, &csr)),
            ))
            .unwrap();
        assert_eq!(
            r.status,
            200,
            "issue {role} {name}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let v = r.json().unwrap();
        self.keep(name, v["certificate_pem"].as_str().unwrap(), &key)
    }

    /// Writes a principal's certificate and key where [`Appliance::client`]
    /// finds them, and returns its client.
    pub fn keep(&self, name: &str, cert: &str, key: &rcgen::KeyPair) -> Client {
        std::fs::write(self.certs.join(format!("{name}.pem")), cert).unwrap();
        std::fs::write(
            self.certs.join(format!("{name}-key.pem")),
            key.serialize_pem(),
        )
        .unwrap();
        Client::new(
            &self.addr(),
            &self.ca_pem(),
            Some((cert, &key.serialize_pem())),
        )
        .unwrap()
    }
}

/// A new P-256 key and a CSR for it with `CN=name`.
/// The issuance body: a pam certificate of the tests gets a `*` grant
/// (access grants themselves are tested in tests/grants.rs).
pub fn pam_body(name: &str, role: &str, csr: &str) -> Value {
    let mut b = json!({"name": name, "role": role, "csr_pem": csr});
    if role == "pam" {
        b["grants"] = json!(["*"]);
    }
    b
}

pub fn key_and_csr(name: &str) -> (rcgen::KeyPair, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    let csr = p.serialize_request(&key).unwrap().pem().unwrap();
    (key, csr)
}

impl Drop for Appliance {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Blocking one-shot request.
pub fn req(c: &Client, method: Method, path: &str, body: Option<Value>) -> Response {
    runtime()
        .block_on(c.request(method, path, body.as_ref()))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn json_of(r: &Response) -> Value {
    r.json().unwrap_or_else(|_| {
        panic!(
            "not JSON ({}): {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        )
    })
}

pub fn put(c: &Client, path: &str, value: &str, exclusive: bool) -> Response {
    req(
        c,
        Method::PUT,
        &format!("/v1/secrets/{path}"),
        Some(json!({"value": value, "exclusive": exclusive, "metadata": {"owner": "e2e"}})),
    )
}

/// Checks a checkout in, asserting it was.
pub fn checkin(c: &Client, checkout_id: &str) {
    let r = req(
        c,
        Method::POST,
        &format!("/v1/checkouts/{checkout_id}/checkin"),
        None,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

pub fn checkout(c: &Client, path: &str) -> Response {
    req(
        c,
        Method::POST,
        &format!("/v1/secrets/{path}/checkout"),
        Some(json!({"reason": "e2e test", "ttl_seconds": 60})),
    )
}

/// Software custodian tokens whose keys a throw-away PIV attestation root
/// attests exactly as a YubiKey would (root → f9 → slot leaf with Yubico's
/// extensions). The daemon trusts the root through `[custodians]
/// attestation_roots`.
pub mod piv {
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine as _;
    use p256::pkcs8::EncodePublicKey as _;
    use p256::PublicKey;
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, CustomExtension, DnType, IsCa,
        KeyPair, SubjectPublicKeyInfo, PKCS_ECDSA_P256_SHA256,
    };
    use serde_json::{json, Value};
    use vault_core::custodian::token::{CustodianToken, Slot, SoftToken};
    use vault_core::secret::Pin;

    pub struct TestRoot {
        pub root_pem: String,
        pub f9: CertifiedIssuer<'static, KeyPair>,
        /// Holds the root's PEM file for the daemon's configuration.
        dir: tempfile::TempDir,
    }

    fn ca(cn: &str) -> CertificateParams {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p
    }

    impl TestRoot {
        pub fn new(name: &str) -> TestRoot {
            let root = CertifiedIssuer::self_signed(
                ca(name),
                KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
            )
            .unwrap();
            let f9 = CertifiedIssuer::signed_by(
                ca("Yubico PIV Attestation"),
                KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
                &root,
            )
            .unwrap();
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("root.pem"), root.pem()).unwrap();
            TestRoot {
                root_pem: root.pem(),
                f9,
                dir,
            }
        }

        /// The root certificate's PEM file.
        pub fn root_path(&self) -> std::path::PathBuf {
            self.dir.path().join("root.pem")
        }

        /// Appliance options that trust this root.
        ///
        /// [`TestRoot::token`] attests software keys as PIN once, touch
        /// always. A software token enforces neither: these tests exercise
        /// the protocol, not the device. PIN once is what the software token
        /// does (one PIN check, then many signatures), so these options turn
        /// off `require_pin_always` (on by default) explicitly;
        /// `require_touch` keeps its default. The default device policy
        /// itself is tested with [`TestRoot::default_options`].
        pub fn options(&self) -> crate::Options {
            crate::Options {
                extra_config: format!(
                    "[custodians]\nattestation_roots = [\"{}\"]\nrequest_ttl_secs = 600\n\
                     # software tokens verify the PIN once per session\n\
                     require_pin_always = false\n",
                    self.dir.path().join("root.pem").display()
                ),
                ..crate::Options::default()
            }
        }

        /// Appliance options that trust this root and keep every other
        /// `[custodians]` default (touch and PIN always required).
        pub fn default_options(&self) -> crate::Options {
            crate::Options {
                extra_config: format!(
                    "[custodians]\nattestation_roots = [\"{}\"]\n",
                    self.dir.path().join("root.pem").display()
                ),
                ..crate::Options::default()
            }
        }

        /// A slot attestation as a YubiKey makes it (Yubico extensions).
        pub fn attest(&self, key: &PublicKey, slot: &str, serial: u32, policy: [u8; 2]) -> Vec<u8> {
            self.attest_by(key, slot, serial, policy, &self.f9)
        }

        /// A certificate laid out like a slot attestation, signed by any
        /// `issuer`: with the device's f9 key it is genuine; with anything
        /// else it is a forgery the appliance must refuse.
        pub fn attest_by(
            &self,
            key: &PublicKey,
            slot: &str,
            serial: u32,
            policy: [u8; 2],
            issuer: &rcgen::Issuer<'_, impl rcgen::SigningKey>,
        ) -> Vec<u8> {
            let mut p = CertificateParams::default();
            p.distinguished_name.push(
                DnType::CommonName,
                format!("YubiKey PIV Attestation {slot}"),
            );
            let mut s = vec![0x02, 0x05, 0x00];
            s.extend_from_slice(&serial.to_be_bytes());
            for (last, content) in [(3u64, vec![5, 4, 3]), (7, s), (8, policy.to_vec())] {
                p.custom_extensions.push(CustomExtension::from_oid_content(
                    &[1, 3, 6, 1, 4, 1, 41482, 3, last],
                    content,
                ));
            }
            let spki = SubjectPublicKeyInfo::from_der(key.to_public_key_der().unwrap().as_bytes())
                .unwrap();
            p.signed_by(&spki, issuer).unwrap().der().to_vec()
        }

        /// A software token whose keys this root attests (PIN once, touch
        /// always).
        pub fn token(&self, serial: u32) -> SoftToken {
            self.token_with(serial, [2, 2])
        }

        /// A software token whose keys this root attests with the given
        /// PIN and touch policy bytes (YubiKey numbering).
        pub fn token_with(&self, serial: u32, policy: [u8; 2]) -> SoftToken {
            let mut t = SoftToken::new(serial, "123456");
            let sig = self.attest(
                &t.public_key(Slot::Signature).unwrap(),
                "9c",
                serial,
                policy,
            );
            let kex = self.attest(
                &t.public_key(Slot::KeyManagement).unwrap(),
                "9d",
                serial,
                policy,
            );
            t.set_attestation(sig, kex, self.f9.der().to_vec());
            t.verify_pin(&Pin::new("123456".into())).unwrap();
            t
        }
    }

    pub fn enroll_body(name: &str, groups: &[&str], t: &mut SoftToken) -> Value {
        json!({
            "name": name,
            "groups": groups,
            "signature_attestation": B64.encode(t.attest(Slot::Signature).unwrap()),
            "key_management_attestation": B64.encode(t.attest(Slot::KeyManagement).unwrap()),
            "intermediates": [B64.encode(t.attestation_intermediate().unwrap())],
        })
    }

    /// Enrols each member's token in `groups` (before genesis: at once) and
    /// issues it a custodian certificate under its name.
    pub fn enroll_custodians(
        a: &crate::Appliance,
        groups: &[&str],
        members: &mut [(&str, &mut SoftToken)],
    ) {
        for (n, t) in members.iter_mut() {
            let r = crate::req(
                &a.admin(),
                hyper::Method::POST,
                "/v1/custodians",
                Some(enroll_body(n, groups, t)),
            );
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            a.issue("custodian", n);
        }
    }

    /// The request as the custodian's tool rebuilds it from what it was
    /// shown (`GET /v1/requests/{id}`).
    pub fn shown(v: &Value) -> vault_core::custodian::approval::Request {
        vault_core::custodian::approval::Request {
            request_id: v["request_id"].as_str().unwrap().into(),
            appliance_id: v["appliance_id"].as_str().unwrap().into(),
            path: v["path"].as_str().unwrap().into(),
            version: v["version"].as_u64().unwrap(),
            requester: v["requester"].as_str().unwrap().into(),
            reason: v["reason"].as_str().unwrap().into(),
            created_at: v["created_at"].as_i64().unwrap(),
            expires_at: v["expires_at"].as_i64().unwrap(),
            nonce: B64
                .decode(v["nonce"].as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap(),
            recipient_key: v["recipient_key"].as_str().map(|k| B64.decode(k).unwrap()),
            change: v["change"].as_str().map(String::from),
        }
    }

    /// A custodian's signed vote on request `id`, as `vaultctl approve`
    /// casts it (with `share`: a break-glass share re-sealed already).
    pub fn vote(
        c: &vault_client::Client,
        t: &mut SoftToken,
        who: &str,
        id: &str,
        d: vault_core::custodian::approval::Decision,
        share: Option<Vec<u8>>,
    ) -> vault_client::Response {
        use hyper::Method;
        let v = crate::json_of(&crate::req(
            c,
            Method::GET,
            &format!("/v1/requests/{id}"),
            None,
        ));
        let sig = t.sign(&shown(&v).message(d, who)).unwrap();
        let mut body = json!({"decision": d.as_str(), "signature": B64.encode(sig)});
        if let Some(s) = share {
            body["share"] = json!(B64.encode(s));
        }
        crate::req(
            c,
            Method::POST,
            &format!("/v1/requests/{id}/vote"),
            Some(body),
        )
    }

    /// The custodians approve governance request `id` (each with its
    /// custodian certificate and token) and the admin applies it: the
    /// apply's response.
    pub fn approve_and_apply(
        a: &crate::Appliance,
        id: &str,
        voters: &mut [(&str, &mut SoftToken)],
    ) -> vault_client::Response {
        use vault_core::custodian::approval::Decision;
        for (who, t) in voters.iter_mut() {
            let r = vote(&a.client(who), t, who, id, Decision::Approve, None);
            assert_eq!(r.status, 200, "{who}: {}", String::from_utf8_lossy(&r.body));
        }
        crate::req(
            &a.admin(),
            hyper::Method::POST,
            &format!("/v1/requests/{id}/apply"),
            None,
        )
    }

    /// Genesis with the enrolled custodians `members` (each already has a
    /// custodian certificate of its name): the admin proposes `rule`, every
    /// member signs, the admin applies.
    pub fn genesis(a: &crate::Appliance, rule: Value, members: &mut [(&str, &mut SoftToken)]) {
        let r = crate::req(
            &a.admin(),
            hyper::Method::POST,
            "/v1/governance/genesis",
            Some(json!({"rule": rule, "reason": "initial custodian set"})),
        );
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        let id = crate::json_of(&r)["request_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let r = approve_and_apply(a, &id, members);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }

    /// Alice and Bob (tokens of `serials`) enrolled in `security`, and the
    /// governance established with `security: 2`: what a test needs before
    /// it tries a control-plane change as one admin. Their tokens, to vote.
    pub fn alice_and_bob_genesis(
        a: &crate::Appliance,
        root: &TestRoot,
        serials: [u32; 2],
    ) -> (SoftToken, SoftToken) {
        let mut alice = root.token(serials[0]);
        let mut bob = root.token(serials[1]);
        enroll_custodians(
            a,
            &["security"],
            &mut [("alice", &mut alice), ("bob", &mut bob)],
        );
        genesis(
            a,
            json!([{"group": "security", "k": 2}]),
            &mut [("alice", &mut alice), ("bob", &mut bob)],
        );
        (alice, bob)
    }

    /// A governance request's answer (202): its id and its change.
    pub fn proposed(r: &vault_client::Response) -> (String, Value) {
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        let v = crate::json_of(r);
        let change = serde_json::from_str(v["change"].as_str().unwrap()).unwrap();
        (v["request_id"].as_str().unwrap().to_owned(), change)
    }

    /// A certificate of a role under the governance (pam, admin,
    /// custodian) after genesis: proposed, approved by `voters`, applied;
    /// its client.
    pub fn issue_governed(
        a: &crate::Appliance,
        role: &str,
        name: &str,
        voters: &mut [(&str, &mut SoftToken)],
    ) -> vault_client::Client {
        let (key, csr) = crate::key_and_csr(name);
        let id = propose(
            a,
            hyper::Method::POST,
            "/v1/sys/certs",
            crate::pam_body(name, role, &csr),
        );
        let r = approve_and_apply(a, &id, voters);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v = crate::json_of(&r);
        a.keep(name, v["result"]["certificate_pem"].as_str().unwrap(), &key)
    }

    /// Proposes `POST path body` as a governance change (202) and returns
    /// its request id.
    pub fn propose(a: &crate::Appliance, method: hyper::Method, path: &str, body: Value) -> String {
        let r = crate::req(&a.admin(), method, path, Some(body));
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        crate::json_of(&r)["request_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// What `vaultctl recover share` does on a YubiKey, with a software
    /// token: the signed approval and the share re-sealed to the operator's
    /// one-time key.
    pub fn recovery_answer(request: &std::path::Path, who: &str, t: &mut SoftToken) -> Value {
        use vault_core::custodian::approval::Decision;
        use vault_core::custodian::recovery::{self, Bundle, RecoveryRequest};
        let v: Value = serde_json::from_str(&std::fs::read_to_string(request).unwrap()).unwrap();
        let req = RecoveryRequest::from_json(&v["request"]).unwrap();
        let bundle = Bundle::from_json(&v["bundle"]).unwrap();
        let sig = t
            .sign(&req.approval().message(Decision::Approve, who))
            .unwrap();
        let kex = t.public_key(Slot::KeyManagement).unwrap();
        let mut ecdh = |e: &PublicKey| t.ecdh(e).map_err(|x| x.to_string());
        let env =
            recovery::forward_share(&bundle, &req, who, &kex, &mut ecdh, &mut rand::rngs::OsRng)
                .unwrap();
        json!({"request_id": req.id(), "custodian": who, "signature": B64.encode(sig), "envelope": B64.encode(env)})
    }
}
