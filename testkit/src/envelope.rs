//! Envelopes for tests: an address and nothing else set.

use cryptshare_gateway::envelope::{MailFrom, RcptTo};

/// `MAIL FROM:<addr>` without parameters.
pub fn mail(addr: &str) -> MailFrom {
    MailFrom {
        address: addr.into(),
        ..MailFrom::default()
    }
}

/// `RCPT TO:<addr>` without parameters.
pub fn rcpt(addr: &str) -> RcptTo {
    RcptTo {
        address: addr.into(),
        ..RcptTo::default()
    }
}
