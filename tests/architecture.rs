//! The layering rules of `docs/architecture.md`, checked on the source: which module of
//! the daemon may import which, and that no import circle exists. Runs without root,
//! network or sshd.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// Module path (`proxy::session`) → the daemon modules its non-test code names.
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let mut modules = BTreeMap::new();
    for file in &files {
        let rel = file.strip_prefix(&root).unwrap().with_extension("");
        let mut parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if parts.last().is_some_and(|p| p == "mod") {
            parts.pop();
        }
        let name = parts.join("::");
        if name == "lib" || name == "main" {
            continue;
        }
        modules.insert(name, file.clone());
    }
    let resolve = |path: &str| -> Option<String> {
        let parts: Vec<&str> = path.split("::").collect();
        (1..=parts.len())
            .rev()
            .map(|i| parts[..i].join("::"))
            .find(|c| modules.contains_key(c))
    };
    let mut graph = BTreeMap::new();
    for (name, file) in &modules {
        let text = fs::read_to_string(file).unwrap();
        // Tests may reach anywhere; the rules are about the code that ships.
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .map(|l| format!("{l}\n"))
            .collect();
        let mut deps = BTreeSet::new();
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            let Some(target) = resolve(rest[..end].trim_end_matches(':')) else {
                continue;
            };
            let nested = |a: &str, b: &str| a.starts_with(&format!("{b}::"));
            if &target != name && !nested(name, &target) && !nested(&target, name) {
                deps.insert(target);
            }
        }
        graph.insert(name.clone(), deps);
    }
    graph
}

fn layer(module: &str) -> &str {
    module.split("::").next().unwrap()
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let graph = import_graph();
    // Depth-first search for a back edge, reporting the circle it closes.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut circle = path[i..].to_vec();
            circle.push(m.to_owned());
            return Some(circle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_owned());
        for dep in graph.get(m).into_iter().flatten() {
            if let Some(c) = visit(dep, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        if let Some(circle) = visit(m, &graph, &mut Vec::new(), &mut done) {
            panic!("import circle: {}", circle.join(" -> "));
        }
    }
}

#[test]
fn layers_import_only_downwards() {
    // What each layer may import besides itself (docs/architecture.md).
    let allowed: &[(&str, &[&str])] = &[
        ("core", &[]),
        ("rt", &[]),
        ("logging", &[]),
        ("metrics", &["core"]),
        ("audit", &["core"]),
        ("io", &["core", "rt", "metrics"]),
        ("keys", &[]),
        ("hooks", &["core", "rt"]),
        ("config", &["core", "io", "keys"]),
        ("providers", &["core", "rt", "hooks", "config", "keys"]),
        (
            "proxy",
            &[
                "core",
                "rt",
                "metrics",
                "audit",
                "io",
                "hooks",
                "config",
                "keys",
                "providers",
            ],
        ),
    ];
    let mut wrong = Vec::new();
    for (module, deps) in import_graph() {
        let Some((_, may)) = allowed.iter().find(|(l, _)| *l == layer(&module)) else {
            continue; // the server, at the top, may import anything
        };
        for dep in deps {
            let to = layer(&dep);
            if to != layer(&module) && !may.contains(&to) {
                wrong.push(format!("{module} -> {dep}"));
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layering: {wrong:#?}");
}

#[test]
fn the_core_names_no_runtime() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
    for entry in fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        let text = fs::read_to_string(&path).unwrap();
        for word in ["glommio", "std::net::TcpStream", "tokio", "Instant::now()"] {
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            assert!(
                !code.contains(word),
                "{} names {word}: the core takes time and events as inputs",
                path.display()
            );
        }
    }
}
