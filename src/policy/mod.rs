//! Policy rules: which `[[policy]]` applies to a sender, and which parts it converts.
//!
//! Sender patterns (as accepted by [`crate::config::validate_sender_pattern`]),
//! case-insensitive domains, first match wins; then per message [`select_for`]: protected
//! structures, `internal_domains`, per-file filters, `threshold`, `subject_tag`. The pipeline's
//! `plan` step (shared by `serve` and `explain`) is the only caller of both.

use crate::config::{Content, PolicyConfig, SignedHandling};
use crate::mime::{Analysis, Class, PartId};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Any,
    /// `*@example.org`
    Domain(String),
    /// `*@*.example.org`: strict subdomains only.
    Subdomains(String),
    /// `user@example.org`: local part exact, domain case-insensitive.
    Address(String, String),
}

impl Pattern {
    fn parse(p: &str) -> Option<Pattern> {
        if p == "*" {
            return Some(Pattern::Any);
        }
        let (local, domain) = p.rsplit_once('@')?;
        let domain = domain.to_ascii_lowercase();
        Some(match (local, domain.strip_prefix("*.")) {
            ("*", Some(d)) => Pattern::Subdomains(d.to_owned()),
            ("*", None) => Pattern::Domain(domain),
            (l, _) => Pattern::Address(l.to_owned(), domain),
        })
    }

    fn matches(&self, local: &str, domain: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Domain(d) => domain == d,
            Pattern::Subdomains(d) => domain
                .strip_suffix(d.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            Pattern::Address(l, d) => local == l && domain == d,
        }
    }
}

/// The `[[policy]]` rules in order.
#[derive(Debug, Clone)]
pub struct Rules {
    rules: Vec<(PolicyConfig, Vec<Pattern>)>,
}

impl Rules {
    /// Patterns that do not parse (the config validator rejects them) never match.
    pub fn new(policies: &[PolicyConfig]) -> Self {
        Rules {
            rules: policies
                .iter()
                .map(|p| {
                    let pats = p.senders.iter().filter_map(|s| Pattern::parse(s)).collect();
                    (p.clone(), pats)
                })
                .collect(),
        }
    }

    /// The first rule matching the envelope sender. The null sender `<>` matches only `*`.
    pub fn match_sender(&self, sender: &str) -> Option<&PolicyConfig> {
        let sender = sender.trim().trim_start_matches('<').trim_end_matches('>');
        let (local, domain) = match sender.rsplit_once('@') {
            Some((l, d)) => (l, d.trim_end_matches('.').to_ascii_lowercase()),
            None => (sender, String::new()),
        };
        self.rules
            .iter()
            .find(|(_, pats)| {
                pats.iter().any(|p| {
                    matches!(p, Pattern::Any) || (!domain.is_empty() && p.matches(local, &domain))
                })
            })
            .map(|(cfg, _)| cfg)
    }
}

/// What a policy decides for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Parts to move to Cryptshare (empty = pass the message through).
    pub convert: Vec<PartId>,
    /// Decoded bytes of all candidate attachments (an unpacked TNEF counts its files:
    /// [`crate::mime::Part::transfer_size`]).
    pub total: u64,
    pub reason: String,
    /// The whole message goes (`content = "message"`, or the subject tag with
    /// `subject_tag_message`): its text as the transfer's confidential message, the parts in
    /// `convert` as files; the relayed mail is a neutral notice. May convert with `convert`
    /// empty (a message that is only text).
    pub whole_message: bool,
}

impl Selection {
    /// Whether anything goes to Cryptshare.
    pub fn converts(&self) -> bool {
        !self.convert.is_empty() || self.whole_message
    }
}

/// Apply `policy` to an analysed message sent to `rcpts` (envelope recipients; empty = unknown,
/// which skips the `internal_domains` condition).
///
/// Order of the checks: protected structures (encrypted, reports, signed unless the rule says
/// `signed = "convert"`) → recipients all internal → per-file filters (`include_files`,
/// `exclude_files`, `min_attachment_size`) → `threshold` on what is left, unless the subject
/// carries the rule's `subject_tag`, which forces conversion of every remaining attachment.
pub fn select_for(policy: &PolicyConfig, analysis: &Analysis, rcpts: &[String]) -> Selection {
    let flags = analysis.flags;
    let pass = |total, reason: String| Selection {
        convert: Vec::new(),
        total,
        reason,
        whole_message: false,
    };
    if flags.encrypted {
        return pass(0, "encrypted message: left unchanged".into());
    }
    if flags.report {
        return pass(0, "delivery report: left unchanged".into());
    }
    let mut candidates: Vec<&crate::mime::Part> = analysis.candidates().collect();
    if flags.signed {
        if policy.signed == SignedHandling::Skip {
            let total = analysis
                .signed_attachments()
                .map(|p| p.transfer_size())
                .sum();
            return pass(total, "signed message: left unchanged".into());
        }
        candidates.extend(analysis.signed_attachments());
    }
    if !policy.internal_domains.is_empty()
        && !rcpts.is_empty()
        && rcpts
            .iter()
            .all(|r| is_internal(r, &policy.internal_domains))
    {
        return pass(0, "all recipients are internal: left unchanged".into());
    }
    let before = candidates.len();
    candidates.retain(|p| {
        let name = p
            .file_name
            .as_deref()
            .or(p.upload_name.as_deref())
            .unwrap_or("");
        p.transfer_size() >= policy.min_attachment_size
            && (policy.include_files.is_empty()
                || policy.include_files.iter().any(|g| glob_match(g, name)))
            && !policy.exclude_files.iter().any(|g| glob_match(g, name))
    });
    let filtered = before - candidates.len();
    let tagged = policy.subject_tag.as_deref().is_some_and(|tag| {
        !tag.is_empty()
            && analysis
                .subject
                .as_deref()
                .is_some_and(|s| s.to_lowercase().contains(&tag.to_lowercase()))
    });
    // Whole-message mode moves the text too, so the threshold weighs the text as well, and a
    // message without attachments may still go (its text is what must not travel in clear).
    let whole_message =
        policy.content == Content::Message || (tagged && policy.subject_tag_message);
    let text: u64 = if whole_message {
        analysis
            .parts
            .iter()
            .filter(|p| p.class == Class::Body)
            .map(|p| p.size)
            .sum()
    } else {
        0
    };
    let total: u64 = candidates.iter().map(|p| p.transfer_size()).sum::<u64>() + text;
    let what = if whole_message {
        "the message (text and attachments)"
    } else {
        "attachments"
    };
    if candidates.is_empty() && (!whole_message || text == 0) {
        return pass(
            0,
            if filtered > 0 {
                format!(
                    "no attachments to convert ({filtered} kept by the file filters or min_attachment_size)"
                )
            } else {
                "no attachments to convert".into()
            },
        );
    }
    if !tagged && total <= policy.threshold {
        return pass(
            total,
            format!(
                "{what} total {total} bytes, not above the threshold of {} bytes",
                policy.threshold
            ),
        );
    }
    let mut convert: Vec<PartId> = candidates.iter().map(|p| p.id).collect();
    convert.sort_unstable();
    let mut reason = if tagged && total <= policy.threshold {
        format!(
            "the subject carries the tag {:?}: converting {total} bytes",
            policy.subject_tag.as_deref().unwrap_or("")
        )
    } else {
        format!(
            "{what} total {total} bytes, above the threshold of {} bytes",
            policy.threshold
        )
    };
    if whole_message {
        reason.push_str("; whole message: the text goes as the confidential message");
    }
    Selection {
        convert,
        total,
        reason,
        whole_message,
    }
}

/// `user@dept.example.org` is internal for `example.org` and `dept.example.org`.
fn is_internal(addr: &str, domains: &[String]) -> bool {
    let Some((_, d)) = addr.rsplit_once('@') else {
        return false;
    };
    let d = d.trim_end_matches('.').to_ascii_lowercase();
    domains.iter().any(|i| {
        let i = i
            .trim_start_matches("*.")
            .trim_start_matches('.')
            .to_ascii_lowercase();
        d == i || d.strip_suffix(i.as_str()).is_some_and(|h| h.ends_with('.'))
    })
}

/// Case-insensitive glob with `*` and `?` on a file name.
fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let n: Vec<char> = name.to_lowercase().chars().collect();
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a recipient condition.
    fn select(policy: &PolicyConfig, analysis: &Analysis) -> Selection {
        select_for(policy, analysis, &[])
    }

    fn policy(name: &str, senders: &[&str]) -> PolicyConfig {
        let toml = format!(
            "name = {name:?}\nsenders = {:?}\nthreshold = 100\n",
            senders.to_vec()
        );
        toml::from_str(&toml).unwrap()
    }

    fn message(outer: &str) -> Vec<u8> {
        format!(
            "Content-Type: {outer}; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nhi\r\n\
--B\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\n\r\n\
{}\r\n--B--\r\n",
            "x".repeat(150)
        )
        .into_bytes()
    }

    #[test]
    fn threshold_on_decoded_total_and_protected_messages() {
        let mut p = policy("p", &["*"]);
        let a = crate::mime::analyse(&message("multipart/mixed"));
        let sel = select(&p, &a);
        assert_eq!((sel.convert, sel.total), (vec![2], 150));
        p.threshold = 150;
        let sel = select(&p, &a);
        assert!(sel.convert.is_empty());
        assert!(sel.reason.contains("not above the threshold of 150 bytes"));

        p.threshold = 0;
        let signed = crate::mime::analyse(&message("multipart/signed"));
        let sel = select(&p, &signed);
        assert!(sel.convert.is_empty());
        assert_eq!(sel.reason, "signed message: left unchanged");
        p.signed = SignedHandling::Convert;
        assert_eq!(select(&p, &signed).convert, vec![2]);

        let report = crate::mime::analyse(&message("multipart/report"));
        assert!(select(&p, &report).convert.is_empty());
        let encrypted = crate::mime::analyse(&message("multipart/encrypted"));
        assert!(select(&p, &encrypted).convert.is_empty());
    }

    #[test]
    fn file_filters_min_size_internal_recipients_and_subject_tag() {
        let mut p = policy("p", &["*"]);
        let a = crate::mime::analyse(&message("multipart/mixed"));
        p.exclude_files = vec!["*.PDF".into()];
        assert!(select(&p, &a).convert.is_empty());
        p.exclude_files.clear();
        p.include_files = vec!["*.docx".into(), "a.p?f".into()];
        assert_eq!(select(&p, &a).convert, vec![2]);
        p.include_files.clear();
        p.min_attachment_size = 151;
        assert!(select(&p, &a).convert.is_empty());
        p.min_attachment_size = 150;
        assert_eq!(select(&p, &a).convert, vec![2]);

        p.internal_domains = vec!["example.org".into()];
        let internal = [
            "a@example.org".to_string(),
            "b@dept.Example.org".to_string(),
        ];
        assert!(select_for(&p, &a, &internal).convert.is_empty());
        let mixed = ["a@example.org".to_string(), "c@other.net".to_string()];
        assert_eq!(select_for(&p, &a, &mixed).convert, vec![2]);
        assert_eq!(
            select_for(&p, &a, &["x@notexample.org".to_string()]).convert,
            vec![2]
        );

        p.threshold = 1000;
        assert!(select(&p, &a).convert.is_empty());
        p.subject_tag = Some("[secure]".into());
        let mut tagged = message("multipart/mixed");
        tagged.splice(0..0, b"Subject: Report [SECURE]\r\n".iter().copied());
        let t = crate::mime::analyse(&tagged);
        let sel = select(&p, &t);
        assert_eq!(sel.convert, vec![2], "{}", sel.reason);
        assert!(sel.reason.contains("tag"));
    }

    #[test]
    fn glob() {
        assert!(glob_match("*.pdf", "Report.PDF"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(!glob_match("*.pdf", "x.pdf.exe"));
    }

    #[test]
    fn first_match_wins_and_domains_are_case_insensitive() {
        let rules = Rules::new(&[
            policy("boss", &["Boss@Example.org"]),
            policy("sub", &["*@*.example.org"]),
            policy("dom", &["*@example.org"]),
            policy("any", &["*"]),
        ]);
        let name = |s: &str| rules.match_sender(s).map(|p| p.name.clone());
        assert_eq!(name("Boss@EXAMPLE.ORG").as_deref(), Some("boss"));
        assert_eq!(name("boss@example.org").as_deref(), Some("dom"));
        assert_eq!(name("x@mail.Example.Org").as_deref(), Some("sub"));
        assert_eq!(name("x@example.org").as_deref(), Some("dom"));
        assert_eq!(name("x@badexample.org").as_deref(), Some("any"));
        assert_eq!(name("<>").as_deref(), Some("any"));
        let strict = Rules::new(&[policy("dom", &["*@example.org"])]);
        assert!(strict.match_sender("x@example.org.evil").is_none());
        assert!(strict.match_sender("").is_none());
        assert!(strict.match_sender("x@sub.example.org").is_none());
    }
}
