//! The one loading sequence of the command line and of hot reload: the config file (with
//! `--scripts` replacing `scripts.dirs`), then the scripts it names, with their settings.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Config, ConfigError, DEFAULT_PATH};
use crate::rules::{LoadErrors, Ruleset};
use crate::server::{Reload, ReloadSource, Reloaded};

/// Where config and scripts come from: `--config` and `--scripts`.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The config file (`--config`), or `None` for [`DEFAULT_PATH`] when it exists.
    pub config_path: Option<PathBuf>,
    /// `--scripts` directories, which replace `scripts.dirs` when given.
    pub scripts: Vec<PathBuf>,
}

/// The config or the scripts did not load.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// A script failed to compile.
    #[error("scripts failed to load: {0}")]
    Scripts(#[from] LoadErrors),
}

impl LoadError {
    /// Every problem, one line each.
    pub fn problems(&self) -> Vec<String> {
        match self {
            Self::Config(e) => e.0.iter().map(ToString::to_string).collect(),
            Self::Scripts(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }
}

impl Sources {
    /// Sources naming `config_path` and nothing else.
    pub fn config_file(config_path: &Path) -> Self {
        Self {
            config_path: Some(config_path.to_path_buf()),
            scripts: Vec::new(),
        }
    }

    /// The validated config, `--scripts` applied.
    pub fn config(&self) -> Result<Config, ConfigError> {
        let mut config = super::load(self.config_path.as_deref())?;
        if !self.scripts.is_empty() {
            config.script_dirs = self.scripts.clone();
        }
        Ok(config)
    }

    /// The config and its compiled scripts.
    pub fn load(&self) -> Result<(Config, Ruleset), LoadError> {
        let config = self.config()?;
        let rules = rules(&config)?;
        Ok((config, rules))
    }

    /// What `serve` reloads from: the script directories and the config file's directory
    /// are watched (by directory, as Kubernetes swaps a ConfigMap's `..data` symlink), and
    /// each reload runs this same sequence.
    pub fn reload_source(&self, config: &Config) -> ReloadSource {
        let mut watch = config.script_dirs.clone();
        if let Some(parent) = config.source.as_deref().and_then(Path::parent) {
            watch.push(if parent.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                parent.to_path_buf()
            });
        }
        watch.sort();
        watch.dedup();
        let sources = self.clone();
        let load: Reload = Arc::new(move || {
            let (config, rules) = sources.load().map_err(|e| e.problems())?;
            Ok(Reloaded {
                rules,
                pipeline: config.serve.pipeline,
            })
        });
        ReloadSource {
            watch,
            config_file: self
                .config_path
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH)),
            load,
        }
    }
}

/// The scripts `config` names, compiled, with `[scripts.settings]` applied.
pub fn rules(config: &Config) -> Result<Ruleset, LoadErrors> {
    let mut rules = Ruleset::load(&config.script_dirs, &config.limits, &config.cluster_name)?;
    rules.set_settings(&config.script_settings);
    Ok(rules)
}
