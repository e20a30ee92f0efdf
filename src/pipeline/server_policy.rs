//! The Cryptshare Server's transfer policy is authoritative (SPEC §2): what of a `[[policy]]`
//! the server lets the client set, what it decides itself, and where it forbids what the
//! operator demands.
//!
//! Pure (no I/O): [`reconcile`] turns one policy answer into the settings a transfer sends
//! (per message, in `transfer`); [`findings`] compares a rule with a policy answer for
//! `check-config --online` and the start-up check of `serve`.
//!
//! What the answer's flags decide (API-NOTES §4):
//! - `showFileNamesChangeable = false`: `showFileNames` and `showZipFileContent` are not sent
//!   (the policy has no flag of its own for ZIP contents, which only matter with file names);
//!   the server's defaults apply.
//! - `sendDownloadNotificationsChangeable = false`: `sendDownloadNotifications` is not sent.
//! - `recipientNotificationEditable = false`: `notificationMessage` (subject and text) is not
//!   sent; the recipients get the server's default notification text.
//! - `allowedPasswordModes` (in priority order): the rule's mode when allowed; a rule with
//!   `none` gets `GENERATED` when only that is allowed (stronger, and the sender still gets the
//!   password by the upload summary); otherwise no transfer can be made ([`Forbidden`]).
//! - `confidentialMessageRequired = true`: only a whole-message transfer (`content = "message"`,
//!   or a tagged message with `subject_tag_message`) carries one; for any other no transfer can
//!   be made ([`Forbidden`] on `content`).
//! - `confidentialMessageAllowed = false`: a whole-message transfer cannot be made
//!   ([`Forbidden`]). Falling back to moving only the attachments would relay the text in
//!   clear, which is exactly what the operator asked to prevent.
//! - `maxRetentionPeriod`: caps `expiration_days`, with a day of margin (see [`expiry_days`]).

use crate::config::{Content, PasswordMode as RulePasswordMode, PolicyConfig};
use crate::cryptshare::{PasswordMode, TransferPolicySettings};

/// The settings of one transfer after the server's policy had its say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub mode: PasswordMode,
    /// `None`: not changeable, the server's default applies.
    pub show_file_names: Option<bool>,
    pub show_zip_file_content: Option<bool>,
    pub send_download_notifications: Option<bool>,
    /// The message's subject and text may go into the recipient notification.
    pub notification_editable: bool,
    /// Days from now until the transfer expires.
    pub expiry_days: i64,
    /// What the server decided instead of the rule, in words (logged once per message).
    pub server_decided: Vec<String>,
}

/// The server's policy makes a transfer for this rule impossible: a configuration error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy[{name}].{key}: {message}")]
pub struct Forbidden {
    /// The rule's name.
    pub name: String,
    /// The key of the rule that the server forbids.
    pub key: &'static str,
    pub message: String,
}

fn mode_name(m: RulePasswordMode) -> &'static str {
    match m {
        RulePasswordMode::Generated => "generated",
        RulePasswordMode::None => "none",
    }
}

fn list(modes: &[PasswordMode]) -> String {
    modes
        .iter()
        .map(|m| m.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The password mode for `rule` under the server's allowed modes (empty: no restriction).
fn password_mode(
    rule: &PolicyConfig,
    s: &TransferPolicySettings,
) -> Result<(PasswordMode, Option<String>), Forbidden> {
    let want = match rule.password_mode {
        RulePasswordMode::Generated => PasswordMode::Generated,
        RulePasswordMode::None => PasswordMode::None,
    };
    let allowed = s.allowed_password_modes();
    if allowed.is_empty() || allowed.contains(&want) {
        return Ok((want, None));
    }
    if want == PasswordMode::None && allowed.contains(&PasswordMode::Generated) {
        return Ok((
            PasswordMode::Generated,
            Some(format!(
                "password mode GENERATED instead of NONE (the server allows only {})",
                list(&allowed)
            )),
        ));
    }
    Err(Forbidden {
        name: rule.name.clone(),
        key: "password_mode",
        message: format!(
            "{:?} is not allowed by the Cryptshare server's policy (allowed: {}; MANUAL needs a \
             person to type the password and is not supported)",
            mode_name(rule.password_mode),
            list(&allowed)
        ),
    })
}

/// Days until expiry: the rule's `expiration_days`, capped by the server's
/// `maxRetentionPeriod` (0: none) with a margin of one day when the rule reaches the cap —
/// "now + max days" on our clock is refused (409) by a server whose clock runs a little behind
/// or that counts whole days. At least 1.
pub fn expiry_days(rule_days: u32, max_retention: i64) -> i64 {
    let days = i64::from(rule_days);
    if max_retention > 0 && days >= max_retention {
        (max_retention - 1).max(1)
    } else {
        days.max(1)
    }
}

/// Whether the server's confidential-message rules forbid this kind of transfer: the key of
/// the rule to change and why.
fn confidential_conflict(
    rule: &PolicyConfig,
    s: &TransferPolicySettings,
    whole_message: bool,
) -> Option<(&'static str, String)> {
    if whole_message && !s.confidential_message_allowed {
        let key = if rule.content == Content::Message {
            "content"
        } else {
            "subject_tag_message"
        };
        return Some((
            key,
            "the Cryptshare server's policy does not allow a confidential message \
             (confidentialMessageAllowed = false), which whole-message mode sends; valid \
             under this policy: content = \"attachments\" without subject_tag_message"
                .into(),
        ));
    }
    if !whole_message && s.confidential_message_required {
        return Some((
            "content",
            "the Cryptshare server's policy requires a confidential message \
             (confidentialMessageRequired = true), which only whole-message mode sends; valid \
             under this policy: content = \"message\""
                .into(),
        ));
    }
    None
}

/// The settings a transfer for `rule` sends under the policy answer `s`; `whole_message`: this
/// transfer carries the message's text as its confidential message.
pub fn reconcile(
    rule: &PolicyConfig,
    s: &TransferPolicySettings,
    whole_message: bool,
) -> Result<Applied, Forbidden> {
    if let Some((key, message)) = confidential_conflict(rule, s, whole_message) {
        return Err(Forbidden {
            name: rule.name.clone(),
            key,
            message,
        });
    }
    let (mode, mode_note) = password_mode(rule, s)?;
    let mut decided: Vec<String> = mode_note.into_iter().collect();
    let (show_file_names, show_zip_file_content) = if s.show_file_names_changeable {
        (Some(rule.show_file_names), Some(rule.show_zip_file_content))
    } else {
        decided.push(format!(
            "showFileNames={} showZipFileContent={} (server defaults, not changeable)",
            s.show_file_names_default, s.show_zip_file_content_default
        ));
        (None, None)
    };
    let send_download_notifications = if s.send_download_notifications_changeable {
        Some(rule.download_notifications)
    } else {
        decided.push(format!(
            "sendDownloadNotifications={} (server default, not changeable)",
            s.send_download_notifications_default
        ));
        None
    };
    if !s.recipient_notification_editable {
        decided.push("notificationMessage: the server's default text (not editable)".to_string());
    }
    let expiry_days = expiry_days(rule.expiration_days, s.max_retention_period);
    if i64::from(rule.expiration_days) > expiry_days {
        decided.push(format!(
            "expiry {expiry_days} days instead of {} (server maximum {} days)",
            rule.expiration_days, s.max_retention_period
        ));
    }
    Ok(Applied {
        mode,
        show_file_names,
        show_zip_file_content,
        send_download_notifications,
        notification_editable: s.recipient_notification_editable,
        expiry_days,
        server_decided: decided,
    })
}

/// One difference between a rule and the server's policy for a test sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// A configuration error (`check-config --online` exits 2): no transfer can be made.
    pub error: bool,
    /// `policy[N].key`.
    pub key: String,
    pub message: String,
}

/// Every difference between rule `index` and the policy answer for its test sender.
/// `allowed = false` (the sender or the test recipient refused) is an error on `senders`.
pub fn findings(
    index: usize,
    rule: &PolicyConfig,
    sender: &str,
    allowed: bool,
    s: &TransferPolicySettings,
) -> Vec<Finding> {
    let key = |k: &str| format!("policy[{index}].{k}");
    if !allowed {
        return vec![Finding {
            error: true,
            key: key("senders"),
            message: format!("the Cryptshare server's policy refuses sender {sender}"),
        }];
    }
    let mut out = Vec::new();
    match password_mode(rule, s) {
        Ok((m, _)) if m.as_str() != mode_name(rule.password_mode).to_ascii_uppercase() => {
            // Works (a stronger mode), but not what the operator asked for.
            out.push(Finding {
                error: true,
                key: key("password_mode"),
                message: format!(
                    "\"none\" is not allowed by the Cryptshare server's policy for {sender} \
                     (allowed: {}); transfers get GENERATED",
                    list(&s.allowed_password_modes())
                ),
            });
        }
        Ok(_) => {}
        Err(f) => out.push(Finding {
            error: true,
            key: key(f.key),
            message: format!("{} (sender {sender})", f.message),
        }),
    }
    // The rule's own mode; a rule with `subject_tag_message` sends both kinds.
    let kinds: &[bool] = match (rule.content, rule.subject_tag_message) {
        (Content::Message, _) => &[true],
        (Content::Attachments, false) => &[false],
        (Content::Attachments, true) => &[false, true],
    };
    for &whole in kinds {
        if let Some((k, message)) = confidential_conflict(rule, s, whole) {
            out.push(Finding {
                error: true,
                key: key(k),
                message: format!("{message} (sender {sender})"),
            });
        }
    }
    let mut locked = |name: &str, api: &str, ours: bool, default: bool| {
        if ours != default {
            out.push(Finding {
                error: false,
                key: key(name),
                message: format!(
                    "{ours} has no effect: the server does not let clients change {api} \
                     (server default {default})"
                ),
            });
        }
    };
    if !s.show_file_names_changeable {
        locked(
            "show_file_names",
            "showFileNames",
            rule.show_file_names,
            s.show_file_names_default,
        );
        locked(
            "show_zip_file_content",
            "showZipFileContent",
            rule.show_zip_file_content,
            s.show_zip_file_content_default,
        );
    }
    if !s.send_download_notifications_changeable {
        locked(
            "download_notifications",
            "sendDownloadNotifications",
            rule.download_notifications,
            s.send_download_notifications_default,
        );
    }
    if !s.recipient_notification_editable && rule.notify_recipients {
        out.push(Finding {
            error: false,
            key: key("notify_recipients"),
            message: "the server does not let clients edit the recipient notification: \
                      recipients get its default text, not the message's subject and text"
                .into(),
        });
    }
    let days = expiry_days(rule.expiration_days, s.max_retention_period);
    if i64::from(rule.expiration_days) > days {
        out.push(Finding {
            error: false,
            key: key("expiration_days"),
            message: format!(
                "{} exceeds what the server allows ({} days): transfers expire after {days} days",
                rule.expiration_days, s.max_retention_period
            ),
        });
    }
    out
}

/// The live check of one rule: its test sender and what the server's policy says about it
/// (`Err`: the server could not be asked).
#[derive(Debug)]
pub struct LiveCheck {
    pub index: usize,
    pub sender: Option<String>,
    pub result: Result<Vec<Finding>, String>,
}

/// Ask the server's transfer policy for every rule, with `sender` (else the rule's first
/// sender pattern made concrete, see [`test_sender`]) sending to `recipient` (else to itself).
pub async fn check_live(
    client: &crate::cryptshare::Client,
    rules: &[PolicyConfig],
    sender: Option<&str>,
    recipient: Option<&str>,
) -> Vec<LiveCheck> {
    let mut out = Vec::with_capacity(rules.len());
    for (index, rule) in rules.iter().enumerate() {
        let test = sender
            .map(str::to_string)
            .or_else(|| rule.senders.iter().find_map(|p| test_sender(p)));
        let Some(addr) = test.clone() else {
            out.push(LiveCheck {
                index,
                sender: None,
                result: Err(format!(
                    "policy[{index}].senders: no pattern names a concrete sender; pass --sender ADDR"
                )),
            });
            continue;
        };
        let rcpt = recipient
            .map(str::to_string)
            .unwrap_or_else(|| addr.clone());
        let result = match client.transfer_policy(&addr, &[rcpt]).await {
            Ok(tp) => Ok(findings(
                index,
                rule,
                &addr,
                tp.allowed,
                &tp.settings.unwrap_or_default(),
            )),
            Err(e) if e.error_code() == Some(3010) => Ok(findings(
                index,
                rule,
                &addr,
                false,
                &TransferPolicySettings::default(),
            )),
            Err(e) => Err(format!(
                "cryptshare.url: the transfer policy for {addr}: {e}"
            )),
        };
        out.push(LiveCheck {
            index,
            sender: test,
            result,
        });
    }
    out
}

/// A concrete address for a sender pattern (`*@example.org` → `check-config@example.org`,
/// `*@*.example.org` → `check-config@check.example.org`); `None` for `*` alone.
pub fn test_sender(pattern: &str) -> Option<String> {
    let (local, domain) = pattern.rsplit_once('@')?;
    let local = if local.contains('*') || local.is_empty() {
        "check-config".to_string()
    } else {
        local.to_string()
    };
    let domain = domain.replace('*', "check");
    (!domain.is_empty()).then(|| format!("{local}@{domain}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cryptshare::{PolicySecurityMode, PolicySecurityModeConfig};

    fn rule() -> PolicyConfig {
        let text = "name = \"org\"\nsenders = [\"*@example.org\"]\n";
        toml::from_str(text).unwrap()
    }

    fn open(modes: Vec<PasswordMode>) -> TransferPolicySettings {
        TransferPolicySettings {
            max_retention_period: 30,
            show_file_names_changeable: true,
            send_download_notifications_changeable: true,
            recipient_notification_editable: true,
            security_modes: vec![PolicySecurityMode {
                name: "ONE_TIME_PASSWORD".into(),
                config: PolicySecurityModeConfig {
                    allowed_password_modes: modes,
                },
            }],
            ..Default::default()
        }
    }

    #[test]
    fn expiry_keeps_a_day_of_margin_at_the_limit() {
        assert_eq!(expiry_days(14, 30), 14);
        assert_eq!(expiry_days(29, 30), 29);
        assert_eq!(expiry_days(30, 30), 29);
        assert_eq!(expiry_days(90, 30), 29);
        assert_eq!(expiry_days(7, 0), 7);
        assert_eq!(expiry_days(7, 1), 1);
    }

    #[test]
    fn locked_settings_are_left_to_the_server() {
        let mut s = open(vec![PasswordMode::Generated]);
        let a = reconcile(&rule(), &s, false).unwrap();
        assert_eq!(a.show_file_names, Some(true));
        assert!(a.server_decided.is_empty());
        s.show_file_names_changeable = false;
        s.send_download_notifications_changeable = false;
        s.recipient_notification_editable = false;
        let a = reconcile(&rule(), &s, false).unwrap();
        assert_eq!(
            (
                a.show_file_names,
                a.show_zip_file_content,
                a.send_download_notifications
            ),
            (None, None, None)
        );
        assert!(!a.notification_editable);
        assert_eq!(a.server_decided.len(), 3);
    }

    #[test]
    fn password_mode_follows_the_server_or_is_a_configuration_error() {
        let mut r = rule();
        r.password_mode = RulePasswordMode::None;
        let a = reconcile(&r, &open(vec![PasswordMode::Generated]), false).unwrap();
        assert_eq!(a.mode, PasswordMode::Generated);
        let e = reconcile(
            &rule(),
            &open(vec![PasswordMode::None, PasswordMode::Manual]),
            false,
        )
        .unwrap_err();
        assert_eq!(e.key, "password_mode");
        assert!(e.message.contains("allowed: NONE, MANUAL"), "{e}");
        let f = findings(
            0,
            &rule(),
            "a@example.org",
            true,
            &open(vec![PasswordMode::None]),
        );
        assert!(
            f.iter()
                .any(|f| f.error && f.key == "policy[0].password_mode")
        );
        let f = findings(
            0,
            &r,
            "a@example.org",
            true,
            &open(vec![PasswordMode::Generated]),
        );
        assert!(
            f.iter()
                .any(|f| f.error && f.key == "policy[0].password_mode")
        );
    }

    #[test]
    fn confidential_message_rules_decide_whole_message_transfers() {
        let mut whole = rule();
        whole.content = Content::Message;
        let mut s = open(vec![PasswordMode::Generated]);
        // Not allowed: whole-message transfers are impossible, attachment ones fine.
        s.confidential_message_allowed = false;
        let e = reconcile(&whole, &s, true).unwrap_err();
        assert_eq!(e.key, "content");
        assert!(
            e.message.contains("confidentialMessageAllowed = false"),
            "{e}"
        );
        assert!(reconcile(&rule(), &s, false).is_ok());
        let f = findings(0, &whole, "a@example.org", true, &s);
        assert!(
            f.iter().any(|f| f.error && f.key == "policy[0].content"),
            "{f:?}"
        );
        let mut tagged = rule();
        tagged.subject_tag = Some("[secure]".into());
        tagged.subject_tag_message = true;
        let f = findings(0, &tagged, "a@example.org", true, &s);
        assert!(
            f.iter()
                .any(|f| f.error && f.key == "policy[0].subject_tag_message"),
            "{f:?}"
        );
        // Required: only whole-message transfers.
        s.confidential_message_allowed = true;
        s.confidential_message_required = true;
        assert!(reconcile(&whole, &s, true).is_ok());
        let e = reconcile(&rule(), &s, false).unwrap_err();
        assert_eq!(e.key, "content");
        assert!(e.message.contains("content = \"message\""), "{e}");
        assert!(
            findings(0, &whole, "a@example.org", true, &s)
                .iter()
                .all(|f| !f.error)
        );
    }

    #[test]
    fn test_senders_are_made_concrete() {
        assert_eq!(
            test_sender("*@example.org").as_deref(),
            Some("check-config@example.org")
        );
        assert_eq!(
            test_sender("*@*.example.org").as_deref(),
            Some("check-config@check.example.org")
        );
        assert_eq!(
            test_sender("ann@example.org").as_deref(),
            Some("ann@example.org")
        );
        assert_eq!(test_sender("*"), None);
    }
}
