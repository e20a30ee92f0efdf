//! The Cryptshare side of one conversion: from the message's chosen parts to an active transfer,
//! with the mapping of SPEC §2 and the exactly-once bookkeeping in the state store.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::config::{PasswordMode as PolicyPasswordMode, PolicyConfig};
use crate::cryptshare::{
    self, NewTransferSession, NotificationMessage, PasswordMode, Recipient, Recipients,
    SecurityMode, Sender, TransferSessionPatch, TransferState, format_date_time,
};
use crate::mime::{self, Analysis, PartId};
use crate::ops::audit::AuditFile;
use crate::store::spool::Spooled;
use crate::store::state::{Record, StateError, StateStore, StoredFile};

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{0}")]
    Cryptshare(#[from] cryptshare::Error),
    /// The server's transfer policy refuses this sender, these recipients or this size.
    #[error("refused by the Cryptshare transfer policy: {0}")]
    PolicyRefused(String),
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
            ConvertError::PolicyRefused(_) => true,
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
    pub sender_display: String,
    pub password_mode: PolicyPasswordMode,
    pub notify_recipients: bool,
    pub reused: bool,
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

    /// How the recipient gets the files, in the notice's language.
    pub fn instructions(&self, language: &str) -> String {
        let de = language.eq_ignore_ascii_case("de");
        let link = match (self.notify_recipients, de) {
            (true, false) => {
                "You receive the download link in a separate e-mail from the Cryptshare server."
            }
            (true, true) => {
                "Den Download-Link erhalten Sie in einer separaten E-Mail vom Cryptshare-Server."
            }
            (false, false) => "Ask the sender for the download link.",
            (false, true) => "Den Download-Link erhalten Sie vom Absender.",
        };
        let pw = match (self.password_mode, de) {
            (PolicyPasswordMode::Generated, false) => "The password comes from the sender.",
            (PolicyPasswordMode::Generated, true) => "Das Passwort erhalten Sie vom Absender.",
            (PolicyPasswordMode::None, false) => "No password is needed.",
            (PolicyPasswordMode::None, true) => "Ein Passwort ist nicht erforderlich.",
        };
        format!("{link} {pw}")
    }
}

pub(super) struct Job<'a> {
    pub cs: &'a cryptshare::Client,
    pub state: &'a StateStore,
    pub policy: &'a PolicyConfig,
    pub key: &'a str,
    pub sender: &'a str,
    pub rcpts: &'a [String],
    pub message: Arc<Spooled>,
    pub analysis: &'a Analysis,
    pub selection: &'a [PartId],
}

/// What the headers contribute to the transfer (SPEC §2).
struct HeaderFacts {
    from_name: Option<String>,
    subject: Option<String>,
    to: Vec<String>,
    cc: Vec<String>,
}

fn header_facts(raw: &[u8]) -> HeaderFacts {
    let Some(msg) = mail_parser::MessageParser::default().parse_headers(raw) else {
        return HeaderFacts {
            from_name: None,
            subject: None,
            to: vec![],
            cc: vec![],
        };
    };
    let addrs = |a: Option<&mail_parser::Address>| -> Vec<String> {
        a.map(|a| {
            a.iter()
                .filter_map(|x| x.address())
                .map(|s| s.to_ascii_lowercase())
                .collect()
        })
        .unwrap_or_default()
    };
    HeaderFacts {
        from_name: msg
            .from()
            .and_then(|f| f.first())
            .and_then(|a| a.name())
            .map(|s| clean(s, 128))
            .filter(|s| !s.is_empty()),
        subject: msg.subject().map(|s| clean(s, 998)),
        to: addrs(msg.to()),
        cc: addrs(msg.cc()),
    }
}

/// `subject` without the first case-insensitive occurrence of `tag` (and the space after it).
fn strip_tag(subject: &str, tag: &str) -> String {
    mime::remove_tag_from_text(subject, tag).unwrap_or_else(|| subject.to_string())
}

/// Untrusted header text for an API call: no control characters, bounded.
fn clean(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect::<String>()
        .trim()
        .to_string()
}

impl Job<'_> {
    pub async fn run(self) -> Result<Converted, ConvertError> {
        let started = Instant::now();
        let raw = self.message.as_bytes();
        let mut facts = header_facts(raw);
        if let (Some(tag), Some(subject)) = (self.policy.subject_tag.as_deref(), &facts.subject) {
            facts.subject = Some(strip_tag(subject, tag));
        }
        let sender_display = facts
            .from_name
            .clone()
            .or_else(|| self.policy.sender_name.clone())
            .unwrap_or_else(|| {
                self.sender
                    .split('@')
                    .next()
                    .unwrap_or(self.sender)
                    .to_string()
            });

        match self.state.get(self.key)? {
            Some(Record::Finished {
                tracking_id,
                expiration,
                files,
                download_urls,
                ..
            }) => {
                tracing::info!(tracking_id = %tracking_id, "message seen before: reusing its finished transfer");
                return Ok(Converted {
                    tracking_id,
                    expiration,
                    files,
                    download_url: single(&download_urls),
                    sender_display,
                    password_mode: self.policy.password_mode,
                    notify_recipients: self.policy.notify_recipients,
                    reused: true,
                    cryptshare_ms: 0,
                });
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
                        return self.adopt(id, st, sender_display, started).await;
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
            }
            Some(Record::Pending {
                tracking_id: None, ..
            })
            | None => {}
        }

        let mut progress = Progress::default();
        let result = self
            .create_transfer(&facts, &sender_display, &mut progress)
            .await;
        match result {
            Ok(mut c) => {
                c.cryptshare_ms = started.elapsed().as_millis() as u64;
                Ok(c)
            }
            Err(e) => Err(self.clean_up_failed(e, &progress).await),
        }
    }

    /// All or nothing: no half-made transfer stays on the server. Returns the error to report.
    async fn clean_up_failed(&self, e: ConvertError, progress: &Progress) -> ConvertError {
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

    /// Name, decoded size and SHA-256 of a part to upload (one decoding pass, off the workers).
    async fn file_facts(&self, part: &mime::Part) -> Result<StoredFile, ConvertError> {
        let name = part
            .upload_name
            .clone()
            .unwrap_or_else(|| format!("attachment-{}.bin", part.id));
        let (size, sha) = {
            let message = self.message.clone();
            let part = part.clone();
            tokio::task::spawn_blocking(move || mime::part_sha256(message.as_bytes(), &part))
                .await
                .map_err(|e| ConvertError::Local(format!("hashing failed: {e}")))?
        };
        Ok(StoredFile {
            name,
            size,
            sha256: hex::encode(sha),
        })
    }

    fn parts(&self) -> Vec<&mime::Part> {
        self.selection
            .iter()
            .filter_map(|&id| self.analysis.part(id))
            .collect()
    }

    /// Record and return a transfer that an earlier attempt finalized: the files are those of
    /// this same message (same key), the expiry and links come from the server, so the notice
    /// is the one the earlier attempt would have produced.
    async fn adopt(
        &self,
        id: String,
        st: cryptshare::TransferStatus,
        sender_display: String,
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
        self.state.put(
            self.key,
            &Record::Finished {
                sender: self.sender.to_string(),
                tracking_id: id.clone(),
                expiration: expiration.clone(),
                files: files.clone(),
                download_urls: urls.clone(),
                created: chrono::Utc::now().timestamp(),
            },
        )?;
        Ok(Converted {
            tracking_id: id,
            expiration,
            files,
            download_url: single(&urls),
            sender_display,
            password_mode: self.policy.password_mode,
            notify_recipients: self.policy.notify_recipients,
            reused: true,
            cryptshare_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// The policy's expiry, capped by the server's maximum retention.
    fn expires(&self, max_retention_days: Option<i64>) -> chrono::DateTime<chrono::Utc> {
        let mut days = i64::from(self.policy.expiration_days);
        if let Some(max) = max_retention_days.filter(|&m| m > 0) {
            days = days.min(max);
        }
        chrono::Utc::now() + chrono::Duration::days(days)
    }

    async fn create_transfer(
        &self,
        facts: &HeaderFacts,
        sender_display: &str,
        progress: &mut Progress,
    ) -> Result<Converted, ConvertError> {
        let cs = self.cs;
        let sender = self.sender;
        let policy = self.policy;
        let now = chrono::Utc::now().timestamp();

        // 1. Would the server accept this at all? (token verification happens inside the client)
        let tp = cs.transfer_policy(sender, self.rcpts).await?;
        if !tp.allowed {
            let failed: Vec<String> = tp
                .failed_recipients
                .unwrap_or_default()
                .into_iter()
                .map(|f| {
                    format!(
                        "{} ({})",
                        clean(&f.email_address, 254),
                        clean(&f.reason, 80)
                    )
                })
                .collect();
            return Err(ConvertError::PolicyRefused(if failed.is_empty() {
                "sender not allowed".into()
            } else {
                format!("recipients not allowed: {}", failed.join(", "))
            }));
        }
        let settings = tp.settings.unwrap_or_default();
        let parts = self.parts();
        let total: u64 = parts.iter().map(|p| p.size).sum();
        if settings.max_total_size > 0 && total > settings.max_total_size as u64 {
            return Err(ConvertError::PolicyRefused(format!(
                "{total} bytes exceed the server's limit of {} bytes",
                settings.max_total_size
            )));
        }
        let mode = match policy.password_mode {
            PolicyPasswordMode::Generated => PasswordMode::Generated,
            PolicyPasswordMode::None => PasswordMode::None,
        };
        let allowed = settings.allowed_password_modes();
        if !allowed.is_empty() && !allowed.contains(&mode) {
            return Err(ConvertError::PolicyRefused(format!(
                "password mode {} is not allowed by the server",
                mode.as_str()
            )));
        }
        let expires = self.expires(Some(settings.max_retention_period));

        // 2. Create the session (recipients are fixed here): to / cc from the headers, the rest bcc.
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
                phone: policy.sender_phone.clone(),
            },
            recipients,
        };
        self.state.put(
            self.key,
            &Record::Pending {
                sender: sender.to_string(),
                tracking_id: None,
                created: now,
            },
        )?;
        let id = cs
            .create_session(sender, Some(&policy.language), &new)
            .await?;
        progress.tracking_id = Some(id.clone());
        self.state.put(
            self.key,
            &Record::Pending {
                sender: sender.to_string(),
                tracking_id: Some(id.clone()),
                created: now,
            },
        )?;

        // 3. Settings.
        let patch = TransferSessionPatch {
            expiration_date: Some(format_date_time(&expires.fixed_offset())),
            security_mode: Some(SecurityMode::one_time_password(mode, None)),
            notification_message: Some(NotificationMessage {
                subject: facts.subject.clone(),
                body: notification_body(self.message.as_bytes(), self.analysis),
            }),
            sender_language: Some(policy.language.clone()),
            recipient_language: Some(policy.language.clone()),
            show_file_names: Some(policy.show_file_names),
            send_recipient_notification: Some(policy.notify_recipients),
            // With a generated password the sender learns it only from the upload summary.
            send_upload_summary: Some(policy.upload_summary || mode == PasswordMode::Generated),
            send_download_notifications: Some(policy.download_notifications),
            send_download_summary: Some(policy.download_notifications),
            classification_id: policy.classification_id.clone(),
            file_checksum_algorithm: Some("SHA256".into()),
            ..Default::default()
        };
        cs.patch_settings(sender, &id, &patch).await?;

        // 4. Files: hash (one decoding pass), register, stream (a second pass, never in memory).
        let mut stored = Vec::with_capacity(parts.len());
        for part in parts {
            let StoredFile {
                name,
                size,
                sha256: sha,
            } = self.file_facts(part).await?;
            let file_id = cs.register_file(sender, &id, &name, size, &sha).await?;
            let message = self.message.clone();
            let part = part.clone();
            cs.upload_file(sender, &id, &file_id, size, move || {
                let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
                let message = message.clone();
                let part = part.clone();
                tokio::task::spawn_blocking(move || {
                    use std::io::Read;
                    let mut r = mime::PartReader::new(message.as_bytes(), &part);
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
                async move { Ok(tokio_stream_from(rx)) }
            })
            .await?;
            stored.push(StoredFile {
                name,
                size,
                sha256: sha,
            });
        }

        // 5. Send, and wait until the recipients can download.
        progress.finalize_sent = true;
        cs.finalize(sender, &id).await?;
        let status = cs.wait_processed(sender, &id).await?;
        let urls: Vec<String> = status.download_urls().into_iter().map(|(_, u)| u).collect();
        let expiration = expires.format("%Y-%m-%d").to_string();
        self.state.put(
            self.key,
            &Record::Finished {
                sender: sender.to_string(),
                tracking_id: id.clone(),
                expiration: expiration.clone(),
                files: stored.clone(),
                download_urls: urls.clone(),
                created: now,
            },
        )?;
        Ok(Converted {
            tracking_id: id,
            expiration,
            files: stored,
            download_url: single(&urls),
            sender_display: sender_display.to_string(),
            password_mode: policy.password_mode,
            notify_recipients: policy.notify_recipients,
            reused: false,
            cryptshare_ms: 0,
        })
    }
}

/// How far [`Job::create_transfer`] got, for the clean-up after a failure.
#[derive(Default)]
struct Progress {
    tracking_id: Option<String>,
    finalize_sent: bool,
}

/// What became of the session an earlier attempt recorded as pending.
pub(super) enum Earlier {
    /// Finalized: the transfer exists (active, or still processing).
    Finalized(Box<cryptshare::TransferStatus>),
    /// Finalized, but failed or deleted since: nothing to reuse, nothing to clean up.
    Unusable,
    /// Never finalized: a session to delete.
    Unfinished,
}

/// Ask the server whether `id` became a transfer. Unknown → the session was never finalized.
pub(super) async fn earlier_transfer(
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

/// The download link for the notice: only with exactly one recipient (a shared message must
/// not carry personal links), and never one that carries a password (password mode `none` puts
/// it into the link; SPEC §2: the relayed message never contains a password).
fn single(urls: &[String]) -> Option<String> {
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

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The recipient notification text: the message's first text body (plain preferred; HTML reduced
/// to text), bounded, decoded from its charset.
fn notification_body(raw: &[u8], a: &Analysis) -> Option<String> {
    const MAX: usize = 10_000;
    let bodies: Vec<&mime::Part> = a
        .parts
        .iter()
        .filter(|p| p.class == mime::Class::Body)
        .collect();
    let part = bodies
        .iter()
        .find(|p| p.content_type == "text/plain")
        .or_else(|| bodies.first())?;
    let mut bytes = Vec::new();
    let mut r = std::io::Read::take(mime::PartReader::new(raw, part), 256 * 1024);
    std::io::Read::read_to_end(&mut r, &mut bytes).ok()?;
    let text = match part
        .charset
        .as_deref()
        .and_then(|c| mail_parser::decoders::charsets::map::charset_decoder(c.as_bytes()))
    {
        Some(decode) => decode(&bytes),
        None => String::from_utf8_lossy(&bytes).into_owned(),
    };
    let text = if part.content_type == "text/html" {
        html_to_text(&text)
    } else {
        text
    };
    let text: String = text
        .chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .take(MAX)
        .collect();
    let text = text.trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// Crude but safe: drop tags, decode the handful of entities mail clients produce.
fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
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

    #[test]
    fn subject_tag_is_stripped_for_the_notification() {
        assert_eq!(strip_tag("[SECURE] Report", "[secure]"), "Report");
        assert_eq!(strip_tag("Report [secure]", "[secure]"), "Report");
        assert_eq!(strip_tag("Report", "[secure]"), "Report");
        // Lower-casing "İ" changes its length: the cut must still fall right.
        assert_eq!(strip_tag("İstanbul [SECURE] Q3", "[secure]"), "İstanbul Q3");
    }

    #[test]
    fn html_is_reduced_to_text() {
        assert_eq!(html_to_text("<p>a &amp; b</p><br>c&lt;d"), "a & bc<d");
    }

    #[test]
    fn header_facts_decode_names_and_lists() {
        let raw = b"From: =?utf-8?q?J=C3=B6rg?= <j@x.org>\r\nTo: A <A@y.org>, b@y.org\r\nCc: c@z.org\r\nSubject: Hi\r\n\r\nbody";
        let f = header_facts(raw);
        assert_eq!(f.from_name.as_deref(), Some("Jörg"));
        assert_eq!(f.to, vec!["a@y.org", "b@y.org"]);
        assert_eq!(f.cc, vec!["c@z.org"]);
        assert_eq!(f.subject.as_deref(), Some("Hi"));
    }
}
