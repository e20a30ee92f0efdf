//! Configuration: a TOML file layered with `CSGW__SECTION__KEY` environment overrides.
//!
//! The key names are an operator contract (SPEC §3): never rename them. Every struct uses
//! `deny_unknown_fields` so that a typo is an error naming the key instead of a silently ignored
//! setting, and [`Config::validate`] checks the values serde cannot (addresses, networks, files).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

/// A configuration problem, always naming the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub relay: RelayConfig,
    #[serde(default)]
    pub cryptshare: CryptshareConfig,
    #[serde(default)]
    pub state: StateConfig,
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    #[serde(default)]
    pub audit: Option<AuditConfig>,
    #[serde(default)]
    pub policy: Vec<PolicyConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// Implicit-TLS listeners (SMTPS, port 465 style); needs `[server.tls]`.
    #[serde(default)]
    pub listen_tls: Vec<String>,
    #[serde(default = "default_hostname")]
    pub hostname: String,
    /// Greeting text after `220 <hostname> `.
    #[serde(default = "default_greeting")]
    pub greeting: String,
    #[serde(default = "default_max_message_size")]
    pub max_message_size: u64,
    #[serde(default = "default_max_recipients")]
    pub max_recipients: usize,
    #[serde(default = "default_client_networks")]
    pub client_networks: Vec<String>,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds a client may stay silent between commands (RFC 5321 §4.5.3.2: at least 5 minutes).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: u64,
    /// Seconds a whole session may last.
    #[serde(default = "default_session_timeout")]
    pub session_timeout: u64,
    /// Protocol errors tolerated before the session is closed with 421.
    #[serde(default = "default_max_errors")]
    pub max_errors: u32,
    /// More `Received:` headers than this means a mail loop: 554 5.4.6.
    #[serde(default = "default_max_received")]
    pub max_received_headers: usize,
    /// Longest text line of a message in octets, CRLF included (RFC 5321: 1000); longer ones are
    /// refused with 554 5.5.6. 0 = no limit: lines are passed on as received.
    #[serde(default = "default_max_line_length")]
    pub max_line_length: usize,
    /// Messages up to this size stay in memory while received; larger ones spill to `state.dir`.
    #[serde(default = "default_spool_memory_limit")]
    pub spool_memory_limit: usize,
    /// Seconds to let in-flight transactions finish on shutdown before answering 421.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: u64,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub auth: Option<AuthConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Lines `user:hash` with argon2 (`$argon2id$…`) or bcrypt (`$2b$…`) hashes.
    pub users_file: PathBuf,
    /// Allow AUTH without TLS (tests only; never in production).
    #[serde(default)]
    pub allow_plaintext: bool,
    /// Seconds before answering a failed AUTH, times the failures so far in the session.
    #[serde(default = "default_auth_failure_delay")]
    pub failure_delay: u64,
    /// Failed AUTH attempts after which the session is closed (421).
    #[serde(default = "default_auth_max_failures")]
    pub max_failures: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum NextHopTls {
    Off,
    #[default]
    Opportunistic,
    Required,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// `host:port` of the next-hop MTA, or `maildir:DIR`.
    pub next_hop: String,
    #[serde(default)]
    pub tls: NextHopTls,
    /// Extra CA certificates (PEM) for verifying the next hop.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Name to verify the next hop's certificate against (default: the host of `next_hop`).
    #[serde(default)]
    pub tls_server_name: Option<String>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: u64,
    /// Seconds to wait for any next-hop reply (the final reply after data included).
    #[serde(default = "default_command_timeout")]
    pub command_timeout: u64,
    /// Idle connections to the next hop kept for reuse.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CryptshareConfig {
    /// Server base URL (the API is under `/api`), or `embedded` for the built-in emulator.
    #[serde(default = "default_cryptshare_url")]
    pub url: String,
    #[serde(default)]
    pub client_id: Option<crate::ops::Secret>,
    #[serde(default)]
    pub client_id_file: Option<PathBuf>,
    /// Value of `X-CS-MinimumMinorApiVersion`.
    #[serde(default = "default_minor_api")]
    pub minimum_minor_api_version: u32,
    /// Extra CA certificates (PEM) for the Cryptshare server.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Seconds per API call (uploads: per chunk of progress, see the client).
    #[serde(default = "default_http_timeout")]
    pub timeout: u64,
    /// Data directory of the embedded emulator (default: `<state.dir>/cryptshare-sim`).
    #[serde(default)]
    pub embedded_data_dir: Option<PathBuf>,
}

impl Default for CryptshareConfig {
    fn default() -> Self {
        CryptshareConfig {
            url: default_cryptshare_url(),
            client_id: None,
            client_id_file: None,
            minimum_minor_api_version: default_minor_api(),
            ca_file: None,
            timeout: default_http_timeout(),
            embedded_data_dir: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    #[serde(default = "default_state_dir")]
    pub dir: PathBuf,
    /// Days a finished transfer is remembered for idempotent retries.
    #[serde(default = "default_state_retention_days")]
    pub retention_days: u32,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            dir: default_state_dir(),
            retention_days: default_state_retention_days(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    pub listen: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// File receiving one JSON line per message (appended; reopened on SIGHUP for rotation).
    /// Without `[audit]` the lines go to the log under the target `audit`.
    pub file: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    #[default]
    Tempfail,
    DeliverOriginal,
    Reject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PasswordMode {
    #[default]
    Generated,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SignedHandling {
    #[default]
    Skip,
    Convert,
}

/// One `[[policy]]` rule. SPEC §3 keys first, then the gateway's own extensions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    pub name: String,
    /// Patterns on the envelope sender: `*@example.org`, `*@*.example.org`, `user@example.org`, `*`.
    pub senders: Vec<String>,
    /// Convert when the decoded attachments total more than this many bytes.
    #[serde(default)]
    pub threshold: u64,
    #[serde(default)]
    pub on_error: OnError,
    #[serde(default)]
    pub password_mode: PasswordMode,
    #[serde(default = "default_expiration_days")]
    pub expiration_days: u32,
    #[serde(default = "default_language")]
    pub language: String,
    #[serde(default = "default_true")]
    pub notify_recipients: bool,
    // --- extensions ---
    /// Only when at least one recipient is outside these domains.
    #[serde(default)]
    pub internal_domains: Vec<String>,
    /// Attachments smaller than this stay in the mail.
    #[serde(default)]
    pub min_attachment_size: u64,
    /// File name patterns (`*.pdf`) that may be converted; empty = all.
    #[serde(default)]
    pub include_files: Vec<String>,
    /// File name patterns never converted.
    #[serde(default)]
    pub exclude_files: Vec<String>,
    /// A subject tag (e.g. `[secure]`) that forces conversion and is removed from the subject.
    #[serde(default)]
    pub subject_tag: Option<String>,
    #[serde(default)]
    pub signed: SignedHandling,
    #[serde(default)]
    pub sender_name: Option<String>,
    #[serde(default)]
    pub sender_phone: Option<String>,
    #[serde(default = "default_true")]
    pub show_file_names: bool,
    #[serde(default)]
    pub download_notifications: bool,
    #[serde(default = "default_true")]
    pub upload_summary: bool,
    #[serde(default)]
    pub classification_id: Option<String>,
    /// Directory with notice templates overriding the built-in ones (`notice.<lang>.txt`, `notice.<lang>.html`).
    #[serde(default)]
    pub template_dir: Option<PathBuf>,
}

fn default_listen() -> Vec<String> {
    vec!["127.0.0.1:2525".into()]
}
fn default_hostname() -> String {
    "localhost".into()
}
fn default_greeting() -> String {
    "ESMTP cryptshare-gateway".into()
}
fn default_max_message_size() -> u64 {
    104_857_600
}
fn default_max_recipients() -> usize {
    100
}
fn default_client_networks() -> Vec<String> {
    vec!["127.0.0.0/8".into(), "::1/128".into()]
}
fn default_max_connections() -> usize {
    512
}
fn default_auth_failure_delay() -> u64 {
    1
}

fn default_auth_max_failures() -> u32 {
    3
}

fn default_max_line_length() -> usize {
    1000
}

fn default_idle_timeout() -> u64 {
    300
}
fn default_session_timeout() -> u64 {
    3600
}
fn default_max_errors() -> u32 {
    10
}
fn default_max_received() -> usize {
    50
}
fn default_spool_memory_limit() -> usize {
    8 * 1024 * 1024
}
fn default_shutdown_grace() -> u64 {
    30
}
fn default_connect_timeout() -> u64 {
    30
}
fn default_command_timeout() -> u64 {
    600
}
fn default_pool_size() -> usize {
    8
}
fn default_cryptshare_url() -> String {
    "embedded".into()
}
fn default_minor_api() -> u32 {
    8
}
fn default_http_timeout() -> u64 {
    60
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/cryptshare-gateway")
}
fn default_state_retention_days() -> u32 {
    14
}
fn default_expiration_days() -> u32 {
    14
}
fn default_language() -> String {
    "en".into()
}
fn default_true() -> bool {
    true
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
        if !path.exists() {
            return Err(ConfigError::Load(format!(
                "{}: no such file",
                path.display()
            )));
        }
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("CSGW__"))
            .collect();
        let raw = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("CSGW")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .list_separator(",")
                    .with_list_parse_key("server.listen")
                    .with_list_parse_key("server.listen_tls")
                    .with_list_parse_key("server.client_networks")
                    .source(Some(env)),
            )
            .build()
            .map_err(|e| ConfigError::Load(format!("{}: {e}", path.display())))?;
        let cfg: Config = serde_path_to_error_free(raw)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks serde cannot express. Every error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        if s.listen.is_empty() && s.listen_tls.is_empty() {
            return Err(ConfigError::invalid(
                "server.listen",
                "at least one listener is required",
            ));
        }
        if s.max_line_length != 0 && s.max_line_length < 1000 {
            return Err(ConfigError::invalid(
                "server.max_line_length",
                "0 (no limit) or at least 1000 (RFC 5321 requires lines of 1000 octets)",
            ));
        }
        for (i, l) in s.listen.iter().enumerate() {
            l.parse::<SocketAddr>().map_err(|e| {
                ConfigError::invalid(
                    format!("server.listen[{i}]"),
                    format!("{l:?} is not an IP:port ({e})"),
                )
            })?;
        }
        for (i, l) in s.listen_tls.iter().enumerate() {
            l.parse::<SocketAddr>().map_err(|e| {
                ConfigError::invalid(
                    format!("server.listen_tls[{i}]"),
                    format!("{l:?} is not an IP:port ({e})"),
                )
            })?;
        }
        if !s.listen_tls.is_empty() && s.tls.is_none() {
            return Err(ConfigError::invalid(
                "server.listen_tls",
                "implicit TLS listeners need [server.tls]",
            ));
        }
        if s.hostname.is_empty() || s.hostname.contains(char::is_whitespace) {
            return Err(ConfigError::invalid(
                "server.hostname",
                "must be a host name without spaces",
            ));
        }
        if s.max_message_size == 0 {
            return Err(ConfigError::invalid(
                "server.max_message_size",
                "must be greater than 0",
            ));
        }
        if s.max_message_size >= u32::MAX as u64 {
            return Err(ConfigError::invalid(
                "server.max_message_size",
                "must be below 4 GiB",
            ));
        }
        if s.max_recipients == 0 {
            return Err(ConfigError::invalid(
                "server.max_recipients",
                "must be greater than 0",
            ));
        }
        if s.max_connections == 0 {
            return Err(ConfigError::invalid(
                "server.max_connections",
                "must be greater than 0",
            ));
        }
        self.client_networks()?;
        if let Some(tls) = &s.tls {
            for (key, p) in [("server.tls.cert", &tls.cert), ("server.tls.key", &tls.key)] {
                if !p.is_file() {
                    return Err(ConfigError::invalid(
                        key,
                        format!("{}: no such file", p.display()),
                    ));
                }
            }
        }
        if let Some(auth) = &s.auth {
            if !auth.users_file.is_file() {
                return Err(ConfigError::invalid(
                    "server.auth.users_file",
                    format!("{}: no such file", auth.users_file.display()),
                ));
            }
            if auth.max_failures == 0 {
                return Err(ConfigError::invalid(
                    "server.auth.max_failures",
                    "must be at least 1",
                ));
            }
            if auth.failure_delay > 60 {
                return Err(ConfigError::invalid(
                    "server.auth.failure_delay",
                    "at most 60 seconds (it grows with each failure, and clients time out)",
                ));
            }
        }
        match self.next_hop()? {
            NextHop::Smtp { .. } | NextHop::Maildir(_) => {}
        }
        if let Some(ca) = &self.relay.ca_file
            && !ca.is_file()
        {
            return Err(ConfigError::invalid(
                "relay.ca_file",
                format!("{}: no such file", ca.display()),
            ));
        }
        let cs = &self.cryptshare;
        if cs.url != "embedded"
            && !(cs.url.starts_with("https://") || cs.url.starts_with("http://"))
        {
            return Err(ConfigError::invalid(
                "cryptshare.url",
                format!("{:?} must be an http(s):// URL or \"embedded\"", cs.url),
            ));
        }
        if cs.client_id.is_some() && cs.client_id_file.is_some() {
            return Err(ConfigError::invalid(
                "cryptshare.client_id_file",
                "set either cryptshare.client_id or cryptshare.client_id_file, not both",
            ));
        }
        if let Some(f) = &cs.client_id_file
            && !f.is_file()
        {
            return Err(ConfigError::invalid(
                "cryptshare.client_id_file",
                format!("{}: no such file", f.display()),
            ));
        }
        if let Some(m) = &self.metrics {
            m.listen.parse::<SocketAddr>().map_err(|e| {
                ConfigError::invalid(
                    "metrics.listen",
                    format!("{:?} is not an IP:port ({e})", m.listen),
                )
            })?;
        }
        let mut names = std::collections::HashSet::new();
        for (i, p) in self.policy.iter().enumerate() {
            let key = |k: &str| format!("policy[{i}].{k}");
            if p.name.is_empty() {
                return Err(ConfigError::invalid(key("name"), "must not be empty"));
            }
            if !names.insert(p.name.as_str()) {
                return Err(ConfigError::invalid(
                    key("name"),
                    format!("duplicate policy name {:?}", p.name),
                ));
            }
            if p.senders.is_empty() {
                return Err(ConfigError::invalid(
                    key("senders"),
                    "at least one sender pattern is required",
                ));
            }
            for (j, pat) in p.senders.iter().enumerate() {
                validate_sender_pattern(pat)
                    .map_err(|r| ConfigError::invalid(format!("policy[{i}].senders[{j}]"), r))?;
            }
            if p.expiration_days == 0 || p.expiration_days > 3650 {
                return Err(ConfigError::invalid(
                    key("expiration_days"),
                    "must be between 1 and 3650",
                ));
            }
            // The canonical tag only: it also goes verbatim to the Cryptshare API.
            if crate::mime::Language::parse(&p.language).map(|l| l.tag())
                != Some(p.language.as_str())
            {
                return Err(ConfigError::invalid(
                    key("language"),
                    format!(
                        "{:?} has no notice template (built in: \"en\", \"de\")",
                        p.language
                    ),
                ));
            }
            if let Some(dir) = &p.template_dir
                && !dir.is_dir()
            {
                return Err(ConfigError::invalid(
                    key("template_dir"),
                    format!("{}: no such directory", dir.display()),
                ));
            }
        }
        Ok(())
    }

    pub fn client_networks(&self) -> Result<Vec<IpNet>, ConfigError> {
        self.server
            .client_networks
            .iter()
            .enumerate()
            .map(|(i, n)| {
                n.parse::<IpNet>()
                    .or_else(|_| n.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        ConfigError::invalid(
                            format!("server.client_networks[{i}]"),
                            format!("{n:?} is not a network (CIDR)"),
                        )
                    })
            })
            .collect()
    }

    pub fn next_hop(&self) -> Result<NextHop, ConfigError> {
        NextHop::parse(&self.relay.next_hop)
    }
}

/// Where relayed mail goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextHop {
    Smtp { host: String, port: u16 },
    Maildir(PathBuf),
}

impl NextHop {
    pub fn parse(s: &str) -> Result<NextHop, ConfigError> {
        if let Some(dir) = s.strip_prefix("maildir:") {
            if dir.is_empty() {
                return Err(ConfigError::invalid(
                    "relay.next_hop",
                    "maildir: needs a directory",
                ));
            }
            return Ok(NextHop::Maildir(PathBuf::from(dir)));
        }
        let bad = || {
            ConfigError::invalid(
                "relay.next_hop",
                format!("{s:?} is not host:port or maildir:DIR"),
            )
        };
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad());
        }
        let port: u16 = port.parse().map_err(|_| bad())?;
        Ok(NextHop::Smtp {
            host: host.to_string(),
            port,
        })
    }
}

/// Sender patterns: `*`, `*@domain`, `*@*.domain`, `local@domain`.
pub fn validate_sender_pattern(p: &str) -> Result<(), String> {
    if p == "*" {
        return Ok(());
    }
    let Some((local, domain)) = p.rsplit_once('@') else {
        return Err(format!(
            "{p:?} must look like *@domain, *@*.domain or user@domain"
        ));
    };
    if local.is_empty() || domain.is_empty() {
        return Err(format!(
            "{p:?} must look like *@domain, *@*.domain or user@domain"
        ));
    }
    if local.contains('*') && local != "*" {
        return Err(format!("{p:?}: the local part is either * or a literal"));
    }
    let d = domain.strip_prefix("*.").unwrap_or(domain);
    if d.is_empty() || d.contains('*') || d.contains(char::is_whitespace) || d.starts_with('.') {
        return Err(format!("{p:?}: bad domain (wildcard only as a leading *.)"));
    }
    Ok(())
}

/// Deserialize with the failing key in the message (the `config` crate already names it for most
/// errors; unknown fields come back as "unknown field `x`, expected …" in the section path).
fn serde_path_to_error_free(raw: config::Config) -> Result<Config, ConfigError> {
    raw.try_deserialize::<Config>().map_err(|e| {
        let msg = e.to_string();
        ConfigError::Load(msg)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(s: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::io::Write::write_all(&mut f, s.as_bytes()).unwrap();
        f
    }

    const MIN: &str = "[server]\n[relay]\nnext_hop = \"127.0.0.1:10026\"\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let f = write(MIN);
        let c = Config::load_with_env(f.path(), []).unwrap();
        assert_eq!(c.server.listen, vec!["127.0.0.1:2525"]);
        assert_eq!(c.server.max_message_size, 104_857_600);
        assert_eq!(
            c.next_hop().unwrap(),
            NextHop::Smtp {
                host: "127.0.0.1".into(),
                port: 10026
            }
        );
    }

    #[test]
    fn env_overrides_file() {
        let f = write(MIN);
        let env = [
            ("CSGW__SERVER__MAX_RECIPIENTS".to_string(), "7".to_string()),
            (
                "CSGW__SERVER__CLIENT_NETWORKS".to_string(),
                "10.0.0.0/8,192.168.0.0/16".to_string(),
            ),
            (
                "CSGW__RELAY__NEXT_HOP".to_string(),
                "maildir:/tmp/x".to_string(),
            ),
        ];
        let c = Config::load_with_env(f.path(), env).unwrap();
        assert_eq!(c.server.max_recipients, 7);
        assert_eq!(
            c.server.client_networks,
            vec!["10.0.0.0/8", "192.168.0.0/16"]
        );
        assert_eq!(c.next_hop().unwrap(), NextHop::Maildir("/tmp/x".into()));
    }

    #[test]
    fn client_id_never_shows_in_debug_output() {
        let f = write(&format!(
            "{MIN}[cryptshare]\nclient_id = \"SecretClientId0123456789abcdefghijklmnopqrstuvwxyzABCD\"\n"
        ));
        let c = Config::load_with_env(f.path(), []).unwrap();
        assert!(!format!("{c:?}").contains("SecretClientId"));
        assert_eq!(
            c.cryptshare.client_id.as_ref().map(|s| s.expose().as_str()),
            Some("SecretClientId0123456789abcdefghijklmnopqrstuvwxyzABCD")
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let f = write("[server]\nmax_mesage_size = 5\n[relay]\nnext_hop = \"a:1\"\n");
        let e = Config::load_with_env(f.path(), []).unwrap_err().to_string();
        assert!(e.contains("max_mesage_size"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        for (toml, key) in [
            (
                "[server]\nlisten = [\"nonsense\"]\n[relay]\nnext_hop = \"a:1\"\n",
                "server.listen[0]",
            ),
            (
                "[server]\nclient_networks = [\"10.0.0.0/33\"]\n[relay]\nnext_hop = \"a:1\"\n",
                "server.client_networks[0]",
            ),
            (
                "[server]\n[relay]\nnext_hop = \"nohost\"\n",
                "relay.next_hop",
            ),
            (
                "[server]\n[relay]\nnext_hop = \"a:1\"\n[[policy]]\nname = \"x\"\nsenders = [\"a*b@c\"]\n",
                "policy[0].senders[0]",
            ),
            (
                "[server]\n[relay]\nnext_hop = \"a:1\"\n[cryptshare]\nurl = \"ftp://x\"\n",
                "cryptshare.url",
            ),
            (
                "[server]\nmax_line_length = 998\n[relay]\nnext_hop = \"a:1\"\n",
                "server.max_line_length",
            ),
        ] {
            let f = write(toml);
            let e = Config::load_with_env(f.path(), []).unwrap_err().to_string();
            assert!(e.starts_with(key), "{key}: {e}");
        }
    }

    #[test]
    fn auth_throttling_keys() {
        let users = write("alice:$2b$04$abcdefghijklmnopqrstuu5sEXkjPzjZq6Vt0i4JLF0zC0Hf7mO6\n");
        let section = |extra: &str| {
            format!(
                "{MIN}[server.auth]\nusers_file = \"{}\"\n{extra}",
                users.path().display()
            )
        };
        let f = write(&section(""));
        let c = Config::load_with_env(f.path(), []).unwrap();
        let a = c.server.auth.unwrap();
        assert_eq!((a.failure_delay, a.max_failures), (1, 3));
        let f = write(&section("failure_delay = 0\nmax_failures = 5\n"));
        let a = Config::load_with_env(f.path(), [])
            .unwrap()
            .server
            .auth
            .unwrap();
        assert_eq!((a.failure_delay, a.max_failures), (0, 5));
        for (extra, key) in [
            ("max_failures = 0\n", "server.auth.max_failures"),
            ("failure_delay = 61\n", "server.auth.failure_delay"),
        ] {
            let f = write(&section(extra));
            let e = Config::load_with_env(f.path(), []).unwrap_err().to_string();
            assert!(e.starts_with(key), "{key}: {e}");
        }
    }

    #[test]
    fn wrong_type_is_named() {
        let f = write("[server]\nmax_recipients = \"many\"\n[relay]\nnext_hop = \"a:1\"\n");
        let e = Config::load_with_env(f.path(), []).unwrap_err().to_string();
        assert!(e.contains("max_recipients"), "{e}");
    }
}
