//! The `transfer` step: from the message's chosen parts to an active Cryptshare transfer, one
//! function per step of the workflow (SPEC §2), with the exactly-once bookkeeping in the state
//! store.
//!
//! [`Job::run`] first asks [`recovery`](super::recovery) whether an earlier attempt at the same
//! message left a transfer to reuse or a session to delete; only then does it make a new one:
//!
//! 1. [`Job::check_policy`]: token (verified inside the client) and transfer policy — would the
//!    server take this sender, these recipients, this size, this password mode?
//! 2. [`Job::create_session`]: the session, with the recipients fixed; the state store learns its
//!    tracking id before anything else can go wrong.
//! 3. [`Job::apply_settings`]: expiry, password mode, notification text, languages (PATCH).
//! 4. [`Job::upload_files`]: register and stream each part (decoded on the fly, never in memory).
//! 5. [`Job::finalize`]: send, then poll the status until the recipients can download.
//! 6. [`Job::record_finished`]: the finished record that a retry of the message reuses.
//!
//! All or nothing: when a step fails, [`Job::run`] hands the error to the clean-up in
//! `recovery`, which deletes the session (or, after finalize, keeps it for the retry).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::facts::{self, HeaderFacts, clean};
use super::recovery::{Resume, Resumed};
use super::server_policy::{self, Applied};
use crate::config::{Links, PasswordMode as PolicyPasswordMode, PolicyConfig};
use crate::cryptshare::{
    self, NewTransferSession, NotificationMessage, PasswordMode, Recipient, Recipients,
    SecurityMode, Sender, TransferSessionPatch, format_date_time, parse_date_time,
};
use crate::mime::{self, Analysis, PartId};
use crate::ops::audit::AuditFile;
use crate::store::spool::Spooled;
use crate::store::state::{RecipientLink, Record, StateError, StateStore, StoredFile};

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{0}")]
    Cryptshare(#[from] cryptshare::Error),
    /// The server's transfer policy refuses this sender, these recipients or this size.
    #[error("refused by the Cryptshare transfer policy: {0}")]
    PolicyRefused(String),
    /// The server's transfer policy refuses some of the recipients, not all: `refused` are
    /// their addresses as the client sent them; a transfer for the others would be allowed.
    #[error("refused by the Cryptshare transfer policy: {text}")]
    RecipientsRefused { refused: Vec<String>, text: String },
    /// The server's transfer policy forbids what the rule demands (a password mode, a
    /// confidential message it requires): a configuration error, not the message's fault, so
    /// not a permanent refusal (`check-config --online` reports it).
    #[error("configuration does not fit the Cryptshare server's policy: {0}")]
    ServerPolicy(#[from] server_policy::Forbidden),
    #[error("{0}")]
    State(#[from] StateError),
    #[error("{0}")]
    Local(String),
    /// Failed after finalize, when the transfer exists (or may): only a retry, which adopts
    /// it, can end well — whatever the rule's `on_error` says.
    #[error("transfer sent, not yet confirmed: {0}")]
    AfterFinalize(String),
}

impl ConvertError {
    /// The transfer exists (or may): delivering the original or rejecting would duplicate the
    /// files or bounce a message whose files were sent.
    pub fn after_finalize(&self) -> bool {
        matches!(self, ConvertError::AfterFinalize(_))
    }

    /// A permanent refusal (retrying the same message cannot help).
    pub fn is_refusal(&self) -> bool {
        match self {
            ConvertError::PolicyRefused(_) | ConvertError::RecipientsRefused { .. } => true,
            ConvertError::Cryptshare(e) => e.kind() == cryptshare::ErrorKind::Refused,
            _ => false,
        }
    }

    /// A short, secret-free text for an SMTP reply.
    pub fn short(&self) -> String {
        let s = match self {
            ConvertError::Cryptshare(e) => e.brief(),
            other => other.to_string(),
        };
        let clean: Vec<char> = s.chars().filter(|c| !c.is_control()).collect();
        let mut out: String = clean.iter().take(160).collect();
        if clean.len() > 160 {
            out.push_str("...");
        }
        out
    }
}

/// An active transfer, fresh or reused.
#[derive(Debug, Clone)]
pub struct Converted {
    pub tracking_id: String,
    /// YYYY-MM-DD.
    pub expiration: String,
    pub files: Vec<StoredFile>,
    /// The recipient's download link when the message has exactly one recipient (a shared
    /// message must not carry personal links).
    pub download_url: Option<String>,
    /// Every recipient's own link (`links = "per-recipient"` puts each into that recipient's
    /// copy).
    pub links: Vec<RecipientLink>,
    pub sender_display: String,
    /// The password mode the transfer has (the server's policy may have chosen a stronger one
    /// than the rule's).
    pub password_mode: PolicyPasswordMode,
    pub notify_recipients: bool,
    pub reused: bool,
    /// Time spent on Cryptshare calls; 0 for a transfer reused from the state store (no call).
    pub cryptshare_ms: u64,
}

impl Converted {
    pub fn audit_files(&self) -> Vec<AuditFile> {
        self.files
            .iter()
            .map(|f| AuditFile {
                name: f.name.clone(),
                size: f.size,
                sha256: f.sha256.clone(),
            })
            .collect()
    }

    /// `rcpt`'s own download link (the address compared as the server may answer it, in
    /// another case).
    pub fn link_for(&self, rcpt: &str) -> Option<&str> {
        self.links
            .iter()
            .find(|l| l.recipient.eq_ignore_ascii_case(rcpt))
            .map(|l| l.url.as_str())
    }

    /// How the recipients reach the files, for the notice's instructions.
    pub fn access(&self) -> mime::Access {
        mime::Access {
            link_from_cryptshare: self.notify_recipients,
            link_in_message: false,
            password_from_sender: matches!(self.password_mode, PolicyPasswordMode::Generated),
        }
    }
}

/// One conversion: everything the steps need, borrowed from the gateway and the message.
pub(super) struct Job<'a> {
    pub cs: &'a cryptshare::Client,
    pub state: &'a StateStore,
    pub policy: &'a PolicyConfig,
    /// The message key in the state store (see [`super::message_key`]).
    pub key: &'a str,
    pub sender: &'a str,
    pub rcpts: &'a [String],
    pub message: Arc<Spooled>,
    pub analysis: &'a Analysis,
    pub selection: &'a [PartId],
    /// Whole-message mode: the text goes as the transfer's confidential message.
    pub whole_message: bool,
}

/// What the server's transfer policy allows for this transfer (step 1).
struct Allowed {
    applied: Applied,
    expires: chrono::DateTime<chrono::Utc>,
}

/// How far [`Job::create_transfer`] got, for the clean-up after a failure.
#[derive(Default)]
pub(super) struct Progress {
    pub tracking_id: Option<String>,
    pub finalize_sent: bool,
}

impl Job<'_> {
    pub async fn run(self) -> Result<Converted, ConvertError> {
        let started = Instant::now();
        let raw = self.message.as_bytes();
        let mut facts = facts::header_facts(raw);
        if let (Some(tag), Some(subject)) = (self.policy.subject_tag.as_deref(), &facts.subject) {
            facts.subject = Some(facts::strip_tag(subject, tag));
        }
        let sender_display = facts
            .from_name
            .clone()
            .or_else(|| self.policy.sender_name.clone())
            .unwrap_or_else(|| {
                // The local part (a quoted one may contain `@`).
                self.sender
                    .rsplit_once('@')
                    .map_or(self.sender, |(local, _)| local)
                    .to_string()
            });
        // Shown in the notice and sent as the Cryptshare sender name: no bidi tricks.
        let sender_display = clean(&sender_display, 128);

        let resumed = match self.resume_earlier(&sender_display, started).await? {
            Resume::Reuse(earlier) => return Ok(earlier),
            Resume::Continue(r) => Some(r),
            Resume::New => None,
        };

        let mut progress = Progress::default();
        let result = self
            .create_transfer(&facts, &sender_display, resumed, &mut progress)
            .await;
        match result {
            Ok(mut c) => {
                c.cryptshare_ms = started.elapsed().as_millis() as u64;
                Ok(c)
            }
            Err(e) => Err(self.clean_up_failed(e, &progress).await),
        }
    }

    /// Steps 1 to 6 for a message without an earlier transfer, or steps 1, 3 to 6 continuing
    /// the session of an earlier attempt (`resumed`; see `recovery`).
    async fn create_transfer(
        &self,
        facts: &HeaderFacts,
        sender_display: &str,
        resumed: Option<Resumed>,
        progress: &mut Progress,
    ) -> Result<Converted, ConvertError> {
        let now = chrono::Utc::now().timestamp();
        let mut allowed = self.check_policy().await?;
        let (id, done) = match resumed {
            Some(r) => {
                progress.tracking_id = Some(r.tracking_id.clone());
                let done = self.keep_uploaded(&r).await?;
                (r.tracking_id, done)
            }
            None => {
                let id = self
                    .create_session(facts, sender_display, now, progress)
                    .await?;
                (id, Vec::new())
            }
        };
        self.apply_settings(&id, facts, &mut allowed).await?;
        let stored = self.upload_files(&id, &done).await?;
        progress.finalize_sent = true;
        let links = self.finalize(&id).await?;
        let urls: Vec<String> = links.iter().map(|l| l.url.clone()).collect();
        let expiration = allowed.expires.format("%Y-%m-%d").to_string();
        self.record_finished(&id, &expiration, &stored, &links, now)
            .await?;
        Ok(Converted {
            tracking_id: id,
            expiration,
            files: stored,
            download_url: single(&urls),
            links,
            sender_display: sender_display.to_string(),
            password_mode: match allowed.applied.mode {
                PasswordMode::None => PolicyPasswordMode::None,
                _ => PolicyPasswordMode::Generated,
            },
            notify_recipients: self.notify_recipients(),
            reused: false,
            cryptshare_ms: 0,
        })
    }

    /// Step 1: would the server accept this at all? (token verification happens in the client)
    async fn check_policy(&self) -> Result<Allowed, ConvertError> {
        let tp = self.cs.transfer_policy(self.sender, self.rcpts).await?;
        if !tp.allowed {
            let failed = tp.failed_recipients.unwrap_or_default();
            let text = failed
                .iter()
                .map(|f| {
                    format!(
                        "{} ({})",
                        clean(&f.email_address, 254),
                        clean(&f.reason, 80)
                    )
                })
                .collect::<Vec<String>>()
                .join(", ");
            if failed.is_empty() {
                return Err(ConvertError::PolicyRefused("sender not allowed".into()));
            }
            // Our recipients the server named, as the client sent them (the server may answer
            // in another case).
            let refused: Vec<String> = self
                .rcpts
                .iter()
                .filter(|r| {
                    failed
                        .iter()
                        .any(|f| f.email_address.eq_ignore_ascii_case(r))
                })
                .cloned()
                .collect();
            let text = format!("recipients not allowed: {text}");
            if refused.is_empty() || refused.len() == self.rcpts.len() {
                return Err(ConvertError::PolicyRefused(text));
            }
            return Err(ConvertError::RecipientsRefused { refused, text });
        }
        let settings = tp.settings.unwrap_or_default();
        let total: u64 = self.uploads().iter().map(|u| u.size).sum();
        if settings.max_total_size > 0 && total > settings.max_total_size as u64 {
            return Err(ConvertError::PolicyRefused(format!(
                "{total} bytes exceed the server's limit of {} bytes",
                settings.max_total_size
            )));
        }
        let applied = server_policy::reconcile(self.policy, &settings, self.whole_message)?;
        if !applied.server_decided.is_empty() {
            tracing::info!(
                sender = %clean(self.sender, 254),
                policy = %self.policy.name,
                decided = %applied.server_decided.join("; "),
                "the Cryptshare server's policy decides these settings"
            );
        }
        let expires = chrono::Utc::now() + chrono::Duration::days(applied.expiry_days);
        Ok(Allowed { applied, expires })
    }

    /// Step 2: create the session (recipients are fixed here): to / cc from the headers, the rest
    /// bcc. The pending record goes in first, the tracking id right after the server gave it:
    /// whatever fails later, a retry or the next start finds the session to clean up.
    async fn create_session(
        &self,
        facts: &HeaderFacts,
        sender_display: &str,
        now: i64,
        progress: &mut Progress,
    ) -> Result<String, ConvertError> {
        let mut recipients = Recipients::default();
        for r in self.rcpts {
            let l = r.to_ascii_lowercase();
            let rcpt = Recipient::new(r.clone());
            if facts.to.contains(&l) {
                recipients.to.push(rcpt);
            } else if facts.cc.contains(&l) {
                recipients.cc.push(rcpt);
            } else {
                recipients.bcc.push(rcpt);
            }
        }
        let new = NewTransferSession {
            sender: Sender {
                name: Some(clean(sender_display, 128)),
                phone: self.policy.sender_phone.clone(),
            },
            recipients,
        };
        self.put_pending(None, now).await?;
        let id = self
            .cs
            .create_session(self.sender, Some(&self.policy.language), &new)
            .await?;
        progress.tracking_id = Some(id.clone());
        self.put_pending(Some(&id), now).await?;
        Ok(id)
    }

    async fn put_pending(&self, tracking_id: Option<&str>, created: i64) -> Result<(), StateError> {
        self.state
            .put(
                self.key,
                &Record::Pending {
                    sender: self.sender.to_string(),
                    tracking_id: tracking_id.map(str::to_string),
                    created,
                    session: tracking_id.and_then(|id| self.pending_session(id)),
                },
            )
            .await
    }

    /// Step 3: the settings (PATCH): only what the server's policy lets the client change
    /// (see `server_policy`). A 409 is retried once with an earlier expiry — the server's own
    /// default date of the session, else one day less — since a server counting whole days or
    /// with a clock behind ours refuses an expiry at its limit (the other settings are within
    /// the policy by construction).
    async fn apply_settings(
        &self,
        id: &str,
        facts: &HeaderFacts,
        allowed: &mut Allowed,
    ) -> Result<(), ConvertError> {
        let policy = self.policy;
        let a = &allowed.applied;
        let mode = a.mode;
        let raw = self.message.as_bytes();
        let mut patch = TransferSessionPatch {
            expiration_date: Some(format_date_time(&allowed.expires.fixed_offset())),
            security_mode: Some(SecurityMode::one_time_password(mode, None)),
            // Whole-message mode: the text is the confidential message and must not travel in
            // Cryptshare's notification mail either; the server's default text says it all.
            notification_message: a.notification_editable.then(|| NotificationMessage {
                subject: facts.subject.clone(),
                body: if self.whole_message {
                    None
                } else {
                    facts::notification_body(raw, self.analysis).map(|t| facts::to_html(&t))
                },
            }),
            sender_language: Some(policy.language.clone()),
            recipient_language: Some(facts::recipient_language(policy, raw)),
            show_file_names: a.show_file_names,
            show_zip_file_content: a.show_zip_file_content,
            send_recipient_notification: Some(self.notify_recipients()),
            // With a generated password the sender learns it only from the upload summary.
            send_upload_summary: Some(policy.upload_summary || mode == PasswordMode::Generated),
            send_download_notifications: a.send_download_notifications,
            send_download_summary: Some(policy.download_summary),
            classification_id: policy.classification_id.clone(),
            file_checksum_algorithm: Some("SHA256".into()),
            ..Default::default()
        };
        let first = match self.cs.patch_settings(self.sender, id, &patch).await {
            Ok(_) => return Ok(()),
            Err(e) if e.status() == Some(409) => e,
            Err(e) => return Err(e.into()),
        };
        let server_date = self
            .cs
            .get_session(self.sender, id)
            .await
            .ok()
            .and_then(|s| s.expiration_date)
            .and_then(|d| parse_date_time(&d))
            .map(|d| d.with_timezone(&chrono::Utc));
        let now = chrono::Utc::now();
        let earlier = server_date
            .filter(|d| *d < allowed.expires && *d > now)
            .unwrap_or(allowed.expires - chrono::Duration::days(1));
        if earlier <= now {
            return Err(first.into());
        }
        tracing::info!(
            tracking_id = %id,
            error = %first,
            expires = %format_date_time(&earlier.fixed_offset()),
            "settings refused (409): retrying once with an earlier expiry"
        );
        patch.expiration_date = Some(format_date_time(&earlier.fixed_offset()));
        self.cs.patch_settings(self.sender, id, &patch).await?;
        allowed.expires = earlier;
        Ok(())
    }

    /// Step 4: files — hash (one decoding pass), register, stream (a second pass, never in memory).
    /// A TNEF part that the analysis unpacked gives one file per file inside it. The files in
    /// `done` are on the server already (a continued session).
    async fn upload_files(
        &self,
        id: &str,
        done: &[StoredFile],
    ) -> Result<Vec<StoredFile>, ConvertError> {
        let uploads = self.uploads();
        let mut stored = Vec::with_capacity(uploads.len());
        let mut done = done.to_vec();
        for upload in uploads {
            let file = self.file_facts(&upload).await?;
            if let Some(i) = done.iter().position(|d| *d == file) {
                done.remove(i);
                stored.push(file);
                continue;
            }
            let Some(part) = self.analysis.part(upload.part) else {
                return Err(ConvertError::Local(format!(
                    "part {} is not in the analysis",
                    upload.part
                )));
            };
            let file_id = self
                .cs
                .register_file(self.sender, id, &file.name, file.size, &file.sha256)
                .await?;
            let message = self.message.clone();
            let part = part.clone();
            self.cs
                .upload_file(self.sender, id, &file_id, file.size, move || {
                    let body = decoded_stream(message.clone(), part.clone(), upload.clone());
                    async move { Ok(body) }
                })
                .await?;
            stored.push(file);
        }
        if self.whole_message {
            self.upload_confidential_message(id, &stored).await?;
        }
        Ok(stored)
    }

    /// Whole-message mode: the message without the attachments that travel as files — its
    /// text and HTML bodies, inline images, everything else, with the header the sender wrote
    /// and without the subject tag — as an RFC 5322 file `message.eml`, marked as the
    /// transfer's confidential message (`confidentialMessageFileId`, API-NOTES §6.5). An .eml
    /// is what Cryptshare's own Outlook add-in makes of a message, and it keeps what a text
    /// file would lose (the HTML, its images, a forwarded message). Made in memory: it is the
    /// message minus its largest parts. A continued session deletes the earlier attempt's
    /// copy first (`keep_uploaded` keeps only attachment files), so it is always uploaded.
    async fn upload_confidential_message(
        &self,
        id: &str,
        files: &[StoredFile],
    ) -> Result<(), ConvertError> {
        let eml = {
            let message = self.message.clone();
            let analysis = self.analysis.clone();
            let selection = self.selection.to_vec();
            let tag = self.policy.subject_tag.clone();
            tokio::task::spawn_blocking(move || {
                let out = mime::without_parts(message.as_bytes(), &analysis, &selection)?;
                Ok::<_, mime::RewriteError>(match tag.as_deref() {
                    Some(tag) => mime::remove_subject_tag(&out, tag).unwrap_or(out),
                    None => out,
                })
            })
            .await
            .map_err(|e| ConvertError::Local(format!("building the confidential message: {e}")))?
            .map_err(|e| ConvertError::Local(format!("building the confidential message: {e}")))?
        };
        let name = confidential_name(files);
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&eml));
        let size = eml.len() as u64;
        let file_id = self
            .cs
            .register_file(self.sender, id, &name, size, &sha)
            .await?;
        let body = Bytes::from(eml);
        self.cs
            .upload_file(self.sender, id, &file_id, size, move || {
                let body = body.clone();
                async move { Ok(futures_util::stream::iter([Ok::<_, std::io::Error>(body)])) }
            })
            .await?;
        let patch = TransferSessionPatch {
            confidential_message_file_id: Some(file_id),
            ..Default::default()
        };
        self.cs.patch_settings(self.sender, id, &patch).await?;
        Ok(())
    }

    /// Whether the server mails the recipients: never with per-recipient links, where the
    /// gateway's copies carry them.
    pub(super) fn notify_recipients(&self) -> bool {
        self.policy.notify_recipients && self.policy.links == Links::Notification
    }

    /// Step 5: send, and wait until the recipients can download. Returns the download links.
    async fn finalize(&self, id: &str) -> Result<Vec<RecipientLink>, ConvertError> {
        self.cs.finalize(self.sender, id).await?;
        let status = self.cs.wait_processed(self.sender, id).await?;
        Ok(links_of(&status))
    }

    /// Step 6: the finished record: a retry of this message (same key) reuses this transfer.
    pub(super) async fn record_finished(
        &self,
        id: &str,
        expiration: &str,
        files: &[StoredFile],
        links: &[RecipientLink],
        created: i64,
    ) -> Result<(), StateError> {
        self.state
            .put(
                self.key,
                &Record::Finished {
                    sender: self.sender.to_string(),
                    tracking_id: id.to_string(),
                    expiration: expiration.to_string(),
                    files: files.to_vec(),
                    download_urls: links.iter().map(|l| l.url.clone()).collect(),
                    created,
                    recipient_links: links.to_vec(),
                    delivered: Vec::new(),
                    receipt_sent: false,
                },
            )
            .await
    }

    /// Name, decoded size and SHA-256 of a file to upload (one decoding pass, off the workers).
    pub(super) async fn file_facts(
        &self,
        upload: &mime::Upload,
    ) -> Result<StoredFile, ConvertError> {
        let Some(part) = self.analysis.part(upload.part) else {
            return Err(ConvertError::Local(format!(
                "part {} is not in the analysis",
                upload.part
            )));
        };
        let (size, sha) = {
            let message = self.message.clone();
            let part = part.clone();
            let upload = upload.clone();
            tokio::task::spawn_blocking(move || {
                mime::upload_sha256(message.as_bytes(), &part, &upload)
            })
            .await
            .map_err(|e| ConvertError::Local(format!("hashing failed: {e}")))?
        };
        Ok(StoredFile {
            name: upload.name.clone(),
            size,
            sha256: hex::encode(sha),
        })
    }

    pub(super) fn parts(&self) -> Vec<&mime::Part> {
        self.selection
            .iter()
            .filter_map(|&id| self.analysis.part(id))
            .collect()
    }

    /// The files of the transfer, in order: each selected part, or the files of an unpacked
    /// TNEF part in its place.
    pub(super) fn uploads(&self) -> Vec<mime::Upload> {
        self.parts().iter().flat_map(|p| p.uploads()).collect()
    }

    /// The policy's expiry, capped by the server's maximum retention.
    pub(super) fn expires(&self, max_retention_days: Option<i64>) -> chrono::DateTime<chrono::Utc> {
        let mut days = i64::from(self.policy.expiration_days);
        if let Some(max) = max_retention_days.filter(|&m| m > 0) {
            days = days.min(max);
        }
        chrono::Utc::now() + chrono::Duration::days(days)
    }
}

/// The decoded bytes of `upload` (a part, or a file inside a TNEF part) as an upload body:
/// decoded on a blocking thread in 256 KiB chunks, at most four in flight, so a 300 MB
/// attachment never sits in memory.
fn decoded_stream(
    message: Arc<Spooled>,
    part: mime::Part,
    upload: mime::Upload,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut r = mime::UploadReader::new(message.as_bytes(), &part, &upload);
        loop {
            let mut buf = vec![0u8; 256 * 1024];
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// `message.eml`, or `message-2.eml` … when an attachment has that name already (file names
/// are unique within a transfer).
fn confidential_name(files: &[StoredFile]) -> String {
    let taken = |n: &str| files.iter().any(|f| f.name.eq_ignore_ascii_case(n));
    let mut name = "message.eml".to_string();
    let mut i = 2;
    while taken(&name) {
        name = format!("message-{i}.eml");
        i += 1;
    }
    name
}

/// Each recipient's link in a transfer status.
pub(super) fn links_of(status: &cryptshare::TransferStatus) -> Vec<RecipientLink> {
    status
        .download_urls()
        .into_iter()
        .map(|(recipient, url)| RecipientLink { recipient, url })
        .collect()
}

/// The download link for the notice: only with exactly one recipient (a shared message must
/// not carry personal links), and never one that carries a password (password mode `none` puts
/// it into the link; SPEC §2: the relayed message never contains a password).
pub(super) fn single(urls: &[String]) -> Option<String> {
    match urls {
        [one] if !carries_password(one) => Some(one.clone()),
        _ => None,
    }
}

fn carries_password(url: &str) -> bool {
    match reqwest::Url::parse(url) {
        Ok(u) => u
            .query_pairs()
            .any(|(k, _)| k.eq_ignore_ascii_case("password")),
        Err(_) => url.to_ascii_lowercase().contains("password"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_with_a_password_never_reach_the_notice() {
        let plain = "https://cs.example/download?id=abc".to_string();
        let keyed = "https://cs.example/download?id=abc&Password=s3cret".to_string();
        assert_eq!(single(std::slice::from_ref(&plain)), Some(plain.clone()));
        assert_eq!(single(&[keyed]), None);
        assert_eq!(single(&[plain.clone(), plain]), None);
    }

    #[test]
    fn short_reply_text_is_one_bounded_line() {
        let e = ConvertError::Local("disk\r\nfull".into());
        assert_eq!(e.short(), "diskfull");
        let e = ConvertError::Local("x".repeat(200));
        assert_eq!(e.short(), format!("{}...", "x".repeat(160)));
    }
}
