//! What the message itself contributes to the transfer (SPEC §2): the sender's display name,
//! the subject and the To/Cc split from its headers, and the notification text from its body.
//!
//! Everything here is untrusted input on its way into Cryptshare API calls: control characters
//! and invisible format characters (bidi overrides, zero-width characters: [`mime::is_invisible`])
//! are removed and every value is bounded.

use crate::mime::{self, Analysis, Language};

/// What the headers contribute to the transfer (SPEC §2).
pub(super) struct HeaderFacts {
    pub from_name: Option<String>,
    pub subject: Option<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
}

pub(super) fn header_facts(raw: &[u8]) -> HeaderFacts {
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
pub(super) fn strip_tag(subject: &str, tag: &str) -> String {
    mime::remove_tag_from_text(subject, tag).unwrap_or_else(|| subject.to_string())
}

/// Untrusted header text for an API call: no control or invisible characters, bounded.
pub(super) fn clean(s: &str, max: usize) -> String {
    s.chars()
        .filter(|&c| !c.is_control() && !mime::is_invisible(c))
        .take(max)
        .collect::<String>()
        .trim()
        .to_string()
}

/// The recipient notification text: the message's first text body (plain preferred; HTML reduced
/// to text), bounded, decoded from its charset.
pub(super) fn notification_body(raw: &[u8], a: &Analysis) -> Option<String> {
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
        .filter(|&c| (!c.is_control() || c == '\n' || c == '\t') && !mime::is_invisible(c))
        .take(MAX)
        .collect();
    let text = text.trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// The notification text as the body of `notificationMessage`, which Cryptshare treats as
/// HTML ("May contain HTML"): `&`, `<`, `>` and `"` escaped, so the message's text is shown
/// as written and cannot inject markup; line breaks become `<br>` (kept after it, for a
/// plain-text view).
pub(super) fn to_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\r' => {}
            '\n' => out.push_str("<br>\n"),
            c => out.push(c),
        }
    }
    out
}

/// `recipientLanguage` for the rule: its `recipient_language`, or with `auto` the first tag of
/// the message's `Content-Language:` (SPEC §2) when it is a well-formed tag, else `language`.
pub(super) fn recipient_language(policy: &crate::config::PolicyConfig, raw: &[u8]) -> String {
    if policy.recipient_language != "auto" {
        return policy.recipient_language.clone();
    }
    content_language(raw).unwrap_or_else(|| policy.language.clone())
}

/// The language the gateway writes in for this message (notice, receipt, the Cryptshare
/// session's `Accept-Language`): the rule's `language`, or with `auto` the first tag of the
/// message's `Content-Language:` that has built-in texts, else `default_language`.
pub(super) fn notice_language(policy: &crate::config::PolicyConfig, raw: &[u8]) -> Language {
    if policy.language != "auto" {
        return Language::from(policy.language.as_str());
    }
    mail_parser::MessageParser::default()
        .parse_headers(raw)
        .and_then(|m| {
            m.header_raw("Content-Language")
                .and_then(Language::from_content_language)
        })
        .unwrap_or_else(|| Language::from(policy.default_language.as_str()))
}

/// The first language tag of the top-level `Content-Language:` header (RFC 3282).
pub(super) fn content_language(raw: &[u8]) -> Option<String> {
    let msg = mail_parser::MessageParser::default().parse_headers(raw)?;
    let value = msg.header_raw("Content-Language")?;
    let first = value.split(',').next()?.trim();
    crate::config::is_language_tag(first).then(|| first.to_string())
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
    fn auto_language_follows_content_language_then_the_default() {
        let rule = |lang: &str| -> crate::config::PolicyConfig {
            toml::from_str(&format!(
                "name = \"r\"\nsenders = [\"*\"]\nlanguage = \"{lang}\"\ndefault_language = \"nl\"\n"
            ))
            .unwrap()
        };
        let msg = |cl: &str| format!("From: a@example.org\r\n{cl}Subject: x\r\n\r\nbody\r\n");
        let auto = rule("auto");
        let got = |raw: &str| notice_language(&auto, raw.as_bytes());
        assert_eq!(
            got(&msg("Content-Language: pt-BR, fr-CA\r\n")),
            Language::Fr
        );
        assert_eq!(got(&msg("Content-Language: pt\r\n")), Language::Nl);
        assert_eq!(got(&msg("")), Language::Nl);
        // A fixed language ignores the header.
        let de = rule("de");
        assert_eq!(
            notice_language(&de, msg("Content-Language: it\r\n").as_bytes()),
            Language::De
        );
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
    fn notification_text_is_escaped_for_html() {
        assert_eq!(
            to_html("a < b & \"c\" > d\r\nnext\n<script>"),
            "a &lt; b &amp; &quot;c&quot; &gt; d<br>\nnext<br>\n&lt;script&gt;"
        );
    }

    #[test]
    fn content_language_picks_the_first_well_formed_tag() {
        let raw = b"From: a@x.org\r\nContent-Language: de-CH, en\r\n\r\nbody";
        assert_eq!(content_language(raw).as_deref(), Some("de-CH"));
        let raw = b"From: a@x.org\r\nContent-Language: <script>\r\n\r\nbody";
        assert_eq!(content_language(raw), None);
        assert_eq!(content_language(b"From: a@x.org\r\n\r\nbody"), None);
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

    #[test]
    fn bidi_and_zero_width_leave_names_subjects_and_bodies() {
        let raw = "From: =?utf-8?q?Mal=E2=80=AEory?= <m@x.org>\r\nSubject: =?utf-8?q?invoice=E2=80=AEfdp.exe=E2=80=8B?=\r\n\r\n";
        let f = header_facts(raw.as_bytes());
        assert_eq!(f.from_name.as_deref(), Some("Malory"));
        assert_eq!(f.subject.as_deref(), Some("invoicefdp.exe"));
        assert_eq!(clean("a\u{2066}b\u{200D}c", 10), "abc");
    }
}
