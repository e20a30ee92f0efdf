//! The mails a Cryptshare Server sends (verification codes, recipient notifications, the
//! sender's upload summary), written as `.eml` files instead.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;

use super::{SimFile, SimRecipient};
use crate::cryptshare::types::{PasswordMode, TransferSession};

pub(super) struct Mail<'a> {
    pub to: &'a str,
    pub subject: &'a str,
    pub body: String,
    pub message_id: String,
    pub tracking_id: Option<&'a str>,
}

/// Header values come from API input: no line breaks, and RFC 2047 for non-ASCII.
fn header_value(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.is_ascii() {
        clean
    } else {
        // One encoded word per ≤45 input bytes keeps every line under 78 characters.
        let mut out = Vec::new();
        let mut chunk = String::new();
        for c in clean.chars() {
            if chunk.len() + c.len_utf8() > 45 {
                out.push(encoded_word(&chunk));
                chunk.clear();
            }
            chunk.push(c);
        }
        if !chunk.is_empty() {
            out.push(encoded_word(&chunk));
        }
        out.join("\r\n ")
    }
}

fn encoded_word(s: &str) -> String {
    format!(
        "=?UTF-8?B?{}?=",
        base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
    )
}

fn address(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() && !matches!(c, '<' | '>' | ',' | ' '))
        .collect()
}

impl Mail<'_> {
    pub(super) fn render(&self) -> Vec<u8> {
        let mut m = String::new();
        m.push_str("From: Cryptshare <noreply@cryptshare-sim.invalid>\r\n");
        m.push_str(&format!("To: <{}>\r\n", address(self.to)));
        m.push_str(&format!("Subject: {}\r\n", header_value(self.subject)));
        m.push_str(&format!("Date: {}\r\n", chrono::Utc::now().to_rfc2822()));
        m.push_str(&format!("Message-ID: <{}>\r\n", address(&self.message_id)));
        if let Some(t) = self.tracking_id {
            m.push_str(&format!("X-Cryptshare-Tracking-Id: {}\r\n", address(t)));
        }
        m.push_str("MIME-Version: 1.0\r\n");
        m.push_str("Content-Type: text/plain; charset=utf-8\r\n");
        m.push_str("Content-Transfer-Encoding: 8bit\r\n\r\n");
        for line in self.body.lines() {
            m.push_str(line);
            m.push_str("\r\n");
        }
        m.into_bytes()
    }

    /// Write atomically (temp file + rename) so a reader never sees half a mail.
    pub(super) fn write(&self, dir: &Path, name: &str) -> std::io::Result<()> {
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&self.render())?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(name))
    }
}

pub(super) struct OwnedMail {
    pub(super) to: String,
    pub(super) subject: String,
    pub(super) body: String,
    pub(super) message_id: String,
    pub(super) tracking_id: Option<String>,
}

pub(super) fn mail_owned(m: Mail<'_>) -> OwnedMail {
    OwnedMail {
        to: m.to.to_owned(),
        subject: m.subject.to_owned(),
        body: m.body,
        message_id: m.message_id,
        tracking_id: m.tracking_id.map(str::to_owned),
    }
}

/// Write the mails into `dir` off the async threads; a failure is logged, not fatal.
pub(super) async fn write_mails(dir: PathBuf, mails: Vec<(OwnedMail, String)>) {
    let _ = tokio::task::spawn_blocking(move || {
        for (m, name) in mails {
            let mail = Mail {
                to: &m.to,
                subject: &m.subject,
                body: m.body,
                message_id: m.message_id,
                tracking_id: m.tracking_id.as_deref(),
            };
            if let Err(e) = mail.write(&dir, &name) {
                tracing::warn!(error = %e, file = %name, "cryptshare-sim: cannot write mail");
            }
        }
    })
    .await;
}

pub(super) fn human_size(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KB", "MB", "GB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The recipients' notifications and the sender's upload summary of an `ACTIVE` transfer,
/// as (mail, file name), following the session's notification settings.
pub(super) fn transfer_mails(
    tid: &str,
    sender: &str,
    settings: &TransferSession,
    files: &[SimFile],
    recipients: &[&SimRecipient],
    mode: PasswordMode,
    password: &str,
) -> Vec<(OwnedMail, String)> {
    let mut mails = Vec::new();
    let sender_name = settings
        .sender
        .as_ref()
        .and_then(|s| s.name.clone())
        .unwrap_or_default();
    let note = settings.notification_message.clone().unwrap_or_default();
    let expiry = settings.expiration_date.clone().unwrap_or_default();
    let show = settings.show_file_names.unwrap_or(false);
    let listing: String = files
        .iter()
        .filter(|f| !f.removed)
        .map(|f| format!("  - {} ({})\n", f.name, human_size(f.size)))
        .collect();
    if settings.send_recipient_notification.unwrap_or(true) {
        for r in recipients {
            let mut body = format!(
                "{sender_name} <{}> has sent you files via Cryptshare.\n\n",
                sender
            );
            if let Some(b) = note.body.as_deref().filter(|b| !b.is_empty()) {
                body.push_str(b);
                body.push_str("\n\n");
            }
            if show {
                body.push_str("Files:\n");
                body.push_str(&listing);
                body.push('\n');
            }
            body.push_str(&format!(
                "Download: {}\nAvailable until: {expiry}\n",
                r.download_url
            ));
            if mode != PasswordMode::None {
                body.push_str("The sender will tell you the password.\n");
            }
            let subject = note
                .subject
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "Cryptshare transfer".into());
            mails.push((
                OwnedMail {
                    to: r.mail.clone(),
                    subject,
                    body,
                    message_id: format!("{tid}.{}@cryptshare-sim.invalid", r.transfer_id),
                    tracking_id: Some(tid.to_owned()),
                },
                format!("{tid}-recipient-{}.eml", r.transfer_id),
            ));
        }
    }
    if settings.send_upload_summary.unwrap_or(true) {
        let mut body = format!(
            "Your transfer {tid} has been provided to:\n{}\n",
            recipients
                .iter()
                .map(|r| format!("  - {}\n", r.mail))
                .collect::<String>()
        );
        body.push_str("Files:\n");
        body.push_str(&listing);
        body.push_str(&format!("\nAvailable until: {expiry}\n"));
        if matches!(mode, PasswordMode::Generated | PasswordMode::Manual) {
            body.push_str(&format!("Password: {password}\n"));
        }
        mails.push((
            OwnedMail {
                to: sender.to_owned(),
                subject: format!("Cryptshare transfer {tid} provided"),
                body,
                message_id: format!("{tid}.sender@cryptshare-sim.invalid"),
                tracking_id: Some(tid.to_owned()),
            },
            format!("{tid}-sender.eml"),
        ));
    }
    mails
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_injection_and_encoding() {
        assert_eq!(header_value("a\r\nBcc: x"), "a  Bcc: x");
        let enc = header_value("Grüße");
        assert_eq!(enc, "=?UTF-8?B?R3LDvMOfZQ==?=");
        assert_eq!(address("a@b.c>\r\nX: y"), "a@b.cX:y");
    }
}
