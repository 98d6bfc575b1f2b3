//! SQL takes values only as bound parameters: wherever the source builds a statement with `format!`, it
//! interpolates nothing but named constants (column lists, channel names) and one quoted identifier, never a
//! value from a request.

use std::path::Path;

fn rust_files(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn statements_built_with_format_interpolate_only_constants() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("processors"), &mut files);
    let mut checked = 0;
    let mut offenders = Vec::new();
    for file in files {
        let source = std::fs::read_to_string(&file).unwrap();
        for (at, _) in source.match_indices("(&format!(") {
            let before = &source[at.saturating_sub(20)..at];
            if !(before.contains("query") || before.contains("execute")) {
                continue;
            }
            checked += 1;
            let literal = source[at..].split_once('"').map(|(_, rest)| rest).unwrap_or("");
            let literal =
                literal.split_once("\"\n").or_else(|| literal.split_once("\")")).map(|(l, _)| l).unwrap_or("");
            for hole in literal.split('{').skip(1) {
                let name = hole.split('}').next().unwrap_or("");
                // `quoted`: an identifier (which cannot be bound), never from a request: the database name from
                // DATABASE_URL in CREATE DATABASE, double-quoted with its quotes doubled, or a partition's name
                // from the catalog, quoted by the database itself.
                let constant =
                    name == "quoted" || (!name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_'));
                if !constant {
                    offenders.push(format!("{}: `{{{name}}}`", file.display()));
                }
            }
        }
    }
    assert!(checked > 0, "the scan found no statement built with format!");
    assert!(offenders.is_empty(), "statements interpolating a value:\n{}", offenders.join("\n"));
}
