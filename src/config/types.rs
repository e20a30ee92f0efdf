//! The configuration structs. Key names are an operator contract (SPEC §3): never rename them.
//! Every struct uses `deny_unknown_fields`, so a typo is an error naming the key instead of a
//! silently ignored setting. Values are typed here, once (addresses, networks, the next hop,
//! durations); the defaults below are the only copy (the session settings start from them too).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::parse::{self, NextHop};
use super::secret::Secret;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub relay: RelayConfig,
    #[serde(default)]
    pub cryptshare: CryptshareConfig,
    #[serde(default)]
    pub queue: QueueConfig,
    #[serde(default)]
    pub state: StateConfig,
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    #[serde(default)]
    pub audit: Option<AuditConfig>,
    /// DKIM signing of relayed messages; without `[dkim]` nothing is signed.
    #[serde(default)]
    pub dkim: Option<DkimConfig>,
    #[serde(default)]
    pub policy: Vec<PolicyConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(with = "parse::list")]
    pub listen: Vec<SocketAddr>,
    /// Implicit-TLS listeners (SMTPS, port 465 style); needs `[server.tls]`.
    #[serde(with = "parse::list")]
    pub listen_tls: Vec<SocketAddr>,
    pub hostname: String,
    /// Greeting text after `220 <hostname> `.
    pub greeting: String,
    pub max_message_size: u64,
    pub max_recipients: usize,
    #[serde(with = "parse::list")]
    pub client_networks: Vec<IpNet>,
    /// Connections from `proxy_networks` start with a PROXY protocol v1/v2 header (HAProxy
    /// `send-proxy`/`send-proxy-v2`) naming the real client; everything else sees that client.
    pub proxy_protocol: bool,
    /// The proxies allowed to send a PROXY header; any other peer is a direct client.
    #[serde(with = "parse::list")]
    pub proxy_networks: Vec<IpNet>,
    pub max_connections: usize,
    /// Connections at the same time from one address outside `client_networks` (IPv6: one /64).
    pub max_connections_per_ip: usize,
    /// Share of `max_connections` (percent) that clients outside `client_networks` may use
    /// together; the rest is kept for clients inside.
    pub outside_connections_percent: u8,
    /// How long a client may stay silent (RFC 5321 §4.5.3.2 server timeout: 5 minutes);
    /// written in seconds.
    #[serde(with = "parse::seconds")]
    pub idle_timeout: Duration,
    /// How long a client may take to send one complete command line once the gateway waits for
    /// it, however slowly it trickles (seconds; RFC 5321 §4.5.3.2: 5 minutes).
    #[serde(with = "parse::seconds")]
    pub command_timeout: Duration,
    /// How long a whole session may last (seconds).
    #[serde(with = "parse::seconds")]
    pub session_timeout: Duration,
    /// How long a whole session of a client outside `client_networks` may last until it
    /// authenticates (seconds); then `session_timeout` applies.
    #[serde(with = "parse::seconds")]
    pub outside_session_timeout: Duration,
    /// Protocol errors tolerated before the session is closed with 421.
    pub max_errors: u32,
    /// More `Received:` headers than this means a mail loop: 554 5.4.6.
    pub max_received_headers: usize,
    /// Longest text line of a message in octets, CRLF included (RFC 5321: 1000); longer ones are
    /// refused with 554 5.5.6. 0 = no limit: lines are passed on as received.
    pub max_line_length: usize,
    /// Messages up to this size stay in memory while received; larger ones spill to `state.dir`.
    pub spool_memory_limit: usize,
    /// Time to let in-flight transactions finish on shutdown before answering 421 (seconds).
    #[serde(with = "parse::seconds")]
    pub shutdown_grace: Duration,
    pub tls: Option<TlsConfig>,
    pub auth: Option<AuthConfig>,
}

/// `[server]` without keys.
impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 2525))],
            listen_tls: Vec::new(),
            hostname: "localhost".into(),
            greeting: "ESMTP cryptshare-gateway".into(),
            max_message_size: 104_857_600,
            max_recipients: 100,
            client_networks: vec![
                "127.0.0.0/8".parse().expect("literal network"),
                "::1/128".parse().expect("literal network"),
            ],
            proxy_protocol: false,
            proxy_networks: Vec::new(),
            max_connections: 512,
            max_connections_per_ip: 10,
            outside_connections_percent: 75,
            idle_timeout: Duration::from_secs(300),
            command_timeout: Duration::from_secs(300),
            session_timeout: Duration::from_secs(3600),
            outside_session_timeout: Duration::from_secs(600),
            max_errors: 10,
            max_received_headers: 50,
            max_line_length: 1000,
            spool_memory_limit: 8 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(30),
            tls: None,
            auth: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Lines `user:hash` with argon2 (`$argon2id$…`) or bcrypt (`$2b$…`) hashes.
    pub users_file: PathBuf,
    /// Allow AUTH without TLS (tests only; never in production).
    #[serde(default)]
    pub allow_plaintext: bool,
    /// Wait before answering a failed AUTH (seconds), times the failures so far in the session.
    #[serde(default = "default_auth_failure_delay", with = "parse::seconds")]
    pub failure_delay: Duration,
    /// Failed AUTH attempts after which the session is closed (421).
    #[serde(default = "default_auth_max_failures")]
    pub max_failures: u32,
    /// Failed AUTH attempts from one client address (IPv6: one /64), across sessions, within
    /// `lockout_window` after which that address is locked out (`454 4.7.0`, no password checked).
    #[serde(default = "default_auth_lockout_failures")]
    pub lockout_failures: u32,
    /// The window of `lockout_failures` (seconds); a locked address is let in again once its
    /// oldest counted failure is older than this.
    #[serde(default = "default_auth_lockout_window", with = "parse::seconds")]
    pub lockout_window: Duration,
    /// Password hashes checked at the same time at most (each argon2 check takes its memory
    /// cost); fewer when the users file's most expensive hash would exceed 192 MiB in total.
    #[serde(default = "default_auth_max_concurrent_checks")]
    pub max_concurrent_checks: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum NextHopTls {
    Off,
    #[default]
    Opportunistic,
    Required,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// `host:port` of the next-hop MTA, or `maildir:DIR`.
    #[serde(with = "parse::one")]
    pub next_hop: NextHop,
    #[serde(default)]
    pub tls: NextHopTls,
    /// Extra CA certificates (PEM) for verifying the next hop.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Name to verify the next hop's certificate against (default: the host of `next_hop`).
    #[serde(default)]
    pub tls_server_name: Option<String>,
    /// Seconds to wait for the connection and the greeting (at least 1).
    #[serde(default = "default_connect_timeout", with = "parse::seconds")]
    pub connect_timeout: Duration,
    /// Seconds to wait for a next-hop reply to EHLO, MAIL, RCPT, RSET (RFC 5321 §4.5.3.2: 300;
    /// at least 1).
    #[serde(default = "default_command_timeout", with = "parse::seconds")]
    pub command_timeout: Duration,
    /// Seconds to wait for the 354 after DATA (RFC 5321: 120).
    #[serde(default = "default_data_init_timeout", with = "parse::seconds")]
    pub data_init_timeout: Duration,
    /// Seconds a write of the message content may take, and the wait for the reply to a BDAT
    /// chunk that is not the last (RFC 5321: 180).
    #[serde(default = "default_data_xfer_timeout", with = "parse::seconds")]
    pub data_xfer_timeout: Duration,
    /// Seconds to wait for the next hop's reply after the end of the message (RFC 5321: 600).
    /// Keep it below the upstream MTA's own wait for the gateway (Postfix
    /// `smtp_data_done_timeout`, 600 s), see docs/postfix.md.
    #[serde(default = "default_data_done_timeout", with = "parse::seconds")]
    pub data_done_timeout: Duration,
    /// Idle connections to the next hop kept for reuse.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Send Postfix's XFORWARD (the original client's address, port, HELO name, protocol) to a
    /// next hop that offers it.
    #[serde(default = "default_true")]
    pub xforward: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CryptshareConfig {
    /// Server base URL (the API is under `/api`), or `embedded` for the built-in emulator.
    pub url: String,
    pub client_id: Option<Secret>,
    pub client_id_file: Option<PathBuf>,
    /// Value of `X-CS-MinimumMinorApiVersion`.
    pub minimum_minor_api_version: u32,
    /// Extra CA certificates (PEM) for the Cryptshare server.
    pub ca_file: Option<PathBuf>,
    /// Seconds per API call (uploads: per chunk of progress, see the client); at least 1.
    #[serde(with = "parse::seconds")]
    pub timeout: Duration,
    /// Data directory of the embedded emulator (default: `<state.dir>/cryptshare-sim`).
    pub embedded_data_dir: Option<PathBuf>,
    /// Seconds a finalized transfer may stay `PROCESSING` (virus scan of large files) before
    /// the attempt gives up with a temporary failure; at least 1.
    #[serde(with = "parse::seconds")]
    pub processing_limit: Duration,
    /// Seconds a cached verification token must still be valid to start a new transfer
    /// session with it (capped at half the token's validity); the session keeps its token to
    /// the end, so this is the time one conversion may take.
    #[serde(with = "parse::seconds")]
    pub token_reserve: Duration,
}

impl Default for CryptshareConfig {
    fn default() -> Self {
        CryptshareConfig {
            url: "embedded".into(),
            client_id: None,
            client_id_file: None,
            minimum_minor_api_version: 8,
            ca_file: None,
            timeout: Duration::from_secs(60),
            embedded_data_dir: None,
            processing_limit: Duration::from_secs(300),
            token_reserve: Duration::from_secs(900),
        }
    }
}

/// `queue.mode`: when the client gets its `250`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum QueueMode {
    /// After the next hop accepted the (converted) message; the client's transaction stays open
    /// meanwhile (behind Postfix).
    #[default]
    Inline,
    /// After the message is in the local queue, fsync'd; conversion and relay in the
    /// background, with retries and DSNs (MUAs, Exchange / Microsoft 365 smart hosts).
    Spool,
}

/// `[queue]`: spool mode's store-and-forward queue (below `state.dir`, in `queue/`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// The mode of every listener not named in `spool_listen`.
    pub mode: QueueMode,
    /// Listeners (addresses of `server.listen` / `server.listen_tls`) that spool while `mode`
    /// is `inline`: inline on the port Postfix uses, spool on the submission port.
    #[serde(with = "parse::list")]
    pub spool_listen: Vec<SocketAddr>,
    /// How long a message may wait in the queue; then a failure DSN (`"5d"`).
    #[serde(with = "parse::span")]
    pub max_lifetime: Duration,
    /// After this long in the queue the sender gets one "delayed" DSN (`"4h"`; `"0"` = never).
    #[serde(with = "parse::span")]
    pub delay_warning: Duration,
    /// First retry after this long; doubled per attempt, with ±10 % jitter, up to `max_backoff`.
    #[serde(with = "parse::span")]
    pub min_backoff: Duration,
    #[serde(with = "parse::span")]
    pub max_backoff: Duration,
    /// Deliveries at a time (all go to the one next hop).
    pub concurrency: usize,
    /// Messages the queue may hold; beyond, new mail gets `452 4.3.1` at MAIL FROM.
    pub max_messages: usize,
    /// Bytes that must stay free on the queue's file system (a disk reserve); below it new
    /// mail gets `452 4.3.1` at MAIL FROM, and a message whose `SIZE=` would cross it too.
    pub min_free_space: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            mode: QueueMode::Inline,
            spool_listen: Vec::new(),
            max_lifetime: Duration::from_secs(5 * 86400),
            delay_warning: Duration::from_secs(4 * 3600),
            min_backoff: Duration::from_secs(300),
            max_backoff: Duration::from_secs(4000),
            concurrency: 8,
            max_messages: 10_000,
            min_free_space: 1 << 30,
        }
    }
}

impl QueueConfig {
    /// Whether any listener spools (the scheduler runs then).
    pub fn enabled(&self) -> bool {
        self.mode == QueueMode::Spool || !self.spool_listen.is_empty()
    }

    /// Whether the listener a connection arrived on spools. A configured wildcard address
    /// (`0.0.0.0:587`, `[::]:587`) matches any local address with its port.
    pub fn spools(&self, local: &SocketAddr) -> bool {
        self.mode == QueueMode::Spool
            || self.spool_listen.iter().any(|l| {
                l.port() == local.port()
                    && (l.ip().is_unspecified()
                        || l.ip().to_canonical() == local.ip().to_canonical())
            })
    }
}

/// `state.backend`: where the idempotency records live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum StateBackend {
    /// One JSON file per message key under `state.dir` (one gateway).
    #[default]
    File,
    /// A PostgreSQL database shared by every gateway node (`state.url`).
    Postgres,
}

/// `state.url`: a PostgreSQL connection URL. It may carry a password, so everything that
/// prints it (`Debug`, `Display`, `show-config`) prints it with the password replaced.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DbUrl(String);

impl DbUrl {
    pub fn new(url: impl Into<String>) -> DbUrl {
        DbUrl(url.into())
    }

    /// The URL as written, password included: for the driver only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with a password in its user part (`user:secret@`) or in a `password=` query
    /// parameter replaced by `[redacted]`.
    pub fn redacted(&self) -> String {
        let s = &self.0;
        let mut out = match (s.find("://"), s.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let userinfo = &s[scheme + 3..at];
                match userinfo.split_once(':') {
                    Some((user, _)) => format!(
                        "{}{user}:{}{}",
                        &s[..scheme + 3],
                        super::secret::REDACTED,
                        &s[at..]
                    ),
                    None => s.clone(),
                }
            }
            _ => s.clone(),
        };
        if let Some(q) = out.find('?') {
            let (head, query) = out.split_at(q + 1);
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => {
                        format!("{k}={}", super::secret::REDACTED)
                    }
                    _ => kv.to_string(),
                })
                .collect();
            out = format!("{head}{}", query.join("&"));
        }
        out
    }
}

impl std::fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::fmt::Display for DbUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for DbUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    pub dir: PathBuf,
    /// Days a finished transfer is remembered for idempotent retries.
    pub retention_days: u32,
    /// `file` (default) or `postgres`.
    pub backend: StateBackend,
    /// `backend = "postgres"`: `postgres://user@host:port/database?sslmode=require`.
    pub url: Option<DbUrl>,
    /// `backend = "postgres"`: a file holding the password (trimmed), instead of one in `url`.
    pub password_file: Option<PathBuf>,
    /// `backend = "postgres"`: PEM CA certificates trusted for the server's TLS certificate
    /// (default: the system's trust anchors).
    pub ca_file: Option<PathBuf>,
    /// `backend = "postgres"`: connections each node keeps at most.
    pub pool_size: usize,
    /// `backend = "postgres"`: how long a node's claim on a message it converts lasts without
    /// renewal (renewed every third of it while the node lives): after a crash, another node
    /// takes the message over once this has passed.
    #[serde(with = "parse::span")]
    pub lease: Duration,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            dir: PathBuf::from("/var/lib/cryptshare-gateway"),
            retention_days: 14,
            backend: StateBackend::File,
            url: None,
            password_file: None,
            ca_file: None,
            pool_size: 8,
            lease: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    #[serde(with = "parse::one")]
    pub listen: SocketAddr,
    /// Seconds between the checks behind `/readyz`: an SMTP EHLO/QUIT with the next hop and a
    /// TCP connect to the Cryptshare server. 0 = no checks (`/readyz` then looks at the
    /// listeners and shutdown only).
    #[serde(default = "default_probe_interval", with = "parse::seconds")]
    pub probe_interval: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// File receiving one JSON line per message (appended; reopened on SIGHUP for rotation).
    /// Without `[audit]` the lines go to the log under the target `audit`.
    pub file: PathBuf,
}

/// `[dkim]`: which relayed messages get a DKIM signature, with which keys.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DkimConfig {
    /// `converted` signs the messages the gateway rewrote (their old signatures are broken);
    /// `all` also signs what passes through.
    #[serde(default)]
    pub sign: DkimSign,
    /// Header fields in the signature (`h=`), those present in the message.
    #[serde(default = "default_dkim_headers")]
    pub headers: Vec<String>,
    /// The signing keys; the one whose domain aligns with `From:` signs.
    pub key: Vec<DkimKeyConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DkimSign {
    #[default]
    Converted,
    All,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DkimKeyConfig {
    /// `d=`: signs mail whose `From:` is this domain or one of its subdomains.
    pub domain: String,
    /// `s=`: the key's DNS record is `SELECTOR._domainkey.DOMAIN`.
    pub selector: String,
    /// PEM private key: RSA (PKCS#1 or PKCS#8) or Ed25519 (PKCS#8).
    pub key_file: PathBuf,
}

fn default_dkim_headers() -> Vec<String> {
    [
        "From",
        "Reply-To",
        "Subject",
        "Date",
        "To",
        "Cc",
        "Message-ID",
        "In-Reply-To",
        "References",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
    ]
    .map(String::from)
    .to_vec()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    #[default]
    Tempfail,
    DeliverOriginal,
    Reject,
}

/// `links`: how the recipients get their download links (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Links {
    /// The Cryptshare server mails each recipient their link; one relayed message for all.
    #[default]
    Notification,
    /// No server notification: one relayed copy per envelope recipient, each with that
    /// recipient's own link.
    PerRecipient,
}

/// `content`: what a converted message puts into the transfer (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Content {
    /// The attachments; the relayed message keeps its text, with the notice on top.
    #[default]
    Attachments,
    /// The whole message: its text goes as the transfer's confidential message, the
    /// attachments as files, and the relayed message is a neutral notice only.
    Message,
}

impl Content {
    pub fn as_str(self) -> &'static str {
        match self {
            Content::Attachments => "attachments",
            Content::Message => "message",
        }
    }
}

impl Links {
    pub fn as_str(self) -> &'static str {
        match self {
            Links::Notification => "notification",
            Links::PerRecipient => "per-recipient",
        }
    }
}

/// `password_mode`. Cryptshare's third mode, `manual` (a password the sender types), is out
/// of scope: a gateway has no person to type it; the value is refused with that reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PasswordMode {
    #[default]
    Generated,
    None,
}

impl<'de> Deserialize<'de> for PasswordMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "kebab-case")]
        enum Raw {
            Generated,
            None,
            Manual,
        }
        match Raw::deserialize(d)? {
            Raw::Generated => Ok(PasswordMode::Generated),
            Raw::None => Ok(PasswordMode::None),
            Raw::Manual => Err(serde::de::Error::custom(
                "\"manual\" is not supported: a gateway has no person to type the password \
                 (valid: generated, none; with generated the sender gets the password in the \
                 upload summary)",
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SignedHandling {
    #[default]
    Skip,
    Convert,
}

/// One `[[policy]]` rule. SPEC §3 keys first, then the extensions of the pipeline issue.
#[derive(Debug, Clone, Deserialize, Serialize)]
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
    /// The notice's language (and the Cryptshare session's): a built-in tag, or `auto` = the
    /// message's `Content-Language:` (its first tag with built-in texts), else
    /// `default_language`.
    #[serde(default = "default_language")]
    pub language: String,
    /// The language `auto` falls back to.
    #[serde(default = "default_language")]
    pub default_language: String,
    #[serde(default = "default_true")]
    pub notify_recipients: bool,
    /// `notification` (the server mails the links) or `per-recipient` (a copy per recipient
    /// with its own link; `notify_recipients` is then ignored: the server sends nothing).
    #[serde(default)]
    pub links: Links,
    /// `attachments` (the attachments move, the text stays in the mail) or `message` (the
    /// text too, as the transfer's confidential message; the mail becomes a neutral notice).
    #[serde(default)]
    pub content: Content,
    /// The gateway mails the envelope sender a receipt of every converted message.
    #[serde(default)]
    pub sender_receipt: bool,
    // --- extensions ---
    /// `From:` of the receipts (an address, optionally with a display name); default
    /// `Cryptshare Gateway <postmaster@SERVER.HOSTNAME>`.
    #[serde(default)]
    pub receipt_from: Option<String>,
    /// With `subject_tag`: a tagged message goes as a whole (as with `content = "message"`).
    #[serde(default)]
    pub subject_tag_message: bool,
    /// Add a small `attachments.html` part listing the moved files and the link, so that
    /// clients filtering on "has attachments" still find the message.
    #[serde(default)]
    pub notice_attachment: bool,
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
    /// List the contents of ZIP files in the notification mails (`showZipFileContent`; only
    /// with `show_file_names`).
    #[serde(default)]
    pub show_zip_file_content: bool,
    /// The sender is mailed on every download (`sendDownloadNotifications`).
    #[serde(default)]
    pub download_notifications: bool,
    /// The sender gets a summary of the downloads when the transfer expires
    /// (`sendDownloadSummary`).
    #[serde(default)]
    pub download_summary: bool,
    #[serde(default = "default_true")]
    pub upload_summary: bool,
    /// `recipientLanguage` of the transfer (the language of Cryptshare's mails to the
    /// recipients): `auto` = the message's `Content-Language` when it names one, else
    /// `language`; or any language tag.
    #[serde(default = "default_auto")]
    pub recipient_language: String,
    #[serde(default)]
    pub classification_id: Option<String>,
    /// Directory with notice templates overriding the built-in ones (`notice.<lang>.txt`, `notice.<lang>.html`).
    #[serde(default)]
    pub template_dir: Option<PathBuf>,
}

fn default_auth_failure_delay() -> Duration {
    Duration::from_secs(1)
}
fn default_auth_max_failures() -> u32 {
    3
}
fn default_auth_lockout_failures() -> u32 {
    10
}
fn default_auth_lockout_window() -> Duration {
    Duration::from_secs(600)
}
fn default_auth_max_concurrent_checks() -> usize {
    4
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_command_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_data_init_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_data_xfer_timeout() -> Duration {
    Duration::from_secs(180)
}
fn default_data_done_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_probe_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_pool_size() -> usize {
    8
}
fn default_expiration_days() -> u32 {
    14
}
fn default_language() -> String {
    "en".into()
}
fn default_auto() -> String {
    "auto".into()
}
fn default_true() -> bool {
    true
}
