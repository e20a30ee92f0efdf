//! The exchange log: every `/api` call's method, path, status and JSON bodies (request and
//! response), newest last, bounded ([`MAX_LOGGED_EXCHANGES`]), so that a test can check what
//! a client sent and what the emulator answered against the OpenAPI file. Bodies are buffered
//! only when they are small and not file contents (uploads and downloads stream untouched).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::body::HttpBody as _;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;

use super::server::Sim;
use super::{MAX_LOGGED_EXCHANGES, SimExchange};

/// Bodies above this size are not logged (`body: None`, the length in `*_len`).
const MAX_LOGGED_BODY: u64 = 1 << 20;

/// Marks an answer produced by an injected [`super::FaultSpec`] (a response extension).
#[derive(Clone, Copy)]
pub(super) struct InjectedFault;

fn content_type(h: &HeaderMap) -> Option<String> {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn json_or_string(b: &[u8]) -> serde_json::Value {
    serde_json::from_slice(b)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(b).into_owned()))
}

/// Small, not a file: worth logging.
fn loggable(ct: Option<&str>, len: Option<u64>) -> bool {
    !ct.is_some_and(|c| c.starts_with("application/octet-stream"))
        && len.is_some_and(|n| n <= MAX_LOGGED_BODY)
}

pub(super) async fn record(State(sim): State<Arc<Sim>>, req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with("/api/") {
        return next.run(req).await;
    }
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let request_content_type = content_type(req.headers());
    let request_len = req.body().size_hint().exact();
    let (req, request) = if loggable(request_content_type.as_deref(), request_len) {
        let (parts, body) = req.into_parts();
        // Within the bound by the exact size hint; a body that fails to arrive is logged empty.
        let bytes = axum::body::to_bytes(body, MAX_LOGGED_BODY as usize + 1)
            .await
            .unwrap_or_default();
        let logged = (!bytes.is_empty()).then(|| json_or_string(&bytes));
        (Request::from_parts(parts, Body::from(bytes)), logged)
    } else {
        (req, None)
    };
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    let injected_fault = resp.extensions().get::<InjectedFault>().is_some();
    let response_content_type = content_type(resp.headers());
    let response_len = resp.body().size_hint().exact();
    let (resp, response) = if loggable(response_content_type.as_deref(), response_len) {
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, MAX_LOGGED_BODY as usize + 1)
            .await
            .unwrap_or_default();
        let logged = (!bytes.is_empty()).then(|| json_or_string(&bytes));
        (Response::from_parts(parts, Body::from(bytes)), logged)
    } else {
        (resp, None)
    };
    let exchange = SimExchange {
        method,
        path,
        request_content_type,
        request_len,
        request,
        status,
        response_content_type,
        response_len,
        response,
        injected_fault,
        nulls_and_extra_fields: sim.noisy.load(Ordering::Relaxed),
    };
    let mut g = sim.lock();
    if g.exchanges.len() >= MAX_LOGGED_EXCHANGES {
        g.exchanges.pop_front();
    }
    g.exchanges.push_back(exchange);
    resp
}
