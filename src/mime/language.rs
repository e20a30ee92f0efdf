//! The languages the gateway writes in: the notice, the `attachments.html` part, the sender's
//! receipt, their sizes and dates, and the sentences that tell the recipient (and the sender)
//! how to reach the files.
//!
//! This is the one place that decides "is it German": the config validation (which tags a policy
//! may name), the notice (which template, `1,5 MB`, `11.12.2026`) and the pipeline (the
//! instructions, the Cryptshare session's language) all ask [`Language::parse`], so they cannot
//! disagree about a tag. Every text is written in the formal register of business mail
//! ("Sie", "vous", "usted", "Lei", "u").

use chrono::NaiveDate;

/// A language with built-in texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Language {
    #[default]
    En,
    De,
    Fr,
    Es,
    It,
    Nl,
}

/// Every phrase of one language. Labels have no trailing colon; each language's own
/// punctuation is added by [`Texts::label`] (French puts a space before the colon).
#[derive(Debug)]
pub struct Texts {
    /// What follows a label: `": "`, in French `" : "`.
    pub colon: &'static str,
    /// First line of the notice, with `{{count}}`.
    pub intro: &'static str,
    pub available_until: &'static str,
    pub download: &'static str,
    pub sender: &'static str,
    pub tracking_id: &'static str,
    /// To the recipient: the link comes by a separate Cryptshare mail / from the sender.
    pub link_cryptshare: &'static str,
    pub link_sender: &'static str,
    /// Per-recipient copies: the link in this message is the recipient's own.
    pub link_in_message: &'static str,
    /// To the recipient: the password comes from the sender / is not needed.
    pub password_sender: &'static str,
    pub password_none: &'static str,
    /// `attachments.html`: title and the column heads.
    pub files_title: &'static str,
    pub name: &'static str,
    pub size: &'static str,
    /// The receipt: subject prefix, first sentence, section heads.
    pub receipt_subject: &'static str,
    pub receipt_intro: &'static str,
    pub recipients: &'static str,
    pub files: &'static str,
    pub subject: &'static str,
    /// To the sender: what the recipients were told, and what is left to do.
    pub sender_link_cryptshare: &'static str,
    pub sender_link_sender: &'static str,
    pub sender_password_sender: &'static str,
    pub sender_password_none: &'static str,
    pub receipt_footer: &'static str,
    /// Whole-message mode (`content = "message"`): the neutral notice's first line, with
    /// `{{sender}}`; the head of its file list; why the text is not in the mail.
    pub message_intro: &'static str,
    pub message_files: &'static str,
    pub message_where: &'static str,
    /// The receipt's first sentence in whole-message mode.
    pub receipt_intro_message: &'static str,
}

const EN: Texts = Texts {
    colon: ": ",
    intro: "{{count}} attachment(s) of this message were moved to a secure Cryptshare transfer:",
    available_until: "Available until",
    download: "Download",
    sender: "Sender",
    tracking_id: "Tracking ID",
    link_cryptshare: "You receive the download link in a separate e-mail from the Cryptshare server.",
    link_sender: "Ask the sender for the download link.",
    link_in_message: "The download link above is yours alone: please do not forward this message.",
    password_sender: "The password comes from the sender.",
    password_none: "No password is needed.",
    files_title: "Files moved to Cryptshare",
    name: "Name",
    size: "Size",
    receipt_subject: "Cryptshare receipt",
    receipt_intro: "The attachments of your message were moved to a secure Cryptshare transfer.",
    recipients: "Recipients",
    files: "Files",
    subject: "Subject",
    sender_link_cryptshare: "The Cryptshare server sends each recipient the download link in a separate e-mail.",
    sender_link_sender: "The recipients do not get the download link from Cryptshare: please send it to them (it is in the Cryptshare upload summary).",
    sender_password_sender: "Please give the recipients the password from the Cryptshare upload summary, by a channel other than e-mail (e.g. by phone).",
    sender_password_none: "The recipients need no password.",
    receipt_footer: "This message was generated automatically by the Cryptshare gateway. Please do not reply to it.",
    message_intro: "{{sender}} has sent you a confidential message through Cryptshare.",
    message_files: "Enclosed files",
    message_where: "For your protection, the text of the message is not contained in this e-mail: open the Cryptshare transfer to read it.",
    receipt_intro_message: "Your message and its attachments were sent as a secure Cryptshare transfer; the recipients received a notice without the text.",
};

const DE: Texts = Texts {
    colon: ": ",
    intro: "{{count}} Anhang/Anhänge dieser Nachricht wurde(n) in eine sichere Cryptshare-Übertragung verschoben:",
    available_until: "Verfügbar bis",
    download: "Download",
    sender: "Absender",
    tracking_id: "Tracking-ID",
    link_cryptshare: "Den Download-Link erhalten Sie in einer separaten E-Mail vom Cryptshare-Server.",
    link_sender: "Den Download-Link erhalten Sie vom Absender.",
    link_in_message: "Der Download-Link oben gilt nur für Sie: Bitte leiten Sie diese Nachricht nicht weiter.",
    password_sender: "Das Passwort erhalten Sie vom Absender.",
    password_none: "Ein Passwort ist nicht erforderlich.",
    files_title: "Zu Cryptshare verschobene Dateien",
    name: "Name",
    size: "Größe",
    receipt_subject: "Cryptshare-Versandbestätigung",
    receipt_intro: "Die Anhänge Ihrer Nachricht wurden in eine sichere Cryptshare-Übertragung verschoben.",
    recipients: "Empfänger",
    files: "Dateien",
    subject: "Betreff",
    sender_link_cryptshare: "Der Cryptshare-Server sendet jedem Empfänger den Download-Link in einer separaten E-Mail.",
    sender_link_sender: "Die Empfänger erhalten den Download-Link nicht von Cryptshare: Bitte senden Sie ihn ihnen selbst (Sie finden ihn in der Cryptshare-Upload-Zusammenfassung).",
    sender_password_sender: "Bitte teilen Sie den Empfängern das Passwort aus der Cryptshare-Upload-Zusammenfassung auf einem anderen Weg als per E-Mail mit (z. B. telefonisch).",
    sender_password_none: "Die Empfänger benötigen kein Passwort.",
    receipt_footer: "Diese Nachricht wurde automatisch vom Cryptshare-Gateway erstellt. Bitte antworten Sie nicht darauf.",
    message_intro: "{{sender}} hat Ihnen über Cryptshare eine vertrauliche Nachricht gesendet.",
    message_files: "Beigefügte Dateien",
    message_where: "Zu Ihrem Schutz ist der Text der Nachricht nicht in dieser E-Mail enthalten: Öffnen Sie die Cryptshare-Übertragung, um ihn zu lesen.",
    receipt_intro_message: "Ihre Nachricht und ihre Anhänge wurden als sichere Cryptshare-Übertragung versendet; die Empfänger erhielten einen Hinweis ohne den Text.",
};

const FR: Texts = Texts {
    colon: " : ",
    intro: "Les pièces jointes de ce message ({{count}}) ont été déplacées vers un transfert Cryptshare sécurisé :",
    available_until: "Disponibles jusqu'au",
    download: "Téléchargement",
    sender: "Expéditeur",
    tracking_id: "Identifiant de suivi",
    link_cryptshare: "Vous recevrez le lien de téléchargement dans un e-mail séparé envoyé par le serveur Cryptshare.",
    link_sender: "Veuillez demander le lien de téléchargement à l'expéditeur.",
    link_in_message: "Le lien de téléchargement ci-dessus vous est personnel : veuillez ne pas transférer ce message.",
    password_sender: "L'expéditeur vous communiquera le mot de passe.",
    password_none: "Aucun mot de passe n'est nécessaire.",
    files_title: "Fichiers déplacés vers Cryptshare",
    name: "Nom",
    size: "Taille",
    receipt_subject: "Accusé d'envoi Cryptshare",
    receipt_intro: "Les pièces jointes de votre message ont été déplacées vers un transfert Cryptshare sécurisé.",
    recipients: "Destinataires",
    files: "Fichiers",
    subject: "Objet",
    sender_link_cryptshare: "Le serveur Cryptshare envoie à chaque destinataire le lien de téléchargement dans un e-mail séparé.",
    sender_link_sender: "Les destinataires ne reçoivent pas le lien de téléchargement de Cryptshare : veuillez le leur transmettre vous-même (il figure dans le récapitulatif de dépôt Cryptshare).",
    sender_password_sender: "Veuillez communiquer aux destinataires le mot de passe figurant dans le récapitulatif de dépôt Cryptshare, par un autre moyen que l'e-mail (par exemple par téléphone).",
    sender_password_none: "Les destinataires n'ont besoin d'aucun mot de passe.",
    receipt_footer: "Ce message a été généré automatiquement par la passerelle Cryptshare. Merci de ne pas y répondre.",
    message_intro: "{{sender}} vous a envoyé un message confidentiel via Cryptshare.",
    message_files: "Fichiers joints",
    message_where: "Pour votre sécurité, le texte du message ne figure pas dans cet e-mail : ouvrez le transfert Cryptshare pour le lire.",
    receipt_intro_message: "Votre message et ses pièces jointes ont été envoyés sous forme de transfert Cryptshare sécurisé ; les destinataires ont reçu un avis sans le texte.",
};

const ES: Texts = Texts {
    colon: ": ",
    intro: "Los archivos adjuntos de este mensaje ({{count}}) se han trasladado a una transferencia segura de Cryptshare:",
    available_until: "Disponibles hasta el",
    download: "Descarga",
    sender: "Remitente",
    tracking_id: "ID de seguimiento",
    link_cryptshare: "Recibirá el enlace de descarga en un correo electrónico aparte del servidor Cryptshare.",
    link_sender: "Solicite el enlace de descarga al remitente.",
    link_in_message: "El enlace de descarga anterior es solo para usted: no reenvíe este mensaje.",
    password_sender: "El remitente le facilitará la contraseña.",
    password_none: "No se necesita contraseña.",
    files_title: "Archivos trasladados a Cryptshare",
    name: "Nombre",
    size: "Tamaño",
    receipt_subject: "Confirmación de envío Cryptshare",
    receipt_intro: "Los archivos adjuntos de su mensaje se han trasladado a una transferencia segura de Cryptshare.",
    recipients: "Destinatarios",
    files: "Archivos",
    subject: "Asunto",
    sender_link_cryptshare: "El servidor Cryptshare envía a cada destinatario el enlace de descarga en un correo electrónico aparte.",
    sender_link_sender: "Los destinatarios no reciben el enlace de descarga de Cryptshare: envíeselo usted (figura en el resumen de carga de Cryptshare).",
    sender_password_sender: "Comunique a los destinatarios la contraseña del resumen de carga de Cryptshare por un medio distinto del correo electrónico (por ejemplo, por teléfono).",
    sender_password_none: "Los destinatarios no necesitan contraseña.",
    receipt_footer: "Este mensaje ha sido generado automáticamente por la pasarela Cryptshare. Le rogamos que no responda a él.",
    message_intro: "{{sender}} le ha enviado un mensaje confidencial a través de Cryptshare.",
    message_files: "Archivos adjuntos",
    message_where: "Por su seguridad, el texto del mensaje no se incluye en este correo electrónico: abra la transferencia de Cryptshare para leerlo.",
    receipt_intro_message: "Su mensaje y sus archivos adjuntos se han enviado como una transferencia segura de Cryptshare; los destinatarios han recibido un aviso sin el texto.",
};

const IT: Texts = Texts {
    colon: ": ",
    intro: "Gli allegati di questo messaggio ({{count}}) sono stati spostati in un trasferimento Cryptshare sicuro:",
    available_until: "Disponibili fino al",
    download: "Download",
    sender: "Mittente",
    tracking_id: "ID di tracciamento",
    link_cryptshare: "Riceverà il link per il download in un'e-mail separata dal server Cryptshare.",
    link_sender: "Richieda il link per il download al mittente.",
    link_in_message: "Il link per il download qui sopra è personale: La preghiamo di non inoltrare questo messaggio.",
    password_sender: "La password Le verrà comunicata dal mittente.",
    password_none: "Non è necessaria alcuna password.",
    files_title: "File spostati su Cryptshare",
    name: "Nome",
    size: "Dimensione",
    receipt_subject: "Conferma di invio Cryptshare",
    receipt_intro: "Gli allegati del Suo messaggio sono stati spostati in un trasferimento Cryptshare sicuro.",
    recipients: "Destinatari",
    files: "File",
    subject: "Oggetto",
    sender_link_cryptshare: "Il server Cryptshare invia a ciascun destinatario il link per il download in un'e-mail separata.",
    sender_link_sender: "I destinatari non ricevono il link per il download da Cryptshare: La preghiamo di inviarlo Lei stesso (si trova nel riepilogo di caricamento di Cryptshare).",
    sender_password_sender: "La preghiamo di comunicare ai destinatari la password indicata nel riepilogo di caricamento di Cryptshare tramite un canale diverso dall'e-mail (ad esempio per telefono).",
    sender_password_none: "I destinatari non hanno bisogno di alcuna password.",
    receipt_footer: "Questo messaggio è stato generato automaticamente dal gateway Cryptshare. La preghiamo di non rispondere.",
    message_intro: "{{sender}} Le ha inviato un messaggio riservato tramite Cryptshare.",
    message_files: "File allegati",
    message_where: "Per la Sua sicurezza, il testo del messaggio non è contenuto in questa e-mail: apra il trasferimento Cryptshare per leggerlo.",
    receipt_intro_message: "Il Suo messaggio e i suoi allegati sono stati inviati come trasferimento Cryptshare sicuro; i destinatari hanno ricevuto un avviso senza il testo.",
};

const NL: Texts = Texts {
    colon: ": ",
    intro: "De bijlagen van dit bericht ({{count}}) zijn verplaatst naar een beveiligde Cryptshare-overdracht:",
    available_until: "Beschikbaar tot en met",
    download: "Downloaden",
    sender: "Afzender",
    tracking_id: "Tracking-ID",
    link_cryptshare: "U ontvangt de downloadlink in een aparte e-mail van de Cryptshare-server.",
    link_sender: "Vraag de afzender om de downloadlink.",
    link_in_message: "De downloadlink hierboven is alleen voor u bestemd: stuur dit bericht niet door.",
    password_sender: "Het wachtwoord ontvangt u van de afzender.",
    password_none: "Er is geen wachtwoord nodig.",
    files_title: "Naar Cryptshare verplaatste bestanden",
    name: "Naam",
    size: "Grootte",
    receipt_subject: "Cryptshare-verzendbevestiging",
    receipt_intro: "De bijlagen van uw bericht zijn verplaatst naar een beveiligde Cryptshare-overdracht.",
    recipients: "Ontvangers",
    files: "Bestanden",
    subject: "Onderwerp",
    sender_link_cryptshare: "De Cryptshare-server stuurt elke ontvanger de downloadlink in een aparte e-mail.",
    sender_link_sender: "De ontvangers krijgen de downloadlink niet van Cryptshare: stuurt u deze zelf door (u vindt hem in het Cryptshare-uploadoverzicht).",
    sender_password_sender: "Geef de ontvangers het wachtwoord uit het Cryptshare-uploadoverzicht via een ander kanaal dan e-mail door (bijvoorbeeld telefonisch).",
    sender_password_none: "De ontvangers hebben geen wachtwoord nodig.",
    receipt_footer: "Dit bericht is automatisch gegenereerd door de Cryptshare-gateway. U kunt hierop niet antwoorden.",
    message_intro: "{{sender}} heeft u via Cryptshare een vertrouwelijk bericht gestuurd.",
    message_files: "Bijgevoegde bestanden",
    message_where: "Voor uw veiligheid staat de tekst van het bericht niet in deze e-mail: open de Cryptshare-overdracht om hem te lezen.",
    receipt_intro_message: "Uw bericht en de bijlagen zijn verzonden als een beveiligde Cryptshare-overdracht; de ontvangers kregen een melding zonder de tekst.",
};

impl Language {
    /// Every built-in language, in the order the docs list them.
    pub const ALL: [Language; 6] = [
        Language::En,
        Language::De,
        Language::Fr,
        Language::Es,
        Language::It,
        Language::Nl,
    ];

    /// The language of a tag by its primary subtag, case-insensitive: `de`, `DE` and `de-AT`
    /// are German, `en` and `en-GB` English; `None` for a language without built-in texts.
    pub fn parse(tag: &str) -> Option<Language> {
        let primary = tag.trim().split('-').next().unwrap_or_default();
        Language::ALL
            .into_iter()
            .find(|l| primary.eq_ignore_ascii_case(l.tag()))
    }

    /// The first tag of a `Content-Language:` value (RFC 3282, comma-separated) that has
    /// built-in texts.
    pub fn from_content_language(value: &str) -> Option<Language> {
        value.split(',').find_map(Language::parse)
    }

    /// The canonical tag, as a policy's `language` key and the Cryptshare API spell it.
    pub fn tag(self) -> &'static str {
        match self {
            Language::En => "en",
            Language::De => "de",
            Language::Fr => "fr",
            Language::Es => "es",
            Language::It => "it",
            Language::Nl => "nl",
        }
    }

    /// `"en", "de", "fr", "es", "it", "nl"`: for error messages and docs.
    pub fn list() -> String {
        Language::ALL
            .iter()
            .map(|l| format!("{:?}", l.tag()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn texts(self) -> &'static Texts {
        match self {
            Language::En => &EN,
            Language::De => &DE,
            Language::Fr => &FR,
            Language::Es => &ES,
            Language::It => &IT,
            Language::Nl => &NL,
        }
    }

    /// The date as the language writes it: `2026-12-11` (en, ISO 8601), `11.12.2026` (de),
    /// `11/12/2026` (fr, es, it), `11-12-2026` (nl).
    pub fn date(self, d: NaiveDate) -> String {
        let fmt = match self {
            Language::En => "%Y-%m-%d",
            Language::De => "%d.%m.%Y",
            Language::Fr | Language::Es | Language::It => "%d/%m/%Y",
            Language::Nl => "%d-%m-%Y",
        };
        d.format(fmt).to_string()
    }

    /// `1.5 MB` (en), `1,5 MB` (de, es, it, nl), `1,5 Mo` (fr: octets). Binary multiples,
    /// labelled the way mail clients do, one decimal.
    pub fn size(self, size: u64) -> String {
        let units: [&str; 5] = match self {
            Language::Fr => ["o", "Ko", "Mo", "Go", "To"],
            _ => ["B", "KB", "MB", "GB", "TB"],
        };
        let mut v = size as f64;
        let mut u = 0;
        while v >= 1024.0 && u < units.len() - 1 {
            v /= 1024.0;
            u += 1;
        }
        if u == 0 {
            return format!("{size} {}", units[0]);
        }
        let s = format!("{v:.1} {}", units[u]);
        match self {
            Language::En => s,
            _ => s.replace('.', ","),
        }
    }
}

impl Texts {
    /// `Label: ` — `Label : ` in French.
    pub fn label(&self, label: &str) -> String {
        format!("{label}{}", self.colon)
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
    /// Every combination, for tests and docs.
    pub const ALL: [Access; 4] = [
        Access {
            link_from_cryptshare: true,
            link_in_message: false,
            password_from_sender: true,
        },
        Access {
            link_from_cryptshare: true,
            link_in_message: false,
            password_from_sender: false,
        },
        Access {
            link_from_cryptshare: false,
            link_in_message: false,
            password_from_sender: true,
        },
        Access {
            link_from_cryptshare: false,
            link_in_message: false,
            password_from_sender: false,
        },
    ];

    /// The instructions to the recipient in `language`: where the link comes from, then the
    /// password.
    pub fn instructions(self, language: Language) -> String {
        let t = language.texts();
        let link = if self.link_in_message {
            t.link_in_message
        } else if self.link_from_cryptshare {
            t.link_cryptshare
        } else {
            t.link_sender
        };
        let password = if self.password_from_sender {
            t.password_sender
        } else {
            t.password_none
        };
        format!("{link} {password}")
    }

    /// The same for the sender's receipt: what the recipients get, and what is left to do.
    pub fn sender_instructions(self, language: Language) -> String {
        let t = language.texts();
        let link = if self.link_from_cryptshare {
            t.sender_link_cryptshare
        } else {
            t.sender_link_sender
        };
        let password = if self.password_from_sender {
            t.sender_password_sender
        } else {
            t.sender_password_none
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
        assert_eq!(Language::parse("fr-CA"), Some(Language::Fr));
        assert_eq!(Language::parse("nl-BE"), Some(Language::Nl));
        assert_eq!(Language::parse("pt"), None);
        assert_eq!(Language::parse(""), None);
        assert_eq!(Language::from("pt"), Language::En);
        assert_eq!(Language::De.tag(), "de");
        assert_eq!(Language::list(), r#""en", "de", "fr", "es", "it", "nl""#);
    }

    #[test]
    fn content_language_picks_the_first_built_in_tag() {
        assert_eq!(
            Language::from_content_language("pt-BR, it-CH, de"),
            Some(Language::It)
        );
        assert_eq!(Language::from_content_language(" es "), Some(Language::Es));
        assert_eq!(Language::from_content_language("pt, ja"), None);
        assert_eq!(Language::from_content_language(""), None);
    }

    #[test]
    fn local_dates_and_sizes() {
        let d = NaiveDate::from_ymd_opt(2026, 12, 11).unwrap();
        let got: Vec<_> = Language::ALL.iter().map(|l| l.date(d)).collect();
        assert_eq!(
            got,
            [
                "2026-12-11",
                "11.12.2026",
                "11/12/2026",
                "11/12/2026",
                "11/12/2026",
                "11-12-2026"
            ]
        );
        let got: Vec<_> = Language::ALL.iter().map(|l| l.size(1536 * 1024)).collect();
        assert_eq!(
            got,
            ["1.5 MB", "1,5 MB", "1,5 Mo", "1,5 MB", "1,5 MB", "1,5 MB"]
        );
        assert_eq!(Language::Fr.size(512), "512 o");
        assert_eq!(Language::Nl.size(512), "512 B");
        assert_eq!(Language::Fr.texts().label("Objet"), "Objet : ");
        assert_eq!(Language::It.texts().label("Oggetto"), "Oggetto: ");
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
        assert_eq!(
            Access::default().instructions(Language::Fr),
            "Vous recevrez le lien de téléchargement dans un e-mail séparé envoyé par le serveur \
             Cryptshare. L'expéditeur vous communiquera le mot de passe."
        );
        // Four different sentences per language, to the recipient and to the sender.
        for l in Language::ALL {
            let mut seen: Vec<String> = Access::ALL.iter().map(|a| a.instructions(l)).collect();
            seen.extend(Access::ALL.iter().map(|a| a.sender_instructions(l)));
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), 8, "{l:?}");
        }
    }
}
