//! The SMTP envelope as both sides of the gateway see it: MAIL FROM and RCPT TO with the ESMTP
//! parameters that are passed on to the next hop, and the extensions a transaction may use.
//!
//! Below `inbound` (which parses them from the client), `pipeline` and `outbound` (which sends
//! them to the next hop), so that neither side imports the other.

/// ESMTP `BODY=` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    SevenBit,
    EightBitMime,
    BinaryMime,
}

/// DSN `RET=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    Full,
    Hdrs,
}

/// MAIL FROM with the parameters the gateway passes on to the next hop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailFrom {
    /// Reverse path without angle brackets; empty for the null sender `<>`.
    pub address: String,
    pub size: Option<u64>,
    pub body: Option<Body>,
    pub smtputf8: bool,
    pub ret: Option<Ret>,
    /// `ENVID`, xtext-decoded.
    pub envid: Option<String>,
    /// `AUTH=` as received (xtext), if any.
    pub auth: Option<String>,
}

/// DSN `NOTIFY=` as a set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Notify {
    pub never: bool,
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

impl Notify {
    pub fn is_set(&self) -> bool {
        self.never || self.success || self.failure || self.delay
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcptTo {
    /// Forward path without angle brackets.
    pub address: String,
    pub notify: Notify,
    /// `ORCPT` address (rfc822 type), xtext-decoded.
    pub orcpt: Option<String>,
}

/// ESMTP extensions the session may advertise; the handler can narrow them to what the next hop
/// supports so that nothing is accepted upstream that cannot be passed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extensions {
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    pub chunking: bool,
    pub binarymime: bool,
}

impl Default for Extensions {
    fn default() -> Self {
        Extensions {
            eight_bit_mime: true,
            smtputf8: true,
            dsn: true,
            chunking: true,
            binarymime: false,
        }
    }
}
