//! The notice that replaces moved attachments: built-in templates in every [`Language`] (made
//! from its [`Texts`](super::language::Texts)), operator overrides from
//! `template_dir/notice.<lang>.txt` and `notice.<lang>.html` (checked by [`check_template`] at
//! start-up and reload).
//!
//! Placeholders: `{{count}}`, `{{files}}`, `{{expires}}`, `{{sender}}`, `{{tracking_id}}`,
//! `{{download_url}}`, `{{instructions}}`. A template line whose placeholders are all empty is
//! dropped, so one template serves transfers with and without a download link. In HTML every
//! value is escaped; in text, control characters are replaced so nothing can forge lines.

use std::path::PathBuf;

use chrono::NaiveDate;

use super::language::{Access, Language};
use super::text::is_invisible;

/// A file listed in the notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticeFile {
    pub name: String,
    /// Decoded size in bytes.
    pub size: u64,
}

/// What the recipient is told.
#[derive(Debug, Clone, Default)]
pub struct Notice {
    /// From a tag with `.into()`: `"de"`, anything without templates falls back to English.
    pub language: Language,
    pub files: Vec<NoticeFile>,
    pub expires: Option<NaiveDate>,
    pub sender: String,
    pub tracking_id: Option<String>,
    pub download_url: Option<String>,
    /// How the recipients reach the files: the `{{instructions}}` sentence.
    pub access: Access,
    pub template_dir: Option<PathBuf>,
    /// Whole-message mode: the neutral notice that replaces the whole text (templates
    /// `message.<lang>.txt` / `.html`), not the one on top of it.
    pub whole_message: bool,
    /// `notice_attachment`: an `attachments.html` part lists the moved files.
    pub attachment_list: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum NoticeError {
    #[error("notice template {path}: {source}")]
    Template {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Every placeholder a template may use, in the order the docs list them.
pub const PLACEHOLDERS: [&str; 7] = [
    "{{count}}",
    "{{files}}",
    "{{expires}}",
    "{{sender}}",
    "{{tracking_id}}",
    "{{download_url}}",
    "{{instructions}}",
];

/// What is wrong with an operator's template, and on which line (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem} (valid placeholders: {})", PLACEHOLDERS.join(", "))]
pub struct TemplateError {
    pub line: usize,
    pub problem: String,
}

/// Check an operator's template: every `{{` opens one of [`PLACEHOLDERS`] closed on the same
/// line. A typo (`{{dowload_url}}`) would otherwise reach every recipient verbatim.
pub fn check_template(template: &str) -> Result<(), TemplateError> {
    for (i, line) in template.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("{{") {
            let after = &rest[at + 2..];
            let Some(close) = after.find("}}") else {
                let shown: String = rest[at..].chars().take(40).collect();
                return Err(TemplateError {
                    line: i + 1,
                    problem: format!("unclosed {{{{ in {:?}", shown),
                });
            };
            let found = &rest[at..at + 2 + close + 2];
            if !PLACEHOLDERS.contains(&found) {
                let shown: String = found.chars().take(40).collect();
                return Err(TemplateError {
                    line: i + 1,
                    problem: format!("unknown placeholder {shown:?}"),
                });
            }
            rest = &after[close + 2..];
        }
    }
    Ok(())
}

/// The built-in text template of `language`.
fn builtin_text(language: Language) -> String {
    let t = language.texts();
    let rule = "-".repeat(70);
    format!(
        "[Cryptshare] {intro}\n{{{{files}}}}\n{until}{{{{expires}}}}\n{download}{{{{download_url}}}}\n\
         {{{{instructions}}}}\n{sender}{{{{sender}}}}\n{tracking}{{{{tracking_id}}}}\n{rule}\n\n",
        intro = t.intro,
        until = t.label(t.available_until),
        download = t.label(t.download),
        sender = t.label(t.sender),
        tracking = t.label(t.tracking_id),
    )
}

/// The built-in HTML template of `language` (its texts escaped; the placeholders stay).
fn builtin_html(language: Language) -> String {
    let t = language.texts();
    let e = |s: &str| escape_html(s);
    format!(
        "<div style=\"border:1px solid #8a8a8a;padding:8px;margin:0 0 12px 0;font-family:sans-serif\">\n\
         <p><b>{intro}</b></p>\n<ul>\n{{{{files}}}}\n</ul>\n<p>{until}{{{{expires}}}}</p>\n\
         <p>{download}<a href=\"{{{{download_url}}}}\">{{{{download_url}}}}</a></p>\n\
         <p>{{{{instructions}}}}</p>\n<p>{sender}{{{{sender}}}}</p>\n<p>{tracking}{{{{tracking_id}}}}</p>\n</div>\n",
        intro = e(t.intro),
        until = e(&t.label(t.available_until)),
        download = e(&t.label(t.download)),
        sender = e(&t.label(t.sender)),
        tracking = e(&t.label(t.tracking_id)),
    )
}

/// The built-in neutral notice of whole-message mode (`content = "message"`): who sent a
/// confidential message, the files that came with it, and how to open it; no word of the
/// message itself. A line whose placeholders are all empty is dropped, as in every template;
/// the head of the file list goes with the list (`with_files`).
fn builtin_message_text(language: Language, with_files: bool) -> String {
    let t = language.texts();
    let files = if with_files {
        format!("{}\n{{{{files}}}}\n", t.label(t.message_files).trim_end())
    } else {
        String::new()
    };
    format!(
        "{intro}\n\n{files}{until}{{{{expires}}}}\n{download}{{{{download_url}}}}\n\n{where_}\n\
         {{{{instructions}}}}\n\n{tracking}{{{{tracking_id}}}}\n",
        intro = t.message_intro,
        until = t.label(t.available_until),
        download = t.label(t.download),
        where_ = t.message_where,
        tracking = t.label(t.tracking_id),
    )
}

fn builtin_message_html(language: Language, with_files: bool) -> String {
    let t = language.texts();
    let e = |s: &str| escape_html(s);
    let files = if with_files {
        format!(
            "<p>{}</p>\n<ul>\n{{{{files}}}}\n</ul>\n",
            e(t.label(t.message_files).trim_end())
        )
    } else {
        String::new()
    };
    format!(
        "<div style=\"font-family:sans-serif\">\n<p><b>{intro}</b></p>\n{files}\
         <p>{until}{{{{expires}}}}</p>\n\
         <p>{download}<a href=\"{{{{download_url}}}}\">{{{{download_url}}}}</a></p>\n\
         <p>{where_}</p>\n<p>{{{{instructions}}}}</p>\n<p>{tracking}{{{{tracking_id}}}}</p>\n</div>\n",
        intro = e(t.message_intro),
        until = e(&t.label(t.available_until)),
        download = e(&t.label(t.download)),
        where_ = e(t.message_where),
        tracking = e(&t.label(t.tracking_id)),
    )
}

/// `1.5 MB` / `1,5 MB` / `1,5 Mo` (binary multiples, labelled the way mail clients do).
pub fn human_size(size: u64, language: Language) -> String {
    language.size(size)
}

pub(super) fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if is_invisible(c) => {}
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

pub(super) fn clean_text(s: &str) -> String {
    s.chars()
        .filter(|&c| !is_invisible(c))
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

impl Notice {
    fn template(&self, ext: &str) -> Result<String, NoticeError> {
        let lang = self.language.tag();
        let name = if self.whole_message {
            "message"
        } else {
            "notice"
        };
        if let Some(dir) = &self.template_dir {
            let path = dir.join(format!("{name}.{lang}.{ext}"));
            match std::fs::read_to_string(&path) {
                // Templates written on Windows end their lines in CRLF; the rewrite turns each
                // LF into the message's line ending, so a CR left here would become a bare CR.
                Ok(t) => return Ok(t.replace("\r\n", "\n")),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(NoticeError::Template { path, source }),
            }
        }
        let with_files = !self.files.is_empty();
        Ok(match (ext, self.whole_message) {
            ("txt", false) => builtin_text(self.language),
            (_, false) => builtin_html(self.language),
            ("txt", true) => builtin_message_text(self.language, with_files),
            (_, true) => builtin_message_html(self.language, with_files),
        })
    }

    fn expires(&self) -> String {
        self.expires
            .map(|d| self.language.date(d))
            .unwrap_or_default()
    }

    fn render(&self, template: &str, html: bool) -> String {
        let esc = |s: &str| if html { escape_html(s) } else { clean_text(s) };
        let files = self
            .files
            .iter()
            .map(|f| {
                let line = format!("{} ({})", f.name, human_size(f.size, self.language));
                if html {
                    format!("<li>{}</li>", escape_html(&line))
                } else {
                    format!("  - {}", clean_text(&line))
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let instructions = self.access.instructions(self.language);
        let values = [
            ("{{count}}", self.files.len().to_string()),
            ("{{files}}", files),
            ("{{expires}}", esc(&self.expires())),
            ("{{sender}}", esc(&self.sender)),
            (
                "{{tracking_id}}",
                esc(self.tracking_id.as_deref().unwrap_or("")),
            ),
            (
                "{{download_url}}",
                esc(self.download_url.as_deref().unwrap_or("")),
            ),
            ("{{instructions}}", esc(&instructions)),
        ];
        let mut out = String::with_capacity(template.len() + 256);
        for line in template.split_inclusive('\n') {
            let mut has_placeholder = false;
            let mut has_value = false;
            let mut l = line.to_owned();
            for (key, value) in &values {
                if l.contains(key) {
                    has_placeholder = true;
                    has_value |= !value.is_empty();
                    l = l.replace(key, value);
                }
            }
            if !has_placeholder || has_value {
                out.push_str(&l);
            }
        }
        out
    }

    /// The plain-text notice (lines end in `\n`).
    pub fn render_text(&self) -> Result<String, NoticeError> {
        Ok(self.render(&self.template("txt")?, false))
    }

    /// The HTML notice fragment (lines end in `\n`).
    pub fn render_html(&self) -> Result<String, NoticeError> {
        Ok(self.render(&self.template("html")?, true))
    }

    /// The `attachments.html` document (`notice_attachment`): the moved files in a table, the
    /// expiry, the link (when the message may carry one), how to get the files and the
    /// tracking id; every value HTML-escaped. `None` when the rule does not want it or nothing
    /// was moved as a file.
    pub fn attachments_html(&self) -> Result<Option<String>, NoticeError> {
        if !self.attachment_list || self.files.is_empty() {
            return Ok(None);
        }
        let t = self.language.texts();
        let e = escape_html;
        let mut rows = String::new();
        for f in &self.files {
            rows.push_str(&format!(
                "<tr><td>{}</td><td style=\"text-align:right\">{}</td></tr>\n",
                e(&f.name),
                e(&human_size(f.size, self.language))
            ));
        }
        let mut out = format!(
            "<!DOCTYPE html>\n<html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
             <title>{title}</title></head>\n<body style=\"font-family:sans-serif\">\n\
             <h1>{title}</h1>\n<table border=\"1\" cellpadding=\"4\" style=\"border-collapse:collapse\">\n\
             <tr><th>{name}</th><th>{size}</th></tr>\n{rows}</table>\n",
            lang = self.language.tag(),
            title = e(t.files_title),
            name = e(t.name),
            size = e(t.size),
        );
        let expires = self.expires();
        if !expires.is_empty() {
            out.push_str(&format!(
                "<p>{}{}</p>\n",
                e(&t.label(t.available_until)),
                e(&expires)
            ));
        }
        if let Some(url) = self.download_url.as_deref().filter(|u| !u.is_empty()) {
            out.push_str(&format!(
                "<p>{}<a href=\"{u}\">{u}</a></p>\n",
                e(&t.label(t.download)),
                u = e(url)
            ));
        }
        out.push_str(&format!(
            "<p>{}</p>\n",
            e(&self.access.instructions(self.language))
        ));
        if let Some(id) = self.tracking_id.as_deref().filter(|i| !i.is_empty()) {
            out.push_str(&format!("<p>{}{}</p>\n", e(&t.label(t.tracking_id)), e(id)));
        }
        out.push_str("</body></html>\n");
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(lang: &str) -> Notice {
        Notice {
            language: lang.into(),
            files: vec![NoticeFile {
                name: "<b>report</b>.pdf".into(),
                size: 3 * 1024 * 1024 / 2,
            }],
            expires: NaiveDate::from_ymd_opt(2026, 12, 11),
            sender: "alice@example.org".into(),
            tracking_id: Some("20261127-ABC".into()),
            download_url: None,
            access: Access::default(),
            template_dir: None,
            whole_message: false,
            attachment_list: false,
        }
    }

    #[test]
    fn english_text_drops_empty_lines() {
        let t = notice("en").render_text().unwrap();
        assert!(t.contains("  - <b>report</b>.pdf (1.5 MB)\n"));
        assert!(t.contains("Available until: 2026-12-11\n"));
        assert!(!t.contains("Download:"));
        assert!(t.contains("\nTracking ID: 20261127-ABC\n"));
    }

    #[test]
    fn german_html_escapes() {
        let h = notice("de").render_html().unwrap();
        assert!(h.contains("<li>&lt;b&gt;report&lt;/b&gt;.pdf (1,5 MB)</li>"));
        assert!(h.contains("Verfügbar bis: 11.12.2026"));
        assert!(!h.contains("href"));
    }

    #[test]
    fn operator_template_overrides() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("notice.en.txt"),
            "Moved: {{files}}\nURL {{download_url}}\n",
        )
        .unwrap();
        let mut n = notice("en");
        n.template_dir = Some(dir.path().to_path_buf());
        assert_eq!(
            n.render_text().unwrap(),
            "Moved:   - <b>report</b>.pdf (1.5 MB)\n"
        );
        // No HTML override: the built-in one is used.
        assert!(n.render_html().unwrap().contains("<ul>"));
        // A template saved with CRLF line endings renders with LF like any other.
        std::fs::write(
            dir.path().join("notice.en.txt"),
            "Moved: {{files}}\r\nURL {{download_url}}\r\n",
        )
        .unwrap();
        assert_eq!(
            n.render_text().unwrap(),
            "Moved:   - <b>report</b>.pdf (1.5 MB)\n"
        );
    }

    // The English and German texts as they were before the templates were made from phrases:
    // operators' mail archives and filters know them.
    const EN_TXT: &str = "\
[Cryptshare] {{count}} attachment(s) of this message were moved to a secure Cryptshare transfer:
{{files}}
Available until: {{expires}}
Download: {{download_url}}
{{instructions}}
Sender: {{sender}}
Tracking ID: {{tracking_id}}
----------------------------------------------------------------------

";

    const DE_TXT: &str = "\
[Cryptshare] {{count}} Anhang/Anhänge dieser Nachricht wurde(n) in eine sichere Cryptshare-Übertragung verschoben:
{{files}}
Verfügbar bis: {{expires}}
Download: {{download_url}}
{{instructions}}
Absender: {{sender}}
Tracking-ID: {{tracking_id}}
----------------------------------------------------------------------

";

    const EN_HTML: &str = "\
<div style=\"border:1px solid #8a8a8a;padding:8px;margin:0 0 12px 0;font-family:sans-serif\">
<p><b>{{count}} attachment(s) of this message were moved to a secure Cryptshare transfer:</b></p>
<ul>
{{files}}
</ul>
<p>Available until: {{expires}}</p>
<p>Download: <a href=\"{{download_url}}\">{{download_url}}</a></p>
<p>{{instructions}}</p>
<p>Sender: {{sender}}</p>
<p>Tracking ID: {{tracking_id}}</p>
</div>
";

    const DE_HTML: &str = "\
<div style=\"border:1px solid #8a8a8a;padding:8px;margin:0 0 12px 0;font-family:sans-serif\">
<p><b>{{count}} Anhang/Anhänge dieser Nachricht wurde(n) in eine sichere Cryptshare-Übertragung verschoben:</b></p>
<ul>
{{files}}
</ul>
<p>Verfügbar bis: {{expires}}</p>
<p>Download: <a href=\"{{download_url}}\">{{download_url}}</a></p>
<p>{{instructions}}</p>
<p>Absender: {{sender}}</p>
<p>Tracking-ID: {{tracking_id}}</p>
</div>
";

    #[test]
    fn built_in_english_and_german_are_unchanged() {
        assert_eq!(builtin_text(Language::En), EN_TXT);
        assert_eq!(builtin_text(Language::De), DE_TXT);
        assert_eq!(builtin_html(Language::En), EN_HTML);
        assert_eq!(builtin_html(Language::De), DE_HTML);
        for l in Language::ALL {
            check_template(&builtin_text(l)).unwrap();
            check_template(&builtin_html(l)).unwrap();
            for files in [false, true] {
                check_template(&builtin_message_text(l, files)).unwrap();
                check_template(&builtin_message_html(l, files)).unwrap();
            }
        }
    }

    #[test]
    fn template_check_names_line_and_problem() {
        assert_eq!(check_template("a {{count}} b {{files}}\n"), Ok(()));
        let e = check_template("ok\nDownload: {{dowload_url}}\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert_eq!(e.problem, "unknown placeholder \"{{dowload_url}}\"");
        assert_eq!(
            e.to_string(),
            "line 2: unknown placeholder \"{{dowload_url}}\" (valid placeholders: {{count}}, \
             {{files}}, {{expires}}, {{sender}}, {{tracking_id}}, {{download_url}}, {{instructions}})"
        );
        let e = check_template("x\ny\nSender: {{sender\n}}").unwrap_err();
        assert_eq!(
            (e.line, e.problem.as_str()),
            (3, "unclosed {{ in \"{{sender\"")
        );
        assert_eq!(check_template("{ {not one} }\n"), Ok(()));
    }
}
