//! The route table: for every route, its method and path, who may call it
//! and the audit action of its entries. The router is built from it, the
//! pipeline ([`authorize`]) checks permissions from it, the access
//! middleware names refusals from it, and the route × role test enumerates
//! it. A route exists only as a line here.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put, MethodRouter};
use vault_core::audit::action::AuditAction;
use vault_core::policy::Action;

use super::error::ApiError;
use super::extract::Auth;
use super::{
    audit, checkouts, custodians, governance, grants, lifecycle, rotations, secrets, sys, update,
};
use crate::state::AppState;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone who completed the TLS handshake (health, seal status, OpenAPI).
    Public,
    /// A principal whose role has this permission (`vault_core::policy::allowed`).
    Permission(Action),
}

/// What a route does while the vault is sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenSealed {
    /// It answers (health, seal status, unseal, principals, audit reads).
    Serve,
    /// The pipeline refuses it with 503 `sealed` before the handler runs.
    Refuse,
}

/// One line of the table.
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    pub sealed: WhenSealed,
    /// The action of the entries a call of this route writes, refusals included.
    pub audit: AuditAction,
    handler: fn() -> MethodRouter<Arc<AppState>>,
}

macro_rules! routes {
    ($($method:ident $path:literal $access:expr, $sealed:ident, $audit:ident => $handler:expr;)+) => {
        vec![$(Route {
            method: Method::$method,
            path: $path,
            access: $access,
            sealed: WhenSealed::$sealed,
            audit: AuditAction::$audit,
            handler: || $handler,
        },)+]
    };
}

/// Every route of the mTLS API.
pub fn table() -> Vec<Route> {
    use Access::{Permission as P, Public};
    routes! {
        GET "/v1/sys/health" Public, Serve, SysRead => get(sys::health);
        GET "/v1/sys/seal-status" Public, Serve, SysRead => get(sys::seal_status);
        POST "/v1/sys/unseal" P(Action::Unseal), Serve, SysUnseal => post(sys::unseal);
        POST "/v1/sys/certs" P(Action::IssueCertificate), Refuse, CertIssue => post(sys::issue_cert);
        POST "/v1/sys/certs/renew" P(Action::RenewOwnCertificate), Refuse, CertRenew => post(sys::renew_cert);
        GET "/v1/sys/server-cert" P(Action::IssueCertificate), Serve, SysRead => get(sys::server_cert);
        POST "/v1/sys/server-cert" P(Action::IssueCertificate), Refuse, CertServerReissue => post(sys::reissue_server_cert);
        GET "/v1/sys/principals" P(Action::IssueCertificate), Serve, PrincipalList => get(sys::list_principals);
        POST "/v1/sys/principals/revoke" P(Action::IssueCertificate), Serve, PrincipalRevoke => post(sys::revoke_name);
        POST "/v1/sys/principals/{fingerprint}/revoke" P(Action::IssueCertificate), Serve, PrincipalRevoke => post(sys::revoke_principal);
        // The handler audits its own outcome as sys.update.stage; a refusal
        // before it is named sys.read, as the logs have always had it.
        POST "/v1/sys/update" P(Action::UpdateImage), Serve, SysRead => post(update::stage);
        GET "/v1/sys/update" P(Action::UpdateImage), Serve, SysRead => get(update::status);
        GET "/v1/sys/keyring" P(Action::RotateKeyring), Refuse, KeyringStatus => get(sys::keyring_status);
        POST "/v1/sys/keyring/rotate" P(Action::RotateKeyring), Refuse, KeyringRotate => post(sys::keyring_rotate);
        GET "/v1/secrets" P(Action::ListSecrets), Refuse, SecretList => get(secrets::list);
        GET "/v1/secrets/{*path}" P(Action::ReadMetadata), Refuse, SecretMetadata => get(secrets::get);
        PUT "/v1/secrets/{*path}" P(Action::WriteSecret), Refuse, SecretWrite => put(secrets::put);
        POST "/v1/secrets/{*path}" P(Action::Checkout), Refuse, SecretCheckout => post(secrets::post);
        DELETE "/v1/secrets/{*path}" P(Action::DestroySecret), Refuse, SecretDelete => delete(lifecycle::delete);
        GET "/v1/rotation/{*path}" P(Action::ManageRotation), Refuse, RotationRead => get(rotations::get);
        PUT "/v1/rotation/{*path}" P(Action::ManageRotation), Refuse, RotationSet => put(rotations::set);
        DELETE "/v1/rotation/{*path}" P(Action::ManageRotation), Refuse, RotationRemove => delete(rotations::remove);
        POST "/v1/rotation/{*path}" P(Action::ManageRotation), Refuse, RotationRequest => post(rotations::request);
        GET "/v1/checkouts" P(Action::ListCheckouts), Refuse, CheckoutList => get(checkouts::list);
        POST "/v1/checkouts/{id}/checkin" P(Action::Checkin), Refuse, CheckoutCheckin => post(secrets::checkin);
        POST "/v1/checkouts/{id}/renew" P(Action::Checkin), Refuse, CheckoutRenew => post(checkouts::renew);
        POST "/v1/checkouts/{id}/recordings" P(Action::Checkin), Refuse, CheckoutRecording => post(checkouts::record);
        POST "/v1/checkouts/{id}/revoke" P(Action::RevokeCheckout), Refuse, CheckoutRevoke => post(checkouts::revoke);
        GET "/v1/custodians" P(Action::ListCustodians), Refuse, CustodianList => get(custodians::list);
        POST "/v1/custodians" P(Action::EnrollCustodian), Refuse, CustodianEnroll => post(custodians::enroll);
        DELETE "/v1/custodians/{name}" P(Action::EnrollCustodian), Refuse, CustodianRemove => delete(governance::remove_custodian);
        PUT "/v1/custodians/{name}/groups" P(Action::EnrollCustodian), Refuse, CustodianGroups => put(governance::set_groups);
        GET "/v1/grants" P(Action::ListCustodians), Refuse, GrantList => get(grants::list);
        POST "/v1/grants" P(Action::IssueCertificate), Refuse, GrantAdd => post(grants::add);
        POST "/v1/grants/remove" P(Action::IssueCertificate), Refuse, GrantRemove => post(grants::remove);
        GET "/v1/policies" P(Action::ListCustodians), Refuse, PolicyList => get(custodians::list_policies);
        PUT "/v1/policies/{*path}" P(Action::SetApprovalPolicy), Refuse, PolicySet => put(custodians::set_policy);
        GET "/v1/requests" P(Action::ReadRequests), Refuse, RequestList => get(custodians::list_requests);
        GET "/v1/requests/{id}" P(Action::ReadRequests), Refuse, RequestRead => get(custodians::get_request);
        POST "/v1/requests/{id}/vote" P(Action::Vote), Refuse, ApprovalVote => post(custodians::vote);
        POST "/v1/requests/{id}/collect" P(Action::Checkout), Refuse, RequestCollect => post(custodians::collect);
        POST "/v1/requests/{id}/apply" P(Action::EnrollCustodian), Refuse, GovernanceApply => post(governance::apply);
        GET "/v1/governance" P(Action::ListCustodians), Refuse, GovernanceRead => get(governance::status);
        POST "/v1/governance/genesis" P(Action::EnrollCustodian), Refuse, GovernancePropose => post(governance::genesis);
        PUT "/v1/governance/rule" P(Action::EnrollCustodian), Refuse, GovernancePropose => put(governance::set_rule);
        GET "/v1/sys/recovery" P(Action::ListCustodians), Serve, SysRead => get(custodians::get_recovery);
        POST "/v1/sys/recovery" P(Action::EnrollCustodian), Refuse, RecoveryConfigure => post(custodians::configure_recovery);
        GET "/v1/audit/checkpoint" P(Action::ReadAudit), Serve, AuditRead => get(audit::checkpoint);
        POST "/v1/audit/checkpoint" P(Action::ReadAudit), Serve, AuditCheckpoint => post(audit::new_checkpoint);
        GET "/v1/audit/public-key" P(Action::ReadAudit), Serve, AuditRead => get(audit::public_key);
        GET "/v1/audit/entries" P(Action::ReadAudit), Serve, AuditRead => get(audit::entries);
        GET "/v1/audit/proof/inclusion" P(Action::ReadAudit), Serve, AuditRead => get(audit::inclusion);
        GET "/v1/audit/proof/consistency" P(Action::ReadAudit), Serve, AuditRead => get(audit::consistency);
        POST "/v1/audit/hash" P(Action::ReadAudit), Refuse, AuditHash => post(audit::hash);
        GET "/v1/openapi.json" Public, Serve, Request => get(super::openapi);
        GET "/metrics" P(Action::ReadMetrics), Serve, MetricsRead => get(sys::metrics);
    }
}

/// The table, built once.
pub static TABLE: std::sync::LazyLock<Vec<Route>> = std::sync::LazyLock::new(table);

/// The table's line for a request, if any.
pub fn find<'a>(table: &'a [Route], method: &Method, path: &str) -> Option<&'a Route> {
    table.iter().find(|r| r.method == *method && r.path == path)
}

/// The audit action of a request: its route's, or for a method or path the
/// table does not have, the name of the area it is in.
pub fn audit_action(table: &[Route], method: &Method, route: &str) -> AuditAction {
    if let Some(r) = find(table, method, route) {
        return r.audit;
    }
    match route {
        r if r.starts_with("/v1/audit/") => AuditAction::AuditRead,
        "/metrics" => AuditAction::MetricsRead,
        r if r.starts_with("/v1/sys/") => AuditAction::SysRead,
        _ => AuditAction::Request,
    }
}

/// The routes, merged by path, for the router.
pub(crate) fn method_routers(table: &[Route]) -> Vec<(&'static str, MethodRouter<Arc<AppState>>)> {
    let mut out: Vec<(&'static str, MethodRouter<Arc<AppState>>)> = Vec::new();
    for r in table {
        let mr = (r.handler)();
        match out.iter_mut().find(|(p, _)| *p == r.path) {
            Some((_, existing)) => {
                let prev = std::mem::take(existing);
                *existing = prev.merge(mr);
            }
            None => out.push((r.path, mr)),
        }
    }
    out
}

/// The pipeline, for every matched route: peer → principal → permission
/// from the table → sealed check, before any handler or body parser runs.
/// The principal goes on to the handler as its [`Auth`]. (A handler that
/// needs the keyring still takes it with a sealed fallback: the vault can
/// seal between this check and the handler.)
pub(crate) async fn authorize(
    State(st): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let line = find(&TABLE, req.method(), &route);
    let access = line.map(|r| r.access);
    let refuse_sealed = line.is_some_and(|r| r.sealed == WhenSealed::Refuse);
    let (mut parts, body) = req.into_parts();
    match access {
        None | Some(Access::Public) => {}
        Some(a) => {
            let auth = match Auth::resolve(&parts, &st) {
                Ok(auth) => auth,
                Err(e) => return e.into_response(),
            };
            // Any authenticated request is a use of the certificate, also
            // one its role may not make.
            if let Err(e) = retire_predecessor(&st, &auth).await {
                return e.into_response();
            }
            if let Access::Permission(action) = a {
                if let Err(e) = auth.require(action) {
                    return e.into_response();
                }
            }
            let opens = crate::state::renew_opens(
                &st.config,
                auth.principal.issued_at,
                auth.principal.not_after,
            );
            let left = auth.principal.not_after - st.now();
            let warn = (st.now() >= opens).then_some(left);
            parts.extensions.insert(auth);
            if refuse_sealed && st.is_sealed() {
                return ApiError::sealed().into_response();
            }
            let mut resp = next.run(Request::from_parts(parts, body)).await;
            if let Some(left) = warn {
                // Every answer to a holder whose certificate is in its
                // renewal window says so (vaultctl prints a warning).
                resp.headers_mut()
                    .insert(CERT_EXPIRES_IN, axum::http::HeaderValue::from(left.max(0)));
            }
            return resp;
        }
    }
    if refuse_sealed && st.is_sealed() {
        return ApiError::sealed().into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

/// The response header that tells a client its certificate is in its
/// renewal window: the seconds it has left.
pub const CERT_EXPIRES_IN: &str = "vault-certificate-expires-in";

/// A renewed certificate's first use retires the certificate it renewed
/// (revoked, its open checkouts and requests moved here), before anything
/// else: from then on only the new key works. Refused if that cannot be
/// written (fail closed: the old key must not outlive its successor's use).
async fn retire_predecessor(st: &Arc<AppState>, auth: &Auth) -> Result<(), ApiError> {
    let Some(old) = st.live_predecessor(&auth.principal.fingerprint) else {
        return Ok(());
    };
    let s = st.clone();
    let fingerprint = auth.principal.fingerprint.clone();
    let audit = auth
        .audit(st, "cert.renew", &auth.principal.name)
        .detail("step", "first_use")
        .detail("renewed", old.clone());
    let r = super::blocking(move || {
        s.store.write_audited(
            vault_store::WriteOp::RetirePredecessor { fingerprint },
            audit,
        )
    })
    .await?;
    let revoked = match r? {
        vault_store::WriteOutcome::Revoked(v) => v,
        _ => return Err(ApiError::internal("unexpected store outcome")),
    };
    for fp in &revoked {
        st.mark_revoked(fp);
    }
    if !revoked.is_empty() {
        tracing::info!(principal = %auth.principal.name, fingerprint = %auth.principal.fingerprint, renewed = %old, "renewed certificate in use; the one it renewed is revoked");
    }
    st.reload_principals()?;
    Ok(())
}

#[cfg(test)]
mod doc_tests {
    use super::{table, Access, WhenSealed};

    /// docs/API.md's endpoint table lists exactly the routes of the table,
    /// with their sealed behaviour, and names the right permission where
    /// it names one.
    #[test]
    fn api_md_endpoint_table_is_the_route_table() {
        let doc = include_str!("../../../../docs/API.md");
        let at = doc.find("## Endpoints").expect("## Endpoints");
        let rows: Vec<Vec<&str>> = doc[at..]
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .skip(2)
            .map(|l| {
                l.trim()
                    .trim_matches('|')
                    .split('|')
                    .map(str::trim)
                    .collect()
            })
            .collect();
        let routes = table();
        let mut problems = Vec::new();
        let mut seen = Vec::new();
        for row in &rows {
            let (method, path, who, sealed) = (row[0], row[1].trim_matches('`'), row[2], row[3]);
            // `POST /v1/secrets/{*path}` is one route: the handler takes
            // `/checkout` or `/breakglass` off the end.
            let routed = match path.strip_prefix("/v1/secrets/{path}/") {
                Some("checkout" | "breakglass") if method == "POST" => "/v1/secrets/{path}",
                _ => path,
            };
            let Some(r) = routes.iter().find(|r| {
                r.method.as_str() == method && r.path.replace("{*path}", "{path}") == routed
            }) else {
                problems.push(format!("documented, not routed: {method} {path}"));
                continue;
            };
            seen.push((method, routed));
            match (sealed, r.sealed) {
                ("yes", WhenSealed::Refuse) | ("no", WhenSealed::Serve) => {}
                // `—` (unseal itself) and `for signing` (checkpoints) are
                // served while sealed and say why in words.
                ("—" | "for signing", WhenSealed::Serve) => {}
                (d, c) => problems.push(format!("{method} {path}: sealed {d:?} but {c:?}")),
            }
            match r.access {
                Access::Public => {
                    if who != "TLS" {
                        problems.push(format!("{method} {path}: public, documented as {who:?}"));
                    }
                }
                Access::Permission(a) => {
                    if who == "TLS" {
                        problems.push(format!(
                            "{method} {path}: needs {}, documented as TLS",
                            a.name()
                        ));
                    }
                    let named = vault_core::policy::Action::ALL
                        .iter()
                        .find(|x| who.contains(&format!("({}", x.name())));
                    if let Some(n) = named {
                        if *n != a {
                            problems.push(format!(
                                "{method} {path}: documented {}, routed {}",
                                n.name(),
                                a.name()
                            ));
                        }
                    }
                }
            }
        }
        for r in &routes {
            let p = r.path.replace("{*path}", "{path}");
            if !seen
                .iter()
                .any(|(m, sp)| *m == r.method.as_str() && *sp == p)
            {
                problems.push(format!("routed, not documented: {} {}", r.method, r.path));
            }
        }
        assert!(
            problems.is_empty(),
            "docs/API.md endpoints:\n{}",
            problems.join("\n")
        );
    }
}
