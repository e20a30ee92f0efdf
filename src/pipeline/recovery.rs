//! The `recovery` step: what an earlier attempt at the same message left behind, and the
//! clean-up that keeps a conversion all or nothing.
//!
//! Exactly once rests on the state store: the message key (envelope + bytes) maps to a pending
//! record (a session is being filled; its tracking id once the server gave one) or a finished one
//! (the transfer is active). Three moments read it:
//! - a new attempt at a message ([`Job::resume_earlier`]): reuse a finished transfer, adopt one
//!   that an earlier attempt finalized but did not record, delete a session it never finalized;
//! - a failed attempt ([`Job::clean_up_failed`]): delete its session, unless finalize was sent
//!   and the transfer may exist — then keep the record so that the retry adopts it;
//! - the start of the gateway ([`clean_up_pending`]): sessions a crashed run left behind.

use std::time::{Duration, Instant};

use super::transfer::{ConvertError, Converted, Job, Progress, single};
use crate::cryptshare::{self, TransferState};
use crate::store::state::{Record, StateStore};

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
        Err(e) if e.status() == Some(404) && e.error_code() != Some(2004) => {
            Ok(Earlier::Unfinished)
        }
        Err(e) => Err(e),
    }
}

impl Job<'_> {
    /// The transfer of an earlier attempt at this message, if there is one to reuse; deletes
    /// the session of an earlier attempt that never finalized. `None`: make a new transfer.
    pub(super) async fn resume_earlier(
        &self,
        sender_display: &str,
        started: Instant,
    ) -> Result<Option<Converted>, ConvertError> {
        match self.state.get(self.key)? {
            Some(Record::Finished {
                tracking_id,
                expiration,
                files,
                download_urls,
                ..
            }) => {
                tracing::info!(tracking_id = %tracking_id, "message seen before: reusing its finished transfer");
                Ok(Some(Converted {
                    tracking_id,
                    expiration,
                    files,
                    download_url: single(&download_urls),
                    sender_display: sender_display.to_string(),
                    password_mode: self.policy.password_mode,
                    notify_recipients: self.policy.notify_recipients,
                    reused: true,
                    cryptshare_ms: 0,
                }))
            }
            Some(Record::Pending {
                sender,
                tracking_id: Some(id),
                ..
            }) => {
                // An earlier attempt died half-way. If it got as far as finalize, the transfer
                // exists (and its recipients may be notified): adopt it. Otherwise its session
                // must not become a second transfer: delete it.
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
                        return self.adopt(id, st, sender_display, started).await.map(Some);
                    }
                    Earlier::Unusable => self.state.remove(self.key)?,
                    Earlier::Unfinished => {
                        if let Err(e) = self.cs.delete_session(&sender, &id).await {
                            tracing::warn!(tracking_id = %id, error = %e, "cannot delete the unfinished session of an earlier attempt");
                            return Err(e.into());
                        }
                        self.state.remove(self.key)?;
                    }
                }
                Ok(None)
            }
            Some(Record::Pending {
                tracking_id: None, ..
            })
            | None => Ok(None),
        }
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
        for part in self.parts() {
            files.push(self.file_facts(part).await?);
        }
        let expiration = st
            .transfer
            .expiration_date
            .as_deref()
            .and_then(|d| d.get(..10))
            .filter(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok())
            .map(str::to_string)
            .unwrap_or_else(|| self.expires(None).format("%Y-%m-%d").to_string());
        let urls: Vec<String> = st.download_urls().into_iter().map(|(_, u)| u).collect();
        self.record_finished(
            &id,
            &expiration,
            &files,
            &urls,
            chrono::Utc::now().timestamp(),
        )?;
        Ok(Converted {
            tracking_id: id,
            expiration,
            files,
            download_url: single(&urls),
            sender_display: sender_display.to_string(),
            password_mode: self.policy.password_mode,
            notify_recipients: self.policy.notify_recipients,
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
            let _ = self.state.remove(self.key);
            return e;
        };
        if progress.finalize_sent {
            // The answer to finalize (or a status poll) failed: ask whether the transfer exists.
            // Only a definite "no such transfer" allows the delete.
            match earlier_transfer(self.cs, self.sender, id).await {
                Ok(Earlier::Unfinished) => {}
                Ok(Earlier::Unusable) => {
                    // Failed or deleted on the server: final, nothing to adopt or to delete.
                    let _ = self.state.remove(self.key);
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
                let _ = self.state.remove(self.key);
            }
            Err(de) => {
                tracing::warn!(tracking_id = %id, error = %de, "cannot delete the transfer session; it is deleted at the next attempt or start")
            }
        }
        e
    }
}

/// At start-up: delete server-side sessions that a crashed run left behind, keep finalized ones
/// for the upstream's retry, and forget records older than `retention`.
pub(super) async fn clean_up_pending(
    cs: &cryptshare::Client,
    state: &StateStore,
    retention: Duration,
) {
    match state.pending() {
        Ok(list) => {
            for (key, rec) in list {
                let Record::Pending {
                    sender,
                    tracking_id,
                    ..
                } = rec
                else {
                    continue;
                };
                if let Some(id) = &tracking_id {
                    match earlier_transfer(cs, &sender, id).await {
                        // The retry of that message adopts it (no second transfer).
                        Ok(Earlier::Finalized(_)) => {
                            tracing::info!(tracking_id = %id, "an earlier run finalized this transfer; kept for the retry");
                            continue;
                        }
                        Ok(Earlier::Unusable) => {}
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
                })) = state.get(&key)
                    && now == tracking_id
                {
                    let _ = state.remove(&key);
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot list the state store"),
    }
    if let Err(e) = state.expire(retention) {
        tracing::warn!(error = %e, "cannot expire old state records");
    }
}
