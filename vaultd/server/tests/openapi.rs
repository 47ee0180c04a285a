//! The OpenAPI document cannot drift from the code: it has exactly the
//! routes the router has (no more, no fewer, method by method), every
//! operation's `x-roles` comes from the route and permission tables, the
//! roles its prose names are those, and the error codes it lists are the
//! error-code enum's.

use std::collections::BTreeSet;

use serde_json::Value;
use vaultd::api::error::Code;
use vaultd::api::routes::TABLE;
use vaultd::api::{doc_paths, openapi_document};

/// Routes served by the first-boot server, not the mTLS router.
const BOOTSTRAP_ONLY: &[(&str, &str)] = &[("post", "/v1/sys/init")];

fn doc() -> Value {
    openapi_document(&TABLE)
}

fn operations(d: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, ops) in d["paths"].as_object().expect("paths") {
        for method in ops.as_object().expect("operations").keys() {
            out.insert((method.clone(), path.clone()));
        }
    }
    out
}

#[test]
fn the_document_has_exactly_the_routers_routes() {
    let d = doc();
    let mut routed = BTreeSet::new();
    for r in TABLE.iter() {
        for p in doc_paths(r) {
            routed.insert((r.method.as_str().to_ascii_lowercase(), p));
        }
    }
    for (m, p) in BOOTSTRAP_ONLY {
        routed.insert((m.to_string(), p.to_string()));
    }
    let documented = operations(&d);
    let missing: Vec<_> = routed.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routed).collect();
    assert!(
        missing.is_empty(),
        "routes missing from the document: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "documented routes the router does not have: {extra:?}"
    );
}

/// The role names in an operation's prose ("Role: admin.", "Roles: admin,
/// auditor, pam (own requests only)."): the words before the first
/// full stop that are role names.
fn prose_roles(desc: &str) -> Option<BTreeSet<String>> {
    let rest = desc
        .strip_prefix("Roles: ")
        .or_else(|| desc.strip_prefix("Role: "))?;
    let head = rest.split('.').next().unwrap_or_default();
    if head.starts_with("any certificate") {
        return Some(["any".to_string()].into());
    }
    let head = head.split('(').next().unwrap_or_default();
    Some(
        head.split([',', ' '])
            .filter(|w| vault_core::policy::Role::parse(w).is_some())
            .map(String::from)
            .collect(),
    )
}

#[test]
fn every_operation_names_the_roles_the_code_allows() {
    let d = doc();
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (method, path) in operations(&d) {
        if BOOTSTRAP_ONLY.contains(&(method.as_str(), path.as_str())) {
            continue;
        }
        let op = &d["paths"][&path][&method];
        let roles: BTreeSet<String> = op["x-roles"]
            .as_array()
            .unwrap_or_else(|| panic!("{method} {path}: no x-roles"))
            .iter()
            .map(|r| r.as_str().unwrap().to_owned())
            .collect();
        let desc = op["description"].as_str().unwrap_or_default();
        match prose_roles(desc) {
            Some(prose) if prose == roles => {}
            prose => wrong.push(format!(
                "{method} {path}: the code allows {roles:?}, the prose says {prose:?} ({desc:?})"
            )),
        }
        checked += 1;
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(checked >= TABLE.len(), "{checked} operations checked");
}

#[test]
fn the_error_codes_are_the_enums() {
    let d = doc();
    let listed: Vec<&str> = d
        .pointer("/components/schemas/Error/properties/error/properties/code/x-error-codes")
        .and_then(Value::as_array)
        .expect("x-error-codes")
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let codes: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(listed, codes);
    assert!(listed.contains(&"governance_required"));
}
