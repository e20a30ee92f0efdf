//! SMTP AUTH (RFC 4954) credentials: the `[server.auth] users_file`. The AUTH verb (`auth.rs`)
//! decides *when* AUTH is allowed (TLS, throttling) and decodes SASL; this module only answers
//! "are these credentials right".

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// A problem with the users file. Never contains a password hash.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {reason}")]
    Line {
        path: String,
        line: usize,
        reason: &'static str,
    },
}

/// Users and their password hashes (argon2 PHC strings `$argon2…` or bcrypt `$2a$/$2b$/$2y$`).
#[derive(Clone)]
pub struct UserDb {
    users: Arc<HashMap<String, String>>,
}

impl std::fmt::Debug for UserDb {
    // Hashes are secrets too (offline cracking): never print them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserDb")
            .field("users", &self.users.len())
            .finish()
    }
}

/// Verified for unknown users so that the time a lookup takes does not reveal whether the user
/// exists. The result is ignored.
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    bcrypt::hash("not a password", 10).unwrap_or_else(|_| String::from("$2b$10$"))
});

impl UserDb {
    pub fn load(path: &Path) -> Result<UserDb, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Lines `user:hash`; blank lines and lines starting with `#` are ignored.
    pub fn parse(text: &str, origin: &str) -> Result<UserDb, AuthError> {
        let mut users = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason| AuthError::Line {
                path: origin.to_string(),
                line: i + 1,
                reason,
            };
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| err("expected user:hash"))?;
            if user.is_empty() {
                return Err(err("empty user name"));
            }
            if !(hash.starts_with("$argon2") || is_bcrypt(hash)) {
                return Err(err("hash must be argon2 ($argon2…) or bcrypt ($2b$…)"));
            }
            if hash.starts_with("$argon2")
                && !argon2::PasswordHash::new(hash)
                    .is_ok_and(|h| h.salt.is_some() && h.hash.is_some())
            {
                return Err(err("malformed argon2 hash"));
            }
            if is_bcrypt(hash) && hash.len() != 60 {
                return Err(err("malformed bcrypt hash"));
            }
            if users.insert(user.to_string(), hash.to_string()).is_some() {
                return Err(err("duplicate user"));
            }
        }
        Ok(UserDb {
            users: Arc::new(users),
        })
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Check a password. CPU-heavy by design (argon2/bcrypt), so it runs on the blocking pool.
    pub async fn verify(&self, user: &str, password: &[u8]) -> bool {
        let hash = self.users.get(user).cloned();
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| DUMMY_HASH.clone());
        let password = password.to_vec();
        let ok = tokio::task::spawn_blocking(move || verify_hash(&hash, &password))
            .await
            .unwrap_or(false);
        ok && known
    }
}

fn is_bcrypt(hash: &str) -> bool {
    ["$2a$", "$2b$", "$2x$", "$2y$"]
        .iter()
        .any(|p| hash.starts_with(p))
}

fn verify_hash(hash: &str, password: &[u8]) -> bool {
    if hash.starts_with("$argon2") {
        use argon2::PasswordVerifier;
        match argon2::PasswordHash::new(hash) {
            Ok(parsed) => argon2::Argon2::default()
                .verify_password(password, &parsed)
                .is_ok(),
            Err(_) => false,
        }
    } else {
        bcrypt::verify(password, hash).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argon2_hash(pw: &str) -> String {
        use argon2::PasswordHasher;
        use argon2::password_hash::SaltString;
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        // Small parameters: the defaults take seconds in a debug build.
        let params = argon2::Params::new(1024, 1, 1, None).unwrap();
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password(pw.as_bytes(), &salt)
            .unwrap()
            .to_string()
    }

    #[tokio::test]
    async fn argon2_and_bcrypt_users_verify() {
        let text = format!(
            "# users\n\nalice:{}\nbob:{}\n",
            argon2_hash("secret-a"),
            bcrypt::hash("secret-b", 4).unwrap()
        );
        let db = UserDb::parse(&text, "users").unwrap();
        assert_eq!(db.len(), 2);
        assert!(db.verify("alice", b"secret-a").await);
        assert!(!db.verify("alice", b"secret-b").await);
        assert!(db.verify("bob", b"secret-b").await);
        assert!(!db.verify("bob", b"").await);
        assert!(!db.verify("carol", b"secret-a").await);
    }

    #[test]
    fn bad_lines_are_named_without_the_hash() {
        for (text, line) in [
            ("alice\n", 1),
            ("# c\nalice:plaintext\n", 2),
            (":$2b$04$xxxxxxxxxxxxxxxxxxxxxx\n", 1),
            ("a:$argon2id$nonsense\n", 1),
        ] {
            let e = UserDb::parse(text, "users").unwrap_err().to_string();
            assert!(e.starts_with(&format!("users line {line}:")), "{e}");
            assert!(!e.contains("plaintext") && !e.contains("nonsense"), "{e}");
        }
    }
}
