//! `cryptshare-gateway explain`: a dry run over one message (a file, or `-` for standard input,
//! as in `postcat -bh -q ID | cryptshare-gateway explain … -`). Contacts no server.
//!
//! The decision comes from the same [`plan`](super::plan) step as in `serve`; this file only
//! renders it (text for a person, the JSON object of SPEC §3 for scripts). Without `--from` /
//! `--to` the envelope is taken from the headers ([`Envelope::resolve`]), and the output says so.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::plan::{Action, plan};
use crate::config::Config;
use crate::config::Links;
use crate::mime::{Analysis, Class, Language, analyse, human_size};
use crate::policy::{Rules, Selection};

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the message from standard input: {0}")]
    Stdin(std::io::Error),
}

/// Where a part of the envelope came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `--from` / `--to`.
    Option,
    /// The named header(s) of the message.
    Header(&'static str),
    /// Neither given nor in the headers (the null sender, no recipients).
    Missing,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Option => "option",
            Source::Header(h) => h,
            Source::Missing => "none",
        }
    }
}

/// The envelope `explain` assumes, and where each half came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub sender: String,
    pub sender_source: Source,
    pub recipients: Vec<String>,
    pub recipients_source: Source,
}

impl Envelope {
    /// `from` / `to` as given; what is missing from the headers of `raw`: the sender from
    /// `Return-Path:` (what the last MTA recorded as MAIL FROM; `<>` is the null sender), else
    /// `Sender:`, else the first `From:` address; the recipients from `To:`, `Cc:` and `Bcc:`
    /// (in that order, each address once).
    pub fn resolve(from: Option<&str>, to: &[String], raw: &[u8]) -> Envelope {
        let headers = mail_parser::MessageParser::default().parse_headers(raw);
        let first = |a: Option<&mail_parser::Address>| {
            a.and_then(|a| a.iter().find_map(|x| x.address()))
                .map(str::to_string)
        };
        let (sender, sender_source) = match from {
            Some(f) => (f.to_string(), Source::Option),
            None => {
                let h = headers.as_ref();
                // Raw: `Return-Path: <>` (a bounce) is an address to us, none to a parser.
                let return_path = h.and_then(|m| m.header_raw("Return-Path")).map(|r| {
                    let r = r.trim();
                    let r = r.strip_prefix('<').unwrap_or(r);
                    let r = r.strip_suffix('>').unwrap_or(r);
                    r.trim().to_string()
                });
                if let Some(r) = return_path {
                    (r, Source::Header("Return-Path"))
                } else if let Some(s) = h.and_then(|m| first(m.sender())) {
                    (s, Source::Header("Sender"))
                } else if let Some(f) = h.and_then(|m| first(m.from())) {
                    (f, Source::Header("From"))
                } else {
                    (String::new(), Source::Missing)
                }
            }
        };
        let (recipients, recipients_source) = if !to.is_empty() {
            (to.to_vec(), Source::Option)
        } else {
            let mut all: Vec<String> = Vec::new();
            if let Some(m) = headers.as_ref() {
                for list in [m.to(), m.cc(), m.bcc()].into_iter().flatten() {
                    for a in list.iter().filter_map(|x| x.address()) {
                        if !all.iter().any(|x| x.eq_ignore_ascii_case(a)) {
                            all.push(a.to_string());
                        }
                    }
                }
            }
            if all.is_empty() {
                (all, Source::Missing)
            } else {
                (all, Source::Header("To/Cc/Bcc"))
            }
        };
        Envelope {
            sender,
            sender_source,
            recipients,
            recipients_source,
        }
    }
}

/// Analyse `path` as if `from` sent it to `to`, and describe the decision as text or as the
/// JSON object of SPEC §3.
pub fn explain(
    cfg: &Config,
    from: &str,
    to: &[String],
    path: &Path,
    json: bool,
) -> Result<String, ExplainError> {
    explain_with(cfg, Some(from), to, path, json)
}

/// [`explain`] with `path` = `-` for standard input, and the envelope (each half that is not
/// given) from the headers, see [`Envelope::resolve`].
pub fn explain_with(
    cfg: &Config,
    from: Option<&str>,
    to: &[String],
    path: &Path,
    json: bool,
) -> Result<String, ExplainError> {
    let raw = if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut buf)
            .map_err(ExplainError::Stdin)?;
        buf
    } else {
        std::fs::read(path).map_err(|source| ExplainError::Read {
            path: path.to_path_buf(),
            source,
        })?
    };
    let env = Envelope::resolve(from, to, &raw);
    let analysis = analyse(&raw);
    let plan = plan(
        &Rules::new(&cfg.policy),
        &env.sender,
        &env.recipients,
        &analysis,
    );
    let (policy, action, selection) = (plan.policy_name(), plan.action(), &plan.selection);
    let links = plan.policy.as_ref().map(|p| p.links);
    Ok(if json {
        to_json(&analysis, &env, (policy, links), action, selection)
    } else {
        to_text(&analysis, &env, (policy, links), action, selection)
    })
}

fn part_reason(a: &Analysis, id: usize, sel: &Selection) -> String {
    let p = &a.parts[id];
    if sel.convert.contains(&id) || p.class == Class::Attachment {
        format!("{}; {}", p.reason, sel.reason)
    } else {
        p.reason.clone()
    }
}

fn to_json(
    a: &Analysis,
    env: &Envelope,
    (policy, links): (Option<&str>, Option<Links>),
    action: Action,
    sel: &Selection,
) -> String {
    let attachments: Vec<_> = a
        .parts
        .iter()
        .filter(|p| p.upload_name.is_some())
        .map(|p| {
            json!({
                "name": p.file_name.clone().or_else(|| p.upload_name.clone()),
                "upload_name": p.upload_name,
                "size": p.size,
                "content_type": p.content_type,
                "convert": sel.convert.contains(&p.id),
                "reason": part_reason(a, p.id, sel),
            })
        })
        .collect();
    let parts: Vec<_> = a
        .parts
        .iter()
        .map(|p| {
            json!({
                "path": p.path,
                "content_type": p.content_type,
                "class": p.class.as_str(),
                "size": p.size,
                "encoding": p.encoding.as_str(),
                "reason": p.reason,
                "tnef_files": p.tnef_files,
            })
        })
        .collect();
    let f = a.flags;
    let v = json!({
        "envelope": {
            "sender": env.sender,
            "sender_source": env.sender_source.as_str(),
            "recipients": env.recipients,
            "recipients_source": env.recipients_source.as_str(),
        },
        "policy": policy,
        "links": links.map(Links::as_str),
        "action": action.as_str(),
        "reason": sel.reason,
        "total": sel.total,
        "attachments": attachments,
        "parts": parts,
        "flags": {
            "signed": f.signed, "encrypted": f.encrypted, "report": f.report, "tnef": f.tnef,
            "decoding_problem": f.decoding_problem, "malformed": f.malformed,
            "limit_reached": f.limit_reached,
        },
    });
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
    s.push('\n');
    s
}

fn to_text(
    a: &Analysis,
    env: &Envelope,
    (policy, links): (Option<&str>, Option<Links>),
    action: Action,
    sel: &Selection,
) -> String {
    let mut s = String::new();
    let sender = match env.sender_source {
        Source::Option => env.sender.clone(),
        Source::Header(h) => format!("{} (from the {h}: header; no --from given)", env.sender),
        Source::Missing => "<> (no --from given and no Return-Path, Sender or From header)".into(),
    };
    let recipients = match env.recipients_source {
        Source::Option => env.recipients.join(", "),
        Source::Header(_) => format!(
            "{} (from the To/Cc/Bcc headers; no --to given)",
            env.recipients.join(", ")
        ),
        Source::Missing => "(none: no --to given and no To, Cc or Bcc header)".into(),
    };
    let _ = writeln!(s, "sender:     {}", clean(&sender));
    let _ = writeln!(s, "recipients: {}", clean(&recipients));
    let _ = writeln!(s, "policy:     {}", policy.unwrap_or("(none)"));
    let _ = writeln!(s, "action:     {} ({})", action.as_str(), sel.reason);
    match links {
        Some(Links::Notification) => {
            let _ = writeln!(
                s,
                "links:      notification (the Cryptshare server mails each recipient their link; one relayed message)"
            );
        }
        Some(Links::PerRecipient) => {
            let _ = writeln!(
                s,
                "links:      per-recipient (one relayed copy per recipient, each with its own download link)"
            );
        }
        None => {}
    }
    let f = a.flags;
    let flags: Vec<&str> = [
        (f.signed, "signed"),
        (f.encrypted, "encrypted"),
        (f.report, "report"),
        (f.tnef, "tnef"),
        (f.decoding_problem, "decoding-problem"),
        (f.malformed, "malformed"),
        (f.limit_reached, "limit-reached"),
    ]
    .into_iter()
    .filter_map(|(on, n)| on.then_some(n))
    .collect();
    if !flags.is_empty() {
        let _ = writeln!(s, "flags:      {}", flags.join(", "));
    }
    let _ = writeln!(s, "parts:");
    for p in &a.parts {
        let indent = "  ".repeat(p.depth + 1);
        let path = if p.path.is_empty() { "root" } else { &p.path };
        let _ = write!(
            s,
            "{indent}{path} {} [{}]",
            p.content_type,
            p.class.as_str()
        );
        if p.children.is_empty() {
            let _ = write!(
                s,
                " {} {}",
                human_size(p.size, Language::En),
                p.encoding.as_str()
            );
        }
        if let Some(n) = p.file_name.as_ref().or(p.upload_name.as_ref()) {
            let _ = write!(s, " {n:?}");
        }
        if sel.convert.contains(&p.id) {
            let _ = write!(s, " CONVERT");
        }
        let _ = writeln!(s, " - {}", part_reason(a, p.id, sel));
        for t in &p.tnef_files {
            let _ = writeln!(s, "{indent}  (in winmail.dat) {t:?}");
        }
    }
    s
}

/// Header-derived text for a terminal: no control or bidi characters.
fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() && !crate::mime::is_invisible(*c))
        .collect()
}
