//! A Cryptshare Server emulator (REST API 1.8), embeddable in-process and run as the
//! `cryptshare-sim` binary.
//!
//! Strict like the real server: required headers and versions, client-id format, tokens bound
//! to address and client id, read-only properties refused in PATCH, retention and password
//! mode checks, unique file names, size/checksum verified at finalize, sessions gone after
//! finalize. File contents are streamed to `DATA/files/`, never held in memory; the mails the
//! server would send are written to `DATA/mails/*.eml`.
//!
//! ```text
//! Emulator::start(SimOptions::new(listen, data_dir)) -> Result<EmulatorHandle, SimError>
//! SimOptions::embedded(&config::Config)  // loopback:0, embedded_data_dir or <state.dir>/cryptshare-sim
//! Emulator::embedded(&config::Config)    // start(SimOptions::embedded(cfg)) + a log line
//! handle.url() / addr() / data_dir() / mail_dir()
//! handle.set_policy(SimPolicy) / policy()     handle.set_switches(SimSwitches) / switches()
//! handle.inject_fault(FaultSpec) / clear_faults() / faults()
//! handle.expire_tokens()                 // every issued token becomes invalid (errorCode 3002)
//! handle.transfers() -> Vec<FinishedTransfer>   handle.stats() -> SimStats
//! handle.open_sessions() -> usize       handle.shutdown().await
//! handle.requests() -> Vec<SimRequest>  // JSON bodies of policy/create/PATCH calls, in order
//! handle.exchanges() -> Vec<SimExchange> // every /api call: method, path, status, JSON bodies
//! FaultSpec::status(Endpoint::Upload, 503, None).times(1)      // also ::drop_connection(ep),
//!     .every_nth(n) / .with_latency(d); JSON: {"endpoint":"upload","status":503,"count":1,
//!     "latency_ms":200,"drop_connection":false,"proxy_page":false,"every_nth":0,"error_code":null}
//! FaultSpec::proxy_page(Endpoint::Any, 502)   // a reverse proxy's HTML page, no errorCode
//! ```
//!
//! Files: `DATA/files/<tracking-id>/<file-id>`; mails: `DATA/mails/<tracking-id>-recipient-
//! <transfer-id>.eml` (notification with the download link), `<tracking-id>-sender.eml` (upload
//! summary; with the password for modes GENERATED and MANUAL), `verification-<n>.eml`.
//!
//! The recipients' web link `/download?id=ID[&password=PW][&get=FILE-ID]` (legacy link format)
//! shows a password form, the file list, or streams the file.
//!
//! Runtime control over HTTP (for the binary): `GET|POST|DELETE /_sim/faults`,
//! `GET|PUT /_sim/policy`, `GET|PUT /_sim/switches`, `POST /_sim/expire-tokens`,
//! `GET /_sim/state` (stats, open sessions, transfers, `requests`, `exchanges`).
//!
//! Strictness switches ([`SimSwitches`]; `cryptshare-sim` flags in brackets; all off by
//! default, a permissive, well-configured server):
//!
//! ```text
//! token validity           SimOptions::token_validity [--token-validity S]: tokens expire at
//!                          their validUntil (3002 after), default 3600 s
//! bind_session_tokens      [--bind-session-tokens] a session accepts only its creating token
//! token_rate_limit: N      [--token-rate-limit N] N tokens/minute per sender+client id, 429/2007
//! processing_time          [--processing-ms MS] finalized transfers stay PROCESSING that long
//! nulls_and_extra_fields   [--nulls-and-extra-fields] explicit nulls + "simExtension" objects
//! FaultSpec::proxy_page    [--proxy-page STATUS] bare HTML error page, no errorCode; JSON
//!                          {"endpoint":"any","status":502,"proxy_page":true}
//! ```
//! JSON of all switches (`--switches`, `PUT /_sim/switches`): `{"nulls_and_extra_fields":false,
//! "processing_ms":20000,"bind_session_tokens":true,"token_rate_limit":5}`.
//!
//! Where the public documentation is silent (API-NOTES §13) the emulator makes the documented
//! INFERRED choices, restricted to the statuses the OpenAPI file declares per operation:
//! 404/2003 for unknown sessions and files; 403/3011 for a size overflow at file registration
//! or upload (the only policy code declared there); 400/1004 for a duplicate file name;
//! 409/2001 for PATCH values outside the policy and for finalize with missing uploads;
//! 400/1004 for a security mode other than ONE_TIME_PASSWORD in PATCH (the only one its
//! schema names); 3002 for an unknown or expired token, with 401 where the operation declares it
//! (the session's GET and DELETE, the transfer listing and status), else 403. A session
//! belongs to the (address, client id) it was created for; by default a renewed token of the
//! same client continues it, with `bind_session_tokens` only the creating token may (403/3002,
//! as the openapi tag `transfer-session` says; 403 because 401 is not declared for every
//! session operation). Transfer states:
//! `processing_polls` status polls answer PROCESSING, then ACTIVE, or FAILED when every file
//! failed its size/checksum check (no mails are sent then).

mod auth;
mod conn;
mod control;
mod exchanges;
mod files;
mod mail;
mod recipient;
mod server;
mod sessions;
mod transfers;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::cryptshare::types::{PasswordMode, Recipients, TransferSession, TransferState};

/// The server-side transfer policy (one merged rule for every sender). Every key has a serde
/// default, so `PUT /_sim/policy` and `--policy` take any subset.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimPolicy {
    /// Glob patterns (`*`) on the sender address; empty = every sender.
    pub allowed_senders: Vec<String>,
    /// Glob patterns on the recipient domain; empty = every domain.
    pub allowed_recipient_domains: Vec<String>,
    /// Glob patterns on the recipient address refused by the policy (`failedRecipients` with
    /// `POLICY_MISMATCH` in the policy answer, 403/3011 at session creation).
    pub refused_recipients: Vec<String>,
    /// Bytes, all files of a transfer together.
    pub max_total_size: u64,
    /// Days.
    pub max_retention_period: u32,
    /// The first one is the default of a new session.
    pub allowed_password_modes: Vec<PasswordMode>,
    pub show_file_names_default: bool,
    /// `false`: a PATCH carrying `showFileNames` or `showZipFileContent` answers 409/2001.
    pub show_file_names_changeable: bool,
    pub show_zip_file_content_default: bool,
    pub send_download_notifications_default: bool,
    /// `false`: a PATCH carrying `sendDownloadNotifications` answers 409/2001.
    pub send_download_notifications_changeable: bool,
    /// `false`: a PATCH carrying `notificationMessage` answers 409/2001.
    pub recipient_notification_editable: bool,
    pub confidential_message_allowed: bool,
    /// `true`: finalize without a `confidentialMessageFileId` answers 409/2001.
    pub confidential_message_required: bool,
}

impl Default for SimPolicy {
    fn default() -> Self {
        SimPolicy {
            allowed_senders: Vec::new(),
            allowed_recipient_domains: Vec::new(),
            refused_recipients: Vec::new(),
            max_total_size: 2 * 1024 * 1024 * 1024,
            max_retention_period: 30,
            allowed_password_modes: vec![
                PasswordMode::Generated,
                PasswordMode::Manual,
                PasswordMode::None,
            ],
            show_file_names_default: false,
            show_file_names_changeable: true,
            show_zip_file_content_default: false,
            send_download_notifications_default: false,
            send_download_notifications_changeable: true,
            recipient_notification_editable: true,
            confidential_message_allowed: true,
            confidential_message_required: false,
        }
    }
}

impl SimPolicy {
    /// A locked-down server (`cryptshare-sim --locked-down`): file names, ZIP contents,
    /// download notifications and the recipient notification are the server's (flags
    /// `*Changeable` / `recipientNotificationEditable` false, PATCHing them answers 409/2001),
    /// and only password mode `GENERATED` is allowed.
    pub fn locked_down() -> Self {
        SimPolicy {
            allowed_password_modes: vec![PasswordMode::Generated],
            show_file_names_default: true,
            show_file_names_changeable: false,
            show_zip_file_content_default: true,
            send_download_notifications_default: true,
            send_download_notifications_changeable: false,
            recipient_notification_editable: false,
            ..SimPolicy::default()
        }
    }
}

/// Strictness switches, changeable at run time (`PUT /_sim/switches`). The default is a
/// permissive, well-configured server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimSwitches {
    /// Responses carry explicit `null` for every absent optional property and an extra
    /// undeclared property (`simExtension`) in every object, as a newer or sloppier server
    /// might. Off: responses are strictly schema-valid.
    pub nulls_and_extra_fields: bool,
    /// A finalized transfer answers `PROCESSING` for this long (in addition to
    /// `SimOptions::processing_polls`), as a server scanning large files does.
    #[serde(rename = "processing_ms", with = "opt_millis")]
    pub processing_time: Option<Duration>,
    /// Transfer sessions may only be used with the token they were created with (openapi tag
    /// `transfer-session`): any other token answers 403/3002, even one of the same sender.
    pub bind_session_tokens: bool,
    /// At most this many tokens per sender and client id per minute; more answer 429/2007.
    pub token_rate_limit: Option<u32>,
    /// Expiry checked in whole days, as a server that counts calendar days does: an
    /// `expirationDate` is taken to last to the end of its (UTC) day, and that must lie within
    /// `maxRetentionPeriod` days from now (else 409/2001). "now + maxRetentionPeriod days" is
    /// then refused for most of the day.
    pub whole_day_expiry: bool,
}

/// The API operations, for fault injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Endpoint {
    #[default]
    Any,
    Clients,
    Status,
    Password,
    Verification,
    VerificationCode,
    Token,
    TransferPolicy,
    CreateSession,
    GetSession,
    PatchSession,
    DeleteSession,
    RegisterFile,
    Upload,
    DeleteFile,
    Finalize,
    TransferStatus,
    Transfers,
    RecipientInfo,
    RecipientFiles,
    RecipientDownload,
    /// `GET /api/transfers/{id}/eml`: the confidential message with the files embedded.
    RecipientEml,
    /// The web link `/download?id=…` of the notification mails.
    WebDownload,
}

/// One injected fault. Of the calls to `endpoint`, every `every_nth` (0 or 1: every call) is
/// affected, at most `count` times (`None`: unlimited): after `latency`, the connection is
/// dropped (`drop_connection`) or answered with `status` and `error_code` (default: the usual
/// code for that status) — or, with `proxy_page`, with `status` and a reverse proxy's bare HTML
/// error page without any Cryptshare `errorCode`. Latency alone delays the normal answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultSpec {
    pub endpoint: Endpoint,
    pub status: Option<u16>,
    pub error_code: Option<i32>,
    #[serde(rename = "latency_ms", with = "opt_millis")]
    pub latency: Option<Duration>,
    pub drop_connection: bool,
    pub proxy_page: bool,
    pub every_nth: u32,
    pub count: Option<u32>,
}

impl FaultSpec {
    /// Answer every call to `endpoint` with `status` / `error_code`.
    pub fn status(endpoint: Endpoint, status: u16, error_code: Option<i32>) -> Self {
        FaultSpec {
            endpoint,
            status: Some(status),
            error_code,
            ..FaultSpec::default()
        }
    }

    /// Answer every call to `endpoint` with a reverse proxy's HTML error page (`status`, e.g.
    /// 403, 413 or 502), without a Cryptshare error body.
    pub fn proxy_page(endpoint: Endpoint, status: u16) -> Self {
        FaultSpec {
            endpoint,
            status: Some(status),
            proxy_page: true,
            ..FaultSpec::default()
        }
    }

    /// Drop the connection of every call to `endpoint`.
    pub fn drop_connection(endpoint: Endpoint) -> Self {
        FaultSpec {
            endpoint,
            drop_connection: true,
            ..FaultSpec::default()
        }
    }

    pub fn times(mut self, count: u32) -> Self {
        self.count = Some(count);
        self
    }

    pub fn every_nth(mut self, n: u32) -> Self {
        self.every_nth = n;
        self
    }

    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = Some(latency);
        self
    }
}

mod opt_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// How to start the emulator.
#[derive(Clone)]
pub struct SimOptions {
    /// Port 0 picks a free port; see [`EmulatorHandle::addr`].
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Only this client id may use client-id verification; `None` trusts every well-formed id.
    pub client_id: Option<String>,
    pub policy: SimPolicy,
    /// Faults active from the start.
    pub faults: Vec<FaultSpec>,
    /// Highest supported minor API version (a higher `X-CS-MinimumMinorApiVersion`: 404/2004).
    pub api_minor: u32,
    pub token_validity: Duration,
    /// Status polls answered `PROCESSING` after finalize before the final state shows.
    pub processing_polls: u32,
    /// Refuse uploads without `Content-Length` (400/1002), to hold clients to streaming with a
    /// declared length.
    pub require_content_length: bool,
    /// Base of absolute URLs (`Location`, download links); default: `http://` + the request's
    /// `Host` header.
    pub public_url: Option<String>,
    /// Strictness switches active from the start.
    pub switches: SimSwitches,
}

impl std::fmt::Debug for SimOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client id is a credential.
        f.debug_struct("SimOptions")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("client_id", &self.client_id.as_ref().map(|_| "<redacted>"))
            .field("policy", &self.policy)
            .field("faults", &self.faults)
            .field("api_minor", &self.api_minor)
            .field("token_validity", &self.token_validity)
            .field("processing_polls", &self.processing_polls)
            .field("require_content_length", &self.require_content_length)
            .field("public_url", &self.public_url)
            .field("switches", &self.switches)
            .finish()
    }
}

impl SimOptions {
    /// For `cryptshare.url = "embedded"`: loopback, a free port, data under
    /// `cryptshare.embedded_data_dir` or `<state.dir>/cryptshare-sim`, every client id trusted.
    pub fn embedded(cfg: &crate::config::Config) -> Self {
        let dir = cfg
            .cryptshare
            .embedded_data_dir
            .clone()
            .unwrap_or_else(|| cfg.state.dir.join("cryptshare-sim"));
        SimOptions::new(SocketAddr::from(([127, 0, 0, 1], 0)), dir)
    }

    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        SimOptions {
            listen,
            data_dir: data_dir.into(),
            client_id: None,
            policy: SimPolicy::default(),
            faults: Vec::new(),
            api_minor: 8,
            token_validity: Duration::from_secs(3600),
            processing_polls: 1,
            require_content_length: true,
            public_url: None,
            switches: SimSwitches::default(),
        }
    }
}

/// A file of a finished transfer, stored at `path`.
#[derive(Debug, Clone, Serialize)]
pub struct SimFile {
    pub id: String,
    pub name: String,
    /// Registered size and checksum.
    pub size: u64,
    pub checksum: Option<String>,
    /// What was actually uploaded.
    pub uploaded_size: u64,
    pub uploaded_sha256: String,
    pub removed: bool,
    pub path: PathBuf,
}

/// A recipient of a finished transfer.
#[derive(Debug, Clone, Serialize)]
pub struct SimRecipient {
    pub mail: String,
    /// The recipient's transfer id (`GET /api/transfers/{id}`).
    pub transfer_id: String,
    pub download_url: String,
}

/// A finalized transfer as the emulator stored it.
#[derive(Clone, Serialize)]
pub struct FinishedTransfer {
    pub tracking_id: String,
    pub sender: String,
    pub recipients: Recipients,
    /// The session settings at finalize (securityMode without password).
    pub settings: TransferSession,
    pub password_mode: PasswordMode,
    /// The transfer password (also for mode `NONE`, where it is part of the download link).
    pub password: String,
    pub accept_language: Option<String>,
    pub files: Vec<SimFile>,
    pub recipient_ids: Vec<SimRecipient>,
    /// The final state (`ACTIVE` or `FAILED`), whatever polling has revealed so far.
    pub state: TransferState,
}

impl std::fmt::Debug for FinishedTransfer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FinishedTransfer")
            .field("tracking_id", &self.tracking_id)
            .field("sender", &self.sender)
            .field("recipients", &self.recipients)
            .field("password_mode", &self.password_mode)
            .field("files", &self.files)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// A JSON request body the emulator received (transfer policy, session creation, PATCH),
/// in arrival order: what a client actually sent, for assertions. The last
/// [`MAX_LOGGED_REQUESTS`] are kept.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimRequest {
    pub endpoint: Endpoint,
    /// The sender address of the path.
    pub sender: String,
    /// The tracking id of the path, for session calls.
    pub tracking_id: Option<String>,
    pub body: serde_json::Value,
}

/// Bound of the request log ([`EmulatorHandle::requests`], `GET /_sim/state`).
pub const MAX_LOGGED_REQUESTS: usize = 1000;

/// One `/api` call as the emulator saw it, in arrival order of the answers (the last
/// [`MAX_LOGGED_EXCHANGES`] are kept): for checking both sides against the OpenAPI file.
/// Bodies are logged when they are at most 1 MiB with a known length and not
/// `application/octet-stream` (file contents are never buffered); a body that is not JSON
/// is logged as a string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimExchange {
    pub method: String,
    /// The concrete path (`/api/users/a@b.c/transfer-sessions/…`), without the query.
    pub path: String,
    pub request_content_type: Option<String>,
    /// `Content-Length` (or the known size) of the request body.
    pub request_len: Option<u64>,
    pub request: Option<serde_json::Value>,
    pub status: u16,
    pub response_content_type: Option<String>,
    pub response_len: Option<u64>,
    pub response: Option<serde_json::Value>,
    /// The answer came from an injected [`FaultSpec`], not from the API logic.
    pub injected_fault: bool,
    /// [`SimSwitches::nulls_and_extra_fields`] was on when the answer was built.
    pub nulls_and_extra_fields: bool,
}

/// Bound of the exchange log ([`EmulatorHandle::exchanges`], `GET /_sim/state`).
pub const MAX_LOGGED_EXCHANGES: usize = 2000;

/// Counters for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SimStats {
    pub tokens_issued: u64,
    pub sessions_created: u64,
    pub sessions_deleted: u64,
    pub sessions_finalized: u64,
    pub uploads: u64,
    /// Uploads that arrived without a `Content-Length` header.
    pub uploads_without_length: u64,
    pub faults_fired: u64,
    pub requests: u64,
    /// Token requests refused by `SimSwitches::token_rate_limit`.
    pub tokens_rate_limited: u64,
    /// Session calls refused because they carried another token than the creating one.
    pub foreign_token_refusals: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("client id: must be 50 to 4000 letters and digits")]
    ClientId,
}

/// Starts emulators.
pub struct Emulator;

impl Emulator {
    /// For `cryptshare.url = "embedded"`: [`Emulator::start`] with [`SimOptions::embedded`],
    /// logging where it runs.
    pub async fn embedded(cfg: &crate::config::Config) -> Result<EmulatorHandle, SimError> {
        let handle = Emulator::start(SimOptions::embedded(cfg)).await?;
        tracing::info!(url = %handle.url(), data = %handle.data_dir().display(), "embedded Cryptshare emulator running");
        Ok(handle)
    }

    /// Bind, create `DATA/files` and `DATA/mails`, and serve in the background until
    /// [`EmulatorHandle::shutdown`] or until the last handle clone is dropped.
    pub async fn start(opts: SimOptions) -> Result<EmulatorHandle, SimError> {
        if let Some(id) = &opts.client_id
            && !crate::cryptshare::is_valid_client_id(id)
        {
            return Err(SimError::ClientId);
        }
        for sub in ["files", "mails"] {
            let p = opts.data_dir.join(sub);
            std::fs::create_dir_all(&p).map_err(|source| SimError::DataDir { path: p, source })?;
        }
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|source| SimError::Listen {
                addr: opts.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SimError::Listen {
            addr: opts.listen,
            source,
        })?;
        let state = server::Sim::new(opts, addr);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server::serve(
            conn::KillListener(listener),
            state.clone(),
            rx,
        ));
        Ok(EmulatorHandle {
            state,
            addr,
            guard: Arc::new(Guard {
                stop: Mutex::new(Some(tx)),
                task: Mutex::new(Some(task)),
            }),
        })
    }
}

struct Guard {
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.get_mut().ok().and_then(Option::take) {
            let _ = tx.send(());
        }
    }
}

/// A running emulator. Clones share it; it stops when the last clone is dropped.
#[derive(Clone)]
pub struct EmulatorHandle {
    state: Arc<server::Sim>,
    addr: SocketAddr,
    guard: Arc<Guard>,
}

impl std::fmt::Debug for EmulatorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl EmulatorHandle {
    /// Base URL (`http://127.0.0.1:PORT`); the API is under `/api`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn data_dir(&self) -> &Path {
        &self.state.opts.data_dir
    }

    /// Where the notification mails (`*.eml`) are written.
    pub fn mail_dir(&self) -> PathBuf {
        self.state.opts.data_dir.join("mails")
    }

    pub fn policy(&self) -> SimPolicy {
        self.state.lock().policy.clone()
    }

    pub fn set_policy(&self, policy: SimPolicy) {
        self.state.lock().policy = policy;
    }

    pub fn switches(&self) -> SimSwitches {
        self.state.lock().switches.clone()
    }

    pub fn set_switches(&self, switches: SimSwitches) {
        self.state.set_switches(switches);
    }

    pub fn inject_fault(&self, fault: FaultSpec) {
        self.state.lock().add_fault(fault);
    }

    pub fn clear_faults(&self) {
        self.state.lock().faults.clear();
    }

    pub fn faults(&self) -> Vec<FaultSpec> {
        self.state
            .lock()
            .faults
            .iter()
            .map(|f| f.spec.clone())
            .collect()
    }

    /// Invalidate every token issued so far (as if their validity ended).
    pub fn expire_tokens(&self) {
        self.state.lock().tokens.clear();
    }

    pub fn transfers(&self) -> Vec<FinishedTransfer> {
        self.state.lock().finished()
    }

    pub fn stats(&self) -> SimStats {
        self.state.lock().stats.clone()
    }

    /// Sessions created and neither finalized nor deleted.
    pub fn open_sessions(&self) -> usize {
        self.state.lock().sessions.len()
    }

    /// The JSON request bodies received so far (see [`SimRequest`]).
    pub fn requests(&self) -> Vec<SimRequest> {
        self.state.lock().requests.iter().cloned().collect()
    }

    /// The `/api` calls answered so far (see [`SimExchange`]).
    pub fn exchanges(&self) -> Vec<SimExchange> {
        self.state.lock().exchanges.iter().cloned().collect()
    }

    /// Stop accepting (new connections are refused from now on), give in-flight requests up
    /// to 5 s to finish, and wait for the server task.
    pub async fn shutdown(self) {
        if let Some(tx) = self.guard.stop.lock().ok().and_then(|mut g| g.take()) {
            let _ = tx.send(());
        }
        let task = self.guard.task.lock().ok().and_then(|mut g| g.take());
        if let Some(mut t) = task
            && tokio::time::timeout(Duration::from_secs(5), &mut t)
                .await
                .is_err()
        {
            // A delayed (latency-fault) or stalled request; do not hang the caller.
            t.abort();
        }
    }
}
