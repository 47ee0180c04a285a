//! Custodian commands: enrolment with a YubiKey, approval policies,
//! requests, signed approvals, and opening break-glass secrets locally.
//!
//! The signing and key agreement happen on the custodian's YubiKey
//! (slot 9c signs approvals, slot 9d opens shares); this tool shows the
//! request in full before asking for the PIN, and rebuilds the signed bytes
//! itself from what it showed, so the appliance cannot get a signature over
//! something the custodian did not see.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use clap::Subcommand;
use p256::pkcs8::DecodePrivateKey as _;
use p256::{PublicKey, SecretKey};
use serde_json::{json, Value};
use vault_core::custodian::approval::{Decision, Request};
use vault_core::custodian::sealed;
use vault_core::custodian::token::{CustodianToken, Slot};
use vault_core::secret::Pin;
use vault_piv::{ManagementKey, PinPolicy, TouchPolicy, YubiKeyToken};

#[derive(Subcommand)]
pub enum CustodianCmd {
    /// Enrol a custodian (admin): P-256 keys in PIV slots 9c and 9d of the
    /// attached YubiKey, attested, submitted to the appliance.
    Enroll {
        #[arg(long)]
        name: String,
        /// Group (repeat for several).
        #[arg(long = "group", required = true)]
        groups: Vec<String>,
        /// Use the keys already in 9c and 9d instead of generating new ones.
        #[arg(long)]
        reuse: bool,
        /// The YubiKey's serial (needed when several are attached).
        #[arg(long)]
        serial: Option<u32>,
        /// PIN policy of new keys: once or always.
        #[arg(long, default_value = "always")]
        pin_policy: String,
        /// Touch policy of new keys: always, cached or never.
        #[arg(long, default_value = "always")]
        touch_policy: String,
        /// File with the PIV management key (hex, 3DES). The factory default
        /// key is used when absent.
        #[arg(long)]
        mgm_key_file: Option<PathBuf>,
    },
    /// Enrolled custodians.
    List,
}

#[derive(Subcommand)]
pub enum RequestsCmd {
    /// Approval and break-glass requests.
    List {
        /// pending, approved, denied or all.
        #[arg(long, default_value = "pending")]
        status: String,
    },
    /// One request in full.
    Show { id: String },
}

#[derive(Subcommand)]
pub enum BreakglassCmd {
    /// Open a break-glass request (pam): makes a one-time key pair and keeps
    /// its private half in `--key-out` (mode 0600) until `open`.
    Request {
        path: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        key_out: PathBuf,
    },
    /// Collect an approved break-glass request and decrypt it locally.
    /// Prints the value (or writes it to --out, mode 0600).
    Open {
        id: String,
        /// The one-time key `request --key-out` wrote. (Not `--key`: that is
        /// the client key.)
        #[arg(long)]
        one_time_key: PathBuf,
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn token(serial: Option<u32>) -> anyhow::Result<YubiKeyToken> {
    YubiKeyToken::open(serial).map_err(|e| anyhow!("YubiKey: {e}"))
}

/// The PIN from a file, or asked on the terminal (never from argv).
pub fn read_pin(pin_file: Option<&Path>) -> anyhow::Result<Pin> {
    let pin = match pin_file {
        Some(p) => zeroize::Zeroizing::new(
            std::fs::read_to_string(p)
                .with_context(|| p.display().to_string())?
                .trim_end_matches(['\n', '\r'])
                .to_owned(),
        ),
        None => zeroize::Zeroizing::new(
            rpassword::prompt_password("YubiKey PIN: ").context("reading the PIN")?,
        ),
    };
    Ok(Pin::new((*pin).clone()))
}

pub fn enroll_body(
    name: &str,
    groups: &[String],
    reuse: bool,
    serial: Option<u32>,
    pin_policy: &str,
    touch_policy: &str,
    mgm_key_file: Option<&Path>,
) -> anyhow::Result<Value> {
    let pin_policy = match pin_policy {
        "once" => PinPolicy::Once,
        "always" => PinPolicy::Always,
        p => bail!("--pin-policy {p:?}: once or always"),
    };
    let touch_policy = match touch_policy {
        "always" => TouchPolicy::Always,
        "cached" => TouchPolicy::Cached,
        "never" => TouchPolicy::Never,
        t => bail!("--touch-policy {t:?}: always, cached or never"),
    };
    let mut t = token(serial)?;
    if !reuse {
        let mgm = match mgm_key_file {
            Some(p) => Some(
                ManagementKey::from_hex(
                    std::fs::read_to_string(p)
                        .with_context(|| p.display().to_string())?
                        .trim(),
                )
                .map_err(|e| anyhow!("management key: {e}"))?,
            ),
            None => None,
        };
        eprintln!(
            "generating P-256 keys in slots 9c and 9d of YubiKey {} (touch it if it blinks)",
            t.serial()
        );
        for slot in [Slot::Signature, Slot::KeyManagement] {
            t.generate(slot, pin_policy, touch_policy, mgm.as_ref())
                .map_err(|e| anyhow!("generate {slot:?}: {e}"))?;
        }
    }
    let sig = t
        .attest(Slot::Signature)
        .map_err(|e| anyhow!("attest 9c: {e}"))?;
    let kex = t
        .attest(Slot::KeyManagement)
        .map_err(|e| anyhow!("attest 9d: {e}"))?;
    let f9 = t
        .attestation_intermediate()
        .map_err(|e| anyhow!("read the f9 attestation certificate: {e}"))?;
    Ok(json!({
        "name": name,
        "groups": groups,
        "signature_attestation": B64.encode(sig),
        "key_management_attestation": B64.encode(kex),
        "intermediates": [B64.encode(f9)],
    }))
}

/// The request as shown, in the exact form that is signed.
pub fn request_from(v: &Value) -> anyhow::Result<Request> {
    let s = |k: &str| -> anyhow::Result<String> {
        Ok(v[k]
            .as_str()
            .ok_or_else(|| anyhow!("request field {k} missing"))?
            .to_owned())
    };
    let i = |k: &str| {
        v[k].as_i64()
            .ok_or_else(|| anyhow!("request field {k} missing"))
    };
    let nonce: [u8; 32] = B64
        .decode(s("nonce")?)
        .ok()
        .and_then(|n| n.try_into().ok())
        .ok_or_else(|| anyhow!("request nonce is not 32 bytes"))?;
    let recipient_key = match v["recipient_key"].as_str() {
        Some(k) => Some(B64.decode(k).context("recipient_key")?),
        None => None,
    };
    Ok(Request {
        request_id: s("request_id")?,
        appliance_id: s("appliance_id")?,
        path: s("path")?,
        version: v["version"]
            .as_u64()
            .ok_or_else(|| anyhow!("request field version missing"))?,
        requester: s("requester")?,
        reason: s("reason")?,
        created_at: i("created_at")?,
        expires_at: i("expires_at")?,
        nonce,
        recipient_key,
    })
}

/// What the custodian is asked to approve, in full.
pub fn describe(v: &Value) -> String {
    let mut s = format!(
        "request   {}\nkind      {}\nstatus    {}\nsecret    {} (version {})\nrequester {}\nreason    {}\ncreated   {}\nexpires   {}\nappliance {}\npolicy    {}\n",
        v["request_id"].as_str().unwrap_or("?"),
        v["kind"].as_str().unwrap_or("?"),
        v["status"].as_str().unwrap_or("?"),
        v["path"].as_str().unwrap_or("?"),
        v["version"],
        v["requester"].as_str().unwrap_or("?"),
        v["reason"].as_str().unwrap_or("?"),
        v["created"].as_str().unwrap_or("?"),
        v["expires"].as_str().unwrap_or("?"),
        v["appliance_id"].as_str().unwrap_or("?"),
        v["policy"],
    );
    if let Some(k) = v["recipient_key"].as_str() {
        let fp = key_fingerprint(&B64.decode(k).unwrap_or_default());
        s.push_str(&format!(
            "one-time key SHA-256 {fp}\n  (compare with the requester out of band: your share is sealed to this key)\n"
        ));
    }
    for vote in v["votes"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "vote      {} {} at {}\n",
            vote["custodian"].as_str().unwrap_or("?"),
            vote["decision"].as_str().unwrap_or("?"),
            vote["at"].as_str().unwrap_or("?")
        ));
    }
    s
}

/// SHA-256 (hex) of a one-time public key, for comparing out of band.
pub use vault_core::custodian::ecies::key_fingerprint;

/// Signs a decision on the token and, for a break-glass approval by a share
/// holder, forwards the share to the requester's one-time key.
pub fn vote_body(
    v: &Value,
    me: &str,
    decision: Decision,
    t: &mut dyn CustodianToken,
    pin: &Pin,
) -> anyhow::Result<Value> {
    let req = request_from(v)?;
    t.verify_pin(pin).map_err(|e| anyhow!("YubiKey: {e}"))?;
    eprintln!("touch your YubiKey if it blinks");
    let sig = t
        .sign(&req.message(decision, me))
        .map_err(|e| anyhow!("YubiKey sign: {e}"))?;
    let mut body = json!({"decision": decision.as_str(), "signature": B64.encode(sig)});
    if let (Decision::Approve, Some(env)) = (decision, v["your_share"].as_str()) {
        let env = B64.decode(env).context("your_share")?;
        let rk = req
            .recipient_key
            .as_deref()
            .ok_or_else(|| anyhow!("a share to forward but no recipient key"))?;
        let rk = PublicKey::from_sec1_bytes(rk).map_err(|_| anyhow!("bad recipient key"))?;
        let kex = t
            .public_key(Slot::KeyManagement)
            .map_err(|e| anyhow!("YubiKey: {e}"))?;
        // A 9d key with PIN policy "always" needs the PIN again.
        t.verify_pin(pin).map_err(|e| anyhow!("YubiKey: {e}"))?;
        let mut ecdh = |e: &PublicKey| t.ecdh(e).map_err(|x| x.to_string());
        let fwd = sealed::forward_share(
            &env,
            &kex,
            &mut ecdh,
            &req.request_id,
            &req.path,
            req.version,
            me,
            &rk,
            &mut rand::rngs::OsRng,
        )
        .map_err(|e| anyhow!("opening your share: {e}"))?;
        body["share"] = json!(B64.encode(fwd));
    }
    Ok(body)
}

pub fn open_token(serial: Option<u32>) -> anyhow::Result<YubiKeyToken> {
    token(serial)
}

/// A fresh one-time key: the PKCS#8 PEM for the file and the public point.
pub fn one_time_key() -> anyhow::Result<(zeroize::Zeroizing<String>, Vec<u8>)> {
    vault_core::custodian::ecies::one_time_key(&mut rand::rngs::OsRng)
        .map_err(|_| anyhow!("encoding the one-time key"))
}

/// Opens collected break-glass material with the one-time key.
pub fn open_collected(
    v: &Value,
    key_file: &Path,
) -> anyhow::Result<vault_core::secret::SecretBytes> {
    let pem = zeroize::Zeroizing::new(
        std::fs::read_to_string(key_file).with_context(|| key_file.display().to_string())?,
    );
    let sk = SecretKey::from_pkcs8_pem(&pem)
        .map_err(|_| anyhow!("{}: not a P-256 PKCS#8 key", key_file.display()))?;
    let shares: Vec<(String, Vec<u8>)> = v["shares"]
        .as_array()
        .ok_or_else(|| anyhow!("no shares in the answer"))?
        .iter()
        .map(|s| -> anyhow::Result<_> {
            Ok((
                s["custodian"].as_str().unwrap_or_default().to_owned(),
                B64.decode(s["envelope"].as_str().unwrap_or_default())?,
            ))
        })
        .collect::<Result<_, _>>()?;
    let ct = B64.decode(v["ciphertext"].as_str().unwrap_or_default())?;
    let k = v["k"]
        .as_u64()
        .ok_or_else(|| anyhow!("no k in the answer"))? as usize;
    sealed::open(
        &sk,
        v["request_id"].as_str().unwrap_or_default(),
        v["path"].as_str().unwrap_or_default(),
        v["version"].as_u64().unwrap_or_default(),
        k,
        &shares,
        &ct,
    )
    .map_err(|e| anyhow!("opening the value: {e}"))
}

/// `group:k,group:k` → the approvals list.
pub fn parse_approvals(s: &str) -> anyhow::Result<Value> {
    if s.trim().is_empty() || s == "none" {
        return Ok(json!([]));
    }
    let mut out = Vec::new();
    for part in s.split(',') {
        let (g, k) = part
            .split_once(':')
            .ok_or_else(|| anyhow!("{part:?}: expected group:k"))?;
        let k: u64 = k.parse().map_err(|_| anyhow!("{part:?}: k is a number"))?;
        out.push(json!({"group": g, "k": k}));
    }
    Ok(Value::Array(out))
}
