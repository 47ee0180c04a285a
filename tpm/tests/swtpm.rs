//! Integration tests against a private swtpm per test.

use std::time::Instant;

use vault_core::keys::SealShare;
use vault_core::seal::{Seal, SealError};
use vault_tpm::swtpm::Swtpm;
use vault_tpm::{extend_pcr, TpmConfig, TpmSeal};

fn swtpm() -> Swtpm {
    Swtpm::start().expect("start swtpm (is swtpm installed?)")
}

fn seal_for(tpm: &Swtpm, pcrs: &[u8]) -> TpmSeal {
    TpmSeal::open(TpmConfig::new(tpm.tcti(), pcrs)).expect("open TpmSeal")
}

fn code<T>(r: Result<T, SealError>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("{} ({e})", e.code()),
    }
}

#[test]
fn conformance() {
    let tpm = swtpm();
    let tcti = tpm.tcti();
    vault_core::testing::seal_conformance(&move || {
        Box::new(TpmSeal::open(TpmConfig::new(tcti.clone(), [0, 7])).expect("open"))
    });
}

#[test]
fn extending_a_bound_pcr_gives_pcr_mismatch() {
    let tpm = swtpm();
    let seal = seal_for(&tpm, &[0, 7]);
    let k = SealShare::generate();
    let blob = seal.seal(&k).unwrap();

    // An unbound PCR may change.
    extend_pcr(&tpm.tcti(), 11, b"unrelated measurement").unwrap();
    assert!(seal.unseal(&blob).unwrap().ct_eq(&k));

    extend_pcr(&tpm.tcti(), 7, b"new secure boot policy").unwrap();
    match seal.unseal(&blob) {
        Err(e @ SealError::PcrMismatch(_)) => {
            assert_eq!(e.code(), "tpm_pcr_mismatch");
            let msg = e.to_string();
            assert!(msg.contains("0x9"), "{msg}");
        }
        other => panic!("want PcrMismatch, got {}", code(other)),
    }
    // Failures leak no handles: sealing afresh and unsealing still work.
    for _ in 0..5 {
        assert!(matches!(seal.unseal(&blob), Err(SealError::PcrMismatch(_))));
    }
    let blob2 = seal.seal(&k).unwrap();
    assert!(seal.unseal(&blob2).unwrap().ct_eq(&k));
}

#[test]
fn stopped_tpm_is_unavailable() {
    let mut tpm = swtpm();
    let tcti = tpm.tcti();
    let seal = seal_for(&tpm, &[7]);
    let blob = seal.seal(&SealShare::generate()).unwrap();
    tpm.stop();
    match TpmSeal::open(TpmConfig::new(tcti.clone(), [7])) {
        Err(e @ SealError::TpmUnavailable(_)) => assert_eq!(e.code(), "tpm_unavailable"),
        Err(e) => panic!("want TpmUnavailable, got {} ({e})", e.code()),
        Ok(_) => panic!("opened a stopped TPM"),
    }
    match seal.unseal(&blob) {
        Err(SealError::TpmUnavailable(_)) => {}
        other => panic!("want TpmUnavailable, got {}", code(other)),
    }
    match seal.seal(&SealShare::generate()) {
        Err(SealError::TpmUnavailable(_)) => {}
        Err(e) => panic!("want TpmUnavailable, got {} ({e})", e.code()),
        Ok(_) => panic!("sealed on a stopped TPM"),
    }
}

#[test]
fn blob_survives_tpm_restart() {
    let mut tpm = swtpm();
    let seal = seal_for(&tpm, &[0, 2, 4, 7, 11]);
    let k = SealShare::generate();
    let blob = seal.seal(&k).unwrap();
    // A measurement before the "reboot" is undone by startup-clear.
    extend_pcr(&tpm.tcti(), 7, b"runtime event").unwrap();
    assert!(matches!(seal.unseal(&blob), Err(SealError::PcrMismatch(_))));

    tpm.restart().unwrap();
    let seal = seal_for(&tpm, &[0, 2, 4, 7, 11]);
    assert!(seal.unseal(&blob).unwrap().ct_eq(&k));

    // Also via start_in on the same state directory.
    tpm.stop();
    let again = Swtpm::start_in(tpm.state_dir()).unwrap();
    let seal = seal_for(&again, &[0, 2, 4, 7, 11]);
    assert!(seal.unseal(&blob).unwrap().ct_eq(&k));
}

#[test]
fn many_unseals_do_not_leak_handles() {
    let tpm = swtpm();
    let seal = seal_for(&tpm, &[7]);
    let k = SealShare::generate();
    let blob = seal.seal(&k).unwrap();
    let start = Instant::now();
    for i in 0..20 {
        let got = seal
            .unseal(&blob)
            .unwrap_or_else(|e| panic!("unseal {i}: {} ({e})", e.code()));
        assert!(got.ct_eq(&k));
    }
    let per = start.elapsed() / 20;
    eprintln!(
        "unseal against swtpm: {per:?} per call (fresh context, primary, load, session, unseal)"
    );
    // Error paths flush too.
    let mut bad = blob.clone();
    let n = bad.len();
    bad[n - 5] ^= 0x40;
    for _ in 0..10 {
        assert!(seal.unseal(&bad).is_err());
    }
    assert!(seal.unseal(&blob).unwrap().ct_eq(&k));
}

#[test]
fn blob_from_another_tpm_does_not_open() {
    let a = swtpm();
    let b = swtpm();
    let k = SealShare::generate();
    let blob = seal_for(&a, &[7]).seal(&k).unwrap();
    match seal_for(&b, &[7]).unseal(&blob) {
        Err(e @ SealError::BlobCorrupt(_)) => eprintln!("foreign blob: {e}"),
        other => panic!("want BlobCorrupt, got {}", code(other)),
    }
    assert!(seal_for(&a, &[7]).unseal(&blob).unwrap().ct_eq(&k));
}

#[test]
fn blob_with_other_pcr_list_is_corrupt() {
    let tpm = swtpm();
    let k = SealShare::generate();
    let blob = seal_for(&tpm, &[0, 7]).seal(&k).unwrap();
    for pcrs in [&[7u8][..], &[0, 7, 11], &[0, 4]] {
        match seal_for(&tpm, pcrs).unseal(&blob) {
            Err(SealError::BlobCorrupt(m)) => assert!(m.contains("PCRs [0,7]"), "{m}"),
            other => panic!("want BlobCorrupt, got {}", code(other)),
        }
    }
    // Order in the configuration does not matter.
    assert!(seal_for(&tpm, &[7, 0]).unseal(&blob).unwrap().ct_eq(&k));
}

#[test]
fn invalid_config_is_refused() {
    let tpm = swtpm();
    for pcrs in [&[][..], &[24], &[7, 7]] {
        match TpmSeal::open(TpmConfig::new(tpm.tcti(), pcrs)) {
            Err(e @ SealError::Device { call: "config", .. }) => assert_eq!(e.code(), "tpm_error"),
            Err(e) => panic!("{pcrs:?}: got {} ({e})", e.code()),
            Ok(_) => panic!("{pcrs:?}: accepted"),
        }
    }
    assert!(extend_pcr(&tpm.tcti(), 24, b"x").is_err());
}

/// A loopback proxy in front of swtpm's server and control ports that
/// records every byte exchanged in both directions.
mod wiretap {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};
    use std::thread;

    pub struct Tap {
        pub port: u16,
        pub seen: Arc<Mutex<Vec<u8>>>,
    }

    fn pipe(mut from: TcpStream, mut to: TcpStream, seen: Arc<Mutex<Vec<u8>>>) {
        let mut buf = [0u8; 4096];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    seen.lock().unwrap().extend_from_slice(&buf[..n]);
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    }

    fn forward(listener: TcpListener, target: u16, seen: Arc<Mutex<Vec<u8>>>) {
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (a, b) = (seen.clone(), seen.clone());
                thread::spawn(move || pipe(client, server, a));
                thread::spawn(move || pipe(s2, c2, b));
            }
        });
    }

    pub fn start(target: u16) -> Tap {
        let seen = Arc::new(Mutex::new(Vec::new()));
        loop {
            let a = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = a.local_addr().unwrap().port();
            let Ok(b) = TcpListener::bind(("127.0.0.1", port + 1)) else {
                continue;
            };
            forward(a, target, seen.clone());
            forward(b, target + 1, seen.clone());
            return Tap { port, seen };
        }
    }
}

#[test]
fn key_never_crosses_the_tcti_in_clear() {
    let tpm = swtpm();
    let tap = wiretap::start(tpm.port());
    let tcti = format!("swtpm:host=127.0.0.1,port={}", tap.port);
    let seal = TpmSeal::open(TpmConfig::new(tcti, [7])).unwrap();
    let k = SealShare::generate();
    let blob = seal.seal(&k).unwrap();
    assert!(seal.unseal(&blob).unwrap().ct_eq(&k));
    let seen = tap.seen.lock().unwrap().clone();
    assert!(seen.len() > 1000, "proxy saw only {} bytes", seen.len());
    let key = k.expose_secret();
    assert!(
        !seen.windows(32).any(|w| w == key),
        "the key crossed the TCTI in clear"
    );
    // Even a 16-byte fragment would show a missing encryption attribute.
    assert!(!seen.windows(16).any(|w| w == &key[..16] || w == &key[16..]));
}
