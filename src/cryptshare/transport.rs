//! Transport helpers of the client: reading bounded JSON answers, turning error answers into
//! [`Error`]s, and the progress watchdog plus exact-length check of streamed uploads.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::{Response, StatusCode, Url};
use serde::de::DeserializeOwned;

use super::error::{Detail, Error, ErrorKind, sanitize};
use super::types::ApiError;

/// Longest JSON answer we read; the largest real one (a transfer status) is a few kB.
const MAX_JSON: usize = 4 * 1024 * 1024;

pub(super) fn is_loopback_literal(host: &str) -> bool {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

pub(super) fn location_last_segment(
    op: &'static str,
    request: &Url,
    resp: &Response,
) -> Result<String, Error> {
    let loc = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            Error::local(ErrorKind::Temporary, op, "no Location header in the answer")
        })?;
    let url = request
        .join(loc)
        .map_err(|_| Error::local(ErrorKind::Temporary, op, "unparseable Location header"))?;
    let seg = url
        .path_segments()
        .and_then(|mut s| s.next_back().map(str::to_owned))
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::local(ErrorKind::Temporary, op, "empty Location path"))?;
    Ok(seg)
}

pub(super) async fn read_limited(
    op: &'static str,
    mut resp: Response,
    limit: usize,
) -> Result<Vec<u8>, Error> {
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| Error::transport(op, e))? {
        if buf.len() + chunk.len() > limit {
            return Err(Error::local(ErrorKind::Temporary, op, "answer too large"));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

pub(super) async fn read_json<T: DeserializeOwned>(
    op: &'static str,
    resp: Response,
) -> Result<T, Error> {
    let status = resp.status().as_u16();
    let body = read_limited(op, resp, MAX_JSON).await?;
    serde_json::from_slice(&body).map_err(|e| {
        // A proxy's HTML page or a truncated answer: not our request's fault.
        Error::Temporary(Detail {
            operation: op,
            status: Some(status),
            error_code: None,
            message: format!("unexpected answer: {}", sanitize(&e.to_string())),
        })
    })
}

pub(super) async fn error_from_response(op: &'static str, resp: Response) -> Error {
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| sanitize(v.split(';').next().unwrap_or_default()))
        .unwrap_or_default();
    let body = read_limited(op, resp, 64 * 1024).await.unwrap_or_default();
    let api: Option<ApiError> = serde_json::from_slice(&body).ok();
    let code = api.as_ref().and_then(|a| a.error_code);
    let message = match (code, api.and_then(|a| a.error_message)) {
        (Some(_), Some(m)) => sanitize(&m),
        (Some(_), None) => reason(status),
        // Not the Cryptshare Server's answer: say so, the status is in the detail.
        (None, _) if content_type.is_empty() => format!(
            "{} without a Cryptshare errorCode (a proxy in between?)",
            reason(status)
        ),
        (None, _) => format!(
            "{} without a Cryptshare errorCode ({content_type} answer, a proxy in between?)",
            reason(status)
        ),
    };
    if code.is_none() {
        tracing::warn!(operation = op, status = status.as_u16(), content_type = %content_type, "error answer without a Cryptshare errorCode; treated as temporary");
    }
    Error::from_status(op, status.as_u16(), code, message)
}

pub(super) fn reason(status: StatusCode) -> String {
    status.canonical_reason().unwrap_or("error").to_owned()
}

/// Last time the upload moved, shared between the body stream and the watchdog.
#[derive(Clone)]
pub(super) struct Progress {
    start: tokio::time::Instant,
    last_ms: Arc<AtomicU64>,
}

impl Progress {
    pub(super) fn new() -> Self {
        Progress {
            start: tokio::time::Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }
    pub(super) fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }
    pub(super) fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// Pass the stream through, record progress, and fail if it does not yield exactly `size`
/// bytes (a changed source file must not become a silently corrupt upload).
pub(super) fn exact_length<S>(
    stream: S,
    size: u64,
    progress: Progress,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static
where
    S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
{
    let mut seen = 0u64;
    let mut checked = false;
    stream
        .map(Some)
        .chain(futures_util::stream::once(async { None }))
        .filter_map(move |item| {
            progress.touch();
            let out = match item {
                Some(Ok(b)) => {
                    seen += b.len() as u64;
                    if seen > size {
                        Some(Err(std::io::Error::other("source longer than declared")))
                    } else {
                        Some(Ok(b))
                    }
                }
                Some(Err(e)) => Some(Err(e)),
                None if !checked && seen != size => {
                    checked = true;
                    Some(Err(std::io::Error::other("source shorter than declared")))
                }
                None => None,
            };
            async move { out }
        })
}
