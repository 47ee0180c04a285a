//! The seal conformance suite in all four modes against real devices:
//! a SoftHSM2 token and a swtpm process.
//!
//! SoftHSM reads SOFTHSM2_CONF once per process, so this binary creates one
//! token directory (with every token it needs) before any PKCS#11 call.

use std::sync::OnceLock;

use vault_core::keys::RootKey;
use vault_core::seal::{seal_root, unseal_root, Seal, SealError, SealKind, SealMode, SealProvider};
use vault_core::secret::Pin;
use vault_hsm::softhsm::{SoftHsmDir, SOFTHSM2_MODULE};
use vault_hsm::{Pkcs11Config, Pkcs11Seal};
use vault_tpm::swtpm::Swtpm;
use vault_tpm::{TpmConfig, TpmSeal};

const PIN: &str = "112233";

fn hsm() -> &'static SoftHsmDir {
    static DIR: OnceLock<(tempfile::TempDir, SoftHsmDir)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        let h = SoftHsmDir::create(d.path()).unwrap();
        for label in ["modes-a", "modes-b", "modes-c", "modes-d", "modes-e"] {
            h.init_token(label, "87654321", PIN).unwrap();
        }
        std::env::set_var("SOFTHSM2_CONF", h.conf_path());
        (d, h)
    })
    .1
}

fn hsm_cfg(token: &str) -> Pkcs11Config {
    hsm();
    Pkcs11Config {
        module: SOFTHSM2_MODULE.into(),
        token_label: token.into(),
        key_label: "vaultd-seal".into(),
    }
}

/// Opens real devices; either can be switched off to simulate a loss.
struct Devices {
    tpm: TpmConfig,
    hsm: Pkcs11Config,
    tpm_present: bool,
    hsm_present: bool,
}

impl SealProvider for Devices {
    fn open(&self, kind: SealKind) -> Result<Box<dyn Seal>, SealError> {
        match kind {
            SealKind::Tpm if self.tpm_present => Ok(Box::new(TpmSeal::open(self.tpm.clone())?)),
            SealKind::Tpm => Err(SealError::TpmUnavailable("test: TPM removed".into())),
            SealKind::Pkcs11 if self.hsm_present => Ok(Box::new(Pkcs11Seal::open(
                &self.hsm,
                &Pin::new(PIN.into()),
            )?)),
            SealKind::Pkcs11 => Err(SealError::TokenMissing("test: token removed".into())),
        }
    }
}

#[test]
fn both_backends_pass_the_conformance_suite() {
    let tpm = Swtpm::start().unwrap();
    let tcfg = TpmConfig {
        tcti: tpm.tcti(),
        pcrs: vec![7],
        authorized: None,
    };
    vault_core::testing::seal_conformance(&|| Box::new(TpmSeal::open(tcfg.clone()).unwrap()));
    let hcfg = hsm_cfg("modes-a");
    Pkcs11Seal::open_or_create(&hcfg, &Pin::new(PIN.into())).unwrap();
    vault_core::testing::seal_conformance(&|| {
        Box::new(Pkcs11Seal::open(&hcfg, &Pin::new(PIN.into())).unwrap())
    });
}

fn run_mode(mode: SealMode, token: &str) {
    let tpm = Swtpm::start().unwrap();
    let mut dev = Devices {
        tpm: TpmConfig {
            tcti: tpm.tcti(),
            pcrs: vec![7],
            authorized: None,
        },
        hsm: hsm_cfg(token),
        tpm_present: true,
        hsm_present: true,
    };
    Pkcs11Seal::open_or_create(&dev.hsm, &Pin::new(PIN.into())).unwrap();
    let backends: Vec<Box<dyn Seal>> = mode.kinds().iter().map(|k| dev.open(*k).unwrap()).collect();
    let refs: Vec<&dyn Seal> = backends.iter().map(|b| b.as_ref()).collect();
    let rk = RootKey::generate();
    let sr = seal_root(mode, &refs, &rk).unwrap();
    assert!(
        unseal_root(&sr, &dev).unwrap().ct_eq(&rk),
        "{mode}: round trip"
    );

    // Lose each device in turn.
    for (tpm_present, hsm_present) in [(false, true), (true, false)] {
        dev.tpm_present = tpm_present;
        dev.hsm_present = hsm_present;
        let needs_tpm = mode.kinds().contains(&SealKind::Tpm);
        let needs_hsm = mode.kinds().contains(&SealKind::Pkcs11);
        let should_work = match mode {
            SealMode::Either => true,
            _ => (tpm_present || !needs_tpm) && (hsm_present || !needs_hsm),
        };
        let r = unseal_root(&sr, &dev);
        assert_eq!(
            r.is_ok(),
            should_work,
            "{mode} tpm={tpm_present} hsm={hsm_present}"
        );
        if let Ok(k) = r {
            assert!(k.ct_eq(&rk));
        }
    }
    dev.tpm_present = true;
    dev.hsm_present = true;

    // A changed boot measurement.
    vault_tpm::extend_pcr(&tpm.tcti(), 7, b"other kernel").unwrap();
    let r = unseal_root(&sr, &dev);
    match mode {
        SealMode::Pkcs11 | SealMode::Either => assert!(r.unwrap().ct_eq(&rk), "{mode}"),
        SealMode::Tpm | SealMode::Both => {
            assert_eq!(r.err().unwrap().code(), "tpm_pcr_mismatch", "{mode}")
        }
    }
}

#[test]
fn mode_tpm() {
    run_mode(SealMode::Tpm, "modes-b");
}

#[test]
fn mode_pkcs11() {
    run_mode(SealMode::Pkcs11, "modes-c");
}

#[test]
fn mode_tpm_and_pkcs11() {
    run_mode(SealMode::Both, "modes-d");
}

#[test]
fn mode_tpm_or_pkcs11() {
    run_mode(SealMode::Either, "modes-e");
}
