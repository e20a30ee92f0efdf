//! The recipient side: the recipient API (`/api/transfers/{id}…`) and the web link
//! `/download?id=…` of the notification mails.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::mail::human_size;
use super::server::*;
use super::{Endpoint, SimFile};
use crate::cryptshare::types::*;
use std::path::PathBuf;

pub(super) fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).and_then(|v| u8::try_from(v).ok())
}

pub(super) fn percent_decode(s: &str) -> String {
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
pub(super) fn recipient_lookup<'a>(
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

pub(super) async fn recipient_info(
    State(sim): State<Arc<Sim>>,
    Path(rid): Path<String>,
    req: Req,
) -> ApiResult {
    pre(&sim, Endpoint::RecipientInfo, &req, Level::ClientId, None).await?;
    let mut g = sim.lock();
    let (t, _) = recipient_lookup(&mut g, &rid, &req)?;
    let total: u64 = t.files.iter().filter(|f| !f.removed).map(|f| f.size).sum();
    ok_json(
        &sim,
        TransferInfo {
            checksum_algorithm: "SHA-256".into(),
            total_size: i64::try_from(total).unwrap_or(i64::MAX),
        },
    )
}

pub(super) async fn recipient_files(
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
    ok_json(&sim, list)
}

pub(super) async fn recipient_download(
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

/// `GET /api/transfers/{id}/eml` (openapi-1.8 `downloadEmlUsingGET_6`): "an EML file download
/// stream including the confidential message with attachments embedded". The real server's
/// layout is not documented; the emulator's is a `multipart/mixed` whose first part is the
/// confidential message file byte for byte — `message/rfc822` (7bit or 8bit as its octets
/// require) when its name ends in `.eml`, else `application/octet-stream` in base64 — followed by
/// the other files in base64, each only when not larger than `threshold` megabytes (absent:
/// all). A transfer without a confidential message answers 404/2003; `threshold` that is not
/// an integer ≥ 0, 400/1004. Built in memory: the emulator serves tests.
pub(super) async fn recipient_eml(
    State(sim): State<Arc<Sim>>,
    Path(rid): Path<String>,
    req: Req,
) -> ApiResult {
    pre(&sim, Endpoint::RecipientEml, &req, Level::ClientId, None).await?;
    let threshold = match req.query.get("threshold") {
        None => None,
        Some(t) => Some(
            t.parse::<u32>()
                .map_err(|_| err(400, 1004, "Invalid request parameter: threshold"))?,
        ),
    };
    let (message, files, subject) = {
        let mut g = sim.lock();
        let (t, idx) = recipient_lookup(&mut g, &rid, &req)?;
        let cid = t
            .settings
            .confidential_message_file_id
            .clone()
            .ok_or_else(|| err(404, 2003, "The transfer has no confidential message"))?;
        let message = t
            .files
            .iter()
            .find(|f| f.id == cid && !f.removed)
            .cloned()
            .ok_or_else(not_found)?;
        let files: Vec<SimFile> = t
            .files
            .iter()
            .filter(|f| f.id != cid && !f.removed)
            .filter(|f| threshold.is_none_or(|mb| f.uploaded_size <= u64::from(mb) * 1024 * 1024))
            .cloned()
            .collect();
        let subject = t
            .settings
            .notification_message
            .as_ref()
            .and_then(|n| n.subject.clone());
        // Retrieving the message counts as a download of it.
        t.recipients[idx].1.push((cid, now_string()));
        (message, files, subject)
    };
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|_| err(500, 5000, "storage error"));
    let body = read(&message.path)?;
    let mut embedded = Vec::new();
    for f in &files {
        embedded.push((f.name.clone(), read(&f.path)?));
    }
    let eml = build_eml(&message.name, &body, &embedded, subject.as_deref());
    let mut r = Body::from(eml).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"message.eml\""),
    );
    Ok(r)
}

/// The EML of [`recipient_eml`]: CRLF line endings, a boundary that occurs in none of the
/// contents, file names as RFC 2231 `filename*` (UTF-8, percent-encoded).
pub(super) fn build_eml(
    name: &str,
    message: &[u8],
    files: &[(String, Vec<u8>)],
    subject: Option<&str>,
) -> Vec<u8> {
    use base64::Engine as _;
    let mut boundary = format!("=_sim_{}", random_alnum(20));
    while message
        .windows(boundary.len())
        .any(|w| w == boundary.as_bytes())
    {
        boundary = format!("=_sim_{}", random_alnum(20));
    }
    let b64 = |data: &[u8]| {
        let text = base64::engine::general_purpose::STANDARD.encode(data);
        let mut out = String::with_capacity(text.len() + text.len() / 38);
        for line in text.as_bytes().chunks(76) {
            out.push_str(std::str::from_utf8(line).unwrap_or_default());
            out.push_str("\r\n");
        }
        out
    };
    // The subject is the sender's, sanitised to one printable-ASCII line (RFC 2047 is more
    // than an emulator needs; tests compare the parts).
    let subject: String = subject
        .unwrap_or("Confidential message")
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(200)
        .collect();
    let mut out = format!(
        "MIME-Version: 1.0\r\nSubject: {subject}\r\n\
         Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n--{boundary}\r\n"
    )
    .into_bytes();
    let disposition = |kind: &str, n: &str| {
        format!(
            "Content-Disposition: {kind}; filename*=UTF-8''{}\r\n",
            url_encode(n)
        )
    };
    if name.to_ascii_lowercase().ends_with(".eml") {
        let cte = if message.is_ascii() { "7bit" } else { "8bit" };
        out.extend_from_slice(
            format!(
                "Content-Type: message/rfc822\r\n{}Content-Transfer-Encoding: {cte}\r\n\r\n",
                disposition("inline", name)
            )
            .as_bytes(),
        );
        out.extend_from_slice(message);
        // The line break before a delimiter belongs to the delimiter (RFC 2046 §5.1.1): this
        // one, so that the part's content is the file to the last octet.
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(
            format!(
                "Content-Type: application/octet-stream\r\n{}\
                 Content-Transfer-Encoding: base64\r\n\r\n{}",
                disposition("inline", name),
                b64(message)
            )
            .as_bytes(),
        );
    }
    for (n, data) in files {
        out.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Type: application/octet-stream\r\n{}\
                 Content-Transfer-Encoding: base64\r\n\r\n{}",
                disposition("attachment", n),
                b64(data)
            )
            .as_bytes(),
        );
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

pub(super) fn url_encode(s: &str) -> String {
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

pub(super) fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Stream a stored file (never read whole into memory).
pub(super) async fn file_response(path: &std::path::Path, size: u64, name: &str) -> ApiResult {
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

pub(super) fn html(status: StatusCode, title: &str, body: &str) -> Response {
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
pub(super) async fn web_download(State(sim): State<Arc<Sim>>, req: Req) -> Response {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
