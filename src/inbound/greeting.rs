//! The greeting phase: EHLO and HELO. EHLO asks the handler which extensions the next hop can
//! take (so that nothing is accepted here that cannot be passed on) and adds the session's own
//! (PIPELINING, SIZE, STARTTLS, AUTH, ENHANCEDSTATUSCODES).

use super::Handler;
use super::session::{Flow, Session, guarded};
use crate::envelope::Extensions;
use crate::replies;

impl<H: Handler> Session<H> {
    pub(super) async fn helo(&mut self, host: String, extended: bool) -> Flow {
        if !self.reset_tx("aborted: EHLO/HELO").await {
            return self.shutting_down();
        }
        self.info.helo = sanitize_helo(&host);
        self.info.esmtp = extended;
        self.greeted = true;
        if !extended {
            self.ext = None;
            let r = replies::helo(&self.settings.hostname);
            self.reply(r);
            return Flow::Continue;
        }
        let Some(ext) = guarded(&self.shutdown.abort, self.handler.extensions()).await else {
            return self.shutting_down();
        };
        self.ext = Some(ext);
        let s = &self.settings;
        let mut kw = vec![
            "PIPELINING".to_string(),
            format!("SIZE {}", s.max_message_size),
        ];
        if s.tls.is_some() && !self.info.tls {
            kw.push("STARTTLS".into());
        }
        if let Some(a) = &s.auth
            && (self.info.tls || a.allow_plaintext)
            && self.info.auth_user.is_none()
        {
            kw.push("AUTH PLAIN LOGIN".into());
        }
        kw.push("ENHANCEDSTATUSCODES".into());
        if ext.eight_bit_mime {
            kw.push("8BITMIME".into());
        }
        if ext.binarymime && ext.chunking {
            kw.push("BINARYMIME".into());
        }
        if ext.dsn {
            kw.push("DSN".into());
        }
        if ext.smtputf8 {
            kw.push("SMTPUTF8".into());
        }
        if ext.chunking {
            kw.push("CHUNKING".into());
        }
        let r = replies::ehlo(&s.hostname, kw);
        self.reply(r);
        Flow::Continue
    }

    /// Extensions in force: those of the last EHLO, none after HELO.
    pub(super) fn ext(&self) -> Extensions {
        self.ext.unwrap_or(Extensions {
            eight_bit_mime: false,
            smtputf8: false,
            dsn: false,
            chunking: false,
            binarymime: false,
        })
    }
}

/// The EHLO/HELO argument as it may appear in a header and a log line.
fn sanitize_helo(host: &str) -> String {
    host.chars()
        .take(255)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}
