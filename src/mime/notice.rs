//! The notice that replaces moved attachments: built-in English and German templates, operator
//! overrides from `template_dir/notice.<lang>.txt` and `notice.<lang>.html`.
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
}

#[derive(Debug, thiserror::Error)]
pub enum NoticeError {
    #[error("notice template {path}: {source}")]
    Template {
        path: PathBuf,
        source: std::io::Error,
    },
}

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

/// `1.5 MB` / `1,5 MB` (binary multiples, labelled the way mail clients do).
pub fn human_size(size: u64, language: Language) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = size as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    let s = if u == 0 {
        format!("{size} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    };
    match language {
        Language::De => s.replace('.', ","),
        Language::En => s,
    }
}

fn escape_html(s: &str) -> String {
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

fn clean_text(s: &str) -> String {
    s.chars()
        .filter(|&c| !is_invisible(c))
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

impl Notice {
    fn template(&self, ext: &str) -> Result<String, NoticeError> {
        let lang = self.language.tag();
        if let Some(dir) = &self.template_dir {
            let path = dir.join(format!("notice.{lang}.{ext}"));
            match std::fs::read_to_string(&path) {
                // Templates written on Windows end their lines in CRLF; the rewrite turns each
                // LF into the message's line ending, so a CR left here would become a bare CR.
                Ok(t) => return Ok(t.replace("\r\n", "\n")),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(NoticeError::Template { path, source }),
            }
        }
        Ok(match (self.language, ext) {
            (Language::De, "txt") => DE_TXT,
            (Language::De, _) => DE_HTML,
            (Language::En, "txt") => EN_TXT,
            (Language::En, _) => EN_HTML,
        }
        .to_owned())
    }

    fn expires(&self) -> String {
        match self.expires {
            Some(d) if self.language == Language::De => d.format("%d.%m.%Y").to_string(),
            Some(d) => d.format("%Y-%m-%d").to_string(),
            None => String::new(),
        }
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
}
