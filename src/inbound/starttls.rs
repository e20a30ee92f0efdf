//! STARTTLS (RFC 3207): the verb, the handshake, and the restart of the session over the TLS
//! stream. The session value is kept; what was learnt before TLS (EHLO argument, AUTH identity)
//! is forgotten, and whatever the client sent after STARTTLS in the same read was dropped by
//! `Session::run` (plaintext must never run as if it had come through TLS).

use tokio::io::{AsyncRead, AsyncWrite};

use super::Handler;
use super::session::{Flow, Session, State};
use crate::ops::TlsSide;
use crate::replies;

impl<H: Handler> Session<H> {
    pub(super) fn starttls(&mut self, line: &[u8]) -> Flow {
        // RFC 3207 §4: "STARTTLS" CRLF, no parameters (smtp-proto ignores them).
        if !line.trim_ascii().eq_ignore_ascii_case(b"STARTTLS") {
            return self.error(replies::no_argument("STARTTLS"));
        }
        if self.info.tls {
            return self.error(replies::already_tls());
        }
        if self.settings.tls.is_none() {
            return self.error(replies::not_implemented());
        }
        if self.tx.is_some() {
            return self.error(replies::bad_sequence());
        }
        self.reply(replies::tls_ready());
        Flow::StartTls
    }

    /// After `220 Ready to start TLS`: handshake on `io`, then go on with the same session over
    /// the TLS stream until it ends. A TLS session never returns `End::StartTls`: STARTTLS is
    /// refused once encrypted.
    pub(super) async fn start_tls<S>(mut self, io: S, buf: &mut [u8])
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let Some(acceptor) = self.settings.tls.clone() else {
            return self.close().await;
        };
        let timeout = self.settings.idle_timeout;
        let handshake = tokio::time::timeout(timeout, acceptor.accept(io)).await;
        let ok = matches!(handshake, Ok(Ok(_)));
        self.settings.metrics.tls_handshake(TlsSide::Inbound, ok);
        match handshake {
            Ok(Ok(mut tls)) => {
                self.restart_encrypted();
                let _ = self.run(&mut tls, buf).await;
                self.finish(tls).await;
            }
            Ok(Err(e)) => {
                tracing::debug!(peer = %self.info.peer, error = %e, "TLS handshake failed");
                self.close().await;
            }
            Err(_) => {
                tracing::debug!(peer = %self.info.peer, "TLS handshake timed out");
                self.close().await;
            }
        }
    }

    /// RFC 3207 §4.2: after the handshake the session starts over (a new EHLO is needed) and
    /// everything learnt before TLS is forgotten. Error counts, the deadline and the handler's
    /// state carry over. No transaction is open: STARTTLS is refused inside one.
    fn restart_encrypted(&mut self) {
        self.info.tls = true;
        if self.info.auth_user.take().is_some() {
            self.info.may_relay = self.settings.may_relay(&self.info.peer);
        }
        self.info.helo.clear();
        self.state = State::Command;
        self.line.clear();
        self.out.clear();
        self.greeted = false;
        self.ext = None;
        self.tx = None;
    }
}
