//! MAIL FROM and RCPT TO: the envelope, checked against the extensions in force and the
//! session's limits (size, recipients, relay control), then handed to the handler.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::Handler;
use super::data::received_allowance;
use super::session::{Flow, Session, Tx, guarded};
use crate::envelope::{Body, Extensions, MailFrom, Notify, RcptTo, Ret, mailbox_of};
use crate::replies::{self, Reply};

impl<H: Handler> Session<H> {
    pub(super) async fn mail(&mut self, from: smtp_proto::MailFrom<String>, line: &[u8]) -> Flow {
        if self.shutdown.drain.is_cancelled() {
            return self.shutting_down();
        }
        if !self.greeted {
            return self.error(replies::helo_first());
        }
        if self.tx.is_some() {
            return self.error(replies::nested_mail());
        }
        let path = PathLine::split(line).map(|p| p.sender());
        let address = match path {
            Some(Ok(a)) => a,
            Some(Err(r)) => return self.error(r),
            None => return self.error(replies::bad_sender_syntax()),
        };
        let size = match check_parameters(line) {
            Ok(size) => size,
            // Too big is no protocol error (as for a SIZE= above the limit).
            Err(r) if r.code == 552 => {
                self.reply(r);
                return Flow::Continue;
            }
            Err(r) => return self.error(r),
        };
        let mut from = match convert_mail_from(from, self.ext()) {
            Ok(f) => f,
            Err(r) => return self.error(r),
        };
        from.address = address;
        // smtp-proto's SIZE saturates and then wraps (21+ digits came out as small numbers).
        from.size = size.filter(|&n| n != 0);
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

    pub(super) async fn rcpt(&mut self, to: smtp_proto::RcptTo<String>, line: &[u8]) -> Flow {
        let ext = self.ext();
        let Some(tx) = &self.tx else {
            return self.error(replies::need_mail());
        };
        if tx.incoming.is_some() {
            return self.error(replies::bad_sequence());
        }
        let smtputf8 = tx.from.smtputf8;
        let count = tx.rcpts.len();
        let path = PathLine::split(line).map(|p| p.recipient());
        let address = match path {
            Some(Ok(a)) => a,
            Some(Err(r)) => return self.error(r),
            None => return self.error(replies::bad_recipient_syntax()),
        };
        if let Err(r) = check_parameters(line) {
            return self.error(r);
        }
        let mut rcpt = match convert_rcpt_to(to, ext) {
            Ok(r) => r,
            Err(r) => return self.error(r),
        };
        rcpt.address = address;
        if !smtputf8 && !rcpt.address.is_ascii() {
            return self.error(replies::smtputf8_required());
        }
        if !self.info.may_relay {
            return self.error(replies::relay_denied());
        }
        if count >= self.settings.max_recipients {
            // Counted: a client that keeps sending recipients past the limit is cut off.
            return self.error(replies::too_many_recipients());
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

/// What smtp-proto's parser cannot tell: a parameter given twice (it merges them) and a SIZE
/// value too long for it (it wraps). Returns the SIZE value. RFC 1870: `SIZE=` 1*20DIGIT;
/// more digits or none is a syntax error (`501 5.5.4`), 20 digits beyond `u64` is too big
/// (`552 5.3.4`).
fn check_parameters(line: &[u8]) -> Result<Option<u64>, Reply> {
    let mut seen: Vec<&[u8]> = Vec::new();
    let mut size = None;
    for param in raw_parameters(line).split(u8::is_ascii_whitespace) {
        if param.is_empty() {
            continue;
        }
        let (key, value) = match param.iter().position(|&b| b == b'=') {
            Some(p) => (&param[..p], Some(&param[p + 1..])),
            None => (param, None),
        };
        if seen.iter().any(|k| k.eq_ignore_ascii_case(key)) {
            return Err(replies::duplicate_parameter(&String::from_utf8_lossy(key)));
        }
        seen.push(key);
        if key.eq_ignore_ascii_case(b"SIZE") {
            let v = value.unwrap_or_default();
            if v.is_empty() || v.len() > 20 || !v.iter().all(u8::is_ascii_digit) {
                return Err(replies::invalid_parameter("SIZE"));
            }
            let n = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(replies::message_too_big)?;
            size = Some(n);
        }
    }
    Ok(size)
}

/// A MAIL / RCPT line taken apart by hand, because smtp-proto's parser rewrites the path (it
/// drops the quotes of a quoted local part, cuts at a quoted `>`, turns `<Postmaster>` into
/// an empty address). `verb`: up to and including the colon; `path`: the text between `<` and
/// `>` exactly as sent (a `>` inside a quoted local part does not end it), `None` when the `>`
/// is missing; `params`: what follows the path, without the line ending.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct PathLine<'a> {
    verb: &'a [u8],
    path: Option<&'a [u8]>,
    params: &'a [u8],
}

impl<'a> PathLine<'a> {
    /// `None` unless the line is `MAIL FROM:` or `RCPT TO:` (any case).
    pub(super) fn split(line: &'a [u8]) -> Option<PathLine<'a>> {
        let line = line.trim_ascii_end();
        let colon = [b"MAIL FROM:".as_slice(), b"RCPT TO:"]
            .iter()
            .find(|v| line.len() >= v.len() && line[..v.len()].eq_ignore_ascii_case(v))?
            .len();
        // Spaces after the colon are tolerated (as by Postfix and smtp-proto).
        let start = colon + line[colon..].iter().take_while(|&&b| b == b' ').count();
        let rest = &line[start..];
        if rest.first() != Some(&b'<') {
            // No angle brackets (tolerated): the path ends at the first space.
            let end = rest
                .iter()
                .position(u8::is_ascii_whitespace)
                .unwrap_or(rest.len());
            return Some(PathLine {
                verb: &line[..colon],
                path: (end > 0).then_some(&rest[..end]),
                params: &rest[end..],
            });
        }
        let mut quoted = false;
        let mut escaped = false;
        for (i, &b) in rest.iter().enumerate().skip(1) {
            match b {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                b'>' if !quoted => {
                    return Some(PathLine {
                        verb: &line[..colon],
                        path: Some(&rest[1..i]),
                        params: &rest[i + 1..],
                    });
                }
                _ => {}
            }
        }
        Some(PathLine {
            verb: &line[..colon],
            path: None,
            params: &[],
        })
    }

    /// The line for smtp-proto, which parses the parameters: the path replaced by `<>`.
    pub(super) fn for_parser(&self) -> Vec<u8> {
        [self.verb, b"<>", self.params, b"\r\n"].concat()
    }

    /// The reverse path: empty for `<>`, else a mailbox exactly as sent (source route dropped).
    fn sender(&self) -> Result<String, Reply> {
        match self.path_text() {
            Some("") if self.path.is_some() => Ok(String::new()),
            Some(p) => mailbox_of(p)
                .map(str::to_owned)
                .map_err(|_| replies::bad_sender_syntax()),
            None => Err(replies::bad_sender_syntax()),
        }
    }

    /// The forward path: a mailbox exactly as sent (source route dropped), or `Postmaster`
    /// without a domain in any case (RFC 5321 §4.1.1.3).
    fn recipient(&self) -> Result<String, Reply> {
        match self.path_text() {
            Some(p) if p.eq_ignore_ascii_case("postmaster") => Ok(p.to_owned()),
            Some(p) => mailbox_of(p)
                .map(str::to_owned)
                .map_err(|_| replies::bad_recipient_syntax()),
            None => Err(replies::bad_recipient_syntax()),
        }
    }

    fn path_text(&self) -> Option<&'a str> {
        std::str::from_utf8(self.path?).ok()
    }
}

/// The parameters of a MAIL / RCPT line (see [`PathLine`]).
fn raw_parameters(line: &[u8]) -> &[u8] {
    PathLine::split(line).map_or(&[], |p| p.params)
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
        // smtp-proto saw `<>`: the path comes from the raw line (`PathLine`).
        address: String::new(),
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
        address: String::new(),
        notify,
        orcpt: r.orcpt,
    })
}

/// A queue id: microseconds since the epoch, a random number drawn once per process and a
/// process-wide counter, in upper-case hex (24 characters until the year 2112).
///
/// The random part is for several gateway nodes on one shared queue (`state.backend =
/// "postgres"`): without it, nodes started together make the same ids (same microsecond, same
/// counter), and the second node's message hit the queue's primary key (a 451). With it, two ids
/// collide only when the microsecond, the counter and 24 random bits all agree.
pub fn new_queue_id() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    static PROCESS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let process = *PROCESS.get_or_init(|| rand::random::<u32>() & 0xFF_FFFF);
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) & 0xF_FFFF;
    format!("{micros:X}{process:06X}{n:05X}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_after_the_path() {
        assert_eq!(raw_parameters(b"MAIL FROM:<a@b> SIZE=1\r\n"), b" SIZE=1");
        assert_eq!(
            raw_parameters(b"MAIL FROM:<\"x>y\\\"\"@b> RET=FULL"),
            b" RET=FULL"
        );
        assert_eq!(
            raw_parameters(b"MAIL FROM:a@b BODY=8BITMIME"),
            b" BODY=8BITMIME"
        );
        assert_eq!(
            check_parameters(b"MAIL FROM:<a@b> SIZE=18446744073709551615"),
            Ok(Some(u64::MAX))
        );
        assert_eq!(
            check_parameters(b"MAIL FROM:<a@b> SIZE=99999999999999999999"),
            Err(replies::message_too_big())
        );
        assert_eq!(
            check_parameters(b"MAIL FROM:<a@b> SIZE=999999999999999999999"),
            Err(replies::invalid_parameter("SIZE"))
        );
        assert_eq!(
            check_parameters(b"MAIL FROM:<a@b> ret=full RET=HDRS"),
            Err(replies::duplicate_parameter("RET"))
        );
        assert_eq!(
            check_parameters(b"RCPT TO:<a@b> NOTIFY=NEVER ORCPT=rfc822;a@b"),
            Ok(None)
        );
    }

    #[test]
    fn paths_as_sent() {
        let split = |l: &'static [u8]| PathLine::split(l).expect("MAIL/RCPT");
        let p = split(b"MAIL FROM:<\"a>b\\\"\"@x> SIZE=1\r\n");
        assert_eq!(p.path, Some(b"\"a>b\\\"\"@x".as_slice()));
        assert_eq!(p.params, b" SIZE=1");
        assert_eq!(p.for_parser(), b"MAIL FROM:<> SIZE=1\r\n");
        assert_eq!(split(b"rcpt to: <a@b>\r\n").for_parser(), b"rcpt to:<>\r\n");
        assert_eq!(split(b"MAIL FROM:<\"a@b>\r\n").path, None);
        assert_eq!(
            split(b"MAIL FROM:a@b BODY=8BITMIME").path,
            Some(b"a@b".as_slice())
        );
        assert_eq!(split(b"MAIL FROM:\r\n").path, None);
        assert_eq!(PathLine::split(b"MAIL TO:<a@b>\r\n"), None);
        assert_eq!(split(b"MAIL FROM:<>").sender(), Ok(String::new()));
        assert_eq!(
            split(b"MAIL FROM:").sender(),
            Err(replies::bad_sender_syntax())
        );
        assert_eq!(
            split(b"RCPT TO:<>").recipient(),
            Err(replies::bad_recipient_syntax())
        );
        assert_eq!(
            split(b"RCPT TO:<PostMaster>").recipient(),
            Ok("PostMaster".into())
        );
        assert_eq!(
            split(b"MAIL FROM:<@r.example:a@b>").sender(),
            Ok("a@b".into())
        );
        assert_eq!(
            split(b"MAIL FROM:<postmaster>").sender(),
            Err(replies::bad_sender_syntax())
        );
    }

    #[test]
    fn queue_ids_are_unique() {
        let ids: std::collections::HashSet<_> = (0..10_000).map(|_| new_queue_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|i| i.bytes().all(|b| b.is_ascii_hexdigit())));
        assert!(ids.iter().all(|i| i.len() == 24), "{ids:?}");
    }
}
