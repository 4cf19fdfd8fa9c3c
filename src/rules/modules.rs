//! Script modules: `import "NAME" as m;` loads `lib/NAME.rhai` from a scripts directory —
//! shared lists, constants and functions (Falco's lists and macros, for example).
//!
//! Confined: a module name is letters, digits, `_` and `-` (segments joined by `/`), so an
//! import cannot leave the `lib/` directories. Modules are compiled and evaluated once, at
//! load, in the same sandbox as the scripts, and embedded into each script that imports them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rhai::module_resolvers::ModuleResolver;
use rhai::{Engine, EvalAltResult, Module, Position, Scope, Shared};

/// A compiled module, shared by the scripts that import it.
type SharedModule = Shared<Module>;

/// The directory, inside a scripts directory, that holds modules.
pub const MODULE_DIR: &str = "lib";

/// Resolves imports to `DIR/lib/NAME.rhai` of the scripts directories, in order.
pub struct ConfinedResolver {
    dirs: Vec<PathBuf>,
    cache: Mutex<HashMap<String, SharedModule>>,
}

impl ConfinedResolver {
    /// A resolver over the `lib/` directories of `script_dirs`.
    pub fn new(script_dirs: &[PathBuf]) -> Self {
        Self {
            dirs: script_dirs.iter().map(|d| d.join(MODULE_DIR)).collect(),
            cache: Mutex::default(),
        }
    }

    fn file(&self, name: &str) -> Option<PathBuf> {
        self.dirs
            .iter()
            .map(|d| d.join(format!("{name}.rhai")))
            .find(|p| p.is_file())
    }
}

/// Whether `name` is a confined module name.
fn valid(name: &str) -> bool {
    !name.is_empty()
        && name.split('/').all(|segment| {
            !segment.is_empty()
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

impl ModuleResolver for ConfinedResolver {
    fn resolve(
        &self,
        engine: &Engine,
        _source: Option<&str>,
        name: &str,
        pos: Position,
    ) -> Result<SharedModule, Box<EvalAltResult>> {
        if !valid(name) {
            return Err(EvalAltResult::ErrorModuleNotFound(
                format!("{name} (module names are letters, digits, _ and -, with / between)"),
                pos,
            )
            .into());
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(module) = cache.get(name) {
            return Ok(module.clone());
        }
        let Some(file) = self.file(name) else {
            let looked: Vec<String> = self.dirs.iter().map(|d| d.display().to_string()).collect();
            let looked = match looked.is_empty() {
                true => "no scripts directory to look in".to_owned(),
                false => format!("looked for {name}.rhai in {}", looked.join(", ")),
            };
            return Err(
                EvalAltResult::ErrorModuleNotFound(format!("{name} ({looked})"), pos).into(),
            );
        };
        let module = load(engine, &file)
            .map_err(|err| Box::new(EvalAltResult::ErrorInModule(name.to_owned(), err, pos)))?;
        cache.insert(name.to_owned(), module.clone());
        Ok(module)
    }
}

fn load(engine: &Engine, file: &Path) -> Result<SharedModule, Box<EvalAltResult>> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        EvalAltResult::ErrorSystem(format!("cannot read {}", file.display()), Box::new(e))
    })?;
    let mut ast = engine
        .compile(text)
        .map_err(|e| Box::new(EvalAltResult::ErrorParsing(*e.0, e.1)))?;
    ast.set_source(file.to_string_lossy().as_ref());
    Module::eval_ast_as_new(Scope::new(), &ast, engine).map(Into::into)
}

#[cfg(test)]
mod tests {
    use super::valid;

    #[test]
    fn only_confined_names_are_valid() {
        assert!(valid("falco"));
        assert!(valid("falco/lists"));
        assert!(valid("my-lib_2"));
        for bad in [
            "",
            "../etc/passwd",
            "/etc/passwd",
            "a//b",
            "a/./b",
            "a.rhai",
            "a\\b",
        ] {
            assert!(!valid(bad), "{bad}");
        }
    }
}
