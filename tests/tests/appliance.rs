//! The appliance image's daemon-side features against the real `vaultd`
//! binary (swtpm, SoftHSM, mTLS on loopback): the first-boot ceremony over a
//! pinned one-time TLS identity, the status-only server of a locked data
//! volume, and the staging of signed update bundles. The boot chain itself
//! (verity, UKI, TPM-bound data volume, A/B slots) is tested under QEMU by
//! `make image-test`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{json, Value};
use vault_client::Client;
use vault_e2e::{json_of, ok, req, runtime, vaultctl_bin, Appliance, Options};
use vault_image::key::ImageSigningKey;

fn opts(extra: &str) -> Options {
    Options {
        extra_config: extra.to_owned(),
        ..Options::default()
    }
}

/// Waits for `needle` in the daemon's output and returns that line.
fn wait_line(a: &Appliance, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(l) = a.log().lines().find(|l| l.contains(needle)) {
            return l.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in 30 s: {}",
            a.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// (fingerprint, code) from the console lines.
fn ceremony_lines(a: &Appliance) -> (String, String) {
    let fp = wait_line(a, "bootstrap TLS certificate sha256 ");
    let code = wait_line(a, "one-time init code ");
    (
        fp.rsplit(' ').next().unwrap().to_owned(),
        code.rsplit(' ').next().unwrap().to_owned(),
    )
}

fn ctl(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(vaultctl_bin());
    c.env_clear().args(args).stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn remote_init(a: &Appliance, fp: &str, code: &str, out: &Path) -> Output {
    ctl(
        &[
            "--addr",
            &a.addr(),
            "--json",
            "init",
            "--pin-fingerprint",
            fp,
            "--code",
            code,
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    )
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn audit_actions(a: &Appliance) -> Vec<(String, String, Value)> {
    let auditor = a.issue("auditor", "aud");
    let v = json_of(&req(
        &auditor,
        Method::GET,
        "/v1/audit/entries?start=0&end=1000",
        None,
    ));
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let d = &e["decoded"];
            (
                d["action"].as_str().unwrap().to_owned(),
                d["error"].as_str().unwrap_or("").to_owned(),
                d["details"].clone(),
            )
        })
        .collect()
}

#[test]
fn first_boot_ceremony_over_a_pinned_one_time_identity() {
    let mut a = Appliance::create(opts("[appliance]\nbootstrap = true\n"));
    a.spawn();
    let (fp, code) = ceremony_lines(&a);
    assert_eq!(fp.len(), 64, "{fp}");
    // The code goes to the console (stdout) only, never to the log (stderr
    // is the journal on the appliance): the harness merges both, so check
    // the tracing lines instead.
    for l in a
        .log()
        .lines()
        .filter(|l| l.contains("INFO") || l.contains("WARN"))
    {
        assert!(!l.contains(&code), "init code in a log line: {l}");
    }
    let out = a.certs.clone();

    // A wrong fingerprint: the handshake is refused, nothing is sent.
    let mut wrong = fp.clone().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let o = remote_init(&a, std::str::from_utf8(&wrong).unwrap(), &code, &out);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("pinned fingerprint"), "{}", stderr(&o));
    assert!(!out.join("admin.pem").exists());

    // A wrong code: refused with a stable code, the vault stays uninitialised.
    let o = remote_init(&a, &fp, "AAAAA-AAAAA-AAAAA-AAAAA", &out);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("init_code_invalid"), "{}", stderr(&o));
    assert!(!out.join("admin.pem").exists());

    // Status is answered over the bootstrap identity.
    let pinned = Client::pinned(&a.addr(), &fp).unwrap();
    let r = req(&pinned, Method::GET, "/v1/sys/health", None);
    assert_eq!(r.status, 503);
    assert_eq!(json_of(&r)["reason"]["code"], "not_initialized");
    let r = req(&pinned, Method::GET, "/v1/secrets", None);
    assert_eq!(r.status, 503);

    // The right fingerprint and code (typed in lower case with spaces).
    let typed = code.to_ascii_lowercase().replace('-', " ");
    let o = remote_init(&a, &fp, &typed, &out);
    let report: Value = serde_json::from_str(&ok(&o)).unwrap();
    assert_eq!(report["seal_status"]["sealed"], false, "{report}");
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(out.join("admin-key.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(key_mode & 0o077, 0, "admin key readable by others");
    wait_line(&a, "bootstrap identity destroyed");

    // The appliance now answers mTLS under its new CA; the one-time
    // identity is gone (the pinned client no longer connects).
    let rt = runtime();
    assert!(rt
        .block_on(pinned.request(Method::GET, "/v1/sys/health", None))
        .is_err());
    let admin = a.admin();
    let st = json_of(&req(&admin, Method::GET, "/v1/sys/seal-status", None));
    assert_eq!(st["sealed"], false, "{st}");
    let writer = a.issue("writer", "w");
    let r = vault_e2e::put(&writer, "cloud/root", "s3cr3t-first-boot", false);
    assert!(r.status == 200 || r.status == 201, "{}", r.status);
    let pam = a.issue("pam", "p");
    let r = vault_e2e::checkout(&pam, "cloud/root");
    assert_eq!(json_of(&r)["value"], "s3cr3t-first-boot");

    // The same code cannot be replayed, and a restart does not offer a new
    // ceremony: the vault exists.
    a.stop();
    a.spawn();
    a.wait_ready();
    assert_eq!(
        a.log().matches("one-time init code").count(),
        1,
        "a second ceremony was offered"
    );
    let acts = audit_actions(&a);
    let init = acts
        .iter()
        .find(|(x, _, _)| x == "sys.init")
        .expect("sys.init");
    assert_eq!(init.2["admin"], "admin");
    assert_eq!(init.2["admin_fingerprint"], report["admin_fingerprint"]);
    assert!(!a.log().contains("s3cr3t-first-boot"));
}

#[test]
fn wrong_codes_lock_out_their_address_and_a_flood_of_them_burns_the_code() {
    use std::net::{IpAddr, Ipv4Addr};
    let mut a = Appliance::create(opts("[appliance]\nbootstrap = true\n"));
    a.spawn();
    let (fp, code) = ceremony_lines(&a);
    let out = a.certs.clone();
    let rt = vault_e2e::runtime();
    let from = |b: u8, c: u8| {
        vault_client::Client::pinned(&a.addr(), &fp)
            .unwrap()
            .from_source(IpAddr::V4(Ipv4Addr::new(127, 0, b, c)))
    };
    let attempt = |client: &vault_client::Client, code: &str| {
        let body = serde_json::json!({"code": code, "csr_pem": "not a CSR"});
        let r = rt
            .block_on(client.request(hyper::Method::POST, "/v1/sys/init", Some(&body)))
            .unwrap();
        (r.status, r.error_code().unwrap_or_default())
    };
    // Five wrong codes lock 127.0.0.2 out, even with the right code.
    let attacker = from(0, 2);
    for _ in 0..5 {
        assert_eq!(
            attempt(&attacker, "00000-00000-00000-00000"),
            (403, "init_code_invalid".into())
        );
    }
    assert_eq!(
        attempt(&attacker, &code),
        (429, "init_source_locked".into())
    );
    wait_line(&a, "wrong init codes from 127.0.0.2");
    // Another address still gets past the code (to the CSR check: nothing
    // is initialised, the code is not spent).
    assert_eq!(attempt(&from(0, 3), &code), (400, "invalid_csr".into()));
    // A flood from many addresses: 1,000 wrong codes in all burn the code.
    for c in 1..=199u8 {
        let flood = from(1, c);
        for _ in 0..5 {
            assert_eq!(attempt(&flood, "11111-11111-11111-11111").0, 403);
        }
    }
    let o = remote_init(&a, &fp, &code, &out);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("init_code_burnt"), "{}", stderr(&o));
    assert!(!a.db_path().exists() || !out.join("admin.pem").exists());
    wait_line(&a, "the code is burnt");
    // A restart prints a new code, which works.
    a.stop();
    a.spawn();
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.log().matches("one-time init code").count() < 2 {
        assert!(Instant::now() < deadline, "{}", a.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let line = a
        .log()
        .lines()
        .rfind(|l| l.contains("one-time init code "))
        .unwrap()
        .to_owned();
    let code2 = line.rsplit(' ').next().unwrap().to_owned();
    assert_ne!(code, code2);
    let fp_line = a
        .log()
        .lines()
        .rfind(|l| l.contains("bootstrap TLS certificate sha256 "))
        .unwrap()
        .to_owned();
    let fp2 = fp_line.rsplit(' ').next().unwrap().to_owned();
    assert_ne!(fp, fp2, "the one-time identity was reused");
    ok(&remote_init(&a, &fp2, &code2, &out));
}

#[test]
fn a_locked_data_volume_serves_status_only_and_writes_nothing() {
    let probe = tempfile::tempdir().unwrap();
    // A directory that is not a mount point: what the appliance sees when
    // the TPM did not release the data volume's key.
    let vol = probe.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    let mut a = Appliance::create(opts(&format!(
        "[appliance]\nbootstrap = true\ndata_volume = \"{}\"\n",
        vol.display()
    )));
    a.spawn();
    let line = wait_line(&a, "status-only TLS certificate sha256 ");
    let fp = line.rsplit(' ').next().unwrap().to_owned();
    wait_line(&a, "SEALED [tpm_data_volume_locked]");
    assert!(!a.log().contains("one-time init code"), "{}", a.log());
    let pinned = Client::pinned(&a.addr(), &fp).unwrap();
    let r = req(&pinned, Method::GET, "/v1/sys/health", None);
    assert_eq!(r.status, 503);
    let v = json_of(&r);
    assert_eq!(v["reason"]["code"], "tpm_data_volume_locked", "{v}");
    assert_eq!(v["sealed"], true);
    // No ceremony on a locked box.
    let o = remote_init(&a, &fp, "AAAAA-AAAAA-AAAAA-AAAAA", &a.certs);
    assert!(
        stderr(&o).contains("tpm_data_volume_locked"),
        "{}",
        stderr(&o)
    );
    assert!(!a.db_path().exists(), "vaultd wrote a database");
    assert_eq!(std::fs::read_dir(&vol).unwrap().count(), 0);
}

// ------------------------------------------------------------------ updates

struct Updates {
    _dir: tempfile::TempDir,
    key: ImageSigningKey,
    update_dir: PathBuf,
    parts: PathBuf,
}

fn update_setup(build: u64) -> (Updates, String) {
    let dir = tempfile::tempdir().unwrap();
    let key = ImageSigningKey::generate();
    let pubkey = dir.path().join("image-signing.pem");
    std::fs::write(&pubkey, key.public().to_pem()).unwrap();
    let version = dir.path().join("version");
    std::fs::write(&version, format!("0.1.0+{build}\n")).unwrap();
    let update_dir = dir.path().join("update");
    std::fs::create_dir(&update_dir).unwrap();
    let esp = dir.path().join("esp");
    std::fs::create_dir(&esp).unwrap();
    let parts = dir.path().join("parts");
    std::fs::create_dir(&parts).unwrap();
    for (name, len) in [
        ("root", 300_000usize),
        ("root.verity", 4096),
        ("uki-a", 50_000),
        ("uki-b", 50_000),
        ("pcrsig-a", 300),
        ("pcrsig-b", 300),
    ] {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + name.len()) as u8).collect();
        std::fs::write(parts.join(name), data).unwrap();
    }
    let extra = format!(
        "[appliance]\nupdate_dir = \"{}\"\nimage_key = \"{}\"\nversion_file = \"{}\"\nesp = \"{}\"\n",
        update_dir.display(),
        pubkey.display(),
        version.display(),
        esp.display()
    );
    (
        Updates {
            _dir: dir,
            key,
            update_dir,
            parts,
        },
        extra,
    )
}

fn bundle(u: &Updates, key: &ImageSigningKey, build: u64, names: &[&str]) -> Vec<u8> {
    let parts: Vec<(String, PathBuf)> = names
        .iter()
        .map(|n| (n.to_string(), u.parts.join(n)))
        .collect();
    let mut out = Vec::new();
    vault_image::bundle::write_bundle(
        &mut out,
        key,
        &format!("0.1.0+{build}"),
        build,
        &"ab".repeat(32),
        &parts,
    )
    .unwrap();
    out
}

const ALL: [&str; 6] = [
    "root",
    "root.verity",
    "uki-a",
    "uki-b",
    "pcrsig-a",
    "pcrsig-b",
];

fn apply(a: &Appliance, who: &str, data: &[u8]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("update.vupd");
    std::fs::File::create(&f).unwrap().write_all(data).unwrap();
    ctl(
        &[
            "--addr",
            &a.addr(),
            "--json",
            "update",
            "apply",
            f.to_str().unwrap(),
        ],
        &[
            ("VAULT_CACERT", &a.certs.join("ca.pem")),
            ("VAULT_CERT", &a.certs.join(format!("{who}.pem"))),
            ("VAULT_KEY", &a.certs.join(format!("{who}-key.pem"))),
        ],
    )
}

#[test]
fn signed_bundles_are_verified_staged_and_audited() {
    let (u, extra) = update_setup(100);
    let a = Appliance::start(opts(&extra));
    let ready = u.update_dir.join("ready");

    // Refusals, each with its code, and nothing staged.
    let other = ImageSigningKey::generate();
    let mut tampered = bundle(&u, &u.key, 101, &ALL);
    let n = tampered.len();
    tampered[n - 1000] ^= 1;
    let mut truncated = bundle(&u, &u.key, 101, &ALL);
    truncated.truncate(truncated.len() - 1);
    for (data, code) in [
        (bundle(&u, &other, 101, &ALL), "bundle_bad_signature"),
        (tampered, "bundle_part_mismatch"),
        (truncated, "bundle_truncated"),
        (bundle(&u, &u.key, 100, &ALL), "update_downgrade"),
        (bundle(&u, &u.key, 99, &ALL), "update_downgrade"),
        (bundle(&u, &u.key, 101, &ALL[..5]), "bundle_missing_part"),
        (b"not a bundle".to_vec(), "bundle_malformed"),
    ] {
        let o = apply(&a, "admin", &data);
        assert!(!o.status.success(), "{code} accepted");
        assert!(stderr(&o).contains(code), "want {code}: {}", stderr(&o));
        assert!(!ready.exists(), "{code}: staged anyway");
        assert!(
            !u.update_dir.join("incoming.vupd").exists(),
            "{code}: left behind"
        );
    }
    // Only an admin may update.
    a.issue("pam", "p");
    let o = apply(&a, "p", &bundle(&u, &u.key, 101, &ALL));
    assert!(stderr(&o).contains("forbidden"), "{}", stderr(&o));
    assert!(!ready.exists());

    // A good bundle is staged for the installer.
    let good = bundle(&u, &u.key, 101, &ALL);
    let v: Value = serde_json::from_str(&ok(&apply(&a, "admin", &good))).unwrap();
    assert_eq!(v["status"], "staged");
    assert_eq!(v["build"], 101);
    assert!(ready.exists());
    assert_eq!(
        std::fs::read(u.update_dir.join("staged.vupd")).unwrap(),
        good
    );

    // The installer (root, on the appliance) re-verifies; here it cannot
    // tell the booted slot (no vault.slot= on this kernel's command line),
    // so it refuses, consumes the staged bundle and records the failure,
    // which the daemon audits.
    let o = a
        .command(vault_e2e::vaultd_bin())
        .arg("--config")
        .arg(&a.config)
        .arg("install-update")
        .arg("--no-reboot")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("update_unknown_slot"), "{}", stderr(&o));
    assert!(!ready.exists());
    assert!(!u.update_dir.join("staged.vupd").exists());
    let deadline = Instant::now() + Duration::from_secs(15);
    while !u.update_dir.join("failed.audited.json").exists() {
        assert!(Instant::now() < deadline, "install failure not audited");
        std::thread::sleep(Duration::from_millis(100));
    }

    let acts = audit_actions(&a);
    let stage: Vec<_> = acts
        .iter()
        .filter(|(x, _, _)| x == "sys.update.stage")
        .collect();
    for code in [
        "bundle_bad_signature",
        "bundle_part_mismatch",
        "bundle_truncated",
        "update_downgrade",
        "bundle_missing_part",
        "bundle_malformed",
    ] {
        assert!(
            stage.iter().any(|(_, e, _)| e == code),
            "{code} not audited"
        );
    }
    assert!(stage
        .iter()
        .any(|(_, e, d)| e.is_empty() && d["build"] == "101" && d["version"] == "0.1.0+101"));
    assert!(acts
        .iter()
        .any(|(x, e, _)| x == "sys.update.install_failed" && e == "update_unknown_slot"));
    assert!(acts
        .iter()
        .any(|(x, _, d)| x == "sys.boot" && d["version"] == "0.1.0+100"));
    let _ = json!(null);
}

// ------------------------------------------------- seal bound to signed boots

fn sealed_root(a: &Appliance) -> Vec<u8> {
    let c = rusqlite::Connection::open(a.db_path()).unwrap();
    c.query_row(
        "SELECT value FROM meta WHERE key = 'sealed_root'",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

fn sign_current(tcti: &str, key: &ImageSigningKey, dir: &Path, name: &str) {
    let pcrs = vault_tpm::read_pcrs(tcti, &[11]).unwrap();
    let p = vault_image::policy::SignedPolicy::sign(key, "0.1.0+1", &pcrs).unwrap();
    std::fs::write(dir.join(format!("{name}.json")), p.to_json()).unwrap();
}

#[test]
fn the_root_key_unseals_on_any_boot_the_image_key_signed_and_no_other() {
    let keys = tempfile::tempdir().unwrap();
    let key = ImageSigningKey::generate();
    let pubkey = keys.path().join("image-signing.pem");
    std::fs::write(&pubkey, key.public().to_pem()).unwrap();
    let sigs = keys.path().join("pcrsig");
    std::fs::create_dir(&sigs).unwrap();
    let tpm_extra = format!(
        "policy_key = \"{}\"\npolicy_signatures = \"{}\"\n",
        pubkey.display(),
        sigs.display()
    );
    let mut a = Appliance::create(Options {
        pcrs: vec![11],
        tpm_extra,
        ..Options::default()
    });
    let tcti = a.tpm.tcti();
    // The image as built: PCR 11 predicted and signed.
    vault_tpm::extend_pcr(&tcti, 11, b"UKI of build 1").unwrap();
    sign_current(&tcti, &key, &sigs, "vault_1_a");
    ok(&a
        .command(vault_e2e::vaultd_bin())
        .arg("--config")
        .arg(&a.config)
        .arg("init")
        .arg("--out")
        .arg(&a.certs)
        .output()
        .unwrap());
    a.spawn();
    a.wait_ready();
    let writer = a.issue("writer", "w");
    let pam = a.issue("pam", "p");
    assert_eq!(
        vault_e2e::put(&writer, "cloud/root", "pcr11-bound", false).status,
        200
    );
    let sealed_code = |a: &Appliance| {
        let s = json_of(&req(&a.admin(), Method::GET, "/v1/sys/seal-status", None));
        s["reason"]["code"].as_str().unwrap_or("").to_owned()
    };

    // An unsigned change of the boot (another kernel image): sealed.
    a.stop();
    vault_tpm::extend_pcr(&tcti, 11, b"UKI of build 2").unwrap();
    a.spawn();
    a.wait_ready();
    assert_eq!(sealed_code(&a), "tpm_pcr_mismatch");
    assert_eq!(vault_e2e::checkout(&pam, "cloud/root").status, 503);

    // A policy for this boot signed by another key changes nothing.
    let other = ImageSigningKey::generate();
    sign_current(&tcti, &other, &sigs, "forged");
    let r = req(&a.admin(), Method::POST, "/v1/sys/unseal", None);
    assert_eq!(r.error_code().as_deref(), Some("tpm_pcr_mismatch"));
    // A forged file claiming the image key's id: the TPM rejects the signature.
    let mut forged: Value =
        serde_json::from_str(&std::fs::read_to_string(sigs.join("forged.json")).unwrap()).unwrap();
    let good = vault_image::policy::SignedPolicy::sign(
        &key,
        "0.1.0+1",
        &vault_tpm::read_pcrs(&tcti, &[11]).unwrap(),
    )
    .unwrap();
    let good: Value = serde_json::from_str(&good.to_json()).unwrap();
    forged["key_id"] = good["key_id"].clone();
    std::fs::write(sigs.join("forged.json"), forged.to_string()).unwrap();
    let r = req(&a.admin(), Method::POST, "/v1/sys/unseal", None);
    assert_eq!(
        r.error_code().as_deref(),
        Some("tpm_policy_signature_invalid"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    std::fs::remove_file(sigs.join("forged.json")).unwrap();

    // The signed update: the image key signs the new PCR 11 value; the same
    // sealed blob opens, nothing was re-sealed.
    let blob_before = sealed_root(&a);
    sign_current(&tcti, &key, &sigs, "vault_2_b");
    let r = req(&a.admin(), Method::POST, "/v1/sys/unseal", None);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        json_of(&vault_e2e::checkout(&pam, "cloud/root"))["value"],
        "pcr11-bound"
    );
    let blob_after = sealed_root(&a);
    assert_eq!(blob_before, blob_after, "the root key was re-sealed");

    // A restart on the same boot unseals by itself.
    a.stop();
    a.spawn();
    a.wait_ready();
    assert_eq!(
        json_of(&vault_e2e::checkout(&pam, "cloud/root"))["value"],
        "pcr11-bound"
    );
}

#[test]
fn a_machine_without_a_tpm_refuses_tpm_modes_clearly() {
    let a = Appliance::create(Options::default());
    let text = std::fs::read_to_string(&a.config).unwrap();
    let tcti = a.tpm.tcti();
    assert!(text.contains(&tcti));
    let no_tpm = a.dir.path().join("no-tpm.toml");
    std::fs::write(&no_tpm, text.replace(&tcti, "device:/nonexistent/tpmrm0")).unwrap();
    let o = a
        .command(vault_e2e::vaultd_bin())
        .arg("--config")
        .arg(&no_tpm)
        .arg("init")
        .arg("--out")
        .arg(&a.certs)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("this machine has no TPM") && err.contains("tpm_unavailable"),
        "{err}"
    );
    assert!(!a.certs.join("admin.pem").exists());
}
