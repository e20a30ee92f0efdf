//! Handlers: server status, client registration, password generation, and sender
//! verification (status, e-mail code, client-id token).

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::Endpoint;
use super::mail::*;
use super::server::*;
use crate::cryptshare::types::*;

pub(super) async fn status(State(sim): State<Arc<Sim>>, req: Req) -> ApiResult {
    pre(&sim, Endpoint::Status, &req, Level::Nothing, None).await?;
    // API ≥1.13, documented unwrapped.
    Ok(axum::Json(serde_json::json!({
        "apiVersions": {"uiApiVersions": [{"major": 1, "minor": sim.opts.api_minor}]}
    }))
    .into_response())
}

pub(super) async fn clients(State(sim): State<Arc<Sim>>, req: Req) -> ApiResult {
    pre(&sim, Endpoint::Clients, &req, Level::Versions, None).await?;
    ok_json(
        &sim,
        ClientIdBody {
            client_id: random_alnum(64),
        },
    )
}

pub(super) async fn password(State(sim): State<Arc<Sim>>, req: Req) -> ApiResult {
    pre(&sim, Endpoint::Password, &req, Level::ClientId, None).await?;
    ok_json(&sim, serde_json::json!({ "password": random_alnum(12) }))
}

// ------------------------------------------------------------------------------------ verification

pub(super) async fn verification_status(
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
    ok_json(
        &sim,
        VerificationStatus {
            valid_until: valid.map(|e| {
                format_date_time(&chrono::DateTime::<chrono::Utc>::from(e).fixed_offset())
            }),
            verification_methods: methods,
            verified: valid.is_some(),
        },
    )
}

pub(super) async fn verification_code(
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
        sim.opts.data_dir.join("mails"),
        vec![(mail_owned(mail), format!("verification-{seq}.eml"))],
    )
    .await;
    Ok(StatusCode::OK.into_response())
}

pub(super) async fn verification_token(
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
    let now = SystemTime::now();
    if let Some(limit) = g.switches.token_rate_limit {
        let times = g
            .token_times
            .entry((lc.clone(), ctx.client_id.clone()))
            .or_default();
        times.retain(|t| now.duration_since(*t).is_ok_and(|d| d.as_secs() < 60));
        if times.len() >= limit as usize {
            g.stats.tokens_rate_limited += 1;
            return Err(err(
                429,
                2007,
                "Too many verification token requests; try again later.",
            ));
        }
        times.push(now);
    }
    let token = random_alnum(48);
    let expires = now + sim.opts.token_validity;
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
    ok_json(
        &sim,
        VerificationToken {
            token,
            valid_until: Some(format_date_time(
                &chrono::DateTime::<chrono::Utc>::from(expires).fixed_offset(),
            )),
        },
    )
}
