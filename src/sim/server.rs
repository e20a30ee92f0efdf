//! Router, state and handlers of the emulator.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use futures_util::StreamExt;
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

use super::conn::{ConnCtl, KillListener};
use super::mail::Mail;
use super::{
    Endpoint, FaultSpec, FinishedTransfer, SimFile, SimOptions, SimPolicy, SimRecipient, SimStats,
};
use crate::cryptshare::types::*;

// ------------------------------------------------------------------------------------ state

pub(crate) struct Sim {
    pub(crate) opts: SimOptions,
    addr: SocketAddr,
    inner: Mutex<Inner>,
}

pub(crate) struct Inner {
    pub(crate) policy: SimPolicy,
    pub(crate) faults: Vec<FaultState>,
    pub(crate) tokens: HashMap<String, TokenInfo>,
    codes: HashMap<String, Vec<String>>,
    pub(crate) sessions: HashMap<String, Session>,
    transfers: Vec<Transfer>,
    pub(crate) stats: SimStats,
    mail_seq: u64,
}

pub(crate) struct FaultState {
    pub(crate) spec: FaultSpec,
    seen: u64,
    fired: u32,
}

pub(crate) struct TokenInfo {
    email: String,
    client_id: String,
    expires: SystemTime,
}

pub(crate) struct Session {
    sender: String,
    owner_email: String,
    owner_client_id: String,
    settings: TransferSession,
    password: Option<String>,
    files: Vec<SessionFile>,
    accept_language: Option<String>,
    dir: PathBuf,
}

struct SessionFile {
    id: String,
    name: String,
    size: u64,
    checksum: Option<String>,
    uploaded: Option<(u64, String)>,
    path: PathBuf,
}

struct Transfer {
    tracking_id: String,
    sender: String,
    owner_email: String,
    finalize_token: String,
    settings: TransferSession,
    password_mode: PasswordMode,
    password: String,
    accept_language: Option<String>,
    files: Vec<SimFile>,
    removal_causes: HashMap<String, String>,
    recipients: Vec<(SimRecipient, Vec<(String, String)>)>,
    final_state: TransferState,
    polls_left: u32,
}

impl Sim {
    pub(crate) fn new(opts: SimOptions, addr: SocketAddr) -> Arc<Sim> {
        let inner = Inner {
            policy: opts.policy.clone(),
            faults: Vec::new(),
            tokens: HashMap::new(),
            codes: HashMap::new(),
            sessions: HashMap::new(),
            transfers: Vec::new(),
            stats: SimStats::default(),
            mail_seq: 0,
        };
        let sim = Arc::new(Sim {
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

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // Handlers never panic while holding the lock on purpose; if one did, the state is
        // still usable for an emulator.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn trusted(&self, client_id: &str) -> bool {
        match &self.opts.client_id {
            Some(id) => id == client_id,
            None => true,
        }
    }

    fn base_url(&self, headers: &HeaderMap) -> String {
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
    pub(crate) fn add_fault(&mut self, spec: FaultSpec) {
        self.faults.push(FaultState {
            spec,
            seen: 0,
            fired: 0,
        });
    }

    /// The first fault that fires for this call, counting the call for every matching fault.
    fn fault_for(&mut self, ep: Endpoint) -> Option<FaultSpec> {
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

pub(crate) struct ApiErr {
    status: StatusCode,
    code: i32,
    message: String,
}

fn err(status: u16, code: i32, message: impl Into<String>) -> ApiErr {
    ApiErr {
        status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        code,
        message: message.into(),
    }
}

fn not_found() -> ApiErr {
    err(404, 2003, "Specified entity does not exist.")
}
fn rule(message: &str) -> ApiErr {
    err(
        409,
        2001,
        format!("Some given values cannot be applied due to transfer rule restrictions: {message}"),
    )
}
/// The OpenAPI file declares only 400/403/404/500 for file registration and upload, and
/// 403/3011 for both: a size limit belongs to the merged sender/recipient policy rule.
fn size_refused() -> ApiErr {
    err(
        403,
        3011,
        "Recipient and sender combination rejected by policy: maximum transfer size exceeded.",
    )
}
fn invalid(message: &str) -> ApiErr {
    err(
        400,
        1004,
        format!("Invalid request parameter/header value: {message}"),
    )
}
fn token_refused() -> ApiErr {
    err(
        401,
        3002,
        "The provided verification token differs from the verification token used for patching the transfer.",
    )
}

impl IntoResponse for ApiErr {
    fn into_response(self) -> Response {
        let body = ApiError {
            error_code: Some(self.code),
            error_message: Some(self.message),
        };
        (self.status, axum::Json(body)).into_response()
    }
}

type ApiResult = Result<Response, ApiErr>;

fn ok_json<T: Serialize>(data: T) -> ApiResult {
    Ok(axum::Json(Envelope::new(data)).into_response())
}

fn created(location: &str) -> ApiResult {
    let mut r = StatusCode::CREATED.into_response();
    let v = HeaderValue::from_str(location).map_err(|_| err(500, 5000, "bad location"))?;
    r.headers_mut().insert(header::LOCATION, v);
    Ok(r)
}

fn default_code(status: u16) -> i32 {
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

pub(crate) struct Req {
    conn: Option<ConnCtl>,
    headers: HeaderMap,
    query: HashMap<String, String>,
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
    fn value(&self, header: &str, query: &str) -> Option<String> {
        self.headers
            .get(header)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| self.query.get(query).cloned())
    }
}

/// Which checks an endpoint needs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    /// `/api/status`: none at all.
    Nothing,
    /// `/api/clients`: versions and product key.
    Versions,
    /// Versions and a well-formed client id.
    ClientId,
    /// Plus a valid token for the address in the path.
    Verified,
}

struct Ctx {
    client_id: String,
    token: String,
}

async fn pre(
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
            return Err(err(500, 5000, "connection dropped"));
        }
        if let Some(s) = f.status {
            return Err(err(
                s,
                f.error_code.unwrap_or_else(|| default_code(s)),
                "Injected fault.",
            ));
        }
    }
    let mut ctx = Ctx {
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
        _ => return Err(token_refused()),
    }
    drop(g);
    ctx.token = token;
    Ok(ctx)
}

fn missing(what: &str) -> ApiErr {
    err(
        400,
        1002,
        format!("Missing required request parameter/header: {what}"),
    )
}

fn valid_email(e: &str) -> bool {
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

fn glob(pattern: &str, text: &str) -> bool {
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
    fn sender_allowed(&self, sender: &str) -> bool {
        self.allowed_senders.is_empty() || self.allowed_senders.iter().any(|p| glob(p, sender))
    }
    fn recipient_allowed(&self, rcpt: &str) -> bool {
        let domain = rcpt.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        self.allowed_recipient_domains.is_empty()
            || self
                .allowed_recipient_domains
                .iter()
                .any(|p| glob(p, domain))
    }
    fn settings(&self) -> TransferPolicySettings {
        TransferPolicySettings {
            confidential_message_allowed: true,
            confidential_message_required: false,
            max_retention_period: i64::from(self.max_retention_period),
            max_total_size: i64::try_from(self.max_total_size).unwrap_or(i64::MAX),
            recipient_notification_editable: true,
            security_modes: vec![PolicySecurityMode {
                name: "ONE_TIME_PASSWORD".into(),
                config: PolicySecurityModeConfig {
                    allowed_password_modes: self.allowed_password_modes.clone(),
                },
            }],
            send_download_notifications_changeable: true,
            send_download_notifications_default: false,
            show_file_names_changeable: true,
            show_file_names_default: self.show_file_names_default,
            show_zip_file_content_default: false,
        }
    }
}

/// Now plus the retention period, capped (a policy set over HTTP may say anything).
fn retention_end(days: u32) -> chrono::DateTime<chrono::Utc> {
    let days = chrono::Duration::days(i64::from(days.min(36_500)));
    chrono::Utc::now() + days
}

fn random_alnum(n: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

fn now_string() -> String {
    format_date_time(&chrono::Utc::now().fixed_offset())
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiErr> {
    serde_json::from_slice(body).map_err(|e| invalid(&format!("request body: {e}")))
}

// ------------------------------------------------------------------------------------ router

pub(crate) async fn serve(listener: KillListener, sim: Arc<Sim>, stop: oneshot::Receiver<()>) {
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
        .route(
            "/_sim/faults",
            get(ctl_faults).post(ctl_add_fault).delete(ctl_clear_faults),
        )
        .route("/_sim/policy", get(ctl_policy).put(ctl_set_policy))
        .route("/_sim/expire-tokens", post(ctl_expire_tokens))
        .route("/_sim/state", get(ctl_state))
        .fallback(|| async { err(404, 1006, "Specified endpoint does not exist.") })
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

// ------------------------------------------------------------------------------------ general

async fn status(State(sim): State<Arc<Sim>>, req: Req) -> ApiResult {
    pre(&sim, Endpoint::Status, &req, Level::Nothing, None).await?;
    // API ≥1.13, documented unwrapped.
    Ok(axum::Json(serde_json::json!({
        "apiVersions": {"uiApiVersions": [{"major": 1, "minor": sim.opts.api_minor}]}
    }))
    .into_response())
}

async fn clients(State(sim): State<Arc<Sim>>, req: Req) -> ApiResult {
    pre(&sim, Endpoint::Clients, &req, Level::Versions, None).await?;
    ok_json(ClientIdBody {
        client_id: random_alnum(64),
    })
}

async fn password(State(sim): State<Arc<Sim>>, req: Req) -> ApiResult {
    pre(&sim, Endpoint::Password, &req, Level::ClientId, None).await?;
    ok_json(serde_json::json!({ "password": random_alnum(12) }))
}

// ------------------------------------------------------------------------------------ verification

async fn verification_status(
    State(sim): State<Arc<Sim>>,
    Path(email): Path<String>,
    req: Req,
) -> ApiResult {
    let ctx = pre(
        &sim,
        Endpoint::Verification,
        &req,
        Level::ClientId,
        Some(&email),
    )
    .await?;
    let lc = email.to_ascii_lowercase();
    let valid = req
        .value("x-cs-verificationtoken", "verification-token")
        .and_then(|t| {
            let g = sim.lock();
            g.tokens
                .get(&t)
                .filter(|i| {
                    i.email == lc && i.client_id == ctx.client_id && SystemTime::now() < i.expires
                })
                .map(|i| i.expires)
        });
    let mut methods = Vec::new();
    if sim.trusted(&ctx.client_id) {
        methods.push("CLIENT_ID".to_owned());
    }
    methods.push("EMAIL".to_owned());
    ok_json(VerificationStatus {
        valid_until: valid
            .map(|e| format_date_time(&chrono::DateTime::<chrono::Utc>::from(e).fixed_offset())),
        verification_methods: methods,
        verified: valid.is_some(),
    })
}

async fn verification_code(
    State(sim): State<Arc<Sim>>,
    Path(email): Path<String>,
    req: Req,
) -> ApiResult {
    pre(
        &sim,
        Endpoint::VerificationCode,
        &req,
        Level::ClientId,
        Some(&email),
    )
    .await?;
    let code = random_alnum(10);
    let seq = {
        let mut g = sim.lock();
        let codes = g.codes.entry(email.to_ascii_lowercase()).or_default();
        codes.push(code.clone());
        // Only the last few issued codes stay valid.
        if codes.len() > 3 {
            codes.remove(0);
        }
        g.mail_seq += 1;
        g.mail_seq
    };
    let mail = Mail {
        to: &email,
        subject: "Your Cryptshare verification code",
        body: format!("Your verification code is: {code}\n"),
        message_id: format!("verification.{seq}@cryptshare-sim.invalid"),
        tracking_id: None,
    };
    write_mails(
        &sim,
        vec![(mail_owned(mail), format!("verification-{seq}.eml"))],
    )
    .await;
    Ok(StatusCode::OK.into_response())
}

async fn verification_token(
    State(sim): State<Arc<Sim>>,
    Path(email): Path<String>,
    req: Req,
    body: Bytes,
) -> ApiResult {
    let ctx = pre(&sim, Endpoint::Token, &req, Level::ClientId, Some(&email)).await?;
    let body: RequestVerificationBody = if body.iter().all(u8::is_ascii_whitespace) {
        RequestVerificationBody::default()
    } else {
        parse_json(&body)?
    };
    let lc = email.to_ascii_lowercase();
    let mut g = sim.lock();
    match body.verification_code {
        Some(code) => {
            let codes = g.codes.entry(lc.clone()).or_default();
            let Some(pos) = codes.iter().position(|c| *c == code) else {
                return Err(err(403, 3002, "Invalid verification data."));
            };
            codes.remove(pos);
        }
        None if sim.trusted(&ctx.client_id) => {}
        None => return Err(err(403, 3002, "Invalid verification data.")),
    }
    let token = random_alnum(48);
    let expires = SystemTime::now() + sim.opts.token_validity;
    g.tokens.insert(
        token.clone(),
        TokenInfo {
            email: lc,
            client_id: ctx.client_id,
            expires,
        },
    );
    g.stats.tokens_issued += 1;
    drop(g);
    ok_json(VerificationToken {
        token,
        valid_until: Some(format_date_time(
            &chrono::DateTime::<chrono::Utc>::from(expires).fixed_offset(),
        )),
    })
}

// ------------------------------------------------------------------------------------ policy + sessions

async fn transfer_policy(
    State(sim): State<Arc<Sim>>,
    Path(email): Path<String>,
    req: Req,
    body: Bytes,
) -> ApiResult {
    pre(
        &sim,
        Endpoint::TransferPolicy,
        &req,
        Level::Verified,
        Some(&email),
    )
    .await?;
    let body: TransferPolicyRequest = parse_json(&body)?;
    let policy = sim.lock().policy.clone();
    if !policy.sender_allowed(&email) {
        return Err(sender_rejected());
    }
    let mut failed: Vec<FailedRecipient> = Vec::new();
    for r in &body.recipients {
        if (!valid_email(r) || !policy.recipient_allowed(r))
            && !failed.iter().any(|f| f.email_address == *r)
        {
            failed.push(FailedRecipient {
                email_address: r.clone(),
                reason: "POLICY_MISMATCH".into(),
            });
        }
    }
    if failed.is_empty() {
        ok_json(TransferPolicyResult {
            allowed: true,
            failed_recipients: None,
            settings: Some(policy.settings()),
        })
    } else {
        ok_json(TransferPolicyResult {
            allowed: false,
            failed_recipients: Some(failed),
            settings: None,
        })
    }
}

fn sender_rejected() -> ApiErr {
    err(
        403,
        3010,
        "Email address and (possibly) IP address of the sender is rejected by policy.",
    )
}

fn dedup(list: Vec<Recipient>, seen: &mut Vec<String>) -> Result<Vec<Recipient>, ApiErr> {
    let mut out = Vec::new();
    for r in list {
        if !valid_email(&r.mail) {
            return Err(invalid("recipient address"));
        }
        let lc = r.mail.to_ascii_lowercase();
        if !seen.contains(&lc) {
            seen.push(lc);
            out.push(r);
        }
    }
    Ok(out)
}

fn accept_language(req: &Req) -> Option<String> {
    let raw = req.headers.get(header::ACCEPT_LANGUAGE)?.to_str().ok()?;
    let first = raw.split(',').next()?.split(';').next()?.trim();
    (!first.is_empty()
        && first.len() <= 35
        && first
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    .then(|| first.to_owned())
}

async fn create_session(
    State(sim): State<Arc<Sim>>,
    Path(email): Path<String>,
    req: Req,
    body: Bytes,
) -> ApiResult {
    let ctx = pre(
        &sim,
        Endpoint::CreateSession,
        &req,
        Level::Verified,
        Some(&email),
    )
    .await?;
    let body: NewTransferSession = parse_json(&body)?;
    let mut seen = Vec::new();
    let recipients = Recipients {
        to: dedup(body.recipients.to, &mut seen)?,
        cc: dedup(body.recipients.cc, &mut seen)?,
        bcc: dedup(body.recipients.bcc, &mut seen)?,
    };
    if seen.is_empty() {
        return Err(invalid("at least one recipient is required"));
    }
    let lang = accept_language(&req);
    let (tracking_id, dir) = (|| -> Result<_, ApiErr> {
        let mut g = sim.lock();
        if !g.policy.sender_allowed(&email) {
            return Err(sender_rejected());
        }
        if recipients.all().any(|r| !g.policy.recipient_allowed(r)) {
            return Err(err(
                403,
                3011,
                "Recipient and sender combination rejected by policy.",
            ));
        }
        let tracking_id = loop {
            let id = format!(
                "{}-{}",
                chrono::Utc::now().format("%Y%m%d-%H%M%S"),
                random_alnum(8)
            );
            if !g.sessions.contains_key(&id) && !g.transfers.iter().any(|t| t.tracking_id == id) {
                break id;
            }
        };
        let expiration = retention_end(g.policy.max_retention_period).fixed_offset();
        let mode = g
            .policy
            .allowed_password_modes
            .first()
            .copied()
            .unwrap_or(PasswordMode::Generated);
        let language = lang.clone().unwrap_or_else(|| "en".into());
        let settings = TransferSession {
            sender: Some(body.sender),
            recipients: Some(recipients),
            expiration_date: Some(format_date_time(&expiration)),
            security_mode: Some(SecurityMode::one_time_password(mode, None)),
            notification_message: Some(NotificationMessage {
                subject: Some(String::new()),
                body: Some(String::new()),
            }),
            sender_language: Some(language.clone()),
            recipient_language: Some(language),
            show_file_names: Some(g.policy.show_file_names_default),
            show_zip_file_content: Some(false),
            send_recipient_notification: Some(true),
            send_upload_summary: Some(true),
            send_download_notifications: Some(false),
            send_download_summary: Some(false),
            classification_id: None,
            file_checksum_algorithm: Some("SHA256".into()),
            confidential_message_file_id: None,
            files: None,
        };
        let dir = sim.opts.data_dir.join("files").join(&tracking_id);
        g.sessions.insert(
            tracking_id.clone(),
            Session {
                sender: email.clone(),
                owner_email: email.to_ascii_lowercase(),
                owner_client_id: ctx.client_id,
                settings,
                password: None,
                files: Vec::new(),
                accept_language: lang,
                dir: dir.clone(),
            },
        );
        g.stats.sessions_created += 1;
        Ok((tracking_id, dir))
    })()?;
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|_| err(500, 5000, "storage error"))?;
    created(&format!(
        "{}/api/users/{}/transfer-sessions/{}",
        sim.base_url(&req.headers),
        email,
        tracking_id
    ))
}

/// The session `tid` of `email`, owned by the caller's client id.
fn session_mut<'a>(
    g: &'a mut Inner,
    email: &str,
    tid: &str,
    ctx: &Ctx,
) -> Result<&'a mut Session, ApiErr> {
    let s = g.sessions.get_mut(tid).ok_or_else(not_found)?;
    if s.owner_email != email.to_ascii_lowercase() {
        return Err(not_found());
    }
    if s.owner_client_id != ctx.client_id {
        return Err(token_refused());
    }
    Ok(s)
}

fn session_view(s: &Session, email: &str, tid: &str) -> TransferSession {
    let mut v = s.settings.clone();
    if let Some(m) = &mut v.security_mode {
        // Never echoed: the client knows a manual password, a generated one goes by mail.
        m.config.password = None;
    }
    v.files = Some(
        s.files
            .iter()
            .map(|f| TransferSessionFile {
                id: f.id.clone(),
                file_name: f.name.clone(),
                size: i64::try_from(f.size).unwrap_or(i64::MAX),
                checksum: f.checksum.clone(),
                href: Some(format!(
                    "/api/users/{email}/transfer-sessions/{tid}/files/{}",
                    f.id
                )),
                state: if f.uploaded.is_some() {
                    "UPLOADED"
                } else {
                    "INITIALIZED"
                }
                .into(),
            })
            .collect(),
    );
    v
}

async fn get_session(
    State(sim): State<Arc<Sim>>,
    Path((email, tid)): Path<(String, String)>,
    req: Req,
) -> ApiResult {
    let ctx = pre(
        &sim,
        Endpoint::GetSession,
        &req,
        Level::Verified,
        Some(&email),
    )
    .await?;
    let mut g = sim.lock();
    let s = session_mut(&mut g, &email, &tid, &ctx)?;
    ok_json(session_view(s, &email, &tid))
}

async fn patch_session(
    State(sim): State<Arc<Sim>>,
    Path((email, tid)): Path<(String, String)>,
    req: Req,
    body: Bytes,
) -> ApiResult {
    let ctx = pre(
        &sim,
        Endpoint::PatchSession,
        &req,
        Level::Verified,
        Some(&email),
    )
    .await?;
    let raw: serde_json::Value = parse_json(&body)?;
    let obj = raw
        .as_object()
        .ok_or_else(|| invalid("request body must be an object"))?;
    for ro in ["recipients", "files"] {
        if obj.contains_key(ro) {
            return Err(invalid(&format!("{ro} is read-only")));
        }
    }
    let patch: TransferSessionPatch = parse_json(&body)?;
    let mut g = sim.lock();
    let policy = g.policy.clone();
    let s = session_mut(&mut g, &email, &tid, &ctx)?;

    // Validate everything before changing anything.
    if let Some(d) = &patch.expiration_date {
        let t = parse_date_time(d).ok_or_else(|| invalid("expirationDate"))?;
        let now = chrono::Utc::now();
        // Clients compute "now + N days" on their own clock.
        let max = retention_end(policy.max_retention_period) + chrono::Duration::minutes(5);
        if t <= now || t > max {
            return Err(rule("expirationDate outside the retention period"));
        }
    }
    if let Some(m) = &patch.security_mode {
        match m.name.as_str() {
            "ONE_TIME_PASSWORD" => {}
            "QUICK" => return Err(err(501, 5001, "Unsupported operation: QUICK")),
            "EID" => return Err(err(501, 5002, "Unsupported operation: eID")),
            _ => return Err(invalid("securityMode.name")),
        }
        let mode = m
            .config
            .password_mode
            .ok_or_else(|| invalid("securityMode.config.passwordMode"))?;
        if !policy.allowed_password_modes.contains(&mode) {
            return Err(rule("password mode not allowed"));
        }
        if mode == PasswordMode::Manual && m.config.password.as_ref().is_none_or(|p| p.len() < 8) {
            return Err(rule(
                "a manual password of at least 8 characters is required",
            ));
        }
    }
    if let Some(a) = &patch.file_checksum_algorithm
        && !matches!(a.as_str(), "SHA256" | "SHA-256")
    {
        return Err(invalid("fileChecksumAlgorithm"));
    }
    if let Some(f) = &patch.confidential_message_file_id
        && !s.files.iter().any(|x| x.id == *f)
    {
        return Err(not_found());
    }
    for l in [&patch.sender_language, &patch.recipient_language]
        .into_iter()
        .flatten()
    {
        if l.is_empty() || !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(invalid("language"));
        }
    }

    let st = &mut s.settings;
    if let Some(v) = patch.sender {
        st.sender = Some(v);
    }
    if let Some(v) = patch.expiration_date {
        st.expiration_date = Some(v);
    }
    if let Some(mut v) = patch.security_mode {
        s.password = match v.config.password_mode {
            Some(PasswordMode::None) => None,
            _ => v.config.password.take(),
        };
        st.security_mode = Some(v);
    }
    if let Some(v) = patch.notification_message {
        let cur = st.notification_message.get_or_insert_with(Default::default);
        if v.subject.is_some() {
            cur.subject = v.subject;
        }
        if v.body.is_some() {
            cur.body = v.body;
        }
    }
    macro_rules! merge {
        ($($f:ident),*) => { $( if patch.$f.is_some() { st.$f = patch.$f; } )* };
    }
    merge!(
        sender_language,
        recipient_language,
        show_file_names,
        show_zip_file_content,
        send_recipient_notification,
        send_upload_summary,
        send_download_notifications,
        send_download_summary,
        classification_id,
        file_checksum_algorithm,
        confidential_message_file_id
    );
    ok_json(session_view(s, &email, &tid))
}

async fn delete_session(
    State(sim): State<Arc<Sim>>,
    Path((email, tid)): Path<(String, String)>,
    req: Req,
) -> ApiResult {
    let ctx = pre(
        &sim,
        Endpoint::DeleteSession,
        &req,
        Level::Verified,
        Some(&email),
    )
    .await?;
    let dir = {
        let mut g = sim.lock();
        session_mut(&mut g, &email, &tid, &ctx)?;
        let s = g.sessions.remove(&tid).ok_or_else(not_found)?;
        g.stats.sessions_deleted += 1;
        s.dir
    };
    let _ = tokio::fs::remove_dir_all(dir).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ------------------------------------------------------------------------------------ files

fn valid_file_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 255
        && !n.chars().any(|c| c.is_control() || c == '/' || c == '\\')
        && n != "."
        && n != ".."
}

async fn register_file(
    State(sim): State<Arc<Sim>>,
    Path((email, tid)): Path<(String, String)>,
    req: Req,
    body: Bytes,
) -> ApiResult {
    let ctx = pre(
        &sim,
        Endpoint::RegisterFile,
        &req,
        Level::Verified,
        Some(&email),
    )
    .await?;
    let f: NewTransferFile = parse_json(&body)?;
    if !valid_file_name(&f.file_name) {
        return Err(invalid("fileName"));
    }
    let size = u64::try_from(f.size).map_err(|_| invalid("size"))?;
    if let Some(c) = &f.checksum
        && (c.len() != 64 || !c.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(invalid("checksum"));
    }
    let mut g = sim.lock();
    let max = g.policy.max_total_size;
    let s = session_mut(&mut g, &email, &tid, &ctx)?;
    if s.files.iter().any(|x| x.name == f.file_name) {
        return Err(invalid("fileName already used in this transfer"));
    }
    let total: u64 = s
        .files
        .iter()
        .map(|x| x.size)
        .sum::<u64>()
        .saturating_add(size);
    if total > max {
        return Err(size_refused());
    }
    let id = random_alnum(10);
    s.files.push(SessionFile {
        id: id.clone(),
        name: f.file_name,
        size,
        checksum: f.checksum.map(|c| c.to_ascii_lowercase()),
        uploaded: None,
        path: s.dir.join(&id),
    });
    drop(g);
    let mut r = created(&format!(
        "{}/api/users/{}/transfer-sessions/{}/files/{}",
        sim.base_url(&req.headers),
        email,
        tid,
        id
    ))?;
    let body = serde_json::to_vec(&Envelope::new(FileId { file_id: id }))
        .map_err(|_| err(500, 5000, "serialization"))?;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    *r.body_mut() = Body::from(body);
    Ok(r)
}

async fn upload(
    State(sim): State<Arc<Sim>>,
    Path((email, tid, fid)): Path<(String, String, String)>,
    req: Req,
    body: Body,
) -> ApiResult {
    let ctx = pre(&sim, Endpoint::Upload, &req, Level::Verified, Some(&email)).await?;
    let ct = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/octet-stream") {
        return Err(invalid("Content-Type must be application/octet-stream"));
    }
    let declared = req
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (final_path, max) = {
        let mut g = sim.lock();
        if declared.is_none() {
            g.stats.uploads_without_length += 1;
            if sim.opts.require_content_length {
                return Err(missing("Content-Length"));
            }
        }
        let max = g.policy.max_total_size;
        let s = session_mut(&mut g, &email, &tid, &ctx)?;
        let f = s.files.iter().find(|f| f.id == fid).ok_or_else(not_found)?;
        (f.path.clone(), max)
    };
    if declared.is_some_and(|d| d > max) {
        return Err(size_refused());
    }
    let part = final_path.with_extension(format!("part-{}", random_alnum(6)));
    let result = receive(body, &part, max).await;
    let (n, sha) = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e);
        }
    };
    let stored = {
        let mut g = sim.lock();
        let still = session_mut(&mut g, &email, &tid, &ctx)
            .ok()
            .and_then(|s| s.files.iter_mut().find(|f| f.id == fid));
        match still {
            Some(f) => {
                // Rename under the lock: a concurrent DELETE cannot slip in between.
                let r = std::fs::rename(&part, &f.path);
                if r.is_ok() {
                    f.uploaded = Some((n, sha));
                    g.stats.uploads += 1;
                }
                Some(r.is_ok())
            }
            None => None,
        }
    };
    match stored {
        Some(true) => Ok(StatusCode::OK.into_response()),
        Some(false) => Err(err(500, 5000, "storage error")),
        None => {
            let _ = tokio::fs::remove_file(&part).await;
            Err(not_found())
        }
    }
}

/// Stream the body to `path`, hashing on the way; never more than one chunk in memory.
async fn receive(body: Body, path: &std::path::Path, max: u64) -> Result<(u64, String), ApiErr> {
    let storage = |_| err(500, 5000, "storage error");
    // Batch hyper's small chunks: every tokio::fs write is a blocking-pool round trip.
    let mut file = tokio::io::BufWriter::with_capacity(
        1 << 20,
        tokio::fs::File::create(path).await.map_err(storage)?,
    );
    let mut hasher = Sha256::new();
    let mut n = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| invalid("request body aborted"))?;
        n += chunk.len() as u64;
        if n > max {
            return Err(size_refused());
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(storage)?;
    }
    file.flush().await.map_err(storage)?;
    Ok((n, hex::encode(hasher.finalize())))
}

async fn delete_file(
    State(sim): State<Arc<Sim>>,
    Path((email, tid, fid)): Path<(String, String, String)>,
    req: Req,
) -> ApiResult {
    let ctx = pre(
        &sim,
        Endpoint::DeleteFile,
        &req,
        Level::Verified,
        Some(&email),
    )
    .await?;
    let path = {
        let mut g = sim.lock();
        let s = session_mut(&mut g, &email, &tid, &ctx)?;
        let pos = s
            .files
            .iter()
            .position(|f| f.id == fid)
            .ok_or_else(not_found)?;
        let f = s.files.remove(pos);
        if s.settings.confidential_message_file_id.as_deref() == Some(fid.as_str()) {
            s.settings.confidential_message_file_id = None;
        }
        f.path
    };
    let _ = tokio::fs::remove_file(path).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ------------------------------------------------------------------------------------ finalize + status

struct OwnedMail {
    to: String,
    subject: String,
    body: String,
    message_id: String,
    tracking_id: Option<String>,
}

fn mail_owned(m: Mail<'_>) -> OwnedMail {
    OwnedMail {
        to: m.to.to_owned(),
        subject: m.subject.to_owned(),
        body: m.body,
        message_id: m.message_id,
        tracking_id: m.tracking_id.map(str::to_owned),
    }
}

async fn write_mails(sim: &Sim, mails: Vec<(OwnedMail, String)>) {
    let dir = sim.opts.data_dir.join("mails");
    let _ = tokio::task::spawn_blocking(move || {
        for (m, name) in mails {
            let mail = Mail {
                to: &m.to,
                subject: &m.subject,
                body: m.body,
                message_id: m.message_id,
                tracking_id: m.tracking_id.as_deref(),
            };
            if let Err(e) = mail.write(&dir, &name) {
                tracing::warn!(error = %e, file = %name, "cryptshare-sim: cannot write mail");
            }
        }
    })
    .await;
}

fn human_size(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KB", "MB", "GB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

async fn finalize(
    State(sim): State<Arc<Sim>>,
    Path((email, tid)): Path<(String, String)>,
    req: Req,
) -> ApiResult {
    let ctx = pre(
        &sim,
        Endpoint::Finalize,
        &req,
        Level::Verified,
        Some(&email),
    )
    .await?;
    let base = sim.base_url(&req.headers);
    let mails = (|| -> Result<_, ApiErr> {
        let mut g = sim.lock();
        let s = session_mut(&mut g, &email, &tid, &ctx)?;
        if s.files.is_empty() {
            return Err(rule("no file registered"));
        }
        if s.files.iter().any(|f| f.uploaded.is_none()) {
            return Err(rule("not all registered files have been uploaded"));
        }
        let mode = s
            .settings
            .security_mode
            .as_ref()
            .and_then(|m| m.config.password_mode)
            .unwrap_or(PasswordMode::Generated);
        let password = match (mode, &s.password) {
            (PasswordMode::Manual, Some(p)) => p.clone(),
            (PasswordMode::Manual, None) => return Err(rule("manual password missing")),
            (PasswordMode::Generated, Some(p)) => p.clone(),
            _ => random_alnum(12),
        };
        let Some(s) = g.sessions.remove(&tid) else {
            return Err(not_found());
        };

        let mut files = Vec::new();
        let mut causes = HashMap::new();
        for f in s.files {
            let (n, sha) = f.uploaded.unwrap_or_default();
            let ok = n == f.size && f.checksum.as_ref().is_none_or(|c| *c == sha);
            if !ok {
                causes.insert(
                    f.id.clone(),
                    if n != f.size {
                        "SIZE_MISMATCH"
                    } else {
                        "CHECKSUM_MISMATCH"
                    }
                    .to_owned(),
                );
            }
            files.push(SimFile {
                id: f.id,
                name: f.name,
                size: f.size,
                checksum: f.checksum,
                uploaded_size: n,
                uploaded_sha256: sha,
                removed: !ok,
                path: f.path,
            });
        }
        let final_state = if files.iter().all(|f| f.removed) {
            TransferState::Failed
        } else {
            TransferState::Active
        };
        let mut settings = s.settings;
        if let Some(m) = &mut settings.security_mode {
            m.config.password = None;
        }
        settings.files = Some(
            files
                .iter()
                .map(|f| TransferSessionFile {
                    id: f.id.clone(),
                    file_name: f.name.clone(),
                    size: i64::try_from(f.size).unwrap_or(i64::MAX),
                    checksum: f.checksum.clone(),
                    href: None,
                    state: if f.removed { "REMOVED" } else { "ACTIVE" }.into(),
                })
                .collect(),
        );
        let recipients_dto = settings.recipients.clone().unwrap_or_default();
        let mut recipients = Vec::new();
        for mail in recipients_dto.all() {
            let id = random_alnum(10);
            let mut url = format!("{base}/download?id={id}");
            if mode == PasswordMode::None {
                url.push_str(&format!("&password={password}"));
            }
            recipients.push((
                SimRecipient {
                    mail: mail.to_owned(),
                    transfer_id: id,
                    download_url: url,
                },
                Vec::new(),
            ));
        }

        let mut mails = Vec::new();
        if final_state == TransferState::Active {
            let sender_name = settings
                .sender
                .as_ref()
                .and_then(|s| s.name.clone())
                .unwrap_or_default();
            let note = settings.notification_message.clone().unwrap_or_default();
            let expiry = settings.expiration_date.clone().unwrap_or_default();
            let show = settings.show_file_names.unwrap_or(false);
            let listing: String = files
                .iter()
                .filter(|f| !f.removed)
                .map(|f| format!("  - {} ({})\n", f.name, human_size(f.size)))
                .collect();
            if settings.send_recipient_notification.unwrap_or(true) {
                for (r, _) in &recipients {
                    let mut body = format!(
                        "{sender_name} <{}> has sent you files via Cryptshare.\n\n",
                        s.sender
                    );
                    if let Some(b) = note.body.as_deref().filter(|b| !b.is_empty()) {
                        body.push_str(b);
                        body.push_str("\n\n");
                    }
                    if show {
                        body.push_str("Files:\n");
                        body.push_str(&listing);
                        body.push('\n');
                    }
                    body.push_str(&format!(
                        "Download: {}\nAvailable until: {expiry}\n",
                        r.download_url
                    ));
                    if mode != PasswordMode::None {
                        body.push_str("The sender will tell you the password.\n");
                    }
                    let subject = note
                        .subject
                        .clone()
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| "Cryptshare transfer".into());
                    mails.push((
                        OwnedMail {
                            to: r.mail.clone(),
                            subject,
                            body,
                            message_id: format!("{tid}.{}@cryptshare-sim.invalid", r.transfer_id),
                            tracking_id: Some(tid.clone()),
                        },
                        format!("{tid}-recipient-{}.eml", r.transfer_id),
                    ));
                }
            }
            if settings.send_upload_summary.unwrap_or(true) {
                let mut body = format!(
                    "Your transfer {tid} has been provided to:\n{}\n",
                    recipients
                        .iter()
                        .map(|(r, _)| format!("  - {}\n", r.mail))
                        .collect::<String>()
                );
                body.push_str("Files:\n");
                body.push_str(&listing);
                body.push_str(&format!("\nAvailable until: {expiry}\n"));
                if matches!(mode, PasswordMode::Generated | PasswordMode::Manual) {
                    body.push_str(&format!("Password: {password}\n"));
                }
                mails.push((
                    OwnedMail {
                        to: s.sender.clone(),
                        subject: format!("Cryptshare transfer {tid} provided"),
                        body,
                        message_id: format!("{tid}.sender@cryptshare-sim.invalid"),
                        tracking_id: Some(tid.clone()),
                    },
                    format!("{tid}-sender.eml"),
                ));
            }
        }

        g.transfers.push(Transfer {
            tracking_id: tid.clone(),
            sender: s.sender,
            owner_email: s.owner_email,
            finalize_token: ctx.token,
            settings,
            password_mode: mode,
            password,
            accept_language: s.accept_language,
            files,
            removal_causes: causes,
            recipients,
            final_state,
            polls_left: sim.opts.processing_polls,
        });
        g.stats.sessions_finalized += 1;
        Ok(mails)
    })()?;
    write_mails(&sim, mails).await;
    created(&format!("{base}/api/users/{email}/transfers/{tid}"))
}

fn recipient_dtos(t: &Transfer, token: &str) -> Vec<RecipientStatus> {
    t.recipients
        .iter()
        .map(|(r, downloads)| RecipientStatus {
            id: Some(r.transfer_id.clone()),
            mail: Some(r.mail.clone()),
            // Documented: null only in mode NONE with another token than the creating one.
            download_url: (t.password_mode != PasswordMode::None || token == t.finalize_token)
                .then(|| r.download_url.clone()),
            notification_failed: false,
            file_downloads: t
                .files
                .iter()
                .map(|f| FileDownloads {
                    id: f.id.clone(),
                    downloads: downloads
                        .iter()
                        .filter(|(fid, _)| *fid == f.id)
                        .map(|(_, date)| Download {
                            download_date: date.clone(),
                            retrieval_method: "DOWNLOADED".into(),
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect()
}

async fn transfer_status(
    State(sim): State<Arc<Sim>>,
    Path((email, tid)): Path<(String, String)>,
    req: Req,
) -> ApiResult {
    let ctx = pre(
        &sim,
        Endpoint::TransferStatus,
        &req,
        Level::Verified,
        Some(&email),
    )
    .await?;
    let mut g = sim.lock();
    let lc = email.to_ascii_lowercase();
    let t = g
        .transfers
        .iter_mut()
        .find(|t| t.tracking_id == tid && t.owner_email == lc)
        .ok_or_else(not_found)?;
    let state = if t.polls_left > 0 {
        t.polls_left -= 1;
        TransferState::Processing
    } else {
        t.final_state
    };
    let status = StatusDto {
        state,
        warnings: state != TransferState::Processing && t.files.iter().any(|f| f.removed),
        eml_creation_failed: false,
        sender: Some(SenderStatus {
            email: Some(t.sender.clone()),
            notification_failed: false,
        }),
        recipients: recipient_dtos(t, &ctx.token),
        files: t
            .files
            .iter()
            .map(|f| FileStatus {
                id: f.id.clone(),
                removed: f.removed,
                removal_cause: t.removal_causes.get(&f.id).cloned(),
            })
            .collect(),
    };
    ok_json(TransferStatus {
        transfer: t.settings.clone(),
        status,
    })
}

async fn list_transfers(
    State(sim): State<Arc<Sim>>,
    Path(email): Path<String>,
    req: Req,
) -> ApiResult {
    let ctx = pre(
        &sim,
        Endpoint::Transfers,
        &req,
        Level::Verified,
        Some(&email),
    )
    .await?;
    let page: usize = match req.query.get("page") {
        Some(p) => p
            .parse()
            .ok()
            .filter(|p| *p >= 1)
            .ok_or_else(|| invalid("page"))?,
        None => 1,
    };
    let size: usize = match req.query.get("page-size") {
        Some(p) => p
            .parse()
            .ok()
            .filter(|p| (1..=100).contains(p))
            .ok_or_else(|| invalid("page-size"))?,
        None => 10,
    };
    let base = sim.base_url(&req.headers);
    let g = sim.lock();
    let lc = email.to_ascii_lowercase();
    let list: Vec<TransferBasicInfo> = g
        .transfers
        .iter()
        .rev()
        .filter(|t| t.owner_email == lc)
        .skip((page - 1).saturating_mul(size))
        .take(size)
        .map(|t| TransferBasicInfo {
            tracking_id: t.tracking_id.clone(),
            state: if t.polls_left > 0 {
                TransferState::Processing
            } else {
                t.final_state
            },
            recipients: recipient_dtos(t, &ctx.token),
            href: Some(format!(
                "{base}/api/users/{email}/transfers/{}",
                t.tracking_id
            )),
        })
        .collect();
    ok_json(list)
}

// ------------------------------------------------------------------------------------ recipient side

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).and_then(|v| u8::try_from(v).ok())
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Find the recipient's transfer and check the password.
fn recipient_lookup<'a>(
    g: &'a mut Inner,
    rid: &str,
    req: &Req,
) -> Result<(&'a mut Transfer, usize), ApiErr> {
    let password = req
        .headers
        .get("x-cs-password")
        .and_then(|v| v.to_str().ok())
        .map(percent_decode)
        .or_else(|| req.query.get("password").cloned());
    let (t, idx) = g
        .transfers
        .iter_mut()
        .find_map(|t| {
            let idx = t
                .recipients
                .iter()
                .position(|(r, _)| r.transfer_id == rid)?;
            Some((t, idx))
        })
        .ok_or_else(not_found)?;
    if t.final_state != TransferState::Active {
        return Err(not_found());
    }
    if password.as_deref() != Some(t.password.as_str()) {
        return Err(err(401, 3003, "Wrong transfer password"));
    }
    Ok((t, idx))
}

async fn recipient_info(
    State(sim): State<Arc<Sim>>,
    Path(rid): Path<String>,
    req: Req,
) -> ApiResult {
    pre(&sim, Endpoint::RecipientInfo, &req, Level::ClientId, None).await?;
    let mut g = sim.lock();
    let (t, _) = recipient_lookup(&mut g, &rid, &req)?;
    let total: u64 = t.files.iter().filter(|f| !f.removed).map(|f| f.size).sum();
    ok_json(TransferInfo {
        checksum_algorithm: "SHA-256".into(),
        total_size: i64::try_from(total).unwrap_or(i64::MAX),
    })
}

async fn recipient_files(
    State(sim): State<Arc<Sim>>,
    Path(rid): Path<String>,
    req: Req,
) -> ApiResult {
    pre(&sim, Endpoint::RecipientFiles, &req, Level::ClientId, None).await?;
    let mut g = sim.lock();
    let (t, _) = recipient_lookup(&mut g, &rid, &req)?;
    let list: Vec<TransferFile> = t
        .files
        .iter()
        .filter(|f| !f.removed)
        .map(|f| TransferFile {
            id: f.id.clone(),
            file_name: f.name.clone(),
            size: i64::try_from(f.size).unwrap_or(i64::MAX),
            checksum: Some(f.uploaded_sha256.clone()),
            href: Some(format!("/api/transfers/{rid}/files/{}", f.id)),
        })
        .collect();
    ok_json(list)
}

async fn recipient_download(
    State(sim): State<Arc<Sim>>,
    Path((rid, fid)): Path<(String, String)>,
    req: Req,
) -> ApiResult {
    pre(
        &sim,
        Endpoint::RecipientDownload,
        &req,
        Level::ClientId,
        None,
    )
    .await?;
    let (path, size, name) = {
        let mut g = sim.lock();
        let (t, idx) = recipient_lookup(&mut g, &rid, &req)?;
        let f = t
            .files
            .iter()
            .find(|f| f.id == fid && !f.removed)
            .ok_or_else(not_found)?;
        let out = (f.path.clone(), f.uploaded_size, f.name.clone());
        t.recipients[idx].1.push((fid.clone(), now_string()));
        out
    };
    file_response(&path, size, &name).await
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Stream a stored file (never read whole into memory).
async fn file_response(path: &std::path::Path, size: u64, name: &str) -> ApiResult {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|_| err(500, 5000, "storage error"))?;
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
    let mut r = Body::from_stream(stream).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename*=UTF-8''{}",
        url_encode(name)
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body><h1>{t}</h1>{body}</body></html>\n",
        t = html_escape(title)
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page,
    )
        .into_response()
}

/// The web link of the notification mails (`/download?id=…[&password=…][&get=FILE-ID]`, the
/// legacy link format): a password form, a file list, or the file itself. No API headers.
async fn web_download(State(sim): State<Arc<Sim>>, req: Req) -> Response {
    if let Err(e) = pre(&sim, Endpoint::WebDownload, &req, Level::Nothing, None).await {
        return e.into_response();
    }
    let Some(rid) = req.query.get("id").cloned() else {
        return html(StatusCode::NOT_FOUND, "Unknown transfer", "");
    };
    let password = req.query.get("password").cloned();
    let found = {
        let mut g = sim.lock();
        g.transfers
            .iter_mut()
            .find_map(|t| {
                let idx = t
                    .recipients
                    .iter()
                    .position(|(r, _)| r.transfer_id == rid)?;
                Some((t, idx))
            })
            .filter(|(t, _)| t.final_state == TransferState::Active)
            .map(|(t, idx)| {
                let ok = password.as_deref() == Some(t.password.as_str());
                let files: Vec<(String, String, u64, PathBuf)> = t
                    .files
                    .iter()
                    .filter(|f| !f.removed)
                    .map(|f| {
                        (
                            f.id.clone(),
                            f.name.clone(),
                            f.uploaded_size,
                            f.path.clone(),
                        )
                    })
                    .collect();
                if ok && let Some(fid) = req.query.get("get") {
                    t.recipients[idx].1.push((fid.clone(), now_string()));
                }
                (ok, files)
            })
    };
    let Some((ok, files)) = found else {
        return html(StatusCode::NOT_FOUND, "Unknown transfer", "");
    };
    if password.is_none() {
        let form = format!(
            "<form method=\"get\"><input type=\"hidden\" name=\"id\" value=\"{}\">\
             <input type=\"password\" name=\"password\"><button>Download</button></form>",
            html_escape(&rid)
        );
        return html(StatusCode::OK, "Password required", &form);
    }
    if !ok {
        return html(StatusCode::UNAUTHORIZED, "Wrong password", "");
    }
    let pw = url_encode(password.as_deref().unwrap_or_default());
    match req.query.get("get") {
        Some(fid) => match files.iter().find(|f| f.0 == *fid) {
            Some((_, name, size, path)) => file_response(path, *size, name)
                .await
                .unwrap_or_else(IntoResponse::into_response),
            None => html(StatusCode::NOT_FOUND, "Unknown file", ""),
        },
        None => {
            let list: String = files
                .iter()
                .map(|(id, name, size, _)| {
                    format!(
                        "<li><a href=\"download?id={}&amp;password={pw}&amp;get={}\">{}</a> ({})</li>",
                        url_encode(&rid),
                        url_encode(id),
                        html_escape(name),
                        human_size(*size)
                    )
                })
                .collect();
            html(StatusCode::OK, "Your files", &format!("<ul>{list}</ul>"))
        }
    }
}

// ------------------------------------------------------------------------------------ control

async fn ctl_faults(State(sim): State<Arc<Sim>>) -> Response {
    let list: Vec<FaultSpec> = sim.lock().faults.iter().map(|f| f.spec.clone()).collect();
    axum::Json(list).into_response()
}

async fn ctl_add_fault(State(sim): State<Arc<Sim>>, body: Bytes) -> ApiResult {
    let spec: FaultSpec = parse_json(&body)?;
    sim.lock().add_fault(spec);
    Ok(StatusCode::CREATED.into_response())
}

async fn ctl_clear_faults(State(sim): State<Arc<Sim>>) -> Response {
    sim.lock().faults.clear();
    StatusCode::NO_CONTENT.into_response()
}

async fn ctl_policy(State(sim): State<Arc<Sim>>) -> Response {
    axum::Json(sim.lock().policy.clone()).into_response()
}

async fn ctl_set_policy(State(sim): State<Arc<Sim>>, body: Bytes) -> ApiResult {
    let p: SimPolicy = parse_json(&body)?;
    sim.lock().policy = p;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn ctl_expire_tokens(State(sim): State<Arc<Sim>>) -> Response {
    sim.lock().tokens.clear();
    StatusCode::NO_CONTENT.into_response()
}

async fn ctl_state(State(sim): State<Arc<Sim>>) -> Response {
    let g = sim.lock();
    axum::Json(serde_json::json!({
        "stats": g.stats,
        "open_sessions": g.sessions.len(),
        "transfers": g.finished(),
    }))
    .into_response()
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
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%2"), "a b%2");
        assert_eq!(percent_decode("%C3%BC+x"), "ü x");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    proptest::proptest! {
        #[test]
        fn untrusted_strings_never_panic(a in "\\PC{0,40}", b in "\\PC{0,40}") {
            let _ = glob(&a, &b);
            let _ = valid_email(&a);
            let _ = percent_decode(&a);
            let _ = html_escape(&a);
            proptest::prop_assert!(url_encode(&a).is_ascii());
            proptest::prop_assert!(!html_escape(&a).contains('<'));
        }
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
