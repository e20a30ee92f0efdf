//! Handlers: the transfer policy check and the transfer sessions (create, read, PATCH,
//! delete). A session belongs to the (address, client id) it was created for.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use super::Endpoint;
use super::server::*;
use crate::cryptshare::types::*;

pub(super) async fn transfer_policy(
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
    sim.lock()
        .log_request(Endpoint::TransferPolicy, &email, None, &body);
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
        ok_json(
            &sim,
            TransferPolicyResult {
                allowed: true,
                failed_recipients: None,
                settings: Some(policy.settings()),
            },
        )
    } else {
        ok_json(
            &sim,
            TransferPolicyResult {
                allowed: false,
                failed_recipients: Some(failed),
                settings: None,
            },
        )
    }
}

pub(super) fn sender_rejected() -> ApiErr {
    err(
        403,
        3010,
        "Email address and (possibly) IP address of the sender is rejected by policy.",
    )
}

pub(super) fn dedup(
    list: Vec<Recipient>,
    seen: &mut Vec<String>,
) -> Result<Vec<Recipient>, ApiErr> {
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

pub(super) fn accept_language(req: &Req) -> Option<String> {
    let raw = req.headers.get(header::ACCEPT_LANGUAGE)?.to_str().ok()?;
    let first = raw.split(',').next()?.split(';').next()?.trim();
    (!first.is_empty()
        && first.len() <= 35
        && first
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    .then(|| first.to_owned())
}

pub(super) async fn create_session(
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
    sim.lock()
        .log_request(Endpoint::CreateSession, &email, None, &body);
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
            show_zip_file_content: Some(g.policy.show_zip_file_content_default),
            send_recipient_notification: Some(true),
            send_upload_summary: Some(true),
            send_download_notifications: Some(g.policy.send_download_notifications_default),
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
                token: ctx.token,
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
pub(super) fn session_mut<'a>(
    g: &'a mut Inner,
    email: &str,
    tid: &str,
    ctx: &Ctx,
) -> Result<&'a mut Session, ApiErr> {
    let bind = g.switches.bind_session_tokens;
    let s = g.sessions.get(tid).ok_or_else(not_found)?;
    if s.owner_email != email.to_ascii_lowercase() {
        return Err(not_found());
    }
    if s.owner_client_id != ctx.client_id {
        return Err(token_refused(ctx.ep));
    }
    if bind && s.token != ctx.token {
        g.stats.foreign_token_refusals += 1;
        // 403: declared for every session operation (401 is not, for PATCH and the files).
        return Err(err(
            403,
            3002,
            "Transfer sessions may only be modified using the verification token they were created with.",
        ));
    }
    g.sessions.get_mut(tid).ok_or_else(not_found)
}

pub(super) fn session_view(s: &Session, email: &str, tid: &str) -> TransferSession {
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

pub(super) async fn get_session(
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
    ok_json(&sim, session_view(s, &email, &tid))
}

pub(super) async fn patch_session(
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
    sim.lock()
        .log_request(Endpoint::PatchSession, &email, Some(&tid), &body);
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
    let whole_days = g.switches.whole_day_expiry;
    let s = session_mut(&mut g, &email, &tid, &ctx)?;

    // Validate everything before changing anything. Settings the policy does not let the
    // client change are refused even with the server's own value: a client must leave them out.
    let locked = [
        ("showFileNames", policy.show_file_names_changeable),
        ("showZipFileContent", policy.show_file_names_changeable),
        (
            "sendDownloadNotifications",
            policy.send_download_notifications_changeable,
        ),
        (
            "notificationMessage",
            policy.recipient_notification_editable,
        ),
    ];
    for (key, changeable) in locked {
        if !changeable && obj.contains_key(key) {
            return Err(rule(&format!(
                "{key} is not changeable by the transfer policy"
            )));
        }
    }
    if let Some(d) = &patch.expiration_date {
        let t = parse_date_time(d).ok_or_else(|| invalid("expirationDate"))?;
        let now = chrono::Utc::now();
        // Clients compute "now + N days" on their own clock.
        let max = retention_end(policy.max_retention_period) + chrono::Duration::minutes(5);
        let utc = t.with_timezone(&chrono::Utc);
        let counted = if whole_days { end_of_day(utc) } else { utc };
        if t <= now || counted > max {
            return Err(rule("expirationDate outside the retention period"));
        }
    }
    if let Some(m) = &patch.security_mode {
        match m.name.as_str() {
            "ONE_TIME_PASSWORD" => {}
            // The PATCH schema (`TransferSecurityModeOfobject`) names ONE_TIME_PASSWORD only:
            // QUICK and EID there are invalid values (400/1004), like any other name; PATCH
            // declares no 501 (5001/5002 are the recipient side's).
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
    // `confidentialMessageFileId`: a registered file of this session, and only when the
    // policy allows a confidential message (`confidentialMessageAllowed`; 409/2001, "cannot be
    // applied due to transfer rule restrictions"). An explicit `null` clears it (the schema
    // says `string`, its description "May be null": lenient, as a server would be).
    if obj
        .get("confidentialMessageFileId")
        .is_some_and(|v| !v.is_null())
        && !policy.confidential_message_allowed
    {
        return Err(rule(
            "confidentialMessageFileId: the transfer policy allows no confidential message",
        ));
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
    if obj
        .get("confidentialMessageFileId")
        .is_some_and(serde_json::Value::is_null)
    {
        st.confidential_message_file_id = None;
    }
    ok_json(&sim, session_view(s, &email, &tid))
}

/// The last second of `t`'s UTC day: how a server counting whole days sees an expiry.
fn end_of_day(t: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    let day = t.date_naive();
    day.and_hms_opt(23, 59, 59)
        .map(|d| d.and_utc())
        .unwrap_or(t)
}

pub(super) async fn delete_session(
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
