//! Handlers: file registration, streamed upload and removal inside a transfer session.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;

use super::Endpoint;
use super::server::*;
use super::sessions::session_mut;
use crate::cryptshare::types::*;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

pub(super) fn valid_file_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 255
        && !n.chars().any(|c| c.is_control() || c == '/' || c == '\\')
        && n != "."
        && n != ".."
}

pub(super) async fn register_file(
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

pub(super) async fn upload(
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
pub(super) async fn receive(
    body: Body,
    path: &std::path::Path,
    max: u64,
) -> Result<(u64, String), ApiErr> {
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

pub(super) async fn delete_file(
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
