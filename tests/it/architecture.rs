//! The module order of docs/ARCHITECTURE.md, held against the code: for every module of
//! `src/`, the modules of the crate its code uses (`crate::…` paths) are exactly the ones
//! its table row lists under "calls" and its own `//!` "Calls:" line names, and each lies
//! below it in the table, so no import runs back up the order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A module of `src/`: a folder or a single file.
struct Module {
    name: String,
    files: Vec<PathBuf>,
    /// The file whose `//!` doc describes the module.
    root: PathBuf,
}

fn modules() -> Vec<Module> {
    let mut modules = Vec::new();
    for entry in std::fs::read_dir(repo("src")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            let mut files = Vec::new();
            rust_files(&path, &mut files);
            modules.push(Module {
                root: path.join("mod.rs"),
                name,
                files,
            });
        } else if name != "main" && name != "lib" && path.extension().is_some_and(|e| e == "rs") {
            modules.push(Module {
                name,
                files: vec![path.clone()],
                root: path,
            });
        }
    }
    modules.sort_by(|a, b| a.name.cmp(&b.name));
    modules
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The crate's modules that `code` names through `crate::NAME` or `use crate::{NAME, …}`,
/// comments aside.
fn used_modules(code: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let names = match rest.strip_prefix('{') {
                Some(group) => group.split('}').next().unwrap_or_default().to_owned(),
                None => rest.to_owned(),
            };
            for name in names.split(',') {
                let name: String = name
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if known.contains(&name) {
                    used.insert(name);
                }
            }
        }
    }
    used
}

/// The backticked module names of `text`, parenthesised notes left out.
fn named_modules(text: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut plain = String::new();
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ if depth == 0 => plain.push(c),
            _ => {}
        }
    }
    plain
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| known.contains(*w))
        .map(str::to_owned)
        .collect()
}

/// ARCHITECTURE.md's module table: `(module, calls)` in the order of its rows.
fn table(known: &BTreeSet<String>) -> Vec<(String, BTreeSet<String>)> {
    let doc = std::fs::read_to_string(repo("docs/ARCHITECTURE.md")).unwrap();
    let section = doc
        .split("## Modules and what each may call")
        .nth(1)
        .expect("ARCHITECTURE.md has a section `## Modules and what each may call`");
    section
        .lines()
        .skip_while(|l| !l.starts_with("| module |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|row| {
            let cells: Vec<&str> = row.split(" | ").collect();
            let name = cells[0]
                .trim_start_matches("| ")
                .trim_matches('`')
                .to_owned();
            let calls = cells.last().unwrap().trim_end_matches(" |");
            (name, named_modules(calls, known))
        })
        .collect()
}

/// The modules a module's `//!` doc names on its "Calls" line (`Calls nothing …`: none).
fn doc_calls(root: &Path, known: &BTreeSet<String>) -> Option<BTreeSet<String>> {
    let text = std::fs::read_to_string(root).unwrap();
    let doc: String = text
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .map(|l| l.trim_start_matches("//!").trim())
        .collect::<Vec<_>>()
        .join(" ");
    let at = doc.find("Calls")?;
    let sentence = doc[at..].split(". ").next().unwrap_or_default();
    Some(named_modules(sentence, known))
}

#[test]
fn every_module_calls_exactly_what_architecture_md_lists_and_only_downward() {
    let modules = modules();
    let known: BTreeSet<String> = modules.iter().map(|m| m.name.clone()).collect();
    let rows = table(&known);
    let listed: Vec<&str> = rows.iter().map(|(n, _)| n.as_str()).collect();
    let mut expected: Vec<&str> = known.iter().map(String::as_str).collect();
    expected.sort_unstable();
    let mut sorted = listed.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted, expected,
        "ARCHITECTURE.md's table lists every module of src/ once"
    );
    let position: BTreeMap<&str, usize> = listed.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let mut problems = Vec::new();
    for module in &modules {
        let code: String = module
            .files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect();
        let mut used = used_modules(&code, &known);
        used.remove(&module.name);
        let row = &rows[position[module.name.as_str()]].1;
        if &used != row {
            problems.push(format!(
                "`{}`: the code uses {used:?}, ARCHITECTURE.md lists {row:?}",
                module.name
            ));
        }
        for callee in &used {
            if position[callee.as_str()] < position[module.name.as_str()] {
                problems.push(format!(
                    "`{}` calls `{callee}`, which stands above it: an import back up the order",
                    module.name
                ));
            }
        }
        match doc_calls(&module.root, &known) {
            Some(named) if named == used => {}
            Some(named) => problems.push(format!(
                "`{}`: its //! Calls line names {named:?}, the code uses {used:?}",
                module.name
            )),
            None => problems.push(format!(
                "`{}`: its //! doc ({}) has no `Calls …` sentence",
                module.name,
                module.root.display()
            )),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_back_edge_or_a_missing_callee_is_found() {
    let known: BTreeSet<String> = ["audit", "rules", "clock"].map(str::to_owned).into();
    let code = "use crate::audit::Event;\n// crate::clock in a comment\nlet t = crate::rules::x();\nuse crate::{audit, clock::now};";
    assert_eq!(
        used_modules(code, &known),
        ["audit", "clock", "rules"].map(str::to_owned).into()
    );
    assert_eq!(
        named_modules("`rules` (`clock` for time), `audit`", &known),
        ["audit", "rules"].map(str::to_owned).into()
    );
}
