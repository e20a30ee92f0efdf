//! The emulator's own control endpoints under `/_sim/` (faults, policy, switches, tokens, state).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::FaultSpec;
use super::server::*;
use super::{SimPolicy, SimSwitches};

pub(super) async fn ctl_faults(State(sim): State<Arc<Sim>>) -> Response {
    let list: Vec<FaultSpec> = sim.lock().faults.iter().map(|f| f.spec.clone()).collect();
    axum::Json(list).into_response()
}

pub(super) async fn ctl_add_fault(State(sim): State<Arc<Sim>>, body: Bytes) -> ApiResult {
    let spec: FaultSpec = parse_json(&body)?;
    sim.lock().add_fault(spec);
    Ok(StatusCode::CREATED.into_response())
}

pub(super) async fn ctl_clear_faults(State(sim): State<Arc<Sim>>) -> Response {
    sim.lock().faults.clear();
    StatusCode::NO_CONTENT.into_response()
}

pub(super) async fn ctl_policy(State(sim): State<Arc<Sim>>) -> Response {
    axum::Json(sim.lock().policy.clone()).into_response()
}

pub(super) async fn ctl_set_policy(State(sim): State<Arc<Sim>>, body: Bytes) -> ApiResult {
    let p: SimPolicy = parse_json(&body)?;
    sim.lock().policy = p;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn ctl_switches(State(sim): State<Arc<Sim>>) -> Response {
    axum::Json(sim.lock().switches.clone()).into_response()
}

pub(super) async fn ctl_set_switches(State(sim): State<Arc<Sim>>, body: Bytes) -> ApiResult {
    let s: SimSwitches = parse_json(&body)?;
    sim.set_switches(s);
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn ctl_expire_tokens(State(sim): State<Arc<Sim>>) -> Response {
    sim.lock().tokens.clear();
    StatusCode::NO_CONTENT.into_response()
}

pub(super) async fn ctl_state(State(sim): State<Arc<Sim>>) -> Response {
    let g = sim.lock();
    axum::Json(serde_json::json!({
        "stats": g.stats,
        "open_sessions": g.sessions.len(),
        "transfers": g.finished(),
        "requests": g.requests,
        "exchanges": g.exchanges,
    }))
    .into_response()
}
