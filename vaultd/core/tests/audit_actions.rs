//! Every audit action this build can write is documented for auditors.

use vault_core::audit::action::AuditAction;

#[test]
fn every_action_is_in_docs_audit_md() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/AUDIT.md"))
        .expect("docs/AUDIT.md");
    let missing: Vec<&str> = AuditAction::ALL
        .iter()
        .map(|a| a.as_str())
        .filter(|name| !doc.contains(&format!("`{name}`")))
        .collect();
    assert!(missing.is_empty(), "not in docs/AUDIT.md: {missing:?}");
}
