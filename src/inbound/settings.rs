//! Everything a session needs from the configuration (`[server]`), resolved once into
//! [`SessionSettings`]. The server hands each new connection the snapshot current at accept
//! time, so a reload never changes a running session.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use tokio_rustls::TlsAcceptor;

use super::limits::AuthLockout;
use super::tls::{self, TlsError};
use super::users::{AuthError, UserDb};
use crate::config::Config;
use crate::ops::Metrics;
use crate::store::spool;

/// Problems turning the configuration into session settings. Each names its key.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("server.auth.users_file: {0}")]
    Auth(#[from] AuthError),
}

/// AUTH settings of a session.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub users: UserDb,
    /// Offer and accept AUTH without TLS (tests only).
    pub allow_plaintext: bool,
    /// Wait before answering a failed attempt; multiplied by the number of failures so far.
    pub failure_delay: Duration,
    /// Failed attempts after which the session is closed with 421.
    pub max_failures: u32,
    /// Failed attempts per client address across sessions (`lockout_failures`, `lockout_window`).
    pub lockout: Arc<AuthLockout>,
}

/// Everything a session needs from the configuration, resolved once. The server hands each new
/// connection the snapshot current at accept time, so a reload never changes a running session.
#[derive(Clone)]
pub struct SessionSettings {
    pub hostname: String,
    pub greeting: String,
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub client_networks: Vec<IpNet>,
    /// Read a PROXY header first on connections from `proxy_networks` (`server.proxy_protocol`).
    pub proxy_protocol: bool,
    pub proxy_networks: Vec<IpNet>,
    /// Concurrent connections per address outside `client_networks` (checked at accept).
    pub max_connections_per_ip: usize,
    /// Percent of `max_connections` for all clients outside `client_networks` together.
    pub outside_connections_percent: u8,
    pub idle_timeout: Duration,
    /// For one complete command line, from when the session waits for it.
    pub command_timeout: Duration,
    pub session_timeout: Duration,
    /// Whole-session bound for a client outside `client_networks` until it authenticates.
    pub outside_session_timeout: Duration,
    pub max_errors: u32,
    pub max_received_headers: usize,
    /// Longest text line with CRLF; 0 = no limit.
    pub max_line_length: usize,
    pub spool_memory_limit: usize,
    pub spool_dir: PathBuf,
    /// Enables STARTTLS (and implicit-TLS listeners in the server).
    pub tls: Option<TlsAcceptor>,
    pub auth: Option<AuthSettings>,
    /// Where connections and inbound TLS handshakes are counted.
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for SessionSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionSettings")
            .field("hostname", &self.hostname)
            .field("max_message_size", &self.max_message_size)
            .field("max_recipients", &self.max_recipients)
            .field("client_networks", &self.client_networks)
            .field("proxy_protocol", &self.proxy_protocol)
            .field("proxy_networks", &self.proxy_networks)
            .field("tls", &self.tls.is_some())
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl SessionSettings {
    /// Defaults as in the configuration (`[server]` without keys), no TLS, no AUTH, and a
    /// metrics registry of its own (tests, tools: nothing reads it).
    pub fn new(hostname: impl Into<String>, spool_dir: impl Into<PathBuf>) -> SessionSettings {
        let d = crate::config::ServerConfig::default();
        SessionSettings {
            hostname: hostname.into(),
            greeting: d.greeting,
            max_message_size: d.max_message_size,
            max_recipients: d.max_recipients,
            client_networks: d.client_networks,
            proxy_protocol: d.proxy_protocol,
            proxy_networks: d.proxy_networks,
            max_connections_per_ip: d.max_connections_per_ip,
            outside_connections_percent: d.outside_connections_percent,
            idle_timeout: d.idle_timeout,
            command_timeout: d.command_timeout,
            session_timeout: d.session_timeout,
            outside_session_timeout: d.outside_session_timeout,
            max_errors: d.max_errors,
            max_received_headers: d.max_received_headers,
            max_line_length: d.max_line_length,
            spool_memory_limit: d.spool_memory_limit,
            spool_dir: spool_dir.into(),
            tls: None,
            auth: None,
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// Resolve `[server]` (loads the TLS certificate and the users file); count into `metrics`.
    pub fn from_config(
        cfg: &Config,
        metrics: Arc<Metrics>,
    ) -> Result<SessionSettings, SettingsError> {
        let s = &cfg.server;
        let tls = match &s.tls {
            Some(t) => Some(tls::load_acceptor(&t.cert, &t.key)?),
            None => None,
        };
        let auth = match &s.auth {
            Some(a) => Some(AuthSettings {
                users: UserDb::load(&a.users_file)?.with_max_checks(a.max_concurrent_checks),
                allow_plaintext: a.allow_plaintext,
                failure_delay: a.failure_delay,
                max_failures: a.max_failures,
                lockout: Arc::new(AuthLockout::new(a.lockout_failures, a.lockout_window)),
            }),
            None => None,
        };
        Ok(SessionSettings {
            hostname: s.hostname.clone(),
            greeting: s.greeting.clone(),
            max_message_size: s.max_message_size,
            max_recipients: s.max_recipients,
            client_networks: s.client_networks.clone(),
            proxy_protocol: s.proxy_protocol,
            proxy_networks: s.proxy_networks.clone(),
            max_connections_per_ip: s.max_connections_per_ip,
            outside_connections_percent: s.outside_connections_percent,
            idle_timeout: s.idle_timeout,
            command_timeout: s.command_timeout,
            session_timeout: s.session_timeout,
            outside_session_timeout: s.outside_session_timeout,
            max_errors: s.max_errors,
            max_received_headers: s.max_received_headers,
            max_line_length: s.max_line_length,
            spool_memory_limit: s.spool_memory_limit,
            spool_dir: spool::spool_dir(&cfg.state.dir),
            tls,
            auth,
            metrics,
        })
    }

    /// Take over the AUTH lock-out counts of the settings these replace (a reload), with the
    /// new limits.
    pub fn keep_lockout_of(&mut self, old: &SessionSettings) {
        if let (Some(new), Some(old)) = (self.auth.as_mut(), old.auth.as_ref()) {
            let (failures, window) = new.lockout.limits();
            new.lockout = Arc::new(old.lockout.with_limits(failures, window));
        }
    }

    /// Outside connections allowed together, out of `max_connections`.
    pub fn outside_limit(&self, max_connections: usize) -> usize {
        (max_connections * usize::from(self.outside_connections_percent) / 100).max(1)
    }

    /// Is `peer` a proxy whose connections start with a PROXY header?
    pub(super) fn expects_proxy_header(&self, peer: &SocketAddr) -> bool {
        let ip = peer.ip().to_canonical();
        self.proxy_protocol && self.proxy_networks.iter().any(|n| n.contains(&ip))
    }

    pub(super) fn may_relay(&self, peer: &SocketAddr) -> bool {
        let ip = peer.ip().to_canonical();
        self.client_networks.iter().any(|n| n.contains(&ip))
    }
}
