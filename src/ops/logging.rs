//! Log output: human-readable by default, one JSON object per line with `--log-format json`, and
//! the [`Redacted`] wrapper that keeps secrets out of both.

use std::fmt;
use std::io::IsTerminal;
use std::str::FromStr;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

/// Default filter when neither the caller nor `RUST_LOG` gives one.
pub const DEFAULT_FILTER: &str = "info";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

impl FromStr for LogFormat {
    type Err = LogError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(LogError::Format(other.to_string())),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("--log-format: {0:?} is not one of human, json")]
    Format(String),
    #[error("log filter {filter:?}: {reason}")]
    Filter { filter: String, reason: String },
    #[error("logging was already initialised")]
    AlreadyInitialised,
}

/// Install the global subscriber writing to stderr. `filter` (an `EnvFilter` directive string
/// such as `info,cryptshare_gateway::inbound=debug`) wins; else `RUST_LOG`; else [`DEFAULT_FILTER`].
pub fn init(format: LogFormat, filter: Option<&str>) -> Result<(), LogError> {
    let filter = match filter {
        Some(f) => f.to_string(),
        None => std::env::var("RUST_LOG").unwrap_or_else(|_| DEFAULT_FILTER.to_string()),
    };
    let human_opts = HumanOptions {
        ansi: std::io::stderr().is_terminal(),
        // journald stamps every line itself; a second timestamp only costs width.
        timestamps: std::env::var_os("JOURNAL_STREAM").is_none(),
    };
    let dispatch = build(format, &filter, human_opts, std::io::stderr)?;
    // try_init (unlike set_global_default) also routes the `log` crate's records (rustls,
    // reqwest's dependencies) into the same output.
    dispatch
        .try_init()
        .map_err(|_| LogError::AlreadyInitialised)
}

#[derive(Debug, Clone, Copy)]
pub struct HumanOptions {
    pub ansi: bool,
    pub timestamps: bool,
}

/// The subscriber [`init`] installs, writing to `writer`; exposed so tests can capture output
/// with `tracing::dispatcher::with_default`.
pub fn build<W>(
    format: LogFormat,
    filter: &str,
    human: HumanOptions,
    writer: W,
) -> Result<tracing::Dispatch, LogError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let env_filter = EnvFilter::builder()
        .parse(filter)
        .map_err(|e| LogError::Filter {
            filter: filter.to_string(),
            reason: e.to_string(),
        })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(writer);
    Ok(match format {
        LogFormat::Json => tracing::Dispatch::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .finish(),
        ),
        LogFormat::Human if human.timestamps => {
            tracing::Dispatch::new(builder.with_ansi(human.ansi).finish())
        }
        LogFormat::Human => {
            tracing::Dispatch::new(builder.with_ansi(human.ansi).without_time().finish())
        }
    })
}

// `Redacted` lives below both config and ops (the configuration holds the client id); the
// old paths `ops::logging::{Redacted, Secret}` keep working.
pub use crate::config::secret::{Redacted, Secret};
