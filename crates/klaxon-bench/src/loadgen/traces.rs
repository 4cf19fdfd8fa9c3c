//! Falco's Kubernetes audit test traces (tests/fixtures/falco in the repository, Apache-2.0,
//! see its NOTICE), read from a directory at run time: the bodies of the load generator's
//! write events. Nothing of them is compiled into any binary.
//!
//! Every `*.json` file of the directory is read, in byte order of the names (so a seed
//! picks the same events wherever the directory is); `mix` keeps the lines that parse and
//! whose verb is a write.

use std::path::{Path, PathBuf};

use super::LoadgenError;

/// The repository's trace directory, as seen from this crate's sources at build time: the
/// default of `--traces`, usable from any working directory on the machine that built the
/// binary.
pub fn default_dir() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let repository = crate_dir.ancestors().nth(2).unwrap_or(crate_dir);
    repository.join("tests/fixtures/falco")
}

/// The trace files of one directory, as `(file name, JSON lines)`.
#[derive(Debug, Clone)]
pub struct Traces {
    dir: PathBuf,
    files: Vec<(String, String)>,
}

impl Traces {
    /// Reads every `*.json` file of `dir`; an unreadable or missing directory, an unreadable
    /// file or a directory without any trace is an error naming the path.
    pub fn load(dir: &Path) -> Result<Self, LoadgenError> {
        let unreadable = |source| LoadgenError::TraceDir {
            dir: dir.to_path_buf(),
            source,
        };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(unreadable)? {
            let path = entry.map_err(unreadable)?.path();
            if path.extension().is_some_and(|e| e == "json") && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        if paths.is_empty() {
            return Err(LoadgenError::NoTraces {
                dir: dir.to_path_buf(),
            });
        }
        let files = paths
            .into_iter()
            .map(|path| read_trace(&path))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            dir: dir.to_path_buf(),
            files,
        })
    }

    /// The directory the traces were read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many trace files were read.
    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    /// Every line of every trace, file after file.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.files.iter().flat_map(|(_, text)| text.lines())
    }
}

/// `(file name, contents)` of one trace.
fn read_trace(path: &Path) -> Result<(String, String), LoadgenError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadgenError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok((name, text))
}

#[cfg(test)]
mod tests {
    use tempfile::TempDir;

    use super::*;
    use crate::loadgen::assert_names;

    #[test]
    fn the_default_directory_holds_falcos_traces_in_name_order() {
        let traces = Traces::load(&default_dir()).unwrap();
        assert_eq!(traces.file_count(), 47);
        let names: Vec<&str> = traces.files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.first(), Some(&"anonymous_creates_namespace_foo.json"));
        assert_eq!(names.last(), Some(&"some-user_creates_namespace_foo.json"));
        assert!(names.is_sorted(), "{names:?}");
        assert!(traces.lines().count() > traces.file_count());
    }

    #[test]
    fn a_missing_or_empty_directory_is_an_error_naming_it() {
        let dir = TempDir::new().unwrap();
        let missing = dir.path().join("nowhere");
        let err = Traces::load(&missing).unwrap_err();
        assert!(matches!(err, LoadgenError::TraceDir { .. }), "{err}");
        assert_names(&err, &missing);

        std::fs::write(dir.path().join("notes.txt"), "{}").unwrap();
        let err = Traces::load(dir.path()).unwrap_err();
        assert!(matches!(err, LoadgenError::NoTraces { .. }), "{err}");
        assert_names(&err, dir.path());
    }

    #[test]
    fn only_json_files_are_read() {
        let dir = TempDir::new().unwrap();
        std::fs::write(dir.path().join("b.json"), "{\"verb\":\"create\"}\n").unwrap();
        std::fs::write(dir.path().join("a.json"), "{\"verb\":\"delete\"}\n").unwrap();
        std::fs::write(dir.path().join("NOTICE"), "not a trace\n").unwrap();
        let traces = Traces::load(dir.path()).unwrap();
        assert_eq!(traces.dir(), dir.path());
        let lines: Vec<&str> = traces.lines().collect();
        assert_eq!(lines, ["{\"verb\":\"delete\"}", "{\"verb\":\"create\"}"]);
    }
}
