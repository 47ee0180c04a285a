//! `/v1/secrets/*` and `/v1/checkouts/*`.
//!
//! A checkout decrypts first and records second: the value leaves only after
//! the checkout record is durable, and a value that fails its integrity
//! check produces no record and no value.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::IntoResponse as _;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use vault_core::audit::entry::Outcome;
use vault_core::custodian::approval::GroupRule;
use vault_core::keyring::{Keyring, Tier};
use vault_core::policy::validate_path;
use vault_store::{AuditDrafts, Conflict, StoreError, WriteOp, WriteOutcome};

use super::custodians;
use super::disclose::{disclose, Disclosed, NotDisclosed, Record};
use super::error::{ApiError, ApiResult, Code};
use super::extract::{Auth, JsonBody, SecretInput};
use super::{blocking, WRITE_TRIES};
use crate::state::AppState;
use crate::timefmt::rfc3339;
use vault_core::custodian::request::RequestKind;
use vault_core::custodian::sealed;

const MAX_METADATA_BYTES: usize = 16 * 1024;
const MAX_REASON_CHARS: usize = 1024;

/// A reason given for a checkout or a revocation: 1-1024 characters after
/// trimming.
pub(crate) fn check_reason(r: &str) -> ApiResult<String> {
    let r = r.trim();
    if r.is_empty() || r.chars().count() > MAX_REASON_CHARS {
        return Err(ApiError::new(
            Code::InvalidReason,
            "reason must be 1-1024 characters",
        ));
    }
    Ok(r.to_owned())
}

/// The reason of a governance proposal: the one given (checked as
/// [`check_reason`]), or one that says what the change is.
pub(crate) fn reason_or(
    given: Option<&str>,
    default: impl FnOnce() -> String,
) -> ApiResult<String> {
    match given {
        Some(r) => check_reason(r),
        None => Ok(default()),
    }
}

/// A lease length asked for (a checkout or a renewal): the default if
/// none, else 1..=`limits.max_ttl_seconds`.
pub(crate) fn check_ttl(limits: &crate::config::Limits, ttl: Option<u64>) -> ApiResult<u64> {
    let ttl = ttl.unwrap_or(limits.default_ttl_seconds);
    if ttl == 0 || ttl > limits.max_ttl_seconds {
        return Err(ApiError::new(
            Code::InvalidTtl,
            format!("ttl_seconds must be 1..={}", limits.max_ttl_seconds),
        ));
    }
    Ok(ttl)
}

pub(crate) fn check_path(p: &str) -> ApiResult<()> {
    validate_path(p).map_err(|e| ApiError::new(Code::InvalidPath, e.to_string()))
}

/// The keyring. The pipeline refused the request if the vault was sealed;
/// this is the fallback for a vault sealed since.
fn unsealed(st: &AppState) -> ApiResult<Arc<vault_core::keyring::Keyring>> {
    st.keyring().ok_or_else(ApiError::sealed)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutRequest {
    value: SecretInput,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    exclusive: Option<bool>,
    /// The longest a lease may last, renewals included (standard tier).
    #[serde(default)]
    max_lease_seconds: Option<u64>,
    /// "standard" (default) or "sealed" (needs `custody`).
    #[serde(default)]
    tier: Option<String>,
    /// Sealed tier: `{"group": .., "k": ..}`, the custodians who hold shares.
    #[serde(default)]
    custody: Option<Value>,
}

/// A validated write: the value, its metadata, and for the sealed tier the
/// custody (group, k).
struct PutInput {
    value: zeroize::Zeroizing<String>,
    metadata: Option<Value>,
    exclusive: Option<bool>,
    max_lease_seconds: Option<u64>,
    custody: Option<(String, usize)>,
}

impl PutInput {
    fn parse(st: &AppState, req: PutRequest) -> ApiResult<PutInput> {
        let max = st.config.limits.max_value_bytes;
        if req.value.0.len() > max {
            return Err(ApiError::new(
                Code::ValueTooLarge,
                format!("values are limited to {max} bytes"),
            ));
        }
        if let Some(m) = &req.metadata {
            if !m.is_object() {
                return Err(ApiError::new(
                    Code::InvalidMetadata,
                    "metadata must be a JSON object",
                ));
            }
            if m.to_string().len() > MAX_METADATA_BYTES {
                return Err(ApiError::new(
                    Code::InvalidMetadata,
                    "metadata is limited to 16 KiB",
                ));
            }
        }
        let custody = match (req.tier.as_deref(), &req.custody) {
            (None | Some("standard"), None) => None,
            (Some("sealed"), Some(c)) => Some(
                custodians::parse_custody(c).map_err(|m| ApiError::new(Code::InvalidCustody, m))?,
            ),
            (Some("sealed"), None) => {
                return Err(ApiError::new(
                    Code::InvalidCustody,
                    "the sealed tier needs custody: {\"group\", \"k\"}",
                ))
            }
            (None | Some("standard"), Some(_)) => {
                return Err(ApiError::new(
                    Code::InvalidCustody,
                    "custody applies to the sealed tier only",
                ))
            }
            (Some(_), _) => {
                return Err(ApiError::new(
                    Code::InvalidTier,
                    "tier is standard or sealed",
                ))
            }
        };
        let most = st.config.limits.max_lease_seconds;
        match req.max_lease_seconds {
            Some(_) if custody.is_some() => return Err(ApiError::new(
                Code::InvalidTtl,
                "max_lease_seconds applies to the standard tier (sealed secrets are not leased)",
            )),
            Some(m) if m == 0 || m > most => {
                return Err(ApiError::new(
                    Code::InvalidTtl,
                    format!("max_lease_seconds must be 1..={most}"),
                ))
            }
            _ => {}
        }
        Ok(PutInput {
            value: req.value.0,
            metadata: req.metadata,
            exclusive: req.exclusive,
            max_lease_seconds: req.max_lease_seconds,
            custody,
        })
    }
}

/// `PUT /v1/secrets/{path}` (writer): a new version.
pub async fn put(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    Path(path): Path<String>,
    JsonBody(req): JsonBody<PutRequest>,
) -> ApiResult<Json<Value>> {
    check_path(&path)?;
    let kr = unsealed(&st)?;
    let input = PutInput::parse(&st, req)?;
    let (s, p) = (st.clone(), path.clone());
    let version = blocking(move || write_version(&s, &kr, &auth, &p, input)).await??;
    Ok(Json(json!({"path": path, "version": version})))
}

/// The sealed tier's recipients: every enrolled custodian of the group gets
/// a share.
type Recipients = Vec<(String, p256::PublicKey)>;

fn custody_recipients(st: &AppState, group: &str, k: usize) -> ApiResult<Recipients> {
    let mut recipients = Vec::new();
    for c in st
        .store
        .custodians()?
        .iter()
        .filter(|c| c.groups.iter().any(|g| g == group))
    {
        let pk = p256::PublicKey::from_sec1_bytes(&c.kex_key).map_err(|_| ApiError::integrity())?;
        recipients.push((c.name.clone(), pk));
    }
    if recipients.len() < k || recipients.len() > 255 {
        return Err(ApiError::new(
            Code::QuorumUnreachable,
            format!(
                "group {group} has {} enrolled custodians; custody needs k = {k} of them (and at most 255)",
                recipients.len()
            ),
        ));
    }
    Ok(recipients)
}

/// Encrypts the value for the next version (part of the associated data)
/// and writes it only if it is still the next one; else reads again (up to
/// [`WRITE_TRIES`]). The version written.
fn write_version(
    st: &AppState,
    kr: &Keyring,
    auth: &Auth,
    path: &str,
    input: PutInput,
) -> ApiResult<u64> {
    // No audit HMAC for the sealed tier: it is keyed from the root key, and
    // would let whoever holds the root key test guesses of a value the
    // appliance must not be able to learn.
    let hmac = match input.custody {
        None => st.audit_hmac(input.value.as_bytes()),
        Some(_) => None,
    };
    let tier_name = if input.custody.is_some() {
        "sealed"
    } else {
        "standard"
    };
    let mut audit = auth
        .audit(st, "secret.write", path)
        .on_success("tier", tier_name);
    if let Some(h) = hmac {
        audit = audit.hmac_on_success("value", h);
    }
    let custody = match &input.custody {
        None => None,
        Some((group, k)) => Some((
            custody_recipients(st, group, *k)?,
            *k,
            json!({"group": group, "k": k}).to_string(),
        )),
    };
    let (by, now, value) = (&auth.principal.name, st.now(), input.value.as_bytes());
    let mut tries = 0;
    let r = loop {
        tries += 1;
        let version = match st.store.current_version(path)? {
            None => 1,
            Some(v) => v.checked_add(1).ok_or_else(ApiError::integrity)?,
        };
        let op = match &custody {
            None => WriteOp::PutSecret {
                path: path.to_owned(),
                version,
                exclusive: input.exclusive,
                max_lease_seconds: input.max_lease_seconds,
                metadata: input.metadata.clone(),
                created_by: by.clone(),
                now,
                sealed: kr.seal_value(path, version, Tier::Standard, value),
            },
            Some((recipients, k, custody_json)) => {
                // The data key exists only inside this call.
                let sv = sealed::seal(path, version, value, recipients, *k, &mut rand::rngs::OsRng)
                    .map_err(|e| {
                        tracing::error!(error = %e, "sealing to custodians failed");
                        ApiError::new(Code::CustodyUnavailable, "conflict: custody_unavailable")
                    })?;
                WriteOp::PutSealedSecret {
                    path: path.to_owned(),
                    version,
                    metadata: input.metadata.clone(),
                    custody: custody_json.clone(),
                    created_by: by.clone(),
                    now,
                    sealed: vault_store::SealedVersion {
                        ciphertext: sv.ciphertext,
                        shares: sv.shares,
                    },
                }
            }
        };
        let audit = audit.clone().on_success("version", version.to_string());
        let r = st.store.write_audited(op, audit);
        if !matches!(r, Err(StoreError::Stale(_))) || tries >= WRITE_TRIES {
            break r;
        }
    };
    auth.after_write(&r);
    let WriteOutcome::Version(version) = r? else {
        return Err(ApiError::internal("unexpected store outcome"));
    };
    tracing::info!(principal = %auth.principal.name, %path, version, "secret version written");
    Ok(version)
}

/// `GET /v1/secrets/{path}`. A PAM server sees the metadata of the paths
/// its grants cover only: another path is 403 `not_granted` whether it
/// exists or not, as its checkout would be.
pub async fn get(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    Path(path): Path<String>,
) -> ApiResult<Json<Value>> {
    check_path(&path)?;
    let s = st.clone();
    let p = path.clone();
    let pam =
        (auth.principal.role == vault_core::policy::Role::Pam).then(|| auth.principal.name.clone());
    let info = blocking(move || {
        if let Some(name) = pam {
            if !s.store.granted(&name, &p)? {
                return Err(StoreError::NotGranted);
            }
        }
        let info = s.store.secret(&p)?;
        let drift = match &info {
            Some(_) => s.store.rotation_policy(&p)?.and_then(|r| r.drift_at),
            None => None,
        };
        Ok::<_, StoreError>(info.map(|i| (i, drift)))
    })
    .await??
    .ok_or_else(|| ApiError::not_found(format!("no secret at {path}")))?;
    let (info, drift) = info;
    let now = st.now();
    Ok(Json(json!({
        "path": info.path,
        "exclusive": info.exclusive,
        "max_lease_seconds": (info.policy.tier == "standard")
            .then(|| info.max_lease_seconds.unwrap_or(st.config.limits.max_lease_seconds)),
        "tier": info.policy.tier,
        "approvals": serde_json::from_str::<Value>(&info.policy.approvals).unwrap_or(Value::Null),
        "prefix_policies": info.policy.prefixes.iter().map(custodians::prefix_policy_json).collect::<ApiResult<Vec<_>>>()?,
        "effective_approvals": effective_approvals(&info.policy)?.iter().map(|r| json!({"group": r.group, "k": r.k})).collect::<Vec<_>>(),
        "custody": info.policy.custody.as_deref().and_then(|c| serde_json::from_str::<Value>(c).ok()),
        "current_version": info.current_version,
        "metadata": info.metadata,
        "created_at": rfc3339(info.created_at),
        "updated_at": rfc3339(info.updated_at),
        "versions": info.versions.iter().map(|v| json!({
            "version": v.version,
            "created_at": rfc3339(v.created_at),
            "created_by": v.created_by,
            "keyring_version": v.key_version,
            "destroyed_at": v.destroyed.as_ref().map(|d| rfc3339(d.0)),
            "destroyed_by": v.destroyed.as_ref().map(|d| d.1.clone()),
        })).collect::<Vec<_>>(),
        "deleted_at": info.deleted.as_ref().map(|d| rfc3339(d.0)),
        "deleted_by": info.deleted.as_ref().map(|d| d.1.clone()),
        "open_checkouts": info.open_checkouts.iter().map(|c| json!({
            "checkout_id": c.id,
            "principal": c.principal,
            "expires_at": rfc3339(c.expires_at),
            "expired": c.expires_at <= now,
        })).collect::<Vec<_>>(),
        "drift_since": drift.map(rfc3339),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

/// `GET /v1/secrets`. A PAM server's listing holds only the paths its
/// grants cover; `next_after` pages over every path, so one of its pages
/// may hold fewer than `limit` (follow `next_after` until it is null).
pub async fn list(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = q.map_err(|e| ApiError::new(Code::InvalidQuery, e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::new(Code::InvalidQuery, "limit must be 1..=1000"));
    }
    let prefix = q.prefix.unwrap_or_default();
    if prefix.len() > vault_core::policy::MAX_PATH_LEN {
        return Err(ApiError::new(Code::InvalidQuery, "prefix is too long"));
    }
    let s = st.clone();
    let after = q.after.clone();
    let pam =
        (auth.principal.role == vault_core::policy::Role::Pam).then(|| auth.principal.name.clone());
    let (mut rows, grants) = blocking(move || -> Result<_, StoreError> {
        let rows = s.store.list(&prefix, after.as_deref(), limit)?;
        let grants: Option<Vec<String>> = match pam {
            Some(name) => Some(
                s.store
                    .grants()?
                    .into_iter()
                    .filter(|g| g.principal == name)
                    .map(|g| g.prefix)
                    .collect(),
            ),
            None => None,
        };
        Ok((rows, grants))
    })
    .await??;
    let next = if rows.len() == limit {
        rows.last().map(|r| r.path.clone())
    } else {
        None
    };
    if let Some(g) = grants {
        rows.retain(|r| g.iter().any(|p| vault_store::grant_covers(p, &r.path)));
    }
    Ok(Json(json!({
        "secrets": rows.iter().map(|r| json!({
            "path": r.path,
            "current_version": r.current_version,
            "exclusive": r.exclusive,
            "updated_at": rfc3339(r.updated_at),
        })).collect::<Vec<_>>(),
        "next_after": next,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    reason: String,
    #[serde(default)]
    ttl_seconds: Option<u64>,
    /// Break-glass only: the requester's one-time P-256 public key (base64
    /// SEC1 uncompressed) that custodians re-seal their shares to.
    #[serde(default)]
    recipient_key: Option<String>,
    /// A named version (absent: the current one). An older version is
    /// audited as such (`named_version`), and refused once destroyed.
    #[serde(default)]
    version: Option<u64>,
}

/// What a checkout attempt led to.
enum Attempt {
    Value(Disclosed),
    /// The secret needs approvals (or is in the sealed tier): a request.
    Request(axum::response::Response),
}

/// A validated checkout or break-glass request.
struct CheckoutInput {
    path: String,
    breakglass: bool,
    reason: String,
    ttl: u64,
    recipient_key: Option<Vec<u8>>,
    named: Option<u64>,
}

impl CheckoutInput {
    /// `rest` is the route's wildcard: `{path}/checkout` or `{path}/breakglass`.
    fn parse(st: &AppState, rest: &str, req: CheckoutRequest) -> ApiResult<CheckoutInput> {
        let (path, breakglass) = match (rest.strip_suffix("/checkout"), rest.strip_suffix("/breakglass")) {
            (Some(p), _) => (p, false),
            (_, Some(p)) => (p, true),
            _ => {
                return Err(ApiError::not_found(
                    "POST is only defined for /v1/secrets/{path}/checkout and /v1/secrets/{path}/breakglass",
                ))
            }
        };
        check_path(path)?;
        let reason = check_reason(&req.reason)?;
        let ttl = check_ttl(&st.config.limits, req.ttl_seconds)?;
        let recipient_key = match (breakglass, &req.recipient_key) {
            (true, Some(k)) => Some(recipient_key(k)?),
            (true, None) => {
                return Err(ApiError::new(
                    Code::InvalidRecipientKey,
                    "a break-glass request needs the requester's one-time recipient_key",
                ))
            }
            (false, Some(_)) => {
                return Err(ApiError::new(
                    Code::InvalidBody,
                    "recipient_key belongs to break-glass requests",
                ))
            }
            (false, None) => None,
        };
        if req.version == Some(0) {
            return Err(ApiError::new(
                Code::InvalidBody,
                "version counts from 1 (omit it for the current version)",
            ));
        }
        Ok(CheckoutInput {
            path: path.to_owned(),
            breakglass,
            reason,
            ttl,
            recipient_key,
            named: req.version,
        })
    }
}

/// A requester's one-time key: base64 of an uncompressed P-256 point.
fn recipient_key(k: &str) -> ApiResult<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(k.trim())
        .ok()
        .filter(|b| b.len() == 65 && b[0] == 0x04)
        .filter(|b| p256::PublicKey::from_sec1_bytes(b).is_ok())
        .ok_or_else(|| {
            ApiError::new(
                Code::InvalidRecipientKey,
                "recipient_key must be a base64 uncompressed P-256 point (65 bytes)",
            )
        })
}

/// `POST /v1/secrets/{path}/checkout` and `POST /v1/secrets/{path}/breakglass`
/// (the route is a wildcard; the suffix is checked here).
pub async fn post(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    Path(rest): Path<String>,
    JsonBody(req): JsonBody<CheckoutRequest>,
) -> ApiResult<axum::response::Response> {
    let input = CheckoutInput::parse(&st, &rest, req)?;
    let kr = unsealed(&st)?;
    let s = st.clone();
    match blocking(move || checkout(&s, &kr, &auth, &input)).await?? {
        Attempt::Value(d) => Ok(d.into_json().into_response()),
        Attempt::Request(resp) => Ok(resp),
    }
}

/// Stored approvals (`[]`: none).
fn stored(approvals: &str) -> ApiResult<Vec<GroupRule>> {
    if approvals == "[]" {
        return Ok(Vec::new());
    }
    let v: Value = serde_json::from_str(approvals).map_err(|_| ApiError::integrity())?;
    custodians::parse_rules(&v).map_err(|_| ApiError::integrity())
}

/// Adds `more` to `rules` (AND): per group, the larger k.
fn merge(rules: &mut Vec<GroupRule>, more: Vec<GroupRule>) {
    for m in more {
        match rules.iter_mut().find(|r| r.group == m.group) {
            Some(r) => r.k = r.k.max(m.k),
            None => rules.push(m),
        }
    }
}

/// The secret's own approvals and those of every prefix policy over it.
pub(crate) fn effective_approvals(
    policy: &vault_store::types::SecretPolicy,
) -> ApiResult<Vec<GroupRule>> {
    let mut rules = stored(&policy.approvals)?;
    for p in &policy.prefixes {
        merge(&mut rules, stored(&p.approvals)?);
    }
    Ok(rules)
}

/// The approvals a checkout of a secret with `policy` needs (its own and
/// its prefixes'), or the refusal of the wrong kind of request (sealed
/// tier: break-glass only, and the custody group's k applies on top of any
/// approvals, AND).
fn gate(
    policy: &vault_store::types::SecretPolicy,
    breakglass: bool,
) -> ApiResult<(RequestKind, Vec<GroupRule>)> {
    let mut rules = effective_approvals(policy)?;
    match (policy.tier.as_str(), breakglass) {
        ("sealed", false) => Err(ApiError::new(
            Code::SealedTier,
            "this secret is in the sealed tier: only custodians can open it (POST .../breakglass)",
        )),
        ("sealed", true) => {
            let c: Value = policy
                .custody
                .as_deref()
                .and_then(|c| serde_json::from_str(c).ok())
                .ok_or_else(ApiError::integrity)?;
            let (group, k) = custodians::parse_custody(&c).map_err(|_| ApiError::integrity())?;
            match rules.iter_mut().find(|r| r.group == group) {
                Some(r) => r.k = r.k.max(k),
                None => rules.insert(0, GroupRule { group, k }),
            }
            Ok((RequestKind::Breakglass, rules))
        }
        (_, true) => Err(ApiError::new(
            Code::NotSealedTier,
            "break-glass requests are for sealed-tier secrets; use .../checkout",
        )),
        _ => Ok((RequestKind::Checkout, rules)),
    }
}

/// A checkout of the current version, or the request it needs. Retried if a
/// writer adds a version between the read and the record (each attempt is
/// audited; whatever ends the request is too).
fn checkout(
    st: &Arc<AppState>,
    kr: &Keyring,
    auth: &Auth,
    input: &CheckoutInput,
) -> ApiResult<Attempt> {
    let CheckoutInput {
        path, reason, ttl, ..
    } = input;
    // Default deny, before anything about the path is read: a path outside
    // the grants is refused alike whether it exists or not.
    if !st.store.granted(&auth.principal.name, path)? {
        return Err(StoreError::NotGranted.into());
    }
    for _ in 0..3 {
        let (version, sealed, policy) = st
            .store
            .current(path)?
            .ok_or_else(|| ApiError::not_found(format!("no secret at {path}")))?;
        let (kind, rules) = gate(&policy, input.breakglass)?;
        let named = input.named.filter(|v| *v != version);
        if let Some(v) = named {
            return checkout_named(st, kr, auth, input, (v, version), (kind, &rules));
        }
        if kind == RequestKind::Breakglass || !rules.is_empty() {
            let key = input.recipient_key.clone();
            return custodians::open_request(
                st, auth, kind, path, version, reason, *ttl, rules, key, None,
            )
            .map(Attempt::Request);
        }
        let audit = checkout_audit(st, &auth.who, path, (version, *ttl, reason.clone()));
        let rec = Record {
            path,
            version,
            ttl_seconds: *ttl,
            how: "checkout",
        };
        let r = disclose(st, kr, auth, &sealed, rec, |id, now, expires_at| {
            let op = checkout_op(
                auth,
                input,
                (id.clone(), now, expires_at),
                (Some(version), None),
            );
            st.store
                .write_audited(op, audit.on_success("checkout_id", id))
        });
        match r {
            Ok(d) => return Ok(Attempt::Value(d)),
            Err(NotDisclosed::Store(StoreError::Conflict(Conflict::VersionChanged))) => {
                auth.audit_done.store(false, Ordering::SeqCst);
                continue;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::new(
        Code::VersionChanged,
        "the secret changed repeatedly during checkout; retry",
    ))
}

/// The checkout record of `input` by `auth`: `(id, now, expires_at)`, and
/// `(expect_version, named)` as [`WriteOp::Checkout`] takes them.
fn checkout_op(
    auth: &Auth,
    input: &CheckoutInput,
    (id, now, expires_at): (String, i64, i64),
    (expect_version, named): (Option<u64>, Option<u64>),
) -> WriteOp {
    WriteOp::Checkout {
        id,
        path: input.path.clone(),
        expect_version,
        named,
        principal: auth.principal.name.clone(),
        fingerprint: auth.principal.fingerprint.clone(),
        reason: input.reason.clone(),
        now,
        expires_at,
    }
}

/// A checkout of the named older version `v` (`current` is the current
/// one). Only for secrets that need no approvals: a request and its
/// custodians' votes are for the current version.
fn checkout_named(
    st: &Arc<AppState>,
    kr: &Keyring,
    auth: &Auth,
    input: &CheckoutInput,
    (v, current): (u64, u64),
    (kind, rules): (RequestKind, &[GroupRule]),
) -> ApiResult<Attempt> {
    let CheckoutInput {
        path, reason, ttl, ..
    } = input;
    if kind == RequestKind::Breakglass || !rules.is_empty() {
        return Err(ApiError::new(
            Code::OlderVersionGated,
            "only the current version of a secret that needs approvals (or of a sealed-tier secret) can be checked out",
        ));
    }
    let not_found = || ApiError::not_found(format!("{path} has no version {v}"));
    if v > current {
        return Err(not_found());
    }
    let sealed = st.store.secret_version(path, v)?.ok_or_else(not_found)?;
    let audit = checkout_audit(st, &auth.who, path, (v, *ttl, reason.clone()))
        .detail("named_version", "true")
        .detail("current_version", current.to_string());
    let rec = Record {
        path,
        version: v,
        ttl_seconds: *ttl,
        how: "checkout",
    };
    let d = disclose(st, kr, auth, &sealed, rec, |id, now, expires_at| {
        let op = checkout_op(auth, input, (id.clone(), now, expires_at), (None, Some(v)));
        st.store
            .write_audited(op, audit.on_success("checkout_id", id))
    })?;
    Ok(Attempt::Value(d))
}

/// Collects an approved checkout request: the approved version, once.
pub(crate) async fn collect_checkout(
    st: Arc<AppState>,
    auth: Auth,
    row: vault_store::RequestRow,
) -> ApiResult<Json<Value>> {
    let kr = unsealed(&st)?;
    let s = st.clone();
    let audit = auth
        .audit(&st, "request.collect", &row.path)
        .on_success("request_id", row.id.clone())
        .on_success("version", row.version.to_string());
    let d = blocking(move || -> ApiResult<Disclosed> {
        let sealed = s
            .store
            .secret_version(&row.path, row.version)?
            .ok_or_else(ApiError::integrity)?;
        let rec = Record {
            path: &row.path,
            version: row.version,
            ttl_seconds: row.ttl_seconds,
            how: "collect",
        };
        Ok(disclose(
            &s,
            &kr,
            &auth,
            &sealed,
            rec,
            |id, now, expires_at| {
                s.store.write_audited(
                    WriteOp::Collect {
                        request_id: row.id.clone(),
                        requester: auth.principal.name.clone(),
                        fingerprint: auth.principal.fingerprint.clone(),
                        now,
                        checkout: Some((id.clone(), expires_at)),
                    },
                    audit.on_success("checkout_id", id),
                )
            },
        )?)
    })
    .await??;
    Ok(d.into_json())
}

pub async fn checkin(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    if uuid::Uuid::parse_str(&id).is_err() {
        return Err(ApiError::new(
            Code::InvalidCheckoutId,
            "checkout ids are UUIDs",
        ));
    }
    let s = st.clone();
    let principal = auth.principal.name.clone();
    let now = st.now();
    let i2 = id.clone();
    let fingerprint = auth.principal.fingerprint.clone();
    let mut audit = auth.audit(&st, "checkout.checkin", &id);
    let r = blocking(move || {
        // The checkout's path and version, recorded if the checkin succeeds
        // (a checkout row never changes but for its checkin time).
        if let Ok(Some(row)) = s.store.checkout(&i2) {
            audit = audit
                .on_success("path", row.path)
                .on_success("version", row.version.to_string());
        }
        s.store.write_audited(
            WriteOp::Checkin {
                id: i2,
                principal,
                fingerprint,
                now,
            },
            audit,
        )
    })
    .await?;
    auth.after_write(&r);
    let out = r?;
    let WriteOutcome::CheckedIn(row) = out else {
        return Err(ApiError::internal("unexpected store outcome"));
    };
    tracing::info!(principal = %auth.principal.name, path = %row.path, checkout_id = %id, "checkin");
    Ok(Json(json!({
        "checkout_id": row.id,
        "path": row.path,
        "version": row.version,
        "checked_in_at": rfc3339(row.checked_in_at.unwrap_or(now)),
    })))
}

/// The audit entries of a checkout attempt (the id only if it succeeds).
fn checkout_audit(
    st: &AppState,
    who: &crate::audit::Who,
    path: &str,
    (version, ttl, reason): (u64, u64, String),
) -> AuditDrafts {
    AuditDrafts::new(who.draft(st, "secret.checkout", path, Outcome::Success, ""))
        .detail("version", version.to_string())
        .detail("ttl_seconds", ttl.to_string())
        .detail("reason", reason)
}
