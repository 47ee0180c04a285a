//! Crate arrows that must never exist (docs/ARCHITECTURE.md, "Crates and
//! dependency direction"), checked on the resolved dependency graph that
//! `cargo metadata` reports, so an indirect path counts as much as a direct
//! one:
//!
//! * `vaultctl`, the custodians' and auditors' workstation tool, links
//!   neither the daemon nor the store, the seal devices or the image tooling;
//! * `vault-tpm` does not depend on the image build tool (`vault-image`);
//! * `vault-core` does no I/O: no async runtime, HTTP, database or device
//!   crate below it, and no `std::fs`, `std::net`, `std::process` or
//!   `std::env` in its code;
//! * the device crates, the store and the rotation connectors never depend
//!   on the daemon (and the connectors on no store or device crate).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

struct Graph {
    /// package id → name
    names: BTreeMap<String, String>,
    /// package id → ids of its normal and build dependencies
    deps: BTreeMap<String, Vec<String>>,
}

impl Graph {
    fn load() -> Graph {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let o = std::process::Command::new(cargo)
            .current_dir(&root)
            .args(["metadata", "--format-version", "1", "--locked"])
            .output()
            .expect("run cargo metadata");
        assert!(
            o.status.success(),
            "cargo metadata: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let m: Value = serde_json::from_slice(&o.stdout).expect("cargo metadata JSON");
        let names = m["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["id"].as_str().unwrap().to_owned(),
                    p["name"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let mut deps = BTreeMap::new();
        for n in m["resolve"]["nodes"].as_array().unwrap() {
            let linked = n["deps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| {
                    d["dep_kinds"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|k| k["kind"].is_null() || k["kind"] == "build")
                })
                .map(|d| d["pkg"].as_str().unwrap().to_owned())
                .collect();
            deps.insert(n["id"].as_str().unwrap().to_owned(), linked);
        }
        Graph { names, deps }
    }

    fn id(&self, name: &str) -> String {
        let ids: Vec<&String> = self
            .names
            .iter()
            .filter(|(_, n)| *n == name)
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids.len(), 1, "exactly one package named {name}");
        ids[0].clone()
    }

    /// Every package `from` links (normal and build dependencies, any depth),
    /// each with one path that reaches it.
    fn reach(&self, from: &str) -> BTreeMap<String, Vec<String>> {
        let start = self.id(from);
        let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut todo = vec![(start, vec![from.to_owned()])];
        while let Some((id, path)) = todo.pop() {
            for d in self.deps.get(&id).into_iter().flatten() {
                let name = self.names[d].clone();
                if seen.contains_key(&name) {
                    continue;
                }
                let mut p = path.clone();
                p.push(name.clone());
                seen.insert(name, p.clone());
                todo.push((d.clone(), p));
            }
        }
        seen
    }

    /// The forbidden packages that `from` reaches, with the path to each.
    fn violations(&self, from: &str, forbidden: &[&str]) -> Vec<String> {
        let reach = self.reach(from);
        forbidden
            .iter()
            .filter_map(|f| reach.get(*f).map(|p| p.join(" -> ")))
            .collect()
    }
}

fn check(g: &Graph, rules: &[(&str, &[&str])]) {
    let mut bad = Vec::new();
    for (from, forbidden) in rules {
        bad.extend(g.violations(from, forbidden));
    }
    assert!(
        bad.is_empty(),
        "forbidden crate arrows:\n{}",
        bad.join("\n")
    );
}

const DAEMON_SIDE: &[&str] = &[
    "vaultd",
    "vault-store",
    "vault-hsm",
    "vault-tpm",
    "vault-image",
    "axum",
    "rusqlite",
    "cryptoki",
    "tss-esapi",
];
const IO: &[&str] = &[
    "tokio",
    "mio",
    "hyper",
    "hyper-util",
    "axum",
    "rusqlite",
    "cryptoki",
    "tss-esapi",
    "yubikey",
    "pcsc",
];

#[test]
fn vaultctl_links_neither_the_daemon_nor_the_store() {
    check(&Graph::load(), &[("vaultctl", DAEMON_SIDE)]);
}

#[test]
fn tpm_does_not_depend_on_the_image_tool() {
    check(&Graph::load(), &[("vault-tpm", &["vault-image", "clap"])]);
}

#[test]
fn core_links_no_io_crate() {
    check(&Graph::load(), &[("vault-core", IO)]);
}

#[test]
fn devices_and_store_never_depend_on_the_daemon() {
    let g = Graph::load();
    check(
        &g,
        &[
            ("vault-store", &["vaultd", "vault-hsm", "vault-tpm"]),
            ("vault-hsm", &["vaultd", "vault-store", "vault-tpm"]),
            ("vault-tpm", &["vaultd", "vault-store", "vault-hsm"]),
            (
                "vault-piv",
                &["vaultd", "vault-store", "vault-hsm", "vault-tpm"],
            ),
            // Connectors reach targets only: never the store, the seal
            // devices or the daemon.
            (
                "vault-connect",
                &[
                    "vaultd",
                    "vault-store",
                    "vault-hsm",
                    "vault-tpm",
                    "vault-piv",
                ],
            ),
        ],
    );
}

/// The rules catch what they are for: the daemon itself reaches every
/// daemon-side crate, and the tests crate reaches the daemon.
#[test]
fn the_checker_finds_arrows_that_exist() {
    let g = Graph::load();
    let found = g.violations(
        "vaultd",
        &["vault-store", "vault-hsm", "vault-tpm", "tokio"],
    );
    assert_eq!(found.len(), 4, "{found:?}");
    assert!(g.violations("vault-e2e", &["vaultd"])[0].starts_with("vault-e2e -> "));
}

/// `vault-core`'s code does no I/O of its own (its tests may).
#[test]
fn core_code_uses_no_io_api() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../vaultd/core/src");
    let mut bad = BTreeSet::new();
    let mut files = vec![src];
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if p.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        // Code before the file's unit tests, if any.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (i, line) in code.lines().enumerate() {
            let l = line.trim_start();
            if l.starts_with("//") {
                continue;
            }
            for api in [
                "std::fs",
                "std::net",
                "std::process",
                "std::env",
                "std::io::stdin",
            ] {
                if l.contains(api) {
                    bad.insert(format!("{}:{}: {api}", p.display(), i + 1));
                }
            }
        }
    }
    assert!(bad.is_empty(), "I/O in vault-core:\n{bad:#?}");
}
