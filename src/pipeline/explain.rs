//! `cryptshare-gateway explain`: a dry run over one message file. Contacts no server.
//!
//! The decision comes from the same [`plan`](super::plan) step as in `serve`; this file only
//! renders it (text for a person, the JSON object of SPEC §3 for scripts).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::plan::{Action, plan};
use crate::config::Config;
use crate::mime::{Analysis, Class, Language, analyse, human_size};
use crate::policy::{Rules, Selection};

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
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
    let raw = std::fs::read(path).map_err(|source| ExplainError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let analysis = analyse(&raw);
    let plan = plan(&Rules::new(&cfg.policy), from, to, &analysis);
    let (policy, action, selection) = (plan.policy_name(), plan.action(), &plan.selection);
    Ok(if json {
        to_json(&analysis, policy, action, selection)
    } else {
        to_text(&analysis, from, to, policy, action, selection)
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

fn to_json(a: &Analysis, policy: Option<&str>, action: Action, sel: &Selection) -> String {
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
        "policy": policy,
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
    from: &str,
    to: &[String],
    policy: Option<&str>,
    action: Action,
    sel: &Selection,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "sender:     {from}");
    let _ = writeln!(s, "recipients: {}", to.join(", "));
    let _ = writeln!(s, "policy:     {}", policy.unwrap_or("(none)"));
    let _ = writeln!(s, "action:     {} ({})", action.as_str(), sel.reason);
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
