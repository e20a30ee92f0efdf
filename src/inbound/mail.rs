//! MAIL FROM and RCPT TO: the envelope, checked against the extensions in force and the
//! session's limits (size, recipients, relay control), then handed to the handler.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::Handler;
use super::data::received_allowance;
use super::session::{Flow, Session, Tx, guarded};
use crate::envelope::{Body, Extensions, MailFrom, Notify, RcptTo, Ret};
use crate::replies::{self, Reply};

impl<H: Handler> Session<H> {
    pub(super) async fn mail(&mut self, from: smtp_proto::MailFrom<String>) -> Flow {
        if self.shutdown.drain.is_cancelled() {
            return self.shutting_down();
        }
        if !self.greeted {
            return self.error(replies::helo_first());
        }
        if self.tx.is_some() {
            return self.error(replies::nested_mail());
        }
        let from = match convert_mail_from(from, self.ext()) {
            Ok(f) => f,
            Err(r) => return self.error(r),
        };
        if from
            .size
            .is_some_and(|n| n > self.settings.max_message_size)
        {
            self.reply(replies::message_too_big());
            return Flow::Continue;
        }
        if !from.smtputf8 && !from.address.is_ascii() {
            return self.error(replies::smtputf8_required());
        }
        if !self.reset_handler().await {
            return self.shutting_down();
        }
        self.handler_dirty = true;
        // The message the handler relays is the client's plus our Received: header, so the size
        // declared onwards must include it (RFC 1870: SIZE is an upper estimate, never less).
        let mut onward = from.clone();
        if let Some(n) = onward.size.as_mut() {
            *n = n.saturating_add(received_allowance(&self.settings.hostname, &self.info));
        }
        let Some(r) = guarded(
            &self.shutdown.abort,
            self.handler.mail_from(&self.info, &onward),
        )
        .await
        else {
            return self.shutting_down();
        };
        if r.is_positive() {
            self.tx = Some(Tx {
                queue_id: new_queue_id(),
                from,
                rcpts: Vec::new(),
                incoming: None,
                bdat: false,
            });
        }
        self.reply(r);
        Flow::Continue
    }

    pub(super) async fn rcpt(&mut self, to: smtp_proto::RcptTo<String>) -> Flow {
        let ext = self.ext();
        let Some(tx) = &self.tx else {
            return self.error(replies::need_mail());
        };
        if tx.incoming.is_some() {
            return self.error(replies::bad_sequence());
        }
        let smtputf8 = tx.from.smtputf8;
        let count = tx.rcpts.len();
        let rcpt = match convert_rcpt_to(to, ext) {
            Ok(r) => r,
            Err(r) => return self.error(r),
        };
        if rcpt.address.is_empty() {
            return self.error(replies::bad_recipient_syntax());
        }
        if !smtputf8 && !rcpt.address.is_ascii() {
            return self.error(replies::smtputf8_required());
        }
        if !self.info.may_relay {
            return self.error(replies::relay_denied());
        }
        if count >= self.settings.max_recipients {
            self.reply(replies::too_many_recipients());
            return Flow::Continue;
        }
        let Some(r) = guarded(
            &self.shutdown.abort,
            self.handler.rcpt_to(&self.info, &rcpt),
        )
        .await
        else {
            return self.shutting_down();
        };
        if r.is_positive()
            && let Some(tx) = &mut self.tx
        {
            tx.rcpts.push(rcpt);
        }
        self.reply(r);
        Flow::Continue
    }
}

fn convert_mail_from(m: smtp_proto::MailFrom<String>, ext: Extensions) -> Result<MailFrom, Reply> {
    use smtp_proto::{
        MAIL_BODY_7BIT, MAIL_BODY_8BITMIME, MAIL_BODY_BINARYMIME, MAIL_BY_NOTIFY, MAIL_BY_RETURN,
        MAIL_BY_TRACE, MAIL_CONPERM, MAIL_REQUIRETLS, MAIL_RET_FULL, MAIL_RET_HDRS, MAIL_SMTPUTF8,
    };
    let unsupported = |p: &str| Err(replies::unsupported_parameter(p));
    if m.flags & (MAIL_REQUIRETLS | MAIL_CONPERM | MAIL_BY_NOTIFY | MAIL_BY_RETURN | MAIL_BY_TRACE)
        != 0
        || m.trans_id.is_some()
        || m.by != 0
        || m.solicit.is_some()
        || m.mtrk.is_some()
        || m.hold_for != 0
        || m.hold_until != 0
        || m.mt_priority != 0
    {
        return unsupported("(extension not offered)");
    }
    let body = if m.flags & MAIL_BODY_BINARYMIME != 0 {
        if !(ext.binarymime && ext.chunking) {
            return unsupported("BODY=BINARYMIME");
        }
        Some(Body::BinaryMime)
    } else if m.flags & MAIL_BODY_8BITMIME != 0 {
        if !ext.eight_bit_mime {
            return unsupported("BODY=8BITMIME");
        }
        Some(Body::EightBitMime)
    } else if m.flags & MAIL_BODY_7BIT != 0 {
        if !ext.eight_bit_mime {
            return unsupported("BODY=7BIT");
        }
        Some(Body::SevenBit)
    } else {
        None
    };
    let smtputf8 = m.flags & MAIL_SMTPUTF8 != 0;
    if smtputf8 && !ext.smtputf8 {
        return unsupported("SMTPUTF8");
    }
    let ret = if m.flags & MAIL_RET_FULL != 0 {
        Some(Ret::Full)
    } else if m.flags & MAIL_RET_HDRS != 0 {
        Some(Ret::Hdrs)
    } else {
        None
    };
    if (ret.is_some() || m.env_id.is_some()) && !ext.dsn {
        return unsupported("RET/ENVID");
    }
    // SIZE: an empty value parses as 0, which carries no information.
    let size = (m.size != 0).then_some(m.size as u64);
    // An AUTH= without the extension being used is tolerated: it is passed on as received.
    Ok(MailFrom {
        address: m.address,
        size,
        body,
        smtputf8,
        ret,
        envid: m.env_id,
        auth: m.auth,
    })
}

fn convert_rcpt_to(r: smtp_proto::RcptTo<String>, ext: Extensions) -> Result<RcptTo, Reply> {
    use smtp_proto::{
        RCPT_CONNEG, RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER,
        RCPT_NOTIFY_SUCCESS, RCPT_RRVS_CONTINUE, RCPT_RRVS_REJECT,
    };
    if r.flags & (RCPT_CONNEG | RCPT_RRVS_REJECT | RCPT_RRVS_CONTINUE) != 0 || r.rrvs != 0 {
        return Err(replies::unsupported_parameter("(extension not offered)"));
    }
    let notify = Notify {
        never: r.flags & RCPT_NOTIFY_NEVER != 0,
        success: r.flags & RCPT_NOTIFY_SUCCESS != 0,
        failure: r.flags & RCPT_NOTIFY_FAILURE != 0,
        delay: r.flags & RCPT_NOTIFY_DELAY != 0,
    };
    if (notify.is_set() || r.orcpt.is_some()) && !ext.dsn {
        return Err(replies::unsupported_parameter("NOTIFY/ORCPT"));
    }
    Ok(RcptTo {
        address: r.address,
        notify,
        orcpt: r.orcpt,
    })
}

/// A queue id: microseconds since the epoch plus a process-wide counter, in upper-case hex.
/// Unique within the process and, in practice, across restarts.
pub fn new_queue_id() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) & 0xF_FFFF;
    format!("{micros:X}{n:05X}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_ids_are_unique() {
        let ids: std::collections::HashSet<_> = (0..10_000).map(|_| new_queue_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|i| i.bytes().all(|b| b.is_ascii_hexdigit())));
    }
}
