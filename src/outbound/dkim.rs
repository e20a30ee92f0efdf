//! DKIM signing (RFC 6376) of what the gateway relays, for the set-ups where the gateway is the
//! last hop before the Internet (Microsoft 365 in front, a smart host behind it): a converted
//! message breaks any signature made before the gateway, so it must be signed again here.
//!
//! The signing itself is `mail-auth`'s (Stalwart's maintained DKIM library, on the same
//! aws-lc-rs crypto as our TLS); this module picks the key and builds the header. The key is
//! chosen by the domain of the `From:` header — exactly that domain or a parent of it, the most
//! specific one winning — because DMARC passes on a DKIM signature only when its `d=` aligns
//! with `From:`. A message whose `From:` has no configured domain is relayed unsigned: a
//! signature that cannot align would add nothing but a header.

use std::path::{Path, PathBuf};

use mail_auth::common::crypto::{DkimKey, Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use crate::config::DkimConfig;

#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    #[error("dkim.key[{index}].key_file: {path}: {reason}")]
    Key {
        index: usize,
        path: PathBuf,
        reason: String,
    },
    #[error("DKIM signing failed: {0}")]
    Sign(String),
}

struct Key {
    /// `d=`, lower case.
    domain: String,
    signer: DkimSigner<DkimKey, Done>,
}

/// The configured keys, ready to sign.
pub struct Signer {
    keys: Vec<Key>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let domains: Vec<&str> = self.keys.iter().map(|k| k.domain.as_str()).collect();
        f.debug_struct("Signer").field("domains", &domains).finish()
    }
}

impl Signer {
    /// Load every key of `[dkim]`; an unreadable or unusable key names its `key_file`.
    pub fn from_config(cfg: &DkimConfig) -> Result<Signer, DkimError> {
        let mut keys = Vec::with_capacity(cfg.key.len());
        for (index, k) in cfg.key.iter().enumerate() {
            let key = load_key(&k.key_file).map_err(|reason| DkimError::Key {
                index,
                path: k.key_file.clone(),
                reason,
            })?;
            let signer = DkimSigner::from_key(key)
                .domain(k.domain.to_ascii_lowercase())
                .selector(k.selector.clone())
                .headers(cfg.headers.iter().cloned())
                // relaxed/relaxed: survives the re-folding and trailing-space changes that
                // MTAs after us are allowed to make (RFC 6376 §3.4).
                .header_canonicalization(Canonicalization::Relaxed)
                .body_canonicalization(Canonicalization::Relaxed);
            keys.push(Key {
                domain: k.domain.to_ascii_lowercase(),
                signer,
            });
        }
        Ok(Signer { keys })
    }

    /// The `DKIM-Signature:` header (ending in CRLF) to put on top of `message`, or `None` when
    /// no key's domain aligns with its `From:`.
    pub fn sign(&self, message: &[u8]) -> Result<Option<Vec<u8>>, DkimError> {
        let Some(from) = from_domain(message) else {
            return Ok(None);
        };
        let Some(key) = self.key_for(&from) else {
            return Ok(None);
        };
        let signature = key
            .signer
            .sign(message)
            .map_err(|e| DkimError::Sign(e.to_string()))?;
        Ok(Some(signature.to_header().into_bytes()))
    }

    fn key_for(&self, domain: &str) -> Option<&Key> {
        self.keys
            .iter()
            .filter(|k| {
                domain == k.domain
                    || domain
                        .strip_suffix(k.domain.as_str())
                        .is_some_and(|rest| rest.ends_with('.'))
            })
            .max_by_key(|k| k.domain.len())
    }
}

/// The domain of the first address in `From:`, lower case.
fn from_domain(message: &[u8]) -> Option<String> {
    let parsed = mail_parser::MessageParser::new().parse_headers(message)?;
    let addr = parsed.from()?.first()?.address()?;
    let (_, domain) = addr.rsplit_once('@')?;
    Some(domain.trim_end_matches('>').to_ascii_lowercase())
}

/// An RSA key (PKCS#1 `BEGIN RSA PRIVATE KEY` or PKCS#8 `BEGIN PRIVATE KEY`, as `openssl
/// genrsa` / `opendkim-genkey` write them) or an Ed25519 key (PKCS#8, `openssl genpkey
/// -algorithm ed25519`).
fn load_key(path: &Path) -> Result<DkimKey, String> {
    let pem = std::fs::read(path).map_err(|e| e.to_string())?;
    let der = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("no private key in PEM form ({e})"))?;
    match der {
        PrivateKeyDer::Pkcs1(_) => RsaKey::<Sha256>::from_key_der(der)
            .map(DkimKey::Rsa)
            .map_err(|e| format!("not a usable RSA key: {e}")),
        PrivateKeyDer::Pkcs8(ref p8) => {
            let bytes = p8.secret_pkcs8_der().to_vec();
            if let Ok(rsa) = RsaKey::<Sha256>::from_key_der(der.clone_key()) {
                return Ok(DkimKey::Rsa(rsa));
            }
            Ed25519Key::from_pkcs8_maybe_unchecked_der(&bytes)
                .map(DkimKey::Ed25519)
                .map_err(|_| "a PKCS#8 key that is neither RSA nor Ed25519".to_string())
        }
        _ => Err("an EC key: DKIM signs with RSA or Ed25519 only".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_from_domain_picks_the_most_specific_aligned_key() {
        let dir = tempfile::tempdir().unwrap();
        let pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .unwrap()
            .serialize_pem();
        let file = dir.path().join("k.pem");
        std::fs::write(&file, pem).unwrap();
        let cfg: DkimConfig = toml::from_str(&format!(
            "[[key]]\ndomain = \"example.org\"\nselector = \"a\"\nkey_file = {file:?}\n\
             [[key]]\ndomain = \"Sub.Example.org\"\nselector = \"b\"\nkey_file = {file:?}\n"
        ))
        .unwrap();
        let s = Signer::from_config(&cfg).unwrap();
        assert_eq!(s.key_for("example.org").unwrap().domain, "example.org");
        assert_eq!(
            s.key_for("x.sub.example.org").unwrap().domain,
            "sub.example.org"
        );
        assert!(s.key_for("badexample.org").is_none());
        assert!(s.key_for("example.com").is_none());
        let msg = b"From: A <a@Sub.EXAMPLE.org>\r\nSubject: x\r\n\r\nbody\r\n";
        let h = String::from_utf8(s.sign(msg).unwrap().unwrap()).unwrap();
        assert!(h.starts_with("DKIM-Signature: v=1; a=ed25519-sha256; s=b; d=sub.example.org;"));
        assert!(h.ends_with("\r\n"));
        assert!(
            s.sign(b"From: a@example.com\r\n\r\nx\r\n")
                .unwrap()
                .is_none()
        );
        assert!(s.sign(b"Subject: no from\r\n\r\nx\r\n").unwrap().is_none());
    }

    #[test]
    fn a_key_file_that_is_not_a_key_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k.pem");
        std::fs::write(&file, "not a key").unwrap();
        let cfg: DkimConfig = toml::from_str(&format!(
            "[[key]]\ndomain = \"example.org\"\nselector = \"a\"\nkey_file = {file:?}\n"
        ))
        .unwrap();
        let e = Signer::from_config(&cfg).unwrap_err().to_string();
        assert!(e.starts_with("dkim.key[0].key_file: "), "{e}");
        assert!(e.contains("no private key in PEM form"), "{e}");
    }
}
