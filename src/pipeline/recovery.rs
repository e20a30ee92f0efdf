//! The `recovery` step: what an earlier attempt at the same message left behind, and the
//! clean-up that keeps a conversion all or nothing.
//!
//! Exactly once rests on the state store: the message key (envelope + bytes) maps to a pending
//! record (a session is being filled; its tracking id once the server gave one) or a finished one
//! (the transfer is active). Three moments read it:
//! - a new attempt at a message ([`Job::resume_earlier`]): reuse a finished transfer that the
//!   server still has, adopt one that an earlier attempt finalized but did not record, continue
//!   a session it never finalized (with the token it was created with, uploading only the files
//!   the server does not have yet), or delete that session when it cannot be continued;
//! - a failed attempt ([`Job::clean_up_failed`]): delete its session, unless finalize was sent
//!   and the transfer may exist — then keep the record so that the retry adopts it;
//! - the start of the gateway ([`clean_up_pending`]): sessions a crashed run left behind —
//!   kept (token restored) while the retry can still continue them, deleted otherwise.
//!
//! The window that stays open: the server has created a session but the gateway never learnt
//! its tracking id (the answer to create-session was lost, or the process died between the
//! server's 201 and the pending record). API 1.8 lists transfers, not unfinalized sessions, and
//! a session carries no client-chosen field that could find it again, so such a session cannot
//! be found; the pending record without tracking id (written before the call) says only that it
//! may exist. The server's own clean-up of abandoned sessions removes it.

use std::time::{Duration, Instant};

use std::time::{SystemTime, UNIX_EPOCH};

use super::transfer::{ConvertError, Converted, Job, Progress, links_of, single};
use crate::cryptshare::{self, ErrorKind, TransferSessionFile, TransferState};
use crate::store::state::{PendingSession, Record, StateStore, StoredFile};

/// A session is kept for the retry to continue only while its token has at least this much of
/// its validity left (the rest of the workflow must fit in it); older ones are deleted.
const RESUME_MARGIN: Duration = Duration::from_secs(300);

/// What [`Job::resume_earlier`] found for this message.
pub(super) enum Resume {
    /// The transfer of an earlier attempt: the notice is rebuilt from it.
    Reuse(Converted),
    /// An unfinished session of an earlier attempt to continue.
    Continue(Resumed),
    /// Nothing: make a new transfer.
    New,
}

/// An earlier attempt's session, still open on the server.
pub(super) struct Resumed {
    pub tracking_id: String,
    /// The files the server has for it (any state).
    pub files: Vec<TransferSessionFile>,
}

/// What became of the session an earlier attempt recorded as pending.
enum Earlier {
    /// Finalized: the transfer exists (active, or still processing).
    Finalized(Box<cryptshare::TransferStatus>),
    /// Finalized, but failed or deleted since: nothing to reuse, nothing to clean up.
    Unusable,
    /// Never finalized: a session to delete.
    Unfinished,
}

/// Ask the server whether `id` became a transfer. Unknown → the session was never finalized.
async fn earlier_transfer(
    cs: &cryptshare::Client,
    sender: &str,
    id: &str,
) -> Result<Earlier, cryptshare::Error> {
    match cs.transfer_status(sender, id).await {
        Ok(st) => Ok(match st.status.state {
            TransferState::Active
            | TransferState::Processing
            | TransferState::Pending
            | TransferState::Unknown => Earlier::Finalized(Box::new(st)),
            _ => Earlier::Unusable,
        }),
        // 404/2004 is an unsupported API version, not an unknown transfer.
        Err(e) if gone(&e) => Ok(Earlier::Unfinished),
        Err(e) => Err(e),
    }
}

/// The answer for a session or transfer that the server does not have (404 without 2004, an
/// unsupported API version).
fn gone(e: &cryptshare::Error) -> bool {
    e.status() == Some(404) && e.error_code() != Some(2004)
}

/// A session file the server has completely.
fn complete(f: &TransferSessionFile) -> bool {
    matches!(f.state.as_str(), "UPLOADED" | "ACTIVE")
}

/// Give the client the token session `id` was created with (after a restart).
fn restore_token(cs: &cryptshare::Client, sender: &str, id: &str, s: &PendingSession) {
    let until = UNIX_EPOCH + Duration::from_secs(u64::try_from(s.token_valid_until).unwrap_or(0));
    if let Err(e) = cs.restore_session_token(sender, id, &s.token, until) {
        tracing::warn!(tracking_id = %id, error = %e, "the stored token of a session is unusable");
    }
}

/// Whether the stored token of a session still leaves time for the rest of a workflow.
fn resumable(s: Option<&PendingSession>) -> bool {
    s.is_some_and(|s| {
        let until =
            UNIX_EPOCH + Duration::from_secs(u64::try_from(s.token_valid_until).unwrap_or(0));
        until
            .duration_since(SystemTime::now())
            .is_ok_and(|left| left >= RESUME_MARGIN)
    })
}

impl Job<'_> {
    /// What an earlier attempt at this message left: a transfer to reuse (still on the server),
    /// a session to continue, or nothing. A session that cannot be continued is deleted.
    pub(super) async fn resume_earlier(
        &self,
        sender_display: &str,
        started: Instant,
    ) -> Result<Resume, ConvertError> {
        match self.state.get(self.key).await? {
            Some(Record::Finished {
                sender,
                tracking_id,
                expiration,
                files,
                download_urls,
                recipient_links,
                ..
            }) => {
                // The server may have lost it since (deleted, expired): a notice must never
                // point to a tracking id that no longer exists. Until that is known, only a
                // retry is safe (the original or a bounce could duplicate or lose the files).
                let unresolved = |e: cryptshare::Error| ConvertError::AfterFinalize(e.to_string());
                match earlier_transfer(self.cs, &sender, &tracking_id)
                    .await
                    .map_err(unresolved)?
                {
                    Earlier::Finalized(st) => {
                        if st.status.state != TransferState::Active {
                            self.cs
                                .wait_processed(&sender, &tracking_id)
                                .await
                                .map_err(unresolved)?;
                        }
                    }
                    Earlier::Unusable | Earlier::Unfinished => {
                        tracing::warn!(tracking_id = %tracking_id, "the recorded transfer of this message is gone from the server; making a new one");
                        self.state.remove(self.key).await?;
                        return Ok(Resume::New);
                    }
                }
                tracing::info!(tracking_id = %tracking_id, "message seen before: reusing its finished transfer");
                Ok(Resume::Reuse(Converted {
                    tracking_id,
                    expiration,
                    files,
                    download_url: single(&download_urls),
                    links: recipient_links,
                    sender_display: sender_display.to_string(),
                    password_mode: self.policy.password_mode,
                    notify_recipients: self.notify_recipients(),
                    reused: true,
                    cryptshare_ms: 0,
                }))
            }
            Some(Record::Pending {
                sender,
                tracking_id: Some(id),
                session,
                ..
            }) => {
                if let Some(s) = &session {
                    restore_token(self.cs, &sender, &id, s);
                }
                // An earlier attempt died half-way. If it got as far as finalize, the transfer
                // exists (and its recipients may be notified): adopt it. Otherwise continue its
                // session, or delete it: it must not become a second transfer.
                // Until that is known, only a retry is safe (the original could duplicate files).
                let unresolved = |e: cryptshare::Error| ConvertError::AfterFinalize(e.to_string());
                match earlier_transfer(self.cs, &sender, &id)
                    .await
                    .map_err(unresolved)?
                {
                    Earlier::Finalized(st) => {
                        let st = if st.status.state == TransferState::Active {
                            *st
                        } else {
                            self.cs
                                .wait_processed(&sender, &id)
                                .await
                                .map_err(unresolved)?
                        };
                        tracing::info!(tracking_id = %id, "message seen before: adopting the transfer an earlier attempt finalized");
                        // Whatever fails now (the state store, the disk) fails with a transfer
                        // on the server: only the retry, which adopts it again, ends well.
                        return self
                            .adopt(id, st, sender_display, started)
                            .await
                            .map(Resume::Reuse)
                            .map_err(|e| match e {
                                e @ ConvertError::AfterFinalize(_) => e,
                                e => ConvertError::AfterFinalize(e.short()),
                            });
                    }
                    Earlier::Unusable => self.state.remove(self.key).await?,
                    Earlier::Unfinished => {
                        if sender == self.sender {
                            match self.cs.get_session(&sender, &id).await {
                                Ok(s) => {
                                    tracing::info!(tracking_id = %id, "message seen before: continuing the session of an earlier attempt");
                                    return Ok(Resume::Continue(Resumed {
                                        tracking_id: id,
                                        files: s.files.unwrap_or_default(),
                                    }));
                                }
                                Err(e) if gone(&e) => {
                                    self.state.remove(self.key).await?;
                                    return Ok(Resume::New);
                                }
                                Err(e) => {
                                    tracing::info!(tracking_id = %id, error = %e, "cannot continue the session of an earlier attempt; deleting it");
                                }
                            }
                        }
                        self.delete_earlier(&sender, &id).await?;
                        self.state.remove(self.key).await?;
                    }
                }
                Ok(Resume::New)
            }
            Some(Record::Pending {
                tracking_id: None, ..
            })
            | None => Ok(Resume::New),
        }
    }

    /// Delete the session of an earlier attempt that cannot be continued. One the server will
    /// not let us touch any more (its token expired on a server that binds sessions to tokens)
    /// is left to the server's own clean-up: waiting cannot change that.
    async fn delete_earlier(&self, sender: &str, id: &str) -> Result<(), ConvertError> {
        match self.cs.delete_session(sender, id).await {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.kind(), ErrorKind::Auth | ErrorKind::Refused) => {
                tracing::warn!(tracking_id = %id, error = %e, "the unfinished session of an earlier attempt cannot be deleted; left to the server's clean-up");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(tracking_id = %id, error = %e, "cannot delete the unfinished session of an earlier attempt");
                Err(e.into())
            }
        }
    }

    /// Continuing `r`: the parts whose files the server already has completely (same name,
    /// size and checksum, uploaded) are not sent again; every other file of the session (one
    /// whose upload died half-way) is deleted, so that the session holds exactly the parts once
    /// finalize comes. Returns the facts of the parts already there.
    pub(super) async fn keep_uploaded(&self, r: &Resumed) -> Result<Vec<StoredFile>, ConvertError> {
        let mut done = Vec::new();
        let mut kept = Vec::new();
        for upload in self.uploads() {
            let f = self.file_facts(&upload).await?;
            if let Some(sf) = r.files.iter().find(|sf| {
                !kept.contains(&sf.id)
                    && complete(sf)
                    && sf.file_name == f.name
                    && u64::try_from(sf.size).ok() == Some(f.size)
                    && sf
                        .checksum
                        .as_deref()
                        .is_some_and(|c| c.eq_ignore_ascii_case(&f.sha256))
            }) {
                kept.push(sf.id.clone());
                done.push(f);
            }
        }
        for sf in &r.files {
            if !kept.contains(&sf.id) && sf.state != "REMOVED" {
                self.cs
                    .delete_file(self.sender, &r.tracking_id, &sf.id)
                    .await?;
            }
        }
        tracing::info!(tracking_id = %r.tracking_id, uploaded = done.len(), "continuing the session; files already uploaded are not sent again");
        Ok(done)
    }

    /// The resumable part of the pending record of session `id`: the token it was created
    /// with (the only one the server accepts for it), so that a later run can continue,
    /// delete or adopt it.
    pub(super) fn pending_session(&self, id: &str) -> Option<PendingSession> {
        let (token, until) = self.cs.session_token(self.sender, id)?;
        let secs = until
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        Some(PendingSession {
            token,
            token_valid_until: i64::try_from(secs).unwrap_or(i64::MAX),
        })
    }

    /// Record and return a transfer that an earlier attempt finalized: the files are those of
    /// this same message (same key), the expiry and links come from the server, so the notice
    /// is the one the earlier attempt would have produced.
    async fn adopt(
        &self,
        id: String,
        st: cryptshare::TransferStatus,
        sender_display: &str,
        started: Instant,
    ) -> Result<Converted, ConvertError> {
        let mut files = Vec::new();
        for upload in self.uploads() {
            files.push(self.file_facts(&upload).await?);
        }
        let expiration = st
            .transfer
            .expiration_date
            .as_deref()
            .and_then(|d| d.get(..10))
            .filter(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok())
            .map(str::to_string)
            .unwrap_or_else(|| self.expires(None).format("%Y-%m-%d").to_string());
        let links = links_of(&st);
        let urls: Vec<String> = links.iter().map(|l| l.url.clone()).collect();
        self.record_finished(
            &id,
            &expiration,
            &files,
            &links,
            chrono::Utc::now().timestamp(),
        )
        .await?;
        Ok(Converted {
            tracking_id: id,
            expiration,
            files,
            download_url: single(&urls),
            links,
            sender_display: sender_display.to_string(),
            password_mode: self.policy.password_mode,
            notify_recipients: self.notify_recipients(),
            reused: true,
            cryptshare_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// All or nothing: no half-made transfer stays on the server. Returns the error to report.
    pub(super) async fn clean_up_failed(
        &self,
        e: ConvertError,
        progress: &Progress,
    ) -> ConvertError {
        let Some(id) = &progress.tracking_id else {
            let _ = self.state.remove(self.key).await;
            return e;
        };
        if progress.finalize_sent {
            // The answer to finalize (or a status poll) failed: ask whether the transfer exists.
            // Only a definite "no such transfer" allows the delete.
            match earlier_transfer(self.cs, self.sender, id).await {
                Ok(Earlier::Unfinished) => {}
                Ok(Earlier::Unusable) => {
                    // Failed or deleted on the server: final, nothing to adopt or to delete.
                    let _ = self.state.remove(self.key).await;
                    return e;
                }
                Ok(Earlier::Finalized(_)) | Err(_) => {
                    // The transfer (may) exist and cannot be taken back (revocation needs API
                    // 1.10). Keep the pending record so that the retry adopts it instead of
                    // making a second one.
                    tracing::warn!(tracking_id = %id, error = %e, "failed after finalize; the retry adopts the transfer");
                    return ConvertError::AfterFinalize(e.short());
                }
            }
        }
        match self.cs.delete_session(self.sender, id).await {
            Ok(()) => {
                let _ = self.state.remove(self.key).await;
            }
            Err(de) => {
                tracing::warn!(tracking_id = %id, error = %de, "cannot delete the transfer session; it is deleted at the next attempt or start")
            }
        }
        e
    }
}

/// At start-up (and, on a shared store, every `state.lease`, for the nodes that died): keep
/// finalized transfers for the upstream's retry (which adopts them), keep
/// unfinished sessions whose token leaves time to finish them for the retry to continue (their
/// tokens restored), delete the other sessions that a crashed run left behind, and forget
/// records older than `retention`.
pub(super) async fn clean_up_pending(
    cs: &cryptshare::Client,
    state: &StateStore,
    retention: Duration,
) {
    match state.pending().await {
        Ok(list) => {
            for (key, _) in list {
                // On a shared store another node may be at this message now (the upstream's
                // retry): then it is that node's. Read again under the lease.
                let _lease = match state.try_lease(&key).await {
                    Ok(Some(l)) => l,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot claim a pending record; will retry");
                        continue;
                    }
                };
                let rec = match state.get(&key).await {
                    Ok(Some(r)) => r,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read a pending record; will retry");
                        continue;
                    }
                };
                let Record::Pending {
                    sender,
                    tracking_id,
                    session,
                    ..
                } = rec
                else {
                    continue;
                };
                if let (Some(id), Some(s)) = (&tracking_id, &session) {
                    restore_token(cs, &sender, id, s);
                }
                if let Some(id) = &tracking_id {
                    match earlier_transfer(cs, &sender, id).await {
                        // The retry of that message adopts it (no second transfer).
                        Ok(Earlier::Finalized(_)) => {
                            tracing::info!(tracking_id = %id, "an earlier run finalized this transfer; kept for the retry");
                            continue;
                        }
                        Ok(Earlier::Unusable) => {}
                        Ok(Earlier::Unfinished) if resumable(session.as_ref()) => {
                            tracing::info!(tracking_id = %id, "an earlier run left this session unfinished; kept for the retry to continue");
                            continue;
                        }
                        Ok(Earlier::Unfinished) => {
                            if let Err(e) = cs.delete_session(&sender, id).await {
                                tracing::warn!(tracking_id = %id, error = %e, "cannot delete an unfinished transfer session; will retry at the next start");
                                continue;
                            }
                            tracing::info!(tracking_id = %id, "deleted an unfinished transfer session left by an earlier run");
                        }
                        Err(e) => {
                            tracing::warn!(tracking_id = %id, error = %e, "cannot check a transfer session left by an earlier run; will retry at the next start");
                            continue;
                        }
                    }
                }
                // A retry may have replaced the record meanwhile: remove only ours.
                if let Ok(Some(Record::Pending {
                    tracking_id: now, ..
                })) = state.get(&key).await
                    && now == tracking_id
                {
                    let _ = state.remove(&key).await;
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot list the state store"),
    }
    if let Err(e) = state.expire(retention).await {
        tracing::warn!(error = %e, "cannot expire old state records");
    }
}
