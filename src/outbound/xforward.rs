//! Postfix's XFORWARD extension (<http://www.postfix.org/XFORWARD_README.html>): tell the next
//! hop who the original client was, so that its log shows `client=unknown[192.0.2.7]` instead
//! of the gateway's own address.
//!
//! The rules this follows, from the README:
//! - The server names the attributes it takes in its EHLO reply (`250-XFORWARD NAME ADDR PORT
//!   PROTO HELO IDENT SOURCE`); only those are sent, and nothing when `XFORWARD` is not offered.
//! - XFORWARD goes before MAIL FROM, never inside a transaction, and may be pipelined. The
//!   server resets the attributes at the end of each MAIL transaction (RSET or the final dot),
//!   so they are sent again before every MAIL on a pooled connection: each transaction carries
//!   its own client.
//! - Values are xtext; each at most 255 characters and, once decoded, free of control
//!   characters, non-ASCII, whitespace and header specials; a command stays within the
//!   512-character SMTP line limit, so the attributes are split over several commands.
//! - `[UNAVAILABLE]` for what is not known. NAME is the client's *verified* reverse DNS name;
//!   the gateway does not resolve names, so it is `[UNAVAILABLE]` (Postfix logs `unknown`).
//! - SOURCE is `LOCAL` for mail that originated on the gateway's host (a client on loopback or
//!   on the listener's own address), `REMOTE` for all other mail; Postfix's header rewriting
//!   (`local_header_rewrite_clients`) treats the two differently.
//! - IDENT (the up-stream queue id) is not sent: the gateway learns its client's queue id only
//!   from the client's own trace headers, which it does not trust.

use std::net::IpAddr;

use super::wire::xtext_encode;

/// The client of one transaction as XFORWARD describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOrigin {
    /// Verified reverse DNS name; `None` sends `[UNAVAILABLE]`.
    pub name: Option<String>,
    pub addr: IpAddr,
    pub port: u16,
    /// The client greeted with EHLO (`PROTO=ESMTP`) rather than HELO (`PROTO=SMTP`).
    pub esmtp: bool,
    /// The EHLO/HELO argument; empty sends `[UNAVAILABLE]`.
    pub helo: String,
    /// The mail originated on this host (`SOURCE=LOCAL`).
    pub local: bool,
}

/// Attribute names a server can offer, as bits of [`Capabilities::xforward`](super::Capabilities).
pub(super) const NAME: u8 = 1;
pub(super) const ADDR: u8 = 2;
pub(super) const PORT: u8 = 4;
pub(super) const PROTO: u8 = 8;
pub(super) const HELO: u8 = 16;
pub(super) const SOURCE: u8 = 32;

const UNAVAILABLE: &str = "[UNAVAILABLE]";
/// Longest command line, CRLF included (RFC 5321 §4.5.3.1.4).
const LINE_MAX: usize = 512;
/// Longest attribute value (README, note 1).
const VALUE_MAX: usize = 255;

/// The attribute bits of an EHLO line `XFORWARD NAME ADDR …` (already split off the keyword);
/// names we do not send (IDENT, future ones) are ignored.
pub(super) fn offered<'a>(names: impl Iterator<Item = &'a str>) -> u8 {
    names.fold(0, |bits, n| {
        bits | match n.to_ascii_uppercase().as_str() {
            "NAME" => NAME,
            "ADDR" => ADDR,
            "PORT" => PORT,
            "PROTO" => PROTO,
            "HELO" => HELO,
            "SOURCE" => SOURCE,
            _ => 0,
        }
    })
}

/// The XFORWARD command lines (each with CRLF, each at most 512 octets) for `origin`, limited to
/// the `offered` attributes; empty when none of them is offered.
pub(super) fn commands(origin: &ClientOrigin, offered: u8) -> Vec<Vec<u8>> {
    let name = origin.name.as_deref().map(clean).unwrap_or_default();
    let helo = clean(&origin.helo);
    let attrs: [(u8, &str, String); 6] = [
        (NAME, "NAME", name),
        (ADDR, "ADDR", origin.addr.to_string()),
        (PORT, "PORT", origin.port.to_string()),
        (
            PROTO,
            "PROTO",
            if origin.esmtp { "ESMTP" } else { "SMTP" }.into(),
        ),
        (HELO, "HELO", helo),
        (
            SOURCE,
            "SOURCE",
            if origin.local { "LOCAL" } else { "REMOTE" }.into(),
        ),
    ];
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut line = String::new();
    for (bit, key, value) in attrs {
        if offered & bit == 0 {
            continue;
        }
        let value = if value.is_empty() {
            UNAVAILABLE.to_string()
        } else {
            xtext_encode(&value)
        };
        let item = format!(" {key}={value}");
        if !line.is_empty() && line.len() + item.len() + 2 > LINE_MAX {
            line.push_str("\r\n");
            out.push(std::mem::take(&mut line).into_bytes());
        }
        if line.is_empty() {
            line.push_str("XFORWARD");
        }
        line.push_str(&item);
    }
    if !line.is_empty() {
        line.push_str("\r\n");
        out.push(line.into_bytes());
    }
    out
}

/// A host name as XFORWARD may carry it: letters, digits and `. - _ : [ ]` (address literals);
/// anything else (control and bidi characters, whitespace, header specials, non-ASCII) is
/// dropped, and the rest cut to the 255-character value limit.
fn clean(s: &str) -> String {
    let kept: String = s
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']'))
        .collect();
    // None of the kept characters needs xtext escaping, so the value length is its length.
    kept.chars().take(VALUE_MAX).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> ClientOrigin {
        ClientOrigin {
            name: None,
            addr: "192.0.2.7".parse().unwrap(),
            port: 40123,
            esmtp: true,
            helo: "client.example.org".into(),
            local: false,
        }
    }

    const ALL: u8 = NAME | ADDR | PORT | PROTO | HELO | SOURCE;

    fn text(c: Vec<Vec<u8>>) -> Vec<String> {
        c.into_iter()
            .map(|l| String::from_utf8(l).unwrap())
            .collect()
    }

    #[test]
    fn every_offered_attribute_in_one_command() {
        assert_eq!(
            text(commands(&origin(), ALL)),
            [
                "XFORWARD NAME=[UNAVAILABLE] ADDR=192.0.2.7 PORT=40123 PROTO=ESMTP HELO=client.example.org SOURCE=REMOTE\r\n"
            ]
        );
    }

    #[test]
    fn only_offered_attributes_are_sent() {
        let bits = offered("name ADDR Proto IDENT FUTURE".split(' '));
        assert_eq!(bits, NAME | ADDR | PROTO);
        let mut o = origin();
        o.esmtp = false;
        o.addr = "2001:db8::7".parse().unwrap();
        assert_eq!(
            text(commands(&o, bits)),
            ["XFORWARD NAME=[UNAVAILABLE] ADDR=2001:db8::7 PROTO=SMTP\r\n"]
        );
        assert!(commands(&o, 0).is_empty());
    }

    #[test]
    fn helo_is_cleaned_and_long_values_split_the_command() {
        let mut o = origin();
        o.helo = "bad name\u{202e}<x>\r\n".into();
        o.local = true;
        assert_eq!(
            text(commands(&o, HELO | SOURCE)),
            ["XFORWARD HELO=badnamex SOURCE=LOCAL\r\n"]
        );
        o.helo = String::new();
        assert_eq!(
            text(commands(&o, HELO)),
            ["XFORWARD HELO=[UNAVAILABLE]\r\n"]
        );
        o.helo = "h".repeat(400);
        o.name = Some("n".repeat(300));
        let lines = text(commands(&o, ALL));
        assert_eq!(
            lines,
            [
                format!(
                    "XFORWARD NAME={} ADDR=192.0.2.7 PORT=40123 PROTO=ESMTP\r\n",
                    "n".repeat(255)
                ),
                format!("XFORWARD HELO={} SOURCE=LOCAL\r\n", "h".repeat(255)),
            ]
        );
        assert!(lines.iter().all(|l| l.len() <= LINE_MAX));
    }
}
