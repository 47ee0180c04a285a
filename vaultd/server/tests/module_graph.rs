//! The layering of `vaultd`'s modules, checked from the source text.
//!
//! `api` (HTTP: router, handlers, extractors, `ApiError`) depends on the
//! domain modules (`audit`, `init`, `unseal`, `rotation`, `update`, `state`,
//! `ca`, `config`, `tls`, …); no domain module names `crate::api`, and the
//! graph of top-level modules has no cycle. The crate root (`lib.rs`) is the
//! composition root: it may name every module, and no module may name it
//! back (that would close a cycle through it).
//!
//! Edges come from `crate::X` paths (also inside `use crate::{…}` groups)
//! and, in `lib.rs`, from the bare paths of its declared modules. `super::`
//! never leaves a top-level module (in `api/sys.rs` it names `api`; in a
//! top-level file it is used by inline test modules), so it adds no edge.
//! Comments and string literals are ignored. `main.rs` is
//! the binary, not a module of the library.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crate root's name in the graph.
const ROOT: &str = "crate";

/// The source with comments and the contents of string and char literals
/// blanked out (newlines kept, so line numbers still match).
fn strip(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |ch: char| if ch == '\n' { '\n' } else { ' ' };
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        let prev = if i > 0 { c[i - 1] } else { ' ' };
        // Line comment.
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
            continue;
        }
        // Block comment (nested).
        if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
            continue;
        }
        // Raw string: r"…", r#"…"#, br#"…"#.
        if c[i] == 'r' && (!ident(prev) || (prev == 'b' && (i < 2 || !ident(c[i - 2])))) {
            let mut j = i + 1;
            while c.get(j) == Some(&'#') {
                j += 1;
            }
            if c.get(j) == Some(&'"') {
                let hashes = j - i - 1;
                for _ in i..=j {
                    out.push(' ');
                }
                i = j + 1;
                while i < c.len() {
                    if c[i] == '"' && (1..=hashes).all(|k| c.get(i + k) == Some(&'#')) {
                        for _ in 0..=hashes {
                            out.push(' ');
                        }
                        i += hashes + 1;
                        break;
                    }
                    out.push(blank(c[i]));
                    i += 1;
                }
                continue;
            }
        }
        // String.
        if c[i] == '"' {
            out.push(' ');
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < c.len() {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
            continue;
        }
        // Char literal ('x', '\n', '\''); a lifetime ('a) is left alone.
        if c[i] == '\'' {
            let end = if c.get(i + 1) == Some(&'\\') {
                (i + 2..c.len()).find(|&k| c[k] == '\'')
            } else if c.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            if let Some(end) = end {
                out.extend(c[i..=end].iter().map(|&ch| blank(ch)));
                i = end + 1;
                continue;
            }
        }
        out.push(c[i]);
        i += 1;
    }
    out
}

/// The identifier starting at byte `at`, if any.
fn ident_at(s: &str, at: usize) -> Option<&str> {
    let rest = &s[at..];
    let n = rest
        .find(|ch: char| !(ch.is_alphanumeric() || ch == '_'))
        .unwrap_or(rest.len());
    (n > 0).then(|| &rest[..n])
}

/// Top-level names after `crate::` at byte `at`: one, or each item of a
/// `{…}` group.
fn names_after(s: &str, at: usize) -> Vec<String> {
    let rest = s[at..].trim_start();
    if let Some(group) = rest.strip_prefix('{') {
        let mut depth = 0;
        let mut items = vec![String::new()];
        for ch in group.chars() {
            match ch {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => items.push(String::new()),
                _ => {}
            }
            if depth == 0 && ch != ',' && ch != '{' && ch != '}' {
                items.last_mut().expect("one item").push(ch);
            }
        }
        items
            .iter()
            .filter_map(|it| {
                let t = it.trim_start();
                ident_at(t, 0).map(str::to_owned)
            })
            .collect()
    } else {
        ident_at(rest, 0).map(str::to_owned).into_iter().collect()
    }
}

/// True if the byte before `at` cannot continue an identifier or path.
fn starts_path(s: &str, at: usize) -> bool {
    s[..at]
        .chars()
        .next_back()
        .is_none_or(|ch| !(ch.is_alphanumeric() || ch == '_' || ch == ':'))
}

/// One reference from a file to a top-level module (or the root).
#[derive(Debug, Clone)]
struct Ref {
    file: String,
    line: usize,
    from: String,
    to: String,
}

/// The references of one file. `module` is the file's module path
/// (`api::sys`, `audit`, or [`ROOT`] for lib.rs); `modules` the top-level
/// modules declared in lib.rs.
fn refs(file: &str, module: &str, src: &str, modules: &BTreeSet<String>) -> Vec<Ref> {
    let code = strip(src);
    let top = module.split("::").next().unwrap_or(module).to_owned();
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let mut out = Vec::new();
    let mut push = |at: usize, to: String| {
        if to != top {
            out.push(Ref {
                file: file.to_owned(),
                line: line_of(at),
                from: top.clone(),
                to,
            });
        }
    };
    for (at, _) in code.match_indices("crate::") {
        if !starts_path(&code, at) {
            continue;
        }
        for name in names_after(&code, at + "crate::".len()) {
            if modules.contains(&name) {
                push(at, name);
            } else if name != "self" {
                push(at, ROOT.to_owned());
            }
        }
    }
    // `super::` never leaves the file's top-level module: in a nested file
    // (`api/sys.rs`) it names that module (`api`); in a top-level file it is
    // used by inline modules (tests) and names the file's own module.
    if module == ROOT {
        for m in modules {
            let pat = format!("{m}::");
            for (at, _) in code.match_indices(&pat) {
                if starts_path(&code, at) {
                    push(at, m.clone());
                }
            }
        }
    }
    out
}

/// `pub mod x;` / `mod x;` declarations of a file.
fn declared_modules(src: &str) -> BTreeSet<String> {
    let code = strip(src);
    let mut out = BTreeSet::new();
    for line in code.lines() {
        let t = line.trim();
        let t = t
            .strip_prefix("pub ")
            .or_else(|| t.strip_prefix("pub(crate) "))
            .unwrap_or(t);
        if let Some(rest) = t.strip_prefix("mod ") {
            if let Some(name) = rest.strip_suffix(';') {
                out.insert(name.trim().to_owned());
            }
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file under `src/`.
fn module_of(rel: &Path) -> String {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.strip_suffix(".rs").unwrap_or(&last).to_owned();
    if parts.is_empty() && stem == "lib" {
        return ROOT.to_owned();
    }
    if stem != "mod" {
        parts.push(stem);
    }
    parts.join("::")
}

/// Every reference in `src/` (without `main.rs`), and the top-level modules.
fn graph(src_dir: &Path) -> (Vec<Ref>, BTreeSet<String>) {
    let lib = std::fs::read_to_string(src_dir.join("lib.rs")).expect("lib.rs");
    let modules = declared_modules(&lib);
    let mut files = Vec::new();
    rust_files(src_dir, &mut files);
    let mut all = Vec::new();
    for f in files {
        let rel = f.strip_prefix(src_dir).expect("under src");
        if rel == Path::new("main.rs") {
            continue;
        }
        let src = std::fs::read_to_string(&f).expect("readable source");
        all.extend(refs(
            &rel.display().to_string(),
            &module_of(rel),
            &src,
            &modules,
        ));
    }
    (all, modules)
}

/// A cycle of the graph, as its nodes with the first repeated at the end.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_owned(), 1);
        stack.push(n.to_owned());
        for m in edges.get(n).into_iter().flatten() {
            match state.get(m.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = stack.iter().position(|s| s == m).expect("on the stack");
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(m, edges, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in edges.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0 {
            let mut stack = Vec::new();
            if let Some(c) = visit(n, edges, &mut state, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

fn edges_of(refs: &[Ref]) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in refs {
        edges
            .entry(r.from.clone())
            .or_default()
            .insert(r.to.clone());
        edges.entry(r.to.clone()).or_default();
    }
    edges
}

/// Where the edges of a cycle come from, one line per edge.
fn explain(cycle: &[String], refs: &[Ref]) -> String {
    cycle
        .windows(2)
        .map(|w| {
            let at: Vec<String> = refs
                .iter()
                .filter(|r| r.from == w[0] && r.to == w[1])
                .map(|r| format!("{}:{}", r.file, r.line))
                .take(3)
                .collect();
            format!("  {} -> {}  ({})", w[0], w[1], at.join(", "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn only_api_names_api() {
    let (refs, modules) = graph(&src_dir());
    assert!(modules.contains("api"), "lib.rs declares api: {modules:?}");
    let bad: Vec<String> = refs
        .iter()
        .filter(|r| r.to == "api" && r.from != "api" && r.from != ROOT)
        .map(|r| format!("  {}:{}: {} -> crate::api", r.file, r.line, r.from))
        .collect();
    assert!(
        bad.is_empty(),
        "domain modules must not depend on the HTTP layer (crate::api):\n{}",
        bad.join("\n")
    );
}

#[test]
fn nothing_names_the_crate_root() {
    let (refs, _) = graph(&src_dir());
    let bad: Vec<String> = refs
        .iter()
        .filter(|r| r.to == ROOT)
        .map(|r| format!("  {}:{}: {} -> crate root", r.file, r.line, r.from))
        .collect();
    assert!(
        bad.is_empty(),
        "lib.rs is the composition root; modules must not depend on it:\n{}",
        bad.join("\n")
    );
}

#[test]
fn top_level_modules_are_acyclic() {
    let (refs, _) = graph(&src_dir());
    let edges = edges_of(&refs);
    if let Some(cycle) = find_cycle(&edges) {
        let all: Vec<String> = edges
            .iter()
            .map(|(n, to)| format!("  {n} -> {}", Vec::from_iter(to.clone()).join(", ")))
            .collect();
        panic!(
            "module cycle: {}\n{}\nthe graph:\n{}",
            cycle.join(" -> "),
            explain(&cycle, &refs),
            all.join("\n")
        );
    }
}

// ---------------------------------------------------------------- the checker itself

fn mods(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn checker_sees_paths_groups_and_root() {
    let m = mods(&["api", "audit", "state", "tls"]);
    let src = r##"
use crate::api::rfc3339; // crate::tls in a comment
use crate::{audit::Who, state};
/* crate::tls in a block /* nested */ comment */
const S: &str = "crate::tls in a string";
const R: &str = r#"crate::tls"#;
fn f<'a>(x: &'a str) -> char { let _ = crate::StartError::Io; '"' }
use super::x;
"##;
    let r = refs("audit.rs", "audit", src, &m);
    let to: Vec<(&str, usize)> = r.iter().map(|r| (r.to.as_str(), r.line)).collect();
    assert_eq!(to, vec![("api", 2), ("state", 3), (ROOT, 7)]);
    let root = refs(
        "lib.rs",
        ROOT,
        "fn x() { api::router(); tls::serve(); }",
        &m,
    );
    let to: BTreeSet<&str> = root.iter().map(|r| r.to.as_str()).collect();
    assert_eq!(to, ["api", "tls"].into_iter().collect());
}

#[test]
fn checker_finds_a_cycle() {
    let m = mods(&["api", "update", "audit"]);
    let mut r = refs("api/mod.rs", "api", "use crate::update::stage;", &m);
    r.extend(refs("update.rs", "update", "use crate::audit::Who;", &m));
    assert!(find_cycle(&edges_of(&r)).is_none());
    r.extend(refs(
        "audit.rs",
        "audit",
        "fn t() { crate::api::blocking(); }",
        &m,
    ));
    let cycle = find_cycle(&edges_of(&r)).expect("a cycle");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4, "{cycle:?}");
}

#[test]
fn module_paths() {
    assert_eq!(module_of(Path::new("lib.rs")), ROOT);
    assert_eq!(module_of(Path::new("audit.rs")), "audit");
    assert_eq!(module_of(Path::new("api/mod.rs")), "api");
    assert_eq!(module_of(Path::new("api/sys.rs")), "api::sys");
}
