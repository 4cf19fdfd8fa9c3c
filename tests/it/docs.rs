//! The project's documents stay navigable and true: README.md is a short first page with a
//! map of every doc, every relative link in README.md, docs/*.md and the examples' READMEs
//! reaches an existing file (and, when it has one, an existing heading), and every
//! `klaxon SUBCOMMAND` they show is a command the binary has.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

/// README.md's length limit: a newcomer's first page, the rest lives in docs/.
const README_MAX_LINES: usize = 300;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The Markdown files under `dir`, sorted.
fn markdown_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "md"))
        .collect();
    files.sort();
    files
}

/// README.md, docs/*.md and every README.md under examples/.
fn documents() -> Vec<PathBuf> {
    let mut docs = vec![root().join("README.md")];
    docs.extend(markdown_in(&root().join("docs")));
    let mut dirs = vec![root().join("examples")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("examples/ is listable") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.file_name().is_some_and(|n| n == "README.md") {
                docs.push(path);
            }
        }
    }
    docs
}

/// Whether `line` opens or closes a fenced code block (indented fences included).
fn is_fence(line: &str) -> bool {
    let trimmed = line.trim_start();
    trimmed.starts_with("```") || trimmed.starts_with("~~~")
}

/// The lines outside fenced code blocks, with their 1-based numbers.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut in_code = false;
    let mut prose = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if is_fence(line) {
            in_code = !in_code;
        } else if !in_code {
            prose.push((index + 1, line));
        }
    }
    prose
}

/// The lines inside fenced code blocks.
fn code_lines(text: &str) -> Vec<&str> {
    let mut in_code = false;
    let mut code = Vec::new();
    for line in text.lines() {
        if is_fence(line) {
            in_code = !in_code;
        } else if in_code {
            code.push(line);
        }
    }
    code
}

/// `line` without its inline code spans.
fn without_code_spans(line: &str) -> String {
    line.split('`').step_by(2).collect::<Vec<_>>().join(" ")
}

/// The inline code spans of `line`.
fn code_spans(line: &str) -> impl Iterator<Item = &str> {
    line.split('`').skip(1).step_by(2)
}

/// Link targets of `line`: inline `[text](target "title")` and reference definitions
/// `[label]: target`. Code spans are not looked at.
fn link_targets(line: &str) -> Vec<String> {
    let text = without_code_spans(line);
    let mut targets = Vec::new();
    let trimmed = text.trim_start();
    if trimmed.starts_with('[')
        && let Some((_, rest)) = trimmed.split_once("]:")
        && let Some(target) = rest.split_whitespace().next()
    {
        targets.push(target.to_string());
    }
    let mut rest = text.as_str();
    while let Some(start) = rest.find("](") {
        rest = rest[start + 2..].trim_start();
        let end = rest
            .find(|c: char| c == ')' || c.is_whitespace())
            .unwrap_or(rest.len());
        let target = rest[..end].trim_start_matches('<').trim_end_matches('>');
        targets.push(target.to_string());
    }
    targets
}

/// Whether `target` leaves the repository (a URL or an e-mail address).
fn is_external(target: &str) -> bool {
    target.contains("://") || target.starts_with("mailto:")
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of `text`'s headings, with GitHub's `-1`, `-2` … for repeated ones.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut anchors = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let base = slug(heading.trim_start_matches('#'));
        let count = seen.entry(base.clone()).or_insert(0);
        anchors.insert(match *count {
            0 => base.clone(),
            n => format!("{base}-{n}"),
        });
        *count += 1;
    }
    anchors
}

/// What is wrong with relative link `target` in `doc`, if anything.
fn broken(doc: &Path, target: &str) -> Option<String> {
    let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
    let dest = match file {
        "" => doc.to_path_buf(),
        file => doc.parent().expect("a document's directory").join(file),
    };
    if !dest.exists() {
        return Some(format!("no file {}", dest.display()));
    }
    let is_markdown = dest.extension().is_some_and(|ext| ext == "md");
    if anchor.is_empty() || !is_markdown {
        return None;
    }
    (!anchors(&read(&dest)).contains(anchor)).then(|| format!("no heading #{anchor}"))
}

#[test]
fn readme_is_a_short_first_page() {
    let readme = read(&root().join("README.md"));
    let lines = readme.lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines, at most {README_MAX_LINES}: move details to docs/"
    );
}

#[test]
fn readme_maps_every_doc() {
    let readme = read(&root().join("README.md"));
    let unmapped: Vec<String> = markdown_in(&root().join("docs"))
        .iter()
        .map(|p| format!("docs/{}", p.file_name().unwrap().to_string_lossy()))
        .filter(|rel| !readme.contains(&format!("]({rel})")))
        .collect();
    assert!(unmapped.is_empty(), "README.md does not link {unmapped:?}");
}

#[test]
fn relative_links_reach_existing_files_and_headings() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for doc in documents() {
        let text = read(&doc);
        let rel = doc.strip_prefix(root()).unwrap().display().to_string();
        for (number, line) in prose_lines(&text) {
            for target in link_targets(line) {
                if is_external(&target) {
                    continue;
                }
                checked += 1;
                if let Some(problem) = broken(&doc, &target) {
                    failures.push(format!("{rel}:{number}: ({target}): {problem}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "broken links:\n  {}",
        failures.join("\n  ")
    );
    // README's map alone links every doc: the parser must have found them.
    assert!(
        checked >= 10,
        "only {checked} relative links found: the parser misses them"
    );
}

#[test]
fn the_link_checker_catches_a_missing_file_and_heading() {
    let readme = root().join("README.md");
    assert_eq!(broken(&readme, "docs/SCRIPTING.md#errors"), None);
    assert!(broken(&readme, "docs/NO_SUCH_FILE.md").is_some());
    assert!(broken(&readme, "docs/SCRIPTING.md#no-such-heading").is_some());
    assert_eq!(
        link_targets("see [a](docs/A.md#x) and `[b](c)`, [d]( <e.md> \"t\")"),
        ["docs/A.md#x", "e.md"]
    );
    assert_eq!(
        slug(" Exec and attach: kubectl ≥ 1.30 uses WebSocket"),
        "exec-and-attach-kubectl--130-uses-websocket"
    );
}

/// The subcommand words of a shown `klaxon …` command line: global options and their
/// values skipped, then the leading lower-case words (`outbox retry`, `dry-run`).
fn subcommand(line: &str) -> Option<Vec<String>> {
    let rest = line
        .trim()
        .trim_start_matches("$ ")
        .strip_prefix("klaxon ")?;
    let mut words = rest.split_whitespace().peekable();
    while let Some(word) = words.next_if(|w| w.starts_with("--")) {
        if !word.contains('=') && ["--config", "--scripts", "--log-format"].contains(&word) {
            words.next();
        }
    }
    let path: Vec<String> = words
        .take_while(|w| {
            !w.starts_with('-') && w.chars().all(|c| c.is_ascii_lowercase() || c == '-')
        })
        .map(str::to_string)
        .collect();
    (!path.is_empty()).then_some(path)
}

#[test]
fn every_klaxon_command_shown_exists() {
    let mut shown = BTreeSet::new();
    for doc in documents() {
        let text = read(&doc);
        let spans = prose_lines(&text)
            .into_iter()
            .flat_map(|(_, line)| code_spans(line).map(str::to_string).collect::<Vec<_>>());
        let lines = code_lines(&text).into_iter().map(str::to_string);
        shown.extend(spans.chain(lines).filter_map(|l| subcommand(&l)));
    }
    for expected in [&["serve"][..], &["dry-run"], &["test"], &["outbox", "list"]] {
        assert!(
            shown.iter().any(|s| s == expected),
            "`klaxon {}` not found in the docs: the scan misses commands",
            expected.join(" ")
        );
    }
    let unknown: Vec<String> = shown
        .iter()
        .filter(|path| {
            let status = Command::new(env!("CARGO_BIN_EXE_klaxon"))
                .args(path.iter())
                .arg("--help")
                .output()
                .expect("klaxon runs")
                .status;
            !status.success()
        })
        .map(|path| format!("klaxon {}", path.join(" ")))
        .collect();
    assert!(
        unknown.is_empty(),
        "the docs show commands klaxon does not have: {unknown:?}"
    );
}
