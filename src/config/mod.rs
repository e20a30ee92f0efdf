//! Configuration: a TOML file layered with `CSGW__SECTION__KEY` environment overrides.
//!
//! The key names are an operator contract (SPEC §3): never rename them. [`types`] holds the
//! structs (typed once at parse: addresses, networks, the next hop, durations; the defaults),
//! [`Config::validate`] the checks serde cannot express. `config` depends on nothing else of
//! the crate; [`Secret`] lives here because the configuration holds the client id.

mod parse;
pub mod secret;
mod types;
mod validate;

use std::path::Path;

pub use parse::NextHop;
pub use secret::{Redacted, Secret};
pub use types::{
    AuditConfig, AuthConfig, Config, CryptshareConfig, MetricsConfig, NextHopTls, OnError,
    PasswordMode, PolicyConfig, RelayConfig, ServerConfig, SignedHandling, StateConfig, TlsConfig,
};
pub use validate::validate_sender_pattern;

/// A configuration problem, always naming the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
    #[error("{0}")]
    Load(String),
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl Config {
    /// Load `path` and the `CSGW__…` environment, then validate.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// As [`Config::load`], with an explicit environment (tests).
    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        if !path.exists() {
            return Err(ConfigError::Load(format!(
                "{}: no such file",
                path.display()
            )));
        }
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("CSGW__"))
            .collect();
        let raw = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("CSGW")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .list_separator(",")
                    .with_list_parse_key("server.listen")
                    .with_list_parse_key("server.listen_tls")
                    .with_list_parse_key("server.client_networks")
                    .source(Some(env)),
            )
            .build()
            .map_err(|e| ConfigError::Load(format!("{}: {e}", path.display())))?;
        let mut cfg: Config = serde_path_to_error_free(raw)?;
        cfg.apply_clamps();
        cfg.validate()?;
        Ok(cfg)
    }

}

/// Deserialize with the failing key in the message (the `config` crate already names it for most
/// errors; unknown fields come back as "unknown field `x`, expected …" in the section path).
fn serde_path_to_error_free(raw: config::Config) -> Result<Config, ConfigError> {
    raw.try_deserialize::<Config>().map_err(|e| {
        let msg = e.to_string();
        // Typed values (addresses, networks) fail inside serde: "REASON for key `K`" becomes
        // "K: REASON" like the checks of `validate`.
        match msg.rsplit_once(" for key `") {
            Some((reason, key)) if key.ends_with('`') && reason.starts_with('"') => {
                ConfigError::invalid(key.trim_end_matches('`'), reason)
            }
            _ => ConfigError::Load(msg),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(s: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::io::Write::write_all(&mut f, s.as_bytes()).unwrap();
        f
    }

    const MIN: &str = "[server]\n[relay]\nnext_hop = \"127.0.0.1:10026\"\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let f = write(MIN);
        let c = Config::load_with_env(f.path(), []).unwrap();
        assert_eq!(c.server.listen, vec!["127.0.0.1:2525".parse().unwrap()]);
        assert_eq!(c.server.max_message_size, 104_857_600);
        assert_eq!(
            c.relay.next_hop,
            NextHop::Smtp {
                host: "127.0.0.1".into(),
                port: 10026
            }
        );
    }

    #[test]
    fn env_overrides_file() {
        let f = write(MIN);
        let env = [
            ("CSGW__SERVER__MAX_RECIPIENTS".to_string(), "7".to_string()),
            (
                "CSGW__SERVER__CLIENT_NETWORKS".to_string(),
                "10.0.0.0/8,192.168.0.0/16".to_string(),
            ),
            (
                "CSGW__RELAY__NEXT_HOP".to_string(),
                "maildir:/tmp/x".to_string(),
            ),
        ];
        let c = Config::load_with_env(f.path(), env).unwrap();
        assert_eq!(c.server.max_recipients, 7);
        assert_eq!(
            c.server.client_networks,
            vec![
                "10.0.0.0/8".parse::<ipnet::IpNet>().unwrap(),
                "192.168.0.0/16".parse().unwrap()
            ]
        );
        assert_eq!(c.relay.next_hop, NextHop::Maildir("/tmp/x".into()));
    }

    #[test]
    fn client_id_never_shows_in_debug_output() {
        let f = write(&format!(
            "{MIN}[cryptshare]\nclient_id = \"SecretClientId0123456789abcdefghijklmnopqrstuvwxyzABCD\"\n"
        ));
        let c = Config::load_with_env(f.path(), []).unwrap();
        assert!(!format!("{c:?}").contains("SecretClientId"));
        assert_eq!(
            c.cryptshare.client_id.as_ref().map(|s| s.expose().as_str()),
            Some("SecretClientId0123456789abcdefghijklmnopqrstuvwxyzABCD")
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let f = write("[server]\nmax_mesage_size = 5\n[relay]\nnext_hop = \"a:1\"\n");
        let e = Config::load_with_env(f.path(), []).unwrap_err().to_string();
        assert!(e.contains("max_mesage_size"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        for (toml, key) in [
            (
                "[server]\nlisten = [\"nonsense\"]\n[relay]\nnext_hop = \"a:1\"\n",
                "server.listen[0]",
            ),
            (
                "[server]\nclient_networks = [\"10.0.0.0/33\"]\n[relay]\nnext_hop = \"a:1\"\n",
                "server.client_networks[0]",
            ),
            (
                "[server]\n[relay]\nnext_hop = \"nohost\"\n",
                "relay.next_hop",
            ),
            (
                "[server]\n[relay]\nnext_hop = \"a:1\"\n[[policy]]\nname = \"x\"\nsenders = [\"a*b@c\"]\n",
                "policy[0].senders[0]",
            ),
            (
                "[server]\n[relay]\nnext_hop = \"a:1\"\n[cryptshare]\nurl = \"ftp://x\"\n",
                "cryptshare.url",
            ),
            (
                "[server]\nmax_line_length = 998\n[relay]\nnext_hop = \"a:1\"\n",
                "server.max_line_length",
            ),
        ] {
            let f = write(toml);
            let e = Config::load_with_env(f.path(), []).unwrap_err().to_string();
            assert!(e.starts_with(key), "{key}: {e}");
        }
    }

    #[test]
    fn auth_throttling_keys() {
        let users = write("alice:$2b$04$abcdefghijklmnopqrstuu5sEXkjPzjZq6Vt0i4JLF0zC0Hf7mO6\n");
        let section = |extra: &str| {
            format!(
                "{MIN}[server.auth]\nusers_file = \"{}\"\n{extra}",
                users.path().display()
            )
        };
        let f = write(&section(""));
        let c = Config::load_with_env(f.path(), []).unwrap();
        let a = c.server.auth.unwrap();
        assert_eq!((a.failure_delay.as_secs(), a.max_failures), (1, 3));
        let f = write(&section("failure_delay = 0\nmax_failures = 5\n"));
        let a = Config::load_with_env(f.path(), [])
            .unwrap()
            .server
            .auth
            .unwrap();
        assert_eq!((a.failure_delay.as_secs(), a.max_failures), (0, 5));
        for (extra, key) in [
            ("max_failures = 0\n", "server.auth.max_failures"),
            ("failure_delay = 61\n", "server.auth.failure_delay"),
        ] {
            let f = write(&section(extra));
            let e = Config::load_with_env(f.path(), []).unwrap_err().to_string();
            assert!(e.starts_with(key), "{key}: {e}");
        }
    }

    #[test]
    fn wrong_type_is_named() {
        let f = write("[server]\nmax_recipients = \"many\"\n[relay]\nnext_hop = \"a:1\"\n");
        let e = Config::load_with_env(f.path(), []).unwrap_err().to_string();
        assert!(e.contains("max_recipients"), "{e}");
    }
}
