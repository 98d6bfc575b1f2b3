//! Rules about the source itself: modules depend on each other without cycles, and NOTIFY is sent only through
//! the wake-up module (or the one statement the outbox documents).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// Every `.rs` file under `src`.
fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The module a file belongs to: its top-level module, or for the HTTP tree `http::<face>` (the faces are meant
/// to be independent of each other).
fn module_of(root: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(root).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    match parts.as_slice() {
        [http, face, ..] if http == "http" => format!("http::{face}"),
        [first, ..] => first.clone(),
        [] => "lib".into(),
    }
}

/// The code of a file without its `#[cfg(test)]` modules and comments.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// Names `crate::` paths in `code` lead to: `crate::a::b` gives `a` (or `http::b` for `a` = `http`), and the
/// top-level names of every `use crate::{...}` group.
fn targets(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let name = |path: &str| -> Option<String> {
        let mut segments = path.split("::").map(|s| s.trim_matches(|c: char| !c.is_alphanumeric() && c != '_'));
        let first = segments.next().filter(|s| !s.is_empty())?.to_owned();
        Some(match (first.as_str(), segments.next()) {
            ("http", Some(face)) if ["api", "console", "state", "error"].contains(&face) => format!("http::{face}"),
            _ => first,
        })
    };
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.extend(name(item.trim()));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            found.extend(name(item.trim()));
        } else {
            let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(rest.len());
            found.extend(name(&rest[..end]));
        }
    }
    found
}

#[test]
fn no_module_depends_on_a_module_that_depends_back_on_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let module = module_of(&root, file);
        let deps = targets(&code(&fs::read_to_string(file).unwrap()));
        let entry = graph.entry(module.clone()).or_default();
        entry.extend(deps.into_iter().filter(|d| *d != module && !module.starts_with(&format!("{d}::"))));
    }
    assert!(graph.len() > 20, "the scan found too few modules: {graph:?}");
    assert!(graph["outbox"].contains("lifecycle"), "the scan sees `use crate::` paths: {:?}", graph["outbox"]);
    // Depth-first search for a path back to where it started.
    let mut cycles = Vec::new();
    for start in graph.keys() {
        let mut stack = vec![vec![start.clone()]];
        while let Some(path) = stack.pop() {
            for next in graph.get(path.last().unwrap()).into_iter().flatten() {
                if next == start {
                    cycles.push(path.join(" -> ") + " -> " + start);
                } else if !path.contains(next) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push(longer);
                }
            }
        }
    }
    assert!(cycles.is_empty(), "import cycles: {cycles:#?}");
}

#[test]
fn notify_is_sent_only_by_the_wakeup_module_and_the_outboxs_documented_statement() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let senders: BTreeSet<String> = files
        .iter()
        .filter(|f| {
            let code = code(&fs::read_to_string(f).unwrap()).to_lowercase();
            code.contains("pg_notify") || code.contains("\"notify ")
        })
        .map(|f| f.strip_prefix(&root).unwrap().to_string_lossy().into_owned())
        .collect();
    let allowed: BTreeSet<String> = ["wakeup.rs", "outbox/mod.rs"].map(String::from).into();
    assert_eq!(senders, allowed);
}
