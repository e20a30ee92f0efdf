//! The SMTP envelope as both sides of the gateway see it: MAIL FROM and RCPT TO with the ESMTP
//! parameters that are passed on to the next hop, and the extensions a transaction may use.
//!
//! Below `inbound` (which parses them from the client), `pipeline` and `outbound` (which sends
//! them to the next hop), so that neither side imports the other.

/// ESMTP `BODY=` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Body {
    SevenBit,
    EightBitMime,
    BinaryMime,
}

/// DSN `RET=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Ret {
    Full,
    Hdrs,
}

/// MAIL FROM with the parameters the gateway passes on to the next hop.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

/// Why a path was refused (RFC 5321 §4.1.2 syntax).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed address")]
pub struct BadAddress;

/// The mailbox of a reverse or forward path: `raw` is the text between `<` and `>` exactly as
/// the client sent it. RFC 5321 §4.1.2: `[ A-d-l ":" ] Mailbox`, `Mailbox = Local-part "@"
/// ( Domain / address-literal )`, `Local-part = Dot-string / Quoted-string`, with RFC 6531's
/// UTF-8 allowed in atoms, quoted strings and domain labels (whether the transaction may use it
/// is the caller's check). A source route (`@relay1,@relay2:`) is checked and dropped, as
/// §3.3 and appendix C allow ("SHOULD ignore"); everything else is returned unchanged — quotes,
/// backslashes, case — so that it can be relayed byte for byte. `<>` and `<Postmaster>` are
/// the caller's: this takes mailboxes only.
pub fn mailbox_of(raw: &str) -> Result<&str, BadAddress> {
    let mailbox = match raw.strip_prefix('@') {
        Some(route) => {
            let (adl, rest) = route.split_once(':').ok_or(BadAddress)?;
            for (i, at_domain) in adl.split(',').enumerate() {
                let d = if i == 0 {
                    at_domain
                } else {
                    at_domain.strip_prefix('@').ok_or(BadAddress)?
                };
                check_domain(d)?;
            }
            rest
        }
        None => raw,
    };
    check_mailbox(mailbox)?;
    Ok(mailbox)
}

/// Whether `a` is a mailbox as [`mailbox_of`] accepts it (without a source route).
pub fn is_mailbox(a: &str) -> bool {
    check_mailbox(a).is_ok()
}

fn check_mailbox(m: &str) -> Result<(), BadAddress> {
    let domain_at = if m.starts_with('"') {
        // Quoted-string: DQUOTE *( qtextSMTP / quoted-pairSMTP ) DQUOTE.
        let mut escaped = false;
        let mut end = None;
        for (i, c) in m.char_indices().skip(1) {
            if escaped {
                // quoted-pairSMTP = %d92 %d32-126
                if !(' '..='~').contains(&c) {
                    return Err(BadAddress);
                }
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                end = Some(i);
                break;
            } else if !(qtext(c)) {
                return Err(BadAddress);
            }
        }
        let end = end.ok_or(BadAddress)?;
        if m.as_bytes().get(end + 1) != Some(&b'@') {
            return Err(BadAddress);
        }
        end + 1
    } else {
        let at = m.rfind('@').ok_or(BadAddress)?;
        // Dot-string = Atom *("." Atom)
        if !m[..at]
            .split('.')
            .all(|a| !a.is_empty() && a.chars().all(atext))
        {
            return Err(BadAddress);
        }
        at
    };
    let domain = &m[domain_at + 1..];
    match domain.strip_prefix('[') {
        Some(literal) => check_literal(literal.strip_suffix(']').ok_or(BadAddress)?),
        None => check_domain(domain),
    }
}

/// RFC 5322 atext, plus any non-ASCII character but controls (RFC 6531 UTF8-non-ascii).
fn atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || utf8_non_ascii(c)
}

/// qtextSMTP = %d32-33 / %d35-91 / %d93-126, plus UTF8-non-ascii.
fn qtext(c: char) -> bool {
    (matches!(c, ' '..='~') && c != '"' && c != '\\') || utf8_non_ascii(c)
}

fn utf8_non_ascii(c: char) -> bool {
    !c.is_ascii() && !c.is_control()
}

/// Domain = sub-domain *("." sub-domain); sub-domain = Let-dig [Ldh-str] (or a U-label).
fn check_domain(d: &str) -> Result<(), BadAddress> {
    let label = |l: &str| {
        let ok = |c: char| c.is_ascii_alphanumeric() || utf8_non_ascii(c);
        !l.is_empty()
            && l.starts_with(ok)
            && l.ends_with(ok)
            && l.chars().all(|c| ok(c) || c == '-')
    };
    if d.split('.').all(label) {
        Ok(())
    } else {
        Err(BadAddress)
    }
}

/// address-literal without its brackets: IPv4, `IPv6:` or a General-address-literal
/// (`Standardized-tag ":" 1*dcontent`).
fn check_literal(l: &str) -> Result<(), BadAddress> {
    if let Some((tag, rest)) = l.split_once(':') {
        if tag.eq_ignore_ascii_case("IPv6") {
            return rest
                .parse::<std::net::Ipv6Addr>()
                .map(|_| ())
                .map_err(|_| BadAddress);
        }
        // Standardized-tag = Ldh-str; dcontent = %d33-90 / %d94-126.
        let tag_ok = tag.ends_with(|c: char| c.is_ascii_alphanumeric())
            && tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        let content_ok =
            !rest.is_empty() && rest.chars().all(|c| matches!(c, '!'..='Z' | '^'..='~'));
        return if tag_ok && content_ok {
            Ok(())
        } else {
            Err(BadAddress)
        };
    }
    // IPv4-address-literal = Snum 3("." Snum), Snum = 1*3DIGIT (0-255).
    let parts: Vec<&str> = l.split('.').collect();
    let snum = |s: &&str| {
        (1..=3).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_digit())
            && s.parse::<u16>().is_ok_and(|n| n <= 255)
    };
    if parts.len() == 4 && parts.iter().all(snum) {
        Ok(())
    } else {
        Err(BadAddress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailboxes() {
        for ok in [
            "a@b",
            "\"a@b\"@example.org",
            "\"bob smith\"@example.org",
            "\"a>b\"@example.org",
            "\"\\\"quoted\\\\\"@example.org",
            "\"\"@example.org",
            "user+tag@example.org",
            "o'hara@example.org",
            "user@[192.0.2.1]",
            "user@[IPv6:2001:db8::1]",
            "user@[x-tag:abc]",
            "j\u{f6}rg@b\u{fc}cher.example",
            "a-b@x-1.example",
        ] {
            assert_eq!(mailbox_of(ok), Ok(ok), "{ok}");
        }
        assert_eq!(mailbox_of("@r1.example,@r2.example:a@b"), Ok("a@b"));
        for bad in [
            "a\"b@example.org",
            "\"unterminated@example.org",
            "a@@b",
            "a@b..c",
            "a@b.",
            ".a@b",
            "a..b@c",
            "a@-b",
            "a@b-",
            "@b",
            "a@",
            "ab",
            "a b@c",
            "\"a\"b@c",
            "\"a\r\n\"@b",
            "\"a\\\r\"@b",
            "a@[192.0.2.256]",
            "a@[1.2.3]",
            "a@[IPv6:zz::1]",
            "a@[x:a[b]",
            "a@b>c",
            "a<b@c",
            "@route:",
            "@:a@b",
            "@r1,r2:a@b",
            "a\u{85}@b",
        ] {
            assert_eq!(mailbox_of(bad), Err(BadAddress), "{bad:?}");
        }
    }
}
