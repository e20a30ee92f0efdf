//! Reading the configuration: the file (TOML, parsed with spans), the `CSGW__…` overrides, the
//! strict typing of [`super::de`], the clamps and [`Config::validate`]. Every error says where
//! the value came from — `FILE:LINE` for the file (named once), the variable's name for the
//! environment — then the key (`policy[0].on_error`) and what is wrong with it.

use std::path::Path;

use super::de::NodeDe;
use super::tree::{self, Node, Origin};
use super::{Config, ConfigError};

/// A loaded configuration together with where each value came from (for `show-config`).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub(super) tree: Node,
}

impl Loaded {
    /// Read `path`, lay the `CSGW__…` variables of `env` over it, type and validate.
    pub fn read(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Loaded, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            let why = match e.kind() {
                std::io::ErrorKind::NotFound => "no such file".to_string(),
                _ => e.to_string(),
            };
            ConfigError::Load(format!("{file}: {why}"))
        })?;
        let mut tree = tree::from_toml(&text).map_err(|(line, msg)| {
            let at = match line {
                Some(l) => format!("{file}:{l}"),
                None => file.clone(),
            };
            ConfigError::Load(format!("{at}: {msg}"))
        })?;
        tree::apply_env(&mut tree, env)
            .map_err(|(var, msg)| ConfigError::Load(format!("{var}: {msg}")))?;
        let mut config: Config = serde_path_to_error::deserialize(NodeDe(&tree)).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let mut key = if path == "." { String::new() } else { path };
            if let Some(field) = inner.missing {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(field);
            }
            let node = tree.nearest(&key);
            ConfigError::At {
                at: at(&file, Some(node)),
                key,
                reason: inner.msg,
            }
        })?;
        config.apply_clamps();
        config.validate().map_err(|e| match e {
            ConfigError::Invalid { key, reason } => {
                // The value itself, or the variable that set the whole list it is part of;
                // a default has no place to point at but the file.
                let node = tree.get(&key).or_else(|| {
                    let n = tree.nearest(&key);
                    matches!(n.origin, Origin::Env(_)).then_some(n)
                });
                ConfigError::At {
                    at: at(&file, node),
                    key,
                    reason,
                }
            }
            other => other,
        })?;
        Ok(Loaded { config, tree })
    }

    /// Where the value at `key` (`policy[0].threshold`) was set; None = its default.
    pub fn source(&self, key: &str) -> Option<String> {
        let node = self.tree.get(key).or_else(|| {
            let n = self.tree.nearest(key);
            matches!(n.origin, Origin::Env(_)).then_some(n)
        })?;
        match &node.origin {
            Origin::File { line: 0 } => None,
            o => Some(o.to_string()),
        }
    }
}

fn at(file: &str, node: Option<&Node>) -> String {
    match node.map(|n| &n.origin) {
        Some(Origin::File { line: 0 }) | None => file.to_string(),
        Some(Origin::File { line }) => format!("{file}:{line}"),
        Some(Origin::Env(var)) => var.clone(),
    }
}

impl Config {
    /// Load `path` and the `CSGW__…` environment, then validate.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// As [`Config::load`], with an explicit environment (tests).
    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Loaded::read(path, env).map(|l| l.config)
    }
}
