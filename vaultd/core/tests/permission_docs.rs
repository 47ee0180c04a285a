//! The permission tables in docs/API.md and docs/THREAT-MODEL.md are the
//! permission table of the code: every action, every role, every tick.

use vault_core::policy::{allowed, Action, Role};

fn doc(name: &str) -> String {
    std::fs::read_to_string(format!("{}/../../docs/{name}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("docs/{name}: {e}"))
}

/// The markdown table that follows `marker`: its header cells and rows.
fn table_after(text: &str, marker: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let at = text
        .find(marker)
        .unwrap_or_else(|| panic!("marker {marker:?} not found"));
    let mut lines = text[at + marker.len()..]
        .lines()
        .skip_while(|l| l.trim().is_empty())
        .take_while(|l| l.starts_with('|'));
    let cells = |l: &str| -> Vec<String> {
        l.trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_owned())
            .collect()
    };
    let header = cells(lines.next().expect("a header row"));
    let _rule = lines.next().expect("a separator row");
    (header, lines.map(cells).collect())
}

fn check(file: &str, marker: &str) {
    let (header, rows) = table_after(&doc(file), marker);
    assert_eq!(header[0], "action", "{file}: first column");
    // Every role is a column.
    let mut cols = Vec::new();
    for role in Role::ALL {
        let i = header
            .iter()
            .position(|h| h == role.as_str())
            .unwrap_or_else(|| panic!("{file}: no column for role {role}"));
        cols.push((role, i));
    }
    let mut seen = Vec::new();
    for row in &rows {
        // The action is the first word ("IssueCertificate (also …)").
        let name = row[0].split_whitespace().next().unwrap_or("");
        let action = Action::ALL
            .iter()
            .copied()
            .find(|a| a.name() == name)
            .unwrap_or_else(|| panic!("{file}: {name:?} is not an action"));
        assert!(!seen.contains(&name), "{file}: {name} twice");
        seen.push(name);
        for &(role, i) in &cols {
            let ticked = match row.get(i).map(String::as_str) {
                Some("✓") => true,
                Some("") | None => false,
                Some(other) => panic!("{file}: {name}/{role}: cell {other:?}"),
            };
            assert_eq!(
                ticked,
                allowed(role, action),
                "{file}: {name} for {role} says {ticked}, the code says otherwise"
            );
        }
    }
    let missing: Vec<&str> = Action::ALL
        .iter()
        .map(|a| a.name())
        .filter(|n| !seen.contains(n))
        .collect();
    assert!(missing.is_empty(), "{file}: actions missing: {missing:?}");
}

#[test]
fn api_md_permission_table_is_the_code() {
    check("API.md", "Permission table (`vaultd/core/src/policy.rs`):");
}

#[test]
fn threat_model_permission_table_is_the_code() {
    check(
        "THREAT-MODEL.md",
        "`tests/tests/routes.rs` calls every route as every role:",
    );
}

#[test]
fn every_action_is_listed_once() {
    let mut names: Vec<&str> = Action::ALL.iter().map(|a| a.name()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), Action::ALL.len());
}
