//! The notification mails a Cryptshare Server sends, written as `.eml` files instead.

use std::io::Write;
use std::path::Path;

use base64::Engine;

pub(crate) struct Mail<'a> {
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
    pub(crate) fn render(&self) -> Vec<u8> {
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
    pub(crate) fn write(&self, dir: &Path, name: &str) -> std::io::Result<()> {
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&self.render())?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(name))
    }
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
