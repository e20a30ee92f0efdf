//! Checks of values that their types cannot express (ranges, combinations of keys, files that
//! must exist), and the clamps. Every error names its key; the loader adds where it was set.

use std::collections::HashSet;
use std::time::Duration;

use super::{Config, ConfigError, NextHop};

impl Config {
    /// The one place where out-of-range values are raised to what the code can work with
    /// instead of being refused (a timeout of 0 s would fail every attempt at once).
    pub(super) fn apply_clamps(&mut self) {
        let at_least_1s = |d: &mut Duration| *d = (*d).max(Duration::from_secs(1));
        at_least_1s(&mut self.relay.connect_timeout);
        at_least_1s(&mut self.relay.command_timeout);
        at_least_1s(&mut self.relay.data_init_timeout);
        at_least_1s(&mut self.relay.data_xfer_timeout);
        at_least_1s(&mut self.relay.data_done_timeout);
        at_least_1s(&mut self.cryptshare.timeout);
        at_least_1s(&mut self.server.idle_timeout);
        at_least_1s(&mut self.server.command_timeout);
        at_least_1s(&mut self.server.session_timeout);
        at_least_1s(&mut self.server.outside_session_timeout);
        at_least_1s(&mut self.cryptshare.processing_limit);
        at_least_1s(&mut self.queue.min_backoff);
        self.queue.max_backoff = self.queue.max_backoff.max(self.queue.min_backoff);
        self.queue.concurrency = self.queue.concurrency.max(1);
        self.queue.max_messages = self.queue.max_messages.max(1);
    }

    /// Checks serde cannot express. Every error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        if s.listen.is_empty() && s.listen_tls.is_empty() {
            return Err(ConfigError::invalid(
                "server.listen",
                "at least one listener is required",
            ));
        }
        if s.max_line_length != 0 && s.max_line_length < 1000 {
            return Err(ConfigError::invalid(
                "server.max_line_length",
                "0 (no limit) or at least 1000 (RFC 5321 requires lines of 1000 octets)",
            ));
        }
        for addr in &self.queue.spool_listen {
            if !s.listen.contains(addr) && !s.listen_tls.contains(addr) {
                return Err(ConfigError::invalid(
                    "queue.spool_listen",
                    format!("{addr} is not one of server.listen or server.listen_tls"),
                ));
            }
        }
        if self.queue.enabled() && self.queue.max_lifetime.is_zero() {
            return Err(ConfigError::invalid(
                "queue.max_lifetime",
                "must be longer than 0 (e.g. \"5d\")",
            ));
        }
        if !s.listen_tls.is_empty() && s.tls.is_none() {
            return Err(ConfigError::invalid(
                "server.listen_tls",
                "implicit TLS listeners need [server.tls]",
            ));
        }
        if s.hostname.is_empty() || s.hostname.contains(char::is_whitespace) {
            return Err(ConfigError::invalid(
                "server.hostname",
                "must be a host name without spaces",
            ));
        }
        if s.max_message_size == 0 {
            return Err(ConfigError::invalid(
                "server.max_message_size",
                "must be greater than 0",
            ));
        }
        if s.max_message_size >= u32::MAX as u64 {
            return Err(ConfigError::invalid(
                "server.max_message_size",
                "must be below 4 GiB",
            ));
        }
        if s.max_recipients == 0 {
            return Err(ConfigError::invalid(
                "server.max_recipients",
                "must be greater than 0",
            ));
        }
        if s.max_connections == 0 {
            return Err(ConfigError::invalid(
                "server.max_connections",
                "must be greater than 0",
            ));
        }
        if s.proxy_protocol && s.proxy_networks.is_empty() {
            return Err(ConfigError::invalid(
                "server.proxy_networks",
                "server.proxy_protocol = true needs the addresses of the proxies in \
                 server.proxy_networks (a list of networks like \"192.0.2.10/32\")",
            ));
        }
        if s.max_connections_per_ip == 0 {
            return Err(ConfigError::invalid(
                "server.max_connections_per_ip",
                "must be at least 1",
            ));
        }
        if !(1..=100).contains(&s.outside_connections_percent) {
            return Err(ConfigError::invalid(
                "server.outside_connections_percent",
                "a percentage from 1 to 100",
            ));
        }
        if let Some(tls) = &s.tls {
            for (key, p) in [("server.tls.cert", &tls.cert), ("server.tls.key", &tls.key)] {
                if !p.is_file() {
                    return Err(ConfigError::invalid(
                        key,
                        format!("{}: no such file", p.display()),
                    ));
                }
            }
        }
        if let Some(auth) = &s.auth {
            if !auth.users_file.is_file() {
                return Err(ConfigError::invalid(
                    "server.auth.users_file",
                    format!("{}: no such file", auth.users_file.display()),
                ));
            }
            if auth.max_failures == 0 {
                return Err(ConfigError::invalid(
                    "server.auth.max_failures",
                    "must be at least 1",
                ));
            }
            if auth.lockout_failures == 0 {
                return Err(ConfigError::invalid(
                    "server.auth.lockout_failures",
                    "must be at least 1",
                ));
            }
            if auth.max_concurrent_checks == 0 {
                return Err(ConfigError::invalid(
                    "server.auth.max_concurrent_checks",
                    "must be at least 1",
                ));
            }
            if auth.failure_delay > Duration::from_secs(60) {
                return Err(ConfigError::invalid(
                    "server.auth.failure_delay",
                    "at most 60 seconds (it grows with each failure, and clients time out)",
                ));
            }
        }
        if let NextHop::Smtp { host, .. } = &self.relay.next_hop {
            let name = self.relay.tls_server_name.as_ref().unwrap_or(host);
            if rustls_pki_types::ServerName::try_from(name.as_str()).is_err() {
                return Err(ConfigError::invalid(
                    "relay.tls_server_name",
                    format!("{name:?} is not a valid TLS server name"),
                ));
            }
        }
        if let Some(ca) = &self.relay.ca_file
            && !ca.is_file()
        {
            return Err(ConfigError::invalid(
                "relay.ca_file",
                format!("{}: no such file", ca.display()),
            ));
        }
        let cs = &self.cryptshare;
        if cs.url != "embedded"
            && !(cs.url.starts_with("https://") || cs.url.starts_with("http://"))
        {
            return Err(ConfigError::invalid(
                "cryptshare.url",
                format!("{:?} must be an http(s):// URL or \"embedded\"", cs.url),
            ));
        }
        if cs.client_id.is_some() && cs.client_id_file.is_some() {
            return Err(ConfigError::invalid(
                "cryptshare.client_id_file",
                "set either cryptshare.client_id or cryptshare.client_id_file, not both",
            ));
        }
        if let Some(f) = &cs.client_id_file
            && !f.is_file()
        {
            return Err(ConfigError::invalid(
                "cryptshare.client_id_file",
                format!("{}: no such file", f.display()),
            ));
        }
        if let Some(f) = &cs.ca_file
            && !f.is_file()
        {
            return Err(ConfigError::invalid(
                "cryptshare.ca_file",
                format!("{}: no such file", f.display()),
            ));
        }
        self.validate_state()?;
        self.validate_dkim()?;
        self.validate_policies()
    }

    /// `[state]`: with `backend = "postgres"` a parsable `url` (its password, if any, never in
    /// the error), the password in one place only, existing files, a pool and a lease that
    /// can work. With spool mode the queue stays on this node's disk (docs/high-availability.md).
    fn validate_state(&self) -> Result<(), ConfigError> {
        let st = &self.state;
        if st.backend != super::StateBackend::Postgres {
            return Ok(());
        }
        let Some(url) = &st.url else {
            return Err(ConfigError::invalid(
                "state.url",
                "state.backend = \"postgres\" needs state.url \
                 (e.g. \"postgres://gateway@db.example.org/gateway?sslmode=require\")",
            ));
        };
        let raw = url.expose();
        if !(raw.starts_with("postgres://") || raw.starts_with("postgresql://")) {
            return Err(ConfigError::invalid(
                "state.url",
                format!("{url} must be a postgres:// or postgresql:// URL"),
            ));
        }
        let parsed = match raw.parse::<tokio_postgres::Config>() {
            Ok(c) => c,
            Err(e) => {
                // The driver's message names the option, never the value.
                return Err(ConfigError::invalid(
                    "state.url",
                    format!("{url} is not a valid PostgreSQL URL: {e}"),
                ));
            }
        };
        if parsed.get_dbname().is_none() {
            return Err(ConfigError::invalid(
                "state.url",
                format!("{url} names no database (postgres://user@host/DATABASE)"),
            ));
        }
        if let Some(f) = &st.password_file {
            if parsed.get_password().is_some() {
                return Err(ConfigError::invalid(
                    "state.password_file",
                    "set the password either in state.url or in state.password_file, not both",
                ));
            }
            if !f.is_file() {
                return Err(ConfigError::invalid(
                    "state.password_file",
                    format!("{}: no such file", f.display()),
                ));
            }
        }
        if let Some(f) = &st.ca_file
            && !f.is_file()
        {
            return Err(ConfigError::invalid(
                "state.ca_file",
                format!("{}: no such file", f.display()),
            ));
        }
        if st.pool_size == 0 {
            return Err(ConfigError::invalid(
                "state.pool_size",
                "must be at least 1",
            ));
        }
        if st.lease < Duration::from_secs(2) {
            return Err(ConfigError::invalid(
                "state.lease",
                "at least 2 seconds (it is renewed every third of it)",
            ));
        }
        Ok(())
    }

    /// `[dkim]`: at least one key, domains and selectors as DNS names, `From` signed (RFC 6376
    /// §5.4 requires it), key files present (their content is checked when they are loaded).
    fn validate_dkim(&self) -> Result<(), ConfigError> {
        let Some(d) = &self.dkim else { return Ok(()) };
        if d.key.is_empty() {
            return Err(ConfigError::invalid(
                "dkim.key",
                "at least one [[dkim.key]] (domain, selector, key_file) is required",
            ));
        }
        if !d.headers.iter().any(|h| h.eq_ignore_ascii_case("from")) {
            return Err(ConfigError::invalid(
                "dkim.headers",
                "must include \"From\" (RFC 6376 §5.4)",
            ));
        }
        if let Some(h) = d
            .headers
            .iter()
            .find(|h| h.is_empty() || !h.bytes().all(|b| b.is_ascii_graphic() && b != b':'))
        {
            return Err(ConfigError::invalid(
                "dkim.headers",
                format!("{h:?} is not a header field name"),
            ));
        }
        let dns_name = |s: &str| {
            !s.is_empty()
                && s.len() <= 253
                && s.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                })
        };
        for (i, k) in d.key.iter().enumerate() {
            if !dns_name(&k.domain) {
                return Err(ConfigError::invalid(
                    format!("dkim.key[{i}].domain"),
                    format!("{:?} is not a domain name", k.domain),
                ));
            }
            if !dns_name(&k.selector) {
                return Err(ConfigError::invalid(
                    format!("dkim.key[{i}].selector"),
                    format!("{:?} is not a DNS label (letters, digits, '-')", k.selector),
                ));
            }
            if !k.key_file.is_file() {
                return Err(ConfigError::invalid(
                    format!("dkim.key[{i}].key_file"),
                    format!("{}: no such file", k.key_file.display()),
                ));
            }
        }
        Ok(())
    }

    fn validate_policies(&self) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        for (i, p) in self.policy.iter().enumerate() {
            let key = |k: &str| format!("policy[{i}].{k}");
            if p.name.is_empty() {
                return Err(ConfigError::invalid(key("name"), "must not be empty"));
            }
            if !names.insert(p.name.as_str()) {
                return Err(ConfigError::invalid(
                    key("name"),
                    format!("duplicate policy name {:?}", p.name),
                ));
            }
            if p.senders.is_empty() {
                return Err(ConfigError::invalid(
                    key("senders"),
                    "at least one sender pattern is required",
                ));
            }
            for (j, pat) in p.senders.iter().enumerate() {
                validate_sender_pattern(pat)
                    .map_err(|r| ConfigError::invalid(format!("policy[{i}].senders[{j}]"), r))?;
            }
            if p.expiration_days == 0 || p.expiration_days > 3650 {
                return Err(ConfigError::invalid(
                    key("expiration_days"),
                    "must be between 1 and 3650",
                ));
            }
            // The canonical tag only: it also goes verbatim to the Cryptshare API.
            let built_in =
                |tag: &str| crate::mime::Language::parse(tag).map(|l| l.tag()) == Some(tag);
            if p.language != "auto" && !built_in(&p.language) {
                return Err(ConfigError::invalid(
                    key("language"),
                    format!(
                        "{:?} has no built-in texts (valid: \"auto\", {})",
                        p.language,
                        crate::mime::Language::list()
                    ),
                ));
            }
            if !built_in(&p.default_language) {
                return Err(ConfigError::invalid(
                    key("default_language"),
                    format!(
                        "{:?} has no built-in texts (valid: {})",
                        p.default_language,
                        crate::mime::Language::list()
                    ),
                ));
            }
            if p.recipient_language != "auto" && !is_language_tag(&p.recipient_language) {
                return Err(ConfigError::invalid(
                    key("recipient_language"),
                    format!(
                        "{:?} is neither \"auto\" nor a language tag like \"en\" or \"de-CH\"",
                        p.recipient_language
                    ),
                ));
            }
            if let Some(dir) = &p.template_dir
                && !dir.is_dir()
            {
                return Err(ConfigError::invalid(
                    key("template_dir"),
                    format!("{}: no such directory", dir.display()),
                ));
            }
            if p.subject_tag_message && p.subject_tag.as_deref().is_none_or(str::is_empty) {
                return Err(ConfigError::invalid(
                    key("subject_tag_message"),
                    "needs a subject_tag (true: a message with the tag goes as a whole; \
                     valid: true with subject_tag set, or false)",
                ));
            }
            if let Some(from) = &p.receipt_from
                && !is_mailbox(from)
            {
                return Err(ConfigError::invalid(
                    key("receipt_from"),
                    format!(
                        "{from:?} is not an address (valid: \"gateway@example.org\" or \
                         \"Cryptshare Gateway <gateway@example.org>\", ASCII, one line)"
                    ),
                ));
            }
            if let Some(dir) = &p.template_dir {
                check_templates(dir, &p.language)
                    .map_err(|r| ConfigError::invalid(key("template_dir"), r))?;
            }
        }
        Ok(())
    }
}

/// The operator's notice templates a rule may use (every language's with `language = "auto"`):
/// readable, and every `{{` one of the placeholders. Checked at start-up and on every reload,
/// so a typo is a config error instead of a verbatim `{{dowload_url}}` in every notice.
fn check_templates(dir: &std::path::Path, language: &str) -> Result<(), String> {
    use crate::mime::Language;
    let languages: Vec<Language> = match Language::parse(language) {
        Some(l) if language != "auto" => vec![l],
        _ => Language::ALL.to_vec(),
    };
    for l in languages {
        for (name, ext) in [
            ("notice", "txt"),
            ("notice", "html"),
            ("message", "txt"),
            ("message", "html"),
        ] {
            let f = dir.join(format!("{name}.{}.{ext}", l.tag()));
            let text = match std::fs::read_to_string(&f) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(format!("{}: {e}", f.display())),
            };
            crate::mime::check_template(&text).map_err(|e| format!("{} {e}", f.display()))?;
        }
    }
    Ok(())
}

/// `receipt_from`: `local@domain` or `Display Name <local@domain>`, printable ASCII on one
/// line (it goes verbatim into a `From:` header), the address without spaces or brackets.
fn is_mailbox(s: &str) -> bool {
    if s.is_empty() || s.len() > 900 || !s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return false;
    }
    let addr = match s.rsplit_once('<') {
        Some((name, rest)) => {
            let Some(a) = rest.strip_suffix('>') else {
                return false;
            };
            if name.contains(['<', '>', '"', '(', ')', ',', ';', ':', '\\']) {
                return false;
            }
            a
        }
        None => s,
    };
    let ok = |p: &str| !p.is_empty() && !p.contains([' ', '<', '>', '"', ',', ';', '(', ')']);
    match addr.split_once('@') {
        Some((l, d)) => ok(l) && ok(d) && !d.contains('@'),
        None => false,
    }
}

/// Sender patterns: `*`, `*@domain`, `*@*.domain`, `local@domain`.
pub fn validate_sender_pattern(p: &str) -> Result<(), String> {
    if p == "*" {
        return Ok(());
    }
    let Some((local, domain)) = p.rsplit_once('@') else {
        return Err(format!(
            "{p:?} must look like *@domain, *@*.domain or user@domain"
        ));
    };
    if local.is_empty() || domain.is_empty() {
        return Err(format!(
            "{p:?} must look like *@domain, *@*.domain or user@domain"
        ));
    }
    if local.contains('*') && local != "*" {
        return Err(format!("{p:?}: the local part is either * or a literal"));
    }
    let d = domain.strip_prefix("*.").unwrap_or(domain);
    if d.is_empty() || d.contains('*') || d.contains(char::is_whitespace) || d.starts_with('.') {
        return Err(format!("{p:?}: bad domain (wildcard only as a leading *.)"));
    }
    Ok(())
}

/// A BCP 47 tag as far as the Cryptshare API needs it: letter/digit subtags of 1 to 8
/// characters joined by `-`, starting with 2 or 3 letters.
pub fn is_language_tag(tag: &str) -> bool {
    let mut subtags = tag.split('-');
    let Some(primary) = subtags.next() else {
        return false;
    };
    (2..=3).contains(&primary.len())
        && primary.bytes().all(|b| b.is_ascii_alphabetic())
        && subtags
            .all(|s| (1..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()))
}
