//! The server's modules form layers: each module uses only modules listed
//! after it in the "Layout" list of `lib.rs`'s docs, never one listed before,
//! so the crate has no import cycle and a request flows down the list. This
//! test reads the sources and holds the crate to that order.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The top-level modules in the order of the Layout list in `lib.rs`'s docs
/// (lines `//! - [`name`]: ...`); every declared module must be in it.
fn declared_order(src: &Path) -> Vec<String> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("read lib.rs");
    let order: Vec<String> = lib
        .lines()
        .filter_map(|line| line.strip_prefix("//! - [`"))
        .filter_map(|rest| rest.split_once("`]").map(|(name, _)| name.to_owned()))
        .collect();
    for declared in lib.lines().filter_map(|line| line.strip_prefix("pub mod ")) {
        let name = declared.trim_end_matches(';').trim();
        assert!(
            order.iter().any(|m| m == name),
            "module {name} is missing from the Layout list in lib.rs"
        );
    }
    order
}

/// Every `.rs` file of a module: `x.rs`, or everything under `x/`.
fn files_of(src: &Path, module: &str) -> Vec<PathBuf> {
    let file = src.join(format!("{module}.rs"));
    if file.is_file() {
        return vec![file];
    }
    let mut files = Vec::new();
    let mut dirs = vec![src.join(module)];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read module dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
}

/// The top-level modules a source text names through `crate::`, outside
/// `#[cfg(test)]` modules (tests may reach anywhere).
fn uses(text: &str, modules: &[String]) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    let mut used = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        // `use crate::{a, b::c}` names several.
        let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            group[..end]
                .split(',')
                .map(|item| item.trim().split("::").next().unwrap_or(""))
                .collect()
        } else {
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            vec![&rest[..end]]
        };
        for name in names {
            if modules.iter().any(|m| m == name) {
                used.insert(name.to_owned());
            }
        }
    }
    used
}

#[test]
fn modules_use_only_the_modules_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let order = declared_order(&src);
    assert!(order.len() > 10, "lib.rs declares {order:?}");
    let mut violations = Vec::new();
    for (rank, module) in order.iter().enumerate() {
        for file in files_of(&src, module) {
            let text = std::fs::read_to_string(&file).expect("read source");
            for used in uses(&text, &order) {
                let used_rank = order.iter().position(|m| *m == used).unwrap();
                if used_rank < rank {
                    violations.push(format!(
                        "{} uses crate::{used}, which lib.rs lists above {module}",
                        file.strip_prefix(&src).unwrap().display()
                    ));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "modules that reach up the layers:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_checker_sees_grouped_and_inline_paths() {
    let modules = ["a".to_owned(), "b".to_owned(), "c".to_owned()];
    let used = uses(
        "use crate::{a::X, b};\nfn f() { crate::c::g(); }\n",
        &modules,
    );
    assert_eq!(used.len(), 3);
    let used = uses(
        "fn f() {}\n#[cfg(test)]\nmod tests { use crate::a; }\n",
        &modules,
    );
    assert!(used.is_empty());
}
