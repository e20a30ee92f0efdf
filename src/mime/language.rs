//! The languages the gateway writes in: the notice, its sizes and dates, and the sentence that
//! tells the recipient how to reach the files.
//!
//! This is the one place that decides "is it German": the config validation (which tags a policy
//! may name), the notice (which template, `1,5 MB`, `11.12.2026`) and the pipeline (the
//! instructions) all ask [`Language::parse`], so they cannot disagree about a tag.

/// A language with built-in notice templates (`notice.en.*`, `notice.de.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Language {
    #[default]
    En,
    De,
}

impl Language {
    /// Every built-in language, in the order the docs list them.
    pub const ALL: [Language; 2] = [Language::En, Language::De];

    /// The language of a tag by its primary subtag, case-insensitive: `de`, `DE` and `de-AT`
    /// are German, `en` and `en-GB` English; `None` for a language without templates.
    pub fn parse(tag: &str) -> Option<Language> {
        let primary = tag.split('-').next().unwrap_or_default();
        Language::ALL
            .into_iter()
            .find(|l| primary.eq_ignore_ascii_case(l.tag()))
    }

    /// The canonical tag, as a policy's `language` key and the Cryptshare API spell it.
    pub fn tag(self) -> &'static str {
        match self {
            Language::En => "en",
            Language::De => "de",
        }
    }
}

/// Any tag, falling back to English for a language without templates (a notice is always
/// written in some language; the config validation refuses such tags before they get here).
impl From<&str> for Language {
    fn from(tag: &str) -> Language {
        Language::parse(tag).unwrap_or_default()
    }
}

/// How the recipients reach the moved files: the notice's `{{instructions}}` sentence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// Cryptshare mails every recipient the download link (otherwise the sender passes it on).
    pub link_from_cryptshare: bool,
    /// The recipient's own link is in this message (per-recipient copies).
    pub link_in_message: bool,
    /// The transfer has a password, which the sender passes on (otherwise none is needed).
    pub password_from_sender: bool,
}

impl Default for Access {
    /// The policy defaults: `notify_recipients = true`, `password_mode = "generated"`.
    fn default() -> Access {
        Access {
            link_from_cryptshare: true,
            link_in_message: false,
            password_from_sender: true,
        }
    }
}

impl Access {
    /// The instructions in `language`: where the link comes from, then the password.
    pub fn instructions(self, language: Language) -> String {
        let de = language == Language::De;
        let link = match (self.link_from_cryptshare && !self.link_in_message, de) {
            _ if self.link_in_message && de => {
                "Der Download-Link oben gilt nur für Sie: Bitte leiten Sie diese Nachricht nicht weiter."
            }
            _ if self.link_in_message => {
                "The download link above is yours alone: please do not forward this message."
            }
            (true, false) => {
                "You receive the download link in a separate e-mail from the Cryptshare server."
            }
            (true, true) => {
                "Den Download-Link erhalten Sie in einer separaten E-Mail vom Cryptshare-Server."
            }
            (false, false) => "Ask the sender for the download link.",
            (false, true) => "Den Download-Link erhalten Sie vom Absender.",
        };
        let password = match (self.password_from_sender, de) {
            (true, false) => "The password comes from the sender.",
            (true, true) => "Das Passwort erhalten Sie vom Absender.",
            (false, false) => "No password is needed.",
            (false, true) => "Ein Passwort ist nicht erforderlich.",
        };
        format!("{link} {password}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_by_primary_subtag() {
        assert_eq!(Language::parse("de"), Some(Language::De));
        assert_eq!(Language::parse("DE-at"), Some(Language::De));
        assert_eq!(Language::parse("en-GB"), Some(Language::En));
        assert_eq!(Language::parse("fr"), None);
        assert_eq!(Language::parse(""), None);
        assert_eq!(Language::from("fr"), Language::En);
        assert_eq!(Language::De.tag(), "de");
    }

    #[test]
    fn instructions_per_access_and_language() {
        let a = Access {
            link_from_cryptshare: false,
            link_in_message: false,
            password_from_sender: false,
        };
        let mine = Access {
            link_in_message: true,
            ..Access::default()
        };
        assert_eq!(
            mine.instructions(Language::En),
            "The download link above is yours alone: please do not forward this message. \
             The password comes from the sender."
        );
        assert_eq!(
            a.instructions(Language::De),
            "Den Download-Link erhalten Sie vom Absender. Ein Passwort ist nicht erforderlich."
        );
        assert_eq!(
            Access::default().instructions(Language::En),
            "You receive the download link in a separate e-mail from the Cryptshare server. \
             The password comes from the sender."
        );
    }
}
