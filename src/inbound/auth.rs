//! AUTH (RFC 4954, SASL PLAIN and LOGIN): when it is offered and accepted (TLS, once per
//! session, outside a transaction), the SASL exchange, and throttling of failed attempts.
//! Whether the credentials are right is the users file's answer ([`super::UserDb`]).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use super::Handler;
use super::session::{Flow, Session, State, guarded};
use crate::replies;

/// Where an AUTH exchange waits for the client's next line.
pub(super) enum SaslStep {
    Plain,
    LoginUser,
    LoginPass(String),
}

impl<H: Handler> Session<H> {
    pub(super) async fn auth(&mut self, mechanism: u64, initial: String) -> Flow {
        let Some(a) = &self.settings.auth else {
            return self.error(replies::auth_not_available());
        };
        if !self.info.tls && !a.allow_plaintext {
            return self.error(replies::auth_encryption_required());
        }
        if self.ext.is_none() {
            return self.error(replies::bad_sequence());
        }
        if self.info.auth_user.is_some() {
            return self.error(replies::auth_already());
        }
        if self.tx.is_some() {
            return self.error(replies::auth_in_transaction());
        }
        if self.lockout_applies() && a.lockout.locked(self.info.peer.ip()) {
            // No password is checked while locked, the right one included: guessing goes on
            // costing the attacker time, and us no hashing.
            tracing::warn!(peer = %self.info.peer, "AUTH refused: address locked out after too many failures");
            return self.error(replies::auth_locked_out());
        }
        match mechanism {
            smtp_proto::AUTH_PLAIN if initial.is_empty() => {
                self.state = State::Sasl(SaslStep::Plain);
                self.reply(replies::auth_challenge(""));
                Flow::Continue
            }
            smtp_proto::AUTH_PLAIN => self.auth_plain(&initial).await,
            smtp_proto::AUTH_LOGIN if initial.is_empty() => {
                self.state = State::Sasl(SaslStep::LoginUser);
                self.reply(replies::auth_challenge(&encode_b64(b"Username:")));
                Flow::Continue
            }
            smtp_proto::AUTH_LOGIN => self.login_user(&initial),
            _ => self.error(replies::auth_mechanism_unsupported()),
        }
    }

    pub(super) async fn sasl(&mut self, step: SaslStep, line: &[u8]) -> Flow {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\r', '\n']);
        if text == "*" {
            return self.error(replies::auth_cancelled());
        }
        match step {
            SaslStep::Plain => self.auth_plain(text).await,
            SaslStep::LoginUser => self.login_user(text),
            SaslStep::LoginPass(user) => match decode_b64(text) {
                Some(pass) => self.verify(user, pass).await,
                None => self.error(replies::auth_bad_base64()),
            },
        }
    }

    fn login_user(&mut self, b64: &str) -> Flow {
        match decode_b64(b64).and_then(|u| String::from_utf8(u).ok()) {
            Some(user) => {
                self.state = State::Sasl(SaslStep::LoginPass(user));
                self.reply(replies::auth_challenge(&encode_b64(b"Password:")));
                Flow::Continue
            }
            None => self.error(replies::auth_bad_base64()),
        }
    }

    async fn auth_plain(&mut self, b64: &str) -> Flow {
        if decode_b64(b64).is_none() {
            return self.error(replies::auth_bad_base64());
        }
        match decode_plain(b64) {
            Some((user, pass)) => self.verify(user, pass).await,
            None => self.auth_failure(None).await,
        }
    }

    async fn verify(&mut self, user: String, pass: Vec<u8>) -> Flow {
        let Some(a) = self.settings.auth.clone() else {
            return self.error(replies::auth_not_available());
        };
        let Some(ok) = guarded(&self.shutdown.abort, a.users.verify(&user, &pass)).await else {
            return self.shutting_down();
        };
        if ok {
            tracing::info!(peer = %self.info.peer, user = %crate::mime::strip_invisible(&user).escape_debug(), "authenticated");
            self.info.auth_user = Some(user);
            self.info.may_relay = true;
            // The outsider's short session bound was for an unknown client.
            self.deadline = self.started + self.settings.session_timeout;
            self.reply(replies::auth_ok());
            return Flow::Continue;
        }
        self.auth_failure(Some(&user)).await
    }

    async fn auth_failure(&mut self, user: Option<&str>) -> Flow {
        let Some(a) = self.settings.auth.clone() else {
            return self.error(replies::auth_not_available());
        };
        self.auth_failures += 1;
        if self.lockout_applies() {
            a.lockout.failed(self.info.peer.ip());
        }
        let user = user.map(|u| crate::mime::strip_invisible(u).escape_debug().to_string());
        tracing::warn!(peer = %self.info.peer, user = user.as_deref().unwrap_or(""), failures = self.auth_failures, "authentication failed");
        // Throttle guessing: each failure waits longer before its reply.
        let delay = a.failure_delay * self.auth_failures;
        if guarded(&self.shutdown.abort, tokio::time::sleep(delay))
            .await
            .is_none()
        {
            return self.shutting_down();
        }
        if self.auth_failures >= a.max_failures {
            self.reply(replies::auth_failed());
            let r = replies::too_many_auth_failures(&self.settings.hostname);
            self.reply(r);
            return Flow::Close;
        }
        self.error(replies::auth_failed())
    }
}

impl<H: Handler> Session<H> {
    /// The lock-out counts clients outside `client_networks` only (as Postfix exempts
    /// `mynetworks` from anvil's limits): an internal MTA with a broken password must not lock
    /// out every sender behind it.
    fn lockout_applies(&self) -> bool {
        !self.settings.may_relay(&self.info.peer)
    }
}

/// SASL PLAIN message (RFC 4616): `authzid NUL authcid NUL passwd`. An authzid different from the
/// authcid (acting as someone else) is refused.
pub fn decode_plain(b64: &str) -> Option<(String, Vec<u8>)> {
    let raw = B64.decode(b64.trim()).ok()?;
    let mut parts = raw.splitn(3, |&b| b == 0);
    let authz = parts.next()?;
    let user = parts.next()?;
    let pass = parts.next()?;
    let user = std::str::from_utf8(user).ok()?;
    if user.is_empty() || (!authz.is_empty() && authz != user.as_bytes()) {
        return None;
    }
    Some((user.to_string(), pass.to_vec()))
}

/// One base64 line of an AUTH LOGIN exchange.
pub fn decode_b64(b64: &str) -> Option<Vec<u8>> {
    B64.decode(b64.trim()).ok()
}

pub fn encode_b64(data: &[u8]) -> String {
    B64.encode(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_decoding() {
        assert_eq!(
            decode_plain(&encode_b64(b"\0alice\0pw")),
            Some(("alice".into(), b"pw".to_vec()))
        );
        assert_eq!(
            decode_plain(&encode_b64(b"alice\0alice\0pw")),
            Some(("alice".into(), b"pw".to_vec()))
        );
        assert_eq!(decode_plain(&encode_b64(b"bob\0alice\0pw")), None);
        assert_eq!(decode_plain(&encode_b64(b"\0alice")), None);
        assert_eq!(decode_plain("%%%"), None);
    }
}
