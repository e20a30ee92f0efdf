//! SMTP AUTH (RFC 4954) credentials: the `[server.auth] users_file`. The AUTH verb (`auth.rs`)
//! decides *when* AUTH is allowed (TLS, throttling) and decodes SASL; this module only answers
//! "are these credentials right".
//!
//! # Cost of a check
//! * Bounded: checks run on the blocking pool, at most `max_concurrent_checks` at a time, fewer
//!   when the most expensive hash of the file would take more than [`CHECK_MEMORY_BUDGET`]
//!   together (an argon2 check allocates its whole memory cost: `m=65536` is 64 MiB). A burst
//!   of AUTH attempts therefore waits instead of allocating gigabytes.
//! * Constant: an unknown user is checked against a dummy hash made at load time with the
//!   algorithm and parameters of the most expensive hash in the file, so that it costs what a
//!   wrong password for that user costs and the reply time does not tell whether a user exists.

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

/// Memory all concurrent argon2 checks may take together.
pub const CHECK_MEMORY_BUDGET: u64 = 192 * 1024 * 1024;

/// Users and their password hashes (argon2 PHC strings `$argon2…` or bcrypt `$2a$/$2b$/$2y$`).
#[derive(Clone)]
pub struct UserDb {
    users: Arc<HashMap<String, String>>,
    /// Checked for unknown users (see the module docs).
    dummy: Arc<String>,
    /// Memory of one check of the most expensive hash (bytes; 0 for bcrypt).
    check_memory: u64,
    checks: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for UserDb {
    // Hashes are secrets too (offline cracking): never print them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserDb")
            .field("users", &self.users.len())
            .finish()
    }
}

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
        let costliest = users.values().max_by_key(|h| cost(h));
        let check_memory = costliest.map(|h| argon2_memory(h)).unwrap_or(0);
        let dummy = match costliest {
            Some(h) => dummy_like(h),
            None => dummy_like(""),
        };
        Ok(UserDb {
            users: Arc::new(users),
            dummy: Arc::new(dummy),
            check_memory,
            checks: Arc::new(tokio::sync::Semaphore::new(1)),
        }
        .with_max_checks(4))
    }

    /// At most `n` checks at a time, fewer when the memory budget demands it (module docs).
    pub fn with_max_checks(mut self, n: usize) -> UserDb {
        let by_memory = match self.check_memory {
            0 => usize::MAX,
            m => usize::try_from(CHECK_MEMORY_BUDGET / m).unwrap_or(usize::MAX),
        };
        self.checks = Arc::new(tokio::sync::Semaphore::new(n.min(by_memory).max(1)));
        self
    }

    /// How many checks may run at the same time.
    pub fn max_checks(&self) -> usize {
        self.checks.available_permits()
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Check a password. CPU-heavy by design (argon2/bcrypt), so it runs on the blocking pool,
    /// after waiting for one of the bounded check slots (module docs).
    pub async fn verify(&self, user: &str, password: &[u8]) -> bool {
        let hash = self.users.get(user).cloned();
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy.as_str().to_owned());
        let password = password.to_vec();
        let Ok(permit) = self.checks.clone().acquire_owned().await else {
            return false;
        };
        // The permit moves into the blocking task: a session that gives up waiting (shutdown)
        // does not free the slot before the hash has really finished.
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            verify_hash(&hash, &password)
        })
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

/// Rough work of checking `hash`, to find the most expensive one: argon2 memory (KiB) times
/// passes times lanes; bcrypt 2^cost times 64 (a bcrypt cost of 10 is about argon2's default).
fn cost(hash: &str) -> u128 {
    if let Some(p) = argon2_params(hash) {
        return u128::from(p.m_cost()) * u128::from(p.t_cost()) * u128::from(p.p_cost());
    }
    bcrypt_cost(hash).map_or(0, |c| (1u128 << c.min(31)) * 64)
}

fn argon2_params(hash: &str) -> Option<argon2::Params> {
    let parsed = argon2::PasswordHash::new(hash).ok()?;
    argon2::Params::try_from(&parsed).ok()
}

/// Memory one argon2 check of `hash` allocates (bytes); 0 for bcrypt.
fn argon2_memory(hash: &str) -> u64 {
    argon2_params(hash).map_or(0, |p| u64::from(p.m_cost()) * 1024)
}

fn bcrypt_cost(hash: &str) -> Option<u32> {
    hash.get(4..6)?.parse().ok()
}

/// A hash of a random password with the algorithm and parameters of `like` (bcrypt cost 10 when
/// `like` is empty or cannot be mirrored).
fn dummy_like(like: &str) -> String {
    use argon2::PasswordHasher;
    let mut secret = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut secret);
    if let Ok(parsed) = argon2::PasswordHash::new(like)
        && let Ok(params) = argon2::Params::try_from(&parsed)
        && let Ok(alg) = argon2::Algorithm::try_from(parsed.algorithm)
    {
        let version = parsed
            .version
            .and_then(|v| argon2::Version::try_from(v).ok())
            .unwrap_or_default();
        let salt = argon2::password_hash::SaltString::encode_b64(&secret)
            .expect("16 bytes are a valid salt");
        if let Ok(h) = argon2::Argon2::new(alg, version, params).hash_password(&secret, &salt) {
            return h.to_string();
        }
    }
    let cost = bcrypt_cost(like).unwrap_or(10);
    bcrypt::hash(secret, cost).unwrap_or_else(|_| String::from("$2b$10$"))
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
