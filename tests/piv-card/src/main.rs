//! `piv-card`: a virtual PIV smart card for tests, good enough for the unmodified
//! `yubikey` crate (0.8) talking to it through pcscd.
//!
//! Nitrokey's `piv-authenticator` runs on trussed's `virt` platform (with the
//! trussed-staging and trussed-auth backends) and is attached to vsmartcard's `vpcd`
//! reader driver (inside pcscd) with the `vpicc` crate.
//!
//! The adapter fixes what the `yubikey` crate expects from a real YubiKey:
//! - SELECT by the PIV RID only (A0 00 00 03 08) is answered as the full PIV AID;
//! - GET VERSION (INS FD) reports `--version` (default 5.4.3; must stay below 5.7,
//!   where the crate switches the default management key to AES-192);
//! - GET SERIAL (INS F8) reports `--serial N` so several cards can be told apart;
//! - trussed's virt RNG has a fixed seed, so `/trussed/dat/rng-state.bin` is
//!   (re-)seeded from the OS RNG at every start: cards generate different keys.
//!
//! It also does ISO 7816 command chaining (CLA bit 0x10) and GET RESPONSE (61xx).
//!
//! With `--attestation-ca DIR` it also emulates YubiKey attestation (see
//! [`attest`]): ATTEST (INS F9) for keys generated on the card, and the f9
//! certificate (GET DATA 5FFF01), from a test CA made by
//! `piv-card make-attestation-ca DIR`.
//!
//! Usage: piv-card [--port 35963] [--host 127.0.0.1] [--serial N] [--version 5.4.3]
//!                 [--state-dir DIR] [--attestation-ca DIR]
//!        piv-card make-attestation-ca DIR
//! Without `--state-dir` all state is in RAM; with it, the internal and external
//! flash images live in DIR/internal.bin and DIR/external.bin, and the keys
//! recorded for attestation in DIR/attestation.json (all survive restarts).

mod attest;

use std::{
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use heapless::Vec as HVec;
use littlefs2_core::path;
use piv_authenticator::{Authenticator, Options};
use trussed::{
    backend::BackendId,
    platform::Platform,
    serde_extensions::{ExtensionDispatch, ExtensionId, ExtensionImpl},
    service::ServiceResources,
    types::Context,
    virt::{self, StorageConfig, StoreConfig},
};
use trussed_auth::AuthExtension;
use trussed_auth_backend::{AuthBackend, AuthContext, FilesystemLayout};
use trussed_chunked::ChunkedExtension;
use trussed_core::{
    api::{reply, request, Reply, Request},
    types::Location,
    Error,
};
use trussed_hpke::HpkeExtension;
use trussed_staging::{StagingBackend, StagingContext};
use trussed_wrap_key_to_file::WrapKeyToFileExtension;

// ---------------------------------------------------------------------------
// trussed backend dispatch: core + staging (chunked, hpke, wrap-key-to-file) + auth

struct Dispatcher {
    auth: AuthBackend,
    staging: StagingBackend,
}

impl Default for Dispatcher {
    fn default() -> Self {
        Self {
            auth: AuthBackend::new(Location::Internal, FilesystemLayout::V0),
            staging: StagingBackend::new(),
        }
    }
}

#[derive(Default)]
struct DispatchContext {
    auth: AuthContext,
    staging: StagingContext,
}

enum Backend {
    Auth,
    Staging,
}

enum Extension {
    Auth,
    Chunked,
    Hpke,
    WrapKeyToFile,
}

impl From<Extension> for u8 {
    fn from(e: Extension) -> u8 {
        match e {
            Extension::Auth => 0,
            Extension::Chunked => 1,
            Extension::Hpke => 2,
            Extension::WrapKeyToFile => 3,
        }
    }
}

impl TryFrom<u8> for Extension {
    type Error = Error;
    fn try_from(id: u8) -> Result<Self, Error> {
        Ok(match id {
            0 => Self::Auth,
            1 => Self::Chunked,
            2 => Self::Hpke,
            3 => Self::WrapKeyToFile,
            _ => return Err(Error::InternalError),
        })
    }
}

impl ExtensionId<AuthExtension> for Dispatcher {
    type Id = Extension;
    const ID: Extension = Extension::Auth;
}
impl ExtensionId<ChunkedExtension> for Dispatcher {
    type Id = Extension;
    const ID: Extension = Extension::Chunked;
}
impl ExtensionId<HpkeExtension> for Dispatcher {
    type Id = Extension;
    const ID: Extension = Extension::Hpke;
}
impl ExtensionId<WrapKeyToFileExtension> for Dispatcher {
    type Id = Extension;
    const ID: Extension = Extension::WrapKeyToFile;
}

impl ExtensionDispatch for Dispatcher {
    type BackendId = Backend;
    type Context = DispatchContext;
    type ExtensionId = Extension;

    fn core_request<P: Platform>(
        &mut self,
        backend: &Backend,
        ctx: &mut Context<DispatchContext>,
        request: &Request,
        resources: &mut ServiceResources<P>,
    ) -> Result<Reply, Error> {
        use trussed::backend::Backend as _;
        match backend {
            Backend::Staging => {
                self.staging
                    .request(&mut ctx.core, &mut ctx.backends.staging, request, resources)
            }
            Backend::Auth => Err(Error::RequestNotAvailable),
        }
    }

    fn extension_request<P: Platform>(
        &mut self,
        backend: &Backend,
        extension: &Extension,
        ctx: &mut Context<DispatchContext>,
        request: &request::SerdeExtension,
        resources: &mut ServiceResources<P>,
    ) -> Result<reply::SerdeExtension, Error> {
        let core = &mut ctx.core;
        match (backend, extension) {
            (Backend::Auth, Extension::Auth) => {
                ExtensionImpl::<AuthExtension>::extension_request_serialized(
                    &mut self.auth,
                    core,
                    &mut ctx.backends.auth,
                    request,
                    resources,
                )
            }
            (Backend::Staging, Extension::Chunked) => {
                ExtensionImpl::<ChunkedExtension>::extension_request_serialized(
                    &mut self.staging,
                    core,
                    &mut ctx.backends.staging,
                    request,
                    resources,
                )
            }
            (Backend::Staging, Extension::Hpke) => {
                ExtensionImpl::<HpkeExtension>::extension_request_serialized(
                    &mut self.staging,
                    core,
                    &mut ctx.backends.staging,
                    request,
                    resources,
                )
            }
            (Backend::Staging, Extension::WrapKeyToFile) => {
                ExtensionImpl::<WrapKeyToFileExtension>::extension_request_serialized(
                    &mut self.staging,
                    core,
                    &mut ctx.backends.staging,
                    request,
                    resources,
                )
            }
            _ => Err(Error::RequestNotAvailable),
        }
    }
}

static BACKENDS: &[BackendId<Backend>] = &[
    BackendId::Custom(Backend::Auth),
    BackendId::Custom(Backend::Staging),
    BackendId::Core,
];

// ---------------------------------------------------------------------------
// APDU adapter

/// PIV AID: RID A0 00 00 03 08 + PIX 00 00 10 00 01 00.
const PIV_AID: [u8; 11] = [
    0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00,
];
const PIV_RID: [u8; 5] = [0xA0, 0x00, 0x00, 0x03, 0x08];
/// Short APDU responses carry at most 256 data bytes; the rest waits for GET RESPONSE.
const MAX_CHUNK: usize = 256;
/// Large enough for any PIV object (certificates are a few KiB at most).
const REPLY_CAP: usize = 8192;

const SW_OK: [u8; 2] = [0x90, 0x00];
const SW_WRONG_LENGTH: [u8; 2] = [0x67, 0x00];
const SW_INS_NOT_SUPPORTED: [u8; 2] = [0x6D, 0x00];
const SW_CLA_NOT_SUPPORTED: [u8; 2] = [0x6E, 0x00];
const SW_CONDITIONS: [u8; 2] = [0x69, 0x85];
const SW_NOT_FOUND: [u8; 2] = [0x6A, 0x88];
const SW_UNKNOWN: [u8; 2] = [0x6F, 0x00];
/// GET DATA's tag list for the attestation certificate object 5FFF01.
const GET_F9_OBJECT: [u8; 5] = [0x5C, 0x03, 0x5F, 0xFF, 0x01];

/// A parsed APDU (short or extended), independent of its wire encoding.
struct Apdu {
    cla: u8,
    ins: u8,
    p1: u8,
    p2: u8,
    data: Vec<u8>,
}

fn parse_apdu(raw: &[u8]) -> Option<Apdu> {
    if raw.len() < 4 {
        return None;
    }
    let (cla, ins, p1, p2) = (raw[0], raw[1], raw[2], raw[3]);
    let body = &raw[4..];
    let data = match body.len() {
        0 | 1 => Vec::new(), // case 1, or case 2 short (Le only)
        _ if body[0] != 0 => {
            // short Lc
            let lc = body[0] as usize;
            let rest = &body[1..];
            if rest.len() != lc && rest.len() != lc + 1 {
                return None;
            }
            rest[..lc].to_vec()
        }
        3 => Vec::new(), // case 2 extended (00 Le1 Le2)
        _ => {
            // extended Lc: 00 Lc1 Lc2 data [Le1 Le2]
            let lc = u16::from_be_bytes([body[1], body[2]]) as usize;
            let rest = &body[3..];
            if rest.len() != lc && rest.len() != lc + 2 {
                return None;
            }
            rest[..lc].to_vec()
        }
    };
    Some(Apdu {
        cla,
        ins,
        p1,
        p2,
        data,
    })
}

/// Re-encode a (de-chained) command for iso7816's parser, always with Le = max.
fn encode_apdu(a: &Apdu) -> Vec<u8> {
    let mut out = vec![a.cla, a.ins, a.p1, a.p2];
    if a.data.is_empty() {
        out.push(0x00);
    } else if a.data.len() <= 255 {
        out.push(a.data.len() as u8);
        out.extend_from_slice(&a.data);
        out.push(0x00);
    } else {
        out.push(0x00);
        out.extend_from_slice(&(a.data.len() as u16).to_be_bytes());
        out.extend_from_slice(&a.data);
        out.extend_from_slice(&[0x00, 0x00]);
    }
    out
}

struct Card<T: piv_authenticator::Client> {
    app: Authenticator<T>,
    serial: u32,
    version: [u8; 3],
    /// Data of a command chain in progress (header of the first link + data so far).
    chain: Option<Apdu>,
    /// Response bytes still to be fetched with GET RESPONSE.
    pending: Vec<u8>,
    /// Public keys and policies of generated keys, per slot (for attestation).
    keys: attest::Keys,
    /// The attestation key and certificate (`--attestation-ca`), if any.
    ca: Option<attest::AttestationCa>,
}

impl<T: piv_authenticator::Client> Card<T> {
    fn respond_chunk(&mut self, mut data: Vec<u8>, sw: [u8; 2]) -> Vec<u8> {
        if sw == SW_OK && data.len() > MAX_CHUNK {
            self.pending = data.split_off(MAX_CHUNK);
            let left = self.pending.len();
            data.push(0x61);
            data.push(if left >= 256 { 0x00 } else { left as u8 });
        } else {
            data.extend_from_slice(&sw);
        }
        data
    }

    /// A card reset must drop the PIN verification like a real key does;
    /// piv-authenticator keeps it, so send it VERIFY with P1=FF (PIN logout).
    /// (Its management-key authentication state cannot be cleared this way.)
    fn card_reset(&mut self) {
        self.chain = None;
        self.pending.clear();
        let logout = [0x00, 0x20, 0xFF, 0x80];
        if let Ok(view) = iso7816::command::CommandView::try_from(&logout[..]) {
            let mut reply: HVec<u8, 64> = HVec::new();
            if let Err(e) = self.app.respond(view, reply.as_mut_view()) {
                log::debug!("PIN logout on reset: {:?}", e);
            }
        }
    }

    fn handle(&mut self, raw: &[u8]) -> Vec<u8> {
        let Some(mut apdu) = parse_apdu(raw) else {
            self.chain = None;
            return SW_WRONG_LENGTH.to_vec();
        };
        log::debug!(
            "APDU cla={:02x} ins={:02x} p1={:02x} p2={:02x} lc={}",
            apdu.cla,
            apdu.ins,
            apdu.p1,
            apdu.p2,
            apdu.data.len()
        );

        // GET RESPONSE: hand out the next part of a long reply.
        if apdu.ins == 0xC0 && apdu.cla & 0x10 == 0 {
            if self.pending.is_empty() {
                return SW_CONDITIONS.to_vec();
            }
            let data = std::mem::take(&mut self.pending);
            return self.respond_chunk(data, SW_OK);
        }
        // Any other command drops an unfetched reply.
        self.pending.clear();

        if apdu.cla & 0x0C != 0 || (apdu.cla & !0x10) != 0x00 {
            // secure messaging / logical channels / proprietary classes
            self.chain = None;
            return SW_CLA_NOT_SUPPORTED.to_vec();
        }

        // Command chaining (CLA bit 0x10): accumulate and acknowledge.
        if apdu.cla & 0x10 != 0 {
            match &mut self.chain {
                Some(c) if c.ins == apdu.ins && c.p1 == apdu.p1 && c.p2 == apdu.p2 => {
                    c.data.extend_from_slice(&apdu.data)
                }
                _ => {
                    apdu.cla &= !0x10;
                    self.chain = Some(apdu);
                }
            }
            return SW_OK.to_vec();
        }
        if let Some(mut c) = self.chain.take() {
            if c.ins == apdu.ins && c.p1 == apdu.p1 && c.p2 == apdu.p2 {
                c.data.extend_from_slice(&apdu.data);
                apdu = c;
            }
        }

        // Fix 1: SELECT by RID (or any prefix of the PIV AID) -> the PIV AID.
        if apdu.ins == 0xA4 && apdu.p1 == 0x04 {
            if apdu.data.len() >= PIV_RID.len() && PIV_AID.starts_with(&apdu.data) {
                apdu.data = PIV_AID.to_vec();
                // A real YubiKey drops PIN verification when PIV is (re)selected.
                self.card_reset();
            } else if !apdu.data.starts_with(&PIV_AID) {
                // e.g. the YubiKey OTP/management applets: not present.
                return vec![0x6A, 0x82];
            }
        }
        // Fix 2: GET VERSION.
        if apdu.ins == 0xFD {
            return self.respond_chunk(self.version.to_vec(), SW_OK);
        }
        // Fix 3: GET SERIAL.
        if apdu.ins == 0xF8 {
            return self.respond_chunk(self.serial.to_be_bytes().to_vec(), SW_OK);
        }
        // Attestation (only with --attestation-ca; otherwise piv-authenticator's 6D00).
        if let Some(ca) = &self.ca {
            // ATTEST: P1 = slot, no data, reply = the DER certificate.
            if apdu.ins == 0xF9 {
                let Some(key) = self.keys.get(apdu.p1) else {
                    log::info!("attest {:02x}: no generated key recorded", apdu.p1);
                    return SW_NOT_FOUND.to_vec();
                };
                return match ca.attest(apdu.p1, key, self.serial, self.version) {
                    Ok(der) => {
                        log::info!("attest {:02x}: {} bytes", apdu.p1, der.len());
                        self.respond_chunk(der, SW_OK)
                    }
                    Err(e) => {
                        log::warn!("attest {:02x}: {e:#}", apdu.p1);
                        SW_UNKNOWN.to_vec()
                    }
                };
            }
            // GET DATA 5FFF01: the f9 certificate.
            if apdu.ins == 0xCB && (apdu.p1, apdu.p2) == (0x3F, 0xFF) && apdu.data == GET_F9_OBJECT
            {
                let obj = ca.f9_object();
                return self.respond_chunk(obj, SW_OK);
            }
        }

        let encoded = encode_apdu(&apdu);
        let view = match iso7816::command::CommandView::try_from(encoded.as_slice()) {
            Ok(v) => v,
            Err(e) => {
                log::warn!("unparsable APDU {:02x?}: {:?}", encoded, e);
                return SW_WRONG_LENGTH.to_vec();
            }
        };
        let mut reply: HVec<u8, REPLY_CAP> = HVec::new();
        match self.app.respond(view, reply.as_mut_view()) {
            Ok(()) => {
                self.track_keys(&apdu, &reply);
                self.respond_chunk(reply.to_vec(), SW_OK)
            }
            Err(status) => {
                let sw: [u8; 2] = status.into();
                log::debug!("-> status {:02x?}", sw);
                if sw == [0x6D, 0x00] {
                    return SW_INS_NOT_SUPPORTED.to_vec();
                }
                sw.to_vec()
            }
        }
    }
}

impl<T: piv_authenticator::Client> Card<T> {
    /// Keeps the attestation records in step with what the card did.
    fn track_keys(&mut self, apdu: &Apdu, reply: &[u8]) {
        match apdu.ins {
            // GENERATE ASYMMETRIC KEY PAIR (P2 = slot): record key + policies.
            0x47 => {
                let slot = apdu.p2;
                match attest::generated_point(reply) {
                    Some(point) => {
                        let (pin, touch) = attest::requested_policies(slot, &apdu.data);
                        log::info!(
                            "generated key in {slot:02x} (pin policy {pin}, touch policy {touch})"
                        );
                        self.keys.record(slot, &point, pin, touch);
                    }
                    // e.g. RSA: not attestable here
                    None => self.keys.remove(slot),
                }
            }
            // IMPORT ASYMMETRIC KEY (P2 = slot): a YubiKey does not attest imported keys.
            0xFE => self.keys.remove(apdu.p2),
            // RESET: all keys are gone.
            0xFB => self.keys.clear(),
            _ => {}
        }
    }
}

impl<T: piv_authenticator::Client> vpicc::VSmartCard for Card<T> {
    fn atr(&self) -> &[u8] {
        // ATR of a YubiKey 5 NFC over USB (CCID); only cosmetic for PC/SC.
        &[
            0x3B, 0xFD, 0x13, 0x00, 0x00, 0x81, 0x31, 0xFE, 0x15, 0x80, 0x73, 0xC0, 0x21, 0xC0,
            0x57, 0x59, 0x75, 0x62, 0x69, 0x4B, 0x65, 0x79, 0x40,
        ]
    }
    fn power_on(&mut self) {
        self.card_reset();
    }
    fn power_off(&mut self) {
        self.card_reset();
    }
    fn reset(&mut self) {
        self.card_reset();
    }
    fn execute(&mut self, msg: &[u8]) -> Vec<u8> {
        let out = self.handle(msg);
        log::trace!("<- {:02x?}", out);
        out
    }
}

// ---------------------------------------------------------------------------

struct Args {
    host: String,
    port: u16,
    serial: u32,
    version: [u8; 3],
    state_dir: Option<PathBuf>,
    attestation_ca: Option<PathBuf>,
}

fn usage() -> ! {
    eprintln!(
        "usage: piv-card [--port 35963] [--host 127.0.0.1] [--serial N] [--version 5.4.3] [--state-dir DIR] [--attestation-ca DIR]\n       piv-card make-attestation-ca DIR"
    );
    std::process::exit(2)
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        host: "127.0.0.1".into(),
        port: 35963,
        serial: 10_000_001,
        version: [5, 4, 3],
        state_dir: None,
        attestation_ca: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().with_context(|| format!("{k} needs a value"));
        match k.as_str() {
            "--host" => a.host = v()?,
            "--port" => a.port = v()?.parse().context("--port")?,
            "--serial" => a.serial = v()?.parse().context("--serial")?,
            "--state-dir" => a.state_dir = Some(v()?.into()),
            "--attestation-ca" => a.attestation_ca = Some(v()?.into()),
            "--version" => {
                let s = v()?;
                let p: Vec<u8> = s
                    .split('.')
                    .map(|x| x.parse::<u8>())
                    .collect::<Result<_, _>>()
                    .context("--version X.Y.Z")?;
                if p.len() != 3 {
                    bail!("--version X.Y.Z");
                }
                if (p[0], p[1]) >= (5, 7) {
                    eprintln!("warning: versions >= 5.7 make the yubikey crate use an AES-192 default management key");
                }
                a.version = [p[0], p[1], p[2]];
            }
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    Ok(a)
}

fn store_config(args: &Args) -> anyhow::Result<StoreConfig<'static>> {
    let (internal, external) = match &args.state_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
            (
                StorageConfig::filesystem(dir.join("internal.bin")),
                StorageConfig::filesystem(dir.join("external.bin")),
            )
        }
        None => (StorageConfig::ram(), StorageConfig::ram()),
    };
    let mut cfg = StoreConfig {
        internal,
        external,
        volatile: StorageConfig::ram(),
    };
    // Fix 4: trussed's virt platform RNG has a constant seed; trussed mixes the
    // stored /trussed/dat/rng-state.bin into it, so write fresh OS entropy there.
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).context("OS RNG")?;
    cfg.internal
        .with_fs(|fs| -> Result<(), littlefs2_core::Error> {
            fs.create_dir_all(path!("/trussed/dat"))?;
            fs.write(path!("/trussed/dat/rng-state.bin"), &seed)
        })
        .map_err(|e| anyhow::anyhow!("mount internal storage: {e:?}"))?
        .map_err(|e| anyhow::anyhow!("seed RNG state: {e:?}"))?;
    cfg.internal.format = false; // keep what we just wrote (RAM or file)
    cfg.external
        .with_fs(|_| ())
        .map_err(|e| anyhow::anyhow!("mount external storage: {e:?}"))?;
    cfg.external.format = false;
    Ok(cfg)
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("make-attestation-ca") {
        let [_, _, dir] = argv.as_slice() else {
            usage()
        };
        attest::make_ca(dir.as_ref())?;
        eprintln!(
            "piv-card: test attestation CA in {dir}: {} (trust anchor), {} + {} (card)",
            attest::ROOT_CERT,
            attest::F9_CERT,
            attest::F9_KEY
        );
        return Ok(());
    }
    let args = parse_args()?;
    let t0 = Instant::now();
    let ca = match &args.attestation_ca {
        Some(dir) => Some(
            attest::AttestationCa::load(dir)
                .with_context(|| format!("--attestation-ca {}", dir.display()))?,
        ),
        None => None,
    };
    let keys = attest::Keys::load(args.state_dir.as_deref())?;
    let cfg = store_config(&args)?;
    let addr = format!("{}:{}", args.host, args.port);

    virt::with_platform(cfg, |platform| {
        platform.run_client_with_backends(
            "piv",
            Dispatcher::default(),
            BACKENDS,
            |client| -> anyhow::Result<()> {
                let mut card = Card {
                    app: Authenticator::new(client, Options::default()),
                    serial: args.serial,
                    version: args.version,
                    chain: None,
                    pending: Vec::new(),
                    keys,
                    ca,
                };
                let mut announced = false;
                loop {
                    match vpicc::connect_socket(addr.as_str()) {
                        Ok(mut conn) => {
                            eprintln!(
                                "piv-card: serial {} attached to vpcd at {} ({} ms after start)",
                                args.serial,
                                addr,
                                t0.elapsed().as_millis()
                            );
                            announced = true;
                            loop {
                                if let Err(e) = conn.poll(&mut card) {
                                    eprintln!(
                                        "piv-card: vpcd connection closed: {e}; reconnecting"
                                    );
                                    break;
                                }
                            }
                            card.card_reset();
                        }
                        Err(e) => {
                            if !announced {
                                eprintln!("piv-card: waiting for vpcd at {addr}: {e}");
                                announced = true;
                            }
                        }
                    }
                    thread::sleep(Duration::from_millis(100));
                }
            },
        )
    })
}
