//! The emulator's core: shared state, API errors, the request checks every endpoint runs
//! first (faults, versions, client id, token), small helpers, and the router. The handlers
//! live in one module per resource (`auth`, `sessions`, `files`, `transfers`, `recipient`,
//! `control`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::Serialize;
use tokio::sync::oneshot;

use super::auth::*;
use super::conn::{ConnCtl, KillListener};
use super::control::*;
use super::files::*;
use super::recipient::*;
use super::sessions::*;
use super::transfers::*;
use super::{
    Endpoint, FaultSpec, FinishedTransfer, MAX_LOGGED_REQUESTS, SimExchange, SimFile, SimOptions,
    SimPolicy, SimRecipient, SimRequest, SimStats, SimSwitches,
};
use crate::cryptshare::types::*;

// ------------------------------------------------------------------------------------ state

pub(super) struct Sim {
    pub(super) opts: SimOptions,
    pub(super) addr: SocketAddr,
    pub(super) inner: Mutex<Inner>,
    /// `switches.nulls_and_extra_fields`, readable while `inner` is locked (answers are
    /// built under the lock).
    pub(super) noisy: AtomicBool,
}

pub(super) struct Inner {
    pub(super) policy: SimPolicy,
    pub(super) faults: Vec<FaultState>,
    pub(super) tokens: HashMap<String, TokenInfo>,
    pub(super) codes: HashMap<String, Vec<String>>,
    pub(super) sessions: HashMap<String, Session>,
    pub(super) transfers: Vec<Transfer>,
    pub(super) stats: SimStats,
    pub(super) mail_seq: u64,
    pub(super) switches: SimSwitches,
    /// When tokens were issued, per (address, client id), for the rate limit.
    pub(super) token_times: HashMap<(String, String), Vec<SystemTime>>,
    /// JSON request bodies, newest last, at most `MAX_LOGGED_REQUESTS`.
    pub(super) requests: std::collections::VecDeque<SimRequest>,
    /// Every `/api` call, newest last, at most `MAX_LOGGED_EXCHANGES` (`exchanges.rs`).
    pub(super) exchanges: std::collections::VecDeque<SimExchange>,
}

pub(super) struct FaultState {
    pub(super) spec: FaultSpec,
    pub(super) seen: u64,
    pub(super) fired: u32,
}

pub(super) struct TokenInfo {
    pub(super) email: String,
    pub(super) client_id: String,
    pub(super) expires: SystemTime,
}

pub(super) struct Session {
    pub(super) sender: String,
    pub(super) owner_email: String,
    pub(super) owner_client_id: String,
    pub(super) settings: TransferSession,
    pub(super) password: Option<String>,
    pub(super) files: Vec<SessionFile>,
    pub(super) accept_language: Option<String>,
    pub(super) dir: PathBuf,
    /// The token the session was created with (`SimSwitches::bind_session_tokens`).
    pub(super) token: String,
}

pub(super) struct SessionFile {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) size: u64,
    pub(super) checksum: Option<String>,
    pub(super) uploaded: Option<(u64, String)>,
    pub(super) path: PathBuf,
}

pub(super) struct Transfer {
    pub(super) tracking_id: String,
    pub(super) sender: String,
    pub(super) owner_email: String,
    pub(super) finalize_token: String,
    pub(super) settings: TransferSession,
    pub(super) password_mode: PasswordMode,
    pub(super) password: String,
    pub(super) accept_language: Option<String>,
    pub(super) files: Vec<SimFile>,
    pub(super) removal_causes: HashMap<String, String>,
    pub(super) recipients: Vec<(SimRecipient, Vec<(String, String)>)>,
    pub(super) final_state: TransferState,
    pub(super) polls_left: u32,
    /// `PROCESSING` until then (`SimSwitches::processing_time`).
    pub(super) processing_until: SystemTime,
}

impl Transfer {
    /// The state a status poll shows now; counts the poll against `processing_polls`.
    pub(super) fn poll_state(&mut self) -> TransferState {
        if self.polls_left > 0 {
            self.polls_left -= 1;
            TransferState::Processing
        } else {
            self.peek_state()
        }
    }

    /// The state a listing shows (not counted as a poll).
    pub(super) fn peek_state(&self) -> TransferState {
        if self.polls_left > 0 || SystemTime::now() < self.processing_until {
            TransferState::Processing
        } else {
            self.final_state
        }
    }
}

impl Sim {
    pub(super) fn new(opts: SimOptions, addr: SocketAddr) -> Arc<Sim> {
        let inner = Inner {
            policy: opts.policy.clone(),
            faults: Vec::new(),
            tokens: HashMap::new(),
            codes: HashMap::new(),
            sessions: HashMap::new(),
            transfers: Vec::new(),
            stats: SimStats::default(),
            mail_seq: 0,
            switches: opts.switches.clone(),
            token_times: HashMap::new(),
            requests: Default::default(),
            exchanges: Default::default(),
        };
        let sim = Arc::new(Sim {
            noisy: AtomicBool::new(opts.switches.nulls_and_extra_fields),
            opts,
            addr,
            inner: Mutex::new(inner),
        });
        {
            let mut g = sim.lock();
            for f in sim.opts.faults.clone() {
                g.add_fault(f);
            }
        }
        sim
    }

    pub(super) fn set_switches(&self, switches: SimSwitches) {
        let mut g = self.lock();
        self.noisy
            .store(switches.nulls_and_extra_fields, Ordering::Relaxed);
        g.switches = switches;
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        // Handlers never panic while holding the lock on purpose; if one did, the state is
        // still usable for an emulator.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn trusted(&self, client_id: &str) -> bool {
        match &self.opts.client_id {
            Some(id) => id == client_id,
            None => true,
        }
    }

    pub(super) fn base_url(&self, headers: &HeaderMap) -> String {
        if let Some(u) = &self.opts.public_url {
            return u.trim_end_matches('/').to_owned();
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| {
                !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
            })
            .map(str::to_owned)
            .unwrap_or_else(|| self.addr.to_string());
        format!("http://{host}")
    }
}

impl Inner {
    /// Log a JSON request body (see [`SimRequest`]); a body that is not JSON is logged as a string.
    pub(super) fn log_request(
        &mut self,
        endpoint: Endpoint,
        sender: &str,
        tracking_id: Option<&str>,
        body: &[u8],
    ) {
        let body = serde_json::from_slice(body).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(body).into_owned())
        });
        if self.requests.len() >= MAX_LOGGED_REQUESTS {
            self.requests.pop_front();
        }
        self.requests.push_back(SimRequest {
            endpoint,
            sender: sender.to_owned(),
            tracking_id: tracking_id.map(str::to_owned),
            body,
        });
    }

    pub(crate) fn add_fault(&mut self, spec: FaultSpec) {
        self.faults.push(FaultState {
            spec,
            seen: 0,
            fired: 0,
        });
    }

    /// The first fault that fires for this call, counting the call for every matching fault.
    pub(super) fn fault_for(&mut self, ep: Endpoint) -> Option<FaultSpec> {
        let mut hit = None;
        for f in &mut self.faults {
            if f.spec.endpoint != Endpoint::Any && f.spec.endpoint != ep {
                continue;
            }
            f.seen += 1;
            let nth = u64::from(f.spec.every_nth.max(1));
            let exhausted = f.spec.count.is_some_and(|c| f.fired >= c);
            if hit.is_none() && !exhausted && f.seen % nth == 0 {
                f.fired += 1;
                hit = Some(f.spec.clone());
            }
        }
        if hit.is_some() {
            self.stats.faults_fired += 1;
        }
        hit
    }

    pub(crate) fn finished(&self) -> Vec<FinishedTransfer> {
        self.transfers
            .iter()
            .map(|t| FinishedTransfer {
                tracking_id: t.tracking_id.clone(),
                sender: t.sender.clone(),
                recipients: t.settings.recipients.clone().unwrap_or_default(),
                settings: t.settings.clone(),
                password_mode: t.password_mode,
                password: t.password.clone(),
                accept_language: t.accept_language.clone(),
                files: t.files.clone(),
                recipient_ids: t.recipients.iter().map(|(r, _)| r.clone()).collect(),
                state: t.final_state,
            })
            .collect()
    }
}

// ------------------------------------------------------------------------------------ errors

pub(super) struct ApiErr {
    pub(super) status: StatusCode,
    pub(super) code: i32,
    pub(super) message: String,
    /// Answer as a reverse proxy would: an HTML page, no Cryptshare error body.
    pub(super) proxy: bool,
    /// From an injected fault (marked in the exchange log).
    pub(super) injected: bool,
}

pub(super) fn err(status: u16, code: i32, message: impl Into<String>) -> ApiErr {
    ApiErr {
        status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        code,
        message: message.into(),
        proxy: false,
        injected: false,
    }
}

pub(super) fn not_found() -> ApiErr {
    err(404, 2003, "Specified entity does not exist.")
}
pub(super) fn rule(message: &str) -> ApiErr {
    err(
        409,
        2001,
        format!("Some given values cannot be applied due to transfer rule restrictions: {message}"),
    )
}
/// The OpenAPI file declares only 400/403/404/500 for file registration and upload, and
/// 403/3011 for both: a size limit belongs to the merged sender/recipient policy rule.
pub(super) fn size_refused() -> ApiErr {
    err(
        403,
        3011,
        "Recipient and sender combination rejected by policy: maximum transfer size exceeded.",
    )
}
pub(super) fn invalid(message: &str) -> ApiErr {
    err(
        400,
        1004,
        format!("Invalid request parameter/header value: {message}"),
    )
}
/// A refused verification token (unknown, expired, of another address or client id) on `ep`:
/// 401/3002 where the OpenAPI file declares 401 for the operation (the session's GET and
/// DELETE, the transfer listing and status), else 403/3002 (declared for every sender
/// operation; the file's text for 3002 there is "Invalid verification data").
pub(super) fn token_refused(ep: Endpoint) -> ApiErr {
    match ep {
        Endpoint::GetSession
        | Endpoint::DeleteSession
        | Endpoint::Transfers
        | Endpoint::TransferStatus
        | Endpoint::Password => err(
            401,
            3002,
            "The provided verification token differs from the verification token used for patching the transfer.",
        ),
        _ => err(403, 3002, "Invalid verification data."),
    }
}

impl IntoResponse for ApiErr {
    fn into_response(self) -> Response {
        let mut r = self.response();
        if self.injected {
            r.extensions_mut().insert(super::exchanges::InjectedFault);
        }
        r
    }
}

impl ApiErr {
    fn response(&self) -> Response {
        if self.proxy {
            let reason = self.status.canonical_reason().unwrap_or("Error");
            let code = self.status.as_u16();
            let page = format!(
                "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n\
                 <center><h1>{code} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n\
                 </body>\r\n</html>\r\n"
            );
            return (self.status, [(header::CONTENT_TYPE, "text/html")], page).into_response();
        }
        let body = ApiError {
            error_code: Some(self.code),
            error_message: Some(self.message.clone()),
        };
        (self.status, axum::Json(body)).into_response()
    }
}

pub(super) type ApiResult = Result<Response, ApiErr>;

/// A successful JSON answer in the envelope; with `SimSwitches::nulls_and_extra_fields`,
/// with explicit nulls and an undeclared property in every object.
pub(super) fn ok_json<T: Serialize>(sim: &Sim, data: T) -> ApiResult {
    if !sim.noisy.load(Ordering::Relaxed) {
        return Ok(axum::Json(Envelope::new(data)).into_response());
    }
    let mut v =
        crate::cryptshare::types::with_explicit_nulls(|| serde_json::to_value(Envelope::new(data)))
            .map_err(|_| err(500, 5000, "serialization"))?;
    add_extra_fields(&mut v);
    Ok(axum::Json(v).into_response())
}

fn add_extra_fields(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for (_, x) in m.iter_mut() {
                add_extra_fields(x);
            }
            m.insert(
                "simExtension".into(),
                serde_json::json!({"note": "a property this API version does not declare"}),
            );
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(add_extra_fields),
        _ => {}
    }
}

pub(super) fn created(location: &str) -> ApiResult {
    let mut r = StatusCode::CREATED.into_response();
    let v = HeaderValue::from_str(location).map_err(|_| err(500, 5000, "bad location"))?;
    r.headers_mut().insert(header::LOCATION, v);
    Ok(r)
}

pub(super) fn default_code(status: u16) -> i32 {
    match status {
        400 => 1004,
        401 => 3002,
        403 => 3010,
        404 => 2003,
        409 => 2001,
        410 => 2006,
        429 => 2007,
        501 => 5001,
        _ => 5000,
    }
}

// ------------------------------------------------------------------------------------ request context

pub(super) struct Req {
    pub(super) conn: Option<ConnCtl>,
    pub(super) headers: HeaderMap,
    pub(super) query: HashMap<String, String>,
}

impl FromRequestParts<Arc<Sim>> for Req {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &Arc<Sim>) -> Result<Self, Self::Rejection> {
        let conn = parts
            .extensions
            .get::<ConnectInfo<ConnCtl>>()
            .map(|c| c.0.clone());
        let query = Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
            .map(|q| q.0)
            .unwrap_or_default();
        Ok(Req {
            conn,
            headers: parts.headers.clone(),
            query,
        })
    }
}

impl Req {
    pub(super) fn value(&self, header: &str, query: &str) -> Option<String> {
        self.headers
            .get(header)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| self.query.get(query).cloned())
    }
}

/// Which checks an endpoint needs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Level {
    /// `/api/status`: none at all.
    Nothing,
    /// `/api/clients`: versions and product key.
    Versions,
    /// Versions and a well-formed client id.
    ClientId,
    /// Plus a valid token for the address in the path.
    Verified,
}

pub(super) struct Ctx {
    /// The operation (for [`token_refused`]).
    pub(super) ep: Endpoint,
    pub(super) client_id: String,
    pub(super) token: String,
}

pub(super) async fn pre(
    sim: &Sim,
    ep: Endpoint,
    req: &Req,
    level: Level,
    email: Option<&str>,
) -> Result<Ctx, ApiErr> {
    let fault = {
        let mut g = sim.lock();
        g.stats.requests += 1;
        g.fault_for(ep)
    };
    if let Some(f) = fault {
        if let Some(l) = f.latency {
            tokio::time::sleep(l).await;
        }
        if f.drop_connection {
            if let Some(c) = &req.conn {
                c.kill();
            }
            let mut e = err(500, 5000, "connection dropped");
            e.injected = true;
            return Err(e);
        }
        if let Some(s) = f.status
            && f.proxy_page
        {
            let mut e = err(s, 0, "");
            e.proxy = true;
            e.injected = true;
            return Err(e);
        }
        if let Some(s) = f.status {
            let mut e = err(
                s,
                f.error_code.unwrap_or_else(|| default_code(s)),
                "Injected fault.",
            );
            e.injected = true;
            return Err(e);
        }
    }
    let mut ctx = Ctx {
        ep,
        client_id: String::new(),
        token: String::new(),
    };
    if level == Level::Nothing {
        return Ok(ctx);
    }
    let major = req
        .value("x-cs-majorapiversion", "major-api-version")
        .ok_or_else(|| missing("X-CS-MajorApiVersion"))?;
    let major: u32 = major
        .trim()
        .parse()
        .map_err(|_| invalid("X-CS-MajorApiVersion"))?;
    let minor = req
        .value("x-cs-minimumminorapiversion", "minimum-minor-api-version")
        .ok_or_else(|| missing("X-CS-MinimumMinorApiVersion"))?;
    let minor: u32 = minor
        .trim()
        .parse()
        .map_err(|_| invalid("X-CS-MinimumMinorApiVersion"))?;
    if major != 1 || minor > sim.opts.api_minor {
        return Err(err(404, 2004, "Specified version is not supported."));
    }
    if let Some(pk) = req.value("x-cs-productkey", "product-key")
        && pk != "api.rest"
    {
        return Err(invalid("unknown product key"));
    }
    if level == Level::Versions {
        return Ok(ctx);
    }
    let cid = req
        .value("x-cs-clientid", "client-id")
        .ok_or_else(|| missing("X-CS-ClientId"))?;
    if !crate::cryptshare::is_valid_client_id(&cid) {
        return Err(invalid("X-CS-ClientId"));
    }
    ctx.client_id = cid;
    if let Some(e) = email
        && !valid_email(e)
    {
        return Err(err(400, 1005, "Invalid path variable: email address."));
    }
    if level == Level::ClientId {
        return Ok(ctx);
    }
    let token = req
        .value("x-cs-verificationtoken", "verification-token")
        .ok_or_else(|| missing("X-CS-VerificationToken"))?;
    let email = email.unwrap_or_default().to_ascii_lowercase();
    let g = sim.lock();
    match g.tokens.get(&token) {
        Some(t)
            if t.email == email
                && t.client_id == ctx.client_id
                && SystemTime::now() < t.expires => {}
        _ => return Err(token_refused(ep)),
    }
    drop(g);
    ctx.token = token;
    Ok(ctx)
}

pub(super) fn missing(what: &str) -> ApiErr {
    err(
        400,
        1002,
        format!("Missing required request parameter/header: {what}"),
    )
}

pub(super) fn valid_email(e: &str) -> bool {
    let Some((local, domain)) = e.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && e.len() <= 254
        && e.chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && !"/\\<>,;\"".contains(c))
}

pub(super) fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    // Iterative wildcard match with backtracking to the last `*`.
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

impl SimPolicy {
    pub(super) fn sender_allowed(&self, sender: &str) -> bool {
        self.allowed_senders.is_empty() || self.allowed_senders.iter().any(|p| glob(p, sender))
    }
    pub(super) fn recipient_allowed(&self, rcpt: &str) -> bool {
        let domain = rcpt.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        let lc = rcpt.to_ascii_lowercase();
        (self.allowed_recipient_domains.is_empty()
            || self
                .allowed_recipient_domains
                .iter()
                .any(|p| glob(p, domain)))
            && !self
                .refused_recipients
                .iter()
                .any(|p| glob(&p.to_ascii_lowercase(), &lc))
    }
    pub(super) fn settings(&self) -> TransferPolicySettings {
        TransferPolicySettings {
            confidential_message_allowed: self.confidential_message_allowed,
            confidential_message_required: self.confidential_message_required,
            max_retention_period: i64::from(self.max_retention_period),
            max_total_size: i64::try_from(self.max_total_size).unwrap_or(i64::MAX),
            recipient_notification_editable: self.recipient_notification_editable,
            security_modes: vec![PolicySecurityMode {
                name: "ONE_TIME_PASSWORD".into(),
                config: PolicySecurityModeConfig {
                    allowed_password_modes: self.allowed_password_modes.clone(),
                },
            }],
            send_download_notifications_changeable: self.send_download_notifications_changeable,
            send_download_notifications_default: self.send_download_notifications_default,
            show_file_names_changeable: self.show_file_names_changeable,
            show_file_names_default: self.show_file_names_default,
            show_zip_file_content_default: self.show_zip_file_content_default,
        }
    }
}

/// Now plus the retention period, capped (a policy set over HTTP may say anything).
pub(super) fn retention_end(days: u32) -> chrono::DateTime<chrono::Utc> {
    let days = chrono::Duration::days(i64::from(days.min(36_500)));
    chrono::Utc::now() + days
}

pub(super) fn random_alnum(n: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

pub(super) fn now_string() -> String {
    format_date_time(&chrono::Utc::now().fixed_offset())
}

pub(super) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiErr> {
    serde_json::from_slice(body).map_err(|e| invalid(&format!("request body: {e}")))
}

// ------------------------------------------------------------------------------------ router

pub(super) async fn serve(listener: KillListener, sim: Arc<Sim>, stop: oneshot::Receiver<()>) {
    let users = Router::new()
        .route("/verification", get(verification_status))
        .route("/verification/code/email", post(verification_code))
        .route("/verification/token", post(verification_token))
        .route("/transfer-policy", post(transfer_policy))
        .route("/transfer-sessions", post(create_session))
        .route(
            "/transfer-sessions/{tid}",
            get(get_session)
                .patch(patch_session)
                .delete(delete_session)
                .post(finalize),
        )
        .route("/transfer-sessions/{tid}/files", post(register_file))
        .route(
            "/transfer-sessions/{tid}/files/{fid}",
            axum::routing::delete(delete_file),
        )
        .route("/transfer-sessions/{tid}/files/{fid}/content", put(upload))
        .route("/transfers", get(list_transfers))
        .route("/transfers/{tid}", get(transfer_status));
    let app = Router::new()
        .route("/download", get(web_download))
        .route("/api/status", get(status))
        .route("/api/clients", get(clients))
        .route("/api/password", get(password))
        .nest("/api/users/{email}", users)
        .route("/api/transfers/{rid}", get(recipient_info))
        .route("/api/transfers/{rid}/files", get(recipient_files))
        .route("/api/transfers/{rid}/files/{fid}", get(recipient_download))
        .route("/api/transfers/{rid}/eml", get(recipient_eml))
        .route(
            "/_sim/faults",
            get(ctl_faults).post(ctl_add_fault).delete(ctl_clear_faults),
        )
        .route("/_sim/policy", get(ctl_policy).put(ctl_set_policy))
        .route("/_sim/switches", get(ctl_switches).put(ctl_set_switches))
        .route("/_sim/expire-tokens", post(ctl_expire_tokens))
        .route("/_sim/state", get(ctl_state))
        .fallback(|| async { err(404, 1006, "Specified endpoint does not exist.") })
        .layer(axum::middleware::from_fn_with_state(
            sim.clone(),
            super::exchanges::record,
        ))
        .with_state(sim);
    let _ = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<ConnCtl>(),
    )
    .with_graceful_shutdown(async {
        let _ = stop.await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn glob_matches() {
        assert!(glob("*@example.org", "a@example.org"));
        assert!(glob("*@*.example.org", "a@mail.example.org"));
        assert!(!glob("*@*.example.org", "a@example.org"));
        assert!(glob("*", ""));
        assert!(glob("A@B.c", "a@b.C"));
        assert!(!glob("a*b", "ac"));
    }

    #[test]
    fn emails() {
        assert!(valid_email("a.b@example.org"));
        assert!(!valid_email("a@b"));
        assert!(!valid_email("a b@example.org"));
        assert!(!valid_email("@example.org"));
        assert!(!valid_email("a/b@example.org"));
    }
}
