//! Handlers: finalize (session → transfer, mails), the transfer status and the sender's
//! transfer list.

use std::sync::Arc;

use axum::extract::{Path, State};

use super::Endpoint;
use super::mail::*;
use super::server::*;
use super::sessions::session_mut;
use super::{SimFile, SimRecipient};
use crate::cryptshare::types::*;
use std::collections::HashMap;

pub(super) async fn finalize(
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
        let required = g.policy.confidential_message_required;
        let s = session_mut(&mut g, &email, &tid, &ctx)?;
        if s.files.is_empty() {
            return Err(rule("no file registered"));
        }
        if s.files.iter().any(|f| f.uploaded.is_none()) {
            return Err(rule("not all registered files have been uploaded"));
        }
        if required && s.settings.confidential_message_file_id.is_none() {
            return Err(rule("the transfer policy requires a confidential message"));
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

        let mails = if final_state == TransferState::Active {
            let rs: Vec<&SimRecipient> = recipients.iter().map(|(r, _)| r).collect();
            transfer_mails(&tid, &s.sender, &settings, &files, &rs, mode, &password)
        } else {
            Vec::new()
        };

        let processing_until =
            std::time::SystemTime::now() + g.switches.processing_time.unwrap_or_default();
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
            processing_until,
        });
        g.stats.sessions_finalized += 1;
        Ok(mails)
    })()?;
    write_mails(sim.opts.data_dir.join("mails"), mails).await;
    created(&format!("{base}/api/users/{email}/transfers/{tid}"))
}

pub(super) fn recipient_dtos(t: &Transfer, token: &str) -> Vec<RecipientStatus> {
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

pub(super) async fn transfer_status(
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
    let state = t.poll_state();
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
    ok_json(
        &sim,
        TransferStatus {
            transfer: t.settings.clone(),
            status,
        },
    )
}

pub(super) async fn list_transfers(
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
            state: t.peek_state(),
            recipients: recipient_dtos(t, &ctx.token),
            href: Some(format!(
                "{base}/api/users/{email}/transfers/{}",
                t.tracking_id
            )),
        })
        .collect();
    ok_json(&sim, list)
}
