//! The client id: loaded from `[cryptshare]`, validated (`X-CS-ClientId` schema), never echoed.

use crate::config::{ConfigError, CryptshareConfig};

/// 50–4000 ASCII letters and digits (the `X-CS-ClientId` schema).
pub fn is_valid_client_id(id: &str) -> bool {
    (50..=4000).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The client id to use: [`load_client_id`], except that with `url = "embedded"` and no id
/// configured a random one is generated (the embedded emulator trusts every well-formed id).
pub fn resolve_client_id(cfg: &CryptshareConfig) -> Result<String, ConfigError> {
    if cfg.url == "embedded" && cfg.client_id.is_none() && cfg.client_id_file.is_none() {
        return Ok(random_client_id());
    }
    load_client_id(cfg)
}

/// 64 random letters and digits: a well-formed id for the embedded emulator.
pub(crate) fn random_client_id() -> String {
    use rand::Rng;
    rand::rng()
        .sample_iter(&rand::distr::Alphanumeric)
        .take(64)
        .map(char::from)
        .collect()
}

/// The client id from `[cryptshare] client_id` or `client_id_file` (trimmed), validated.
pub fn load_client_id(cfg: &CryptshareConfig) -> Result<String, ConfigError> {
    let (key, id) = match (&cfg.client_id, &cfg.client_id_file) {
        (Some(id), None) => ("cryptshare.client_id", id.expose().trim().to_owned()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::invalid(
                    "cryptshare.client_id_file",
                    format!("{}: {e}", path.display()),
                )
            })?;
            ("cryptshare.client_id_file", text.trim().to_owned())
        }
        (Some(_), Some(_)) => {
            return Err(ConfigError::invalid(
                "cryptshare.client_id_file",
                "set either cryptshare.client_id or cryptshare.client_id_file, not both",
            ));
        }
        (None, None) => {
            return Err(ConfigError::invalid(
                "cryptshare.client_id",
                "missing (or set cryptshare.client_id_file)",
            ));
        }
    };
    if !is_valid_client_id(&id) {
        // Never echo the value: it is a credential.
        return Err(ConfigError::invalid(
            key,
            format!(
                "must be 50 to 4000 letters and digits (got {} characters)",
                id.chars().count()
            ),
        ));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

    fn cfg() -> CryptshareConfig {
        CryptshareConfig::default()
    }

    #[test]
    fn client_id_from_config_or_file() {
        let mut c = cfg();
        c.client_id = Some(format!(" {ID}\n").into());
        assert_eq!(load_client_id(&c).unwrap(), ID);

        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("id");
        std::fs::write(&f, format!("{ID}\n")).unwrap();
        let mut c = cfg();
        c.client_id_file = Some(f.clone());
        assert_eq!(load_client_id(&c).unwrap(), ID);

        std::fs::write(&f, "secret-but-short").unwrap();
        let e = load_client_id(&c).unwrap_err().to_string();
        assert!(e.starts_with("cryptshare.client_id_file: "), "{e}");
        assert!(!e.contains("secret"), "the value must not be echoed: {e}");

        c.client_id_file = Some(dir.path().join("missing"));
        assert!(load_client_id(&c).is_err());
        assert!(
            load_client_id(&cfg())
                .unwrap_err()
                .to_string()
                .starts_with("cryptshare.client_id:")
        );
    }

    #[test]
    fn embedded_without_id_gets_a_random_one() {
        let c = cfg();
        assert_eq!(c.url, "embedded");
        let a = resolve_client_id(&c).unwrap();
        assert!(is_valid_client_id(&a));
        assert_ne!(a, resolve_client_id(&c).unwrap());
        let mut c = cfg();
        c.url = "https://cs.example".into();
        assert!(resolve_client_id(&c).is_err());
    }
}
