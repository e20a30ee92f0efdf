//! Configuration: a TOML file layered with `CSGW__SECTION__KEY` environment overrides.
//!
//! The key names are an operator contract (SPEC §3): never rename them. [`types`] holds the
//! structs (typed once at parse: addresses, networks, the next hop, durations; the defaults),
//! [`Config::validate`] the checks serde cannot express. `config` depends on nothing else of
//! the crate; [`Secret`] lives here because the configuration holds the client id.

mod de;
mod load;
mod parse;
pub mod secret;
mod show;
mod tree;
mod types;
mod validate;

pub use load::Loaded;
pub use parse::NextHop;
pub use secret::{Redacted, Secret};
pub use types::{
    AuditConfig, AuthConfig, Config, Content, CryptshareConfig, DbUrl, DkimConfig, DkimKeyConfig,
    DkimSign, Links, MetricsConfig, NextHopTls, OnError, PasswordMode, PolicyConfig, QueueConfig,
    QueueMode, RelayConfig, ServerConfig, SignedHandling, StateBackend, StateConfig, TlsConfig,
};
pub use validate::{is_language_tag, validate_sender_pattern};

/// A configuration problem, always naming the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A key whose value is wrong, where it was set not known (checks outside the loader).
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
    /// As `Invalid`, with where the value was set: `FILE:LINE`, `FILE` (a default) or the
    /// `CSGW__…` variable.
    #[error("{at}: {key}: {reason}")]
    At {
        at: String,
        key: String,
        reason: String,
    },
    #[error("{0}")]
    Load(String),
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}
