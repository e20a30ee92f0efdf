//! Inbound: the SMTP server the clients talk to.
//!
//! - `server.rs`: the listeners and the accept loop ([`Server`], reload through [`Reloader`]).
//! - `session.rs`: one connection's state machine, the I/O loop and the command dispatch
//!   ([`serve`]); the verbs are `impl Session` blocks in `greeting.rs` (EHLO/HELO), `mail.rs`
//!   (MAIL/RCPT), `data.rs` (DATA/BDAT and the content scanner), `dotscan.rs` (the end of DATA and
//!   the SMTP smuggling checks), `auth.rs` (AUTH) and
//!   `starttls.rs` (STARTTLS).
//! - `settings.rs`: [`SessionSettings`] from `[server]`; `tls.rs` the server certificate;
//!   `users.rs` the AUTH users file ([`UserDb`]); `limits.rs` the per-address limits of clients
//!   outside `client_networks` (connections, AUTH lock-out).
//!   `users.rs` the AUTH users file ([`UserDb`]); `peer.rs` the "client still connected?" probe
//!   ([`PeerProbe`]) the pipeline asks before the next hop gets the end of a message;
//!   `proxy.rs` the PROXY protocol header read before the greeting behind HAProxy.
//!
//! The protocol core knows nothing about policies, Cryptshare or the next hop. It drives a
//! [`Handler`] (one per connection via [`HandlerFactory`]) at the three points where the rest of
//! the gateway decides: MAIL FROM (open the transaction, e.g. open the next hop), RCPT TO
//! (per-recipient verdicts) and the end of DATA/BDAT (the message outcome). Whatever the handler
//! answers goes to the client. The pipeline implements the handler; the envelope types it sees
//! are in [`crate::envelope`], the replies in [`crate::replies`].

mod auth;
mod data;
mod dotscan;
mod greeting;
mod limits;
mod mail;
mod peer;
mod proxy;
mod server;
mod session;
mod settings;
mod starttls;
mod tls;
mod users;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};

pub use data::TEXT_LINE_MAX;
pub use limits::{AuthLockout, ConnectionCounts, LOCKOUT_MAX_CLIENTS, client_key};
pub use mail::new_queue_id;
pub use peer::PeerProbe;
pub use proxy::{
    ProxyError, ProxyHeader, Step as ProxyStep, frame as frame_proxy_header, step as proxy_step,
};
pub use server::{Reloader, Server, ServerError};
pub use session::{ConnectionMeta, ShutdownSignal, serve};
pub use settings::{AuthSettings, SessionSettings, SettingsError};
pub use tls::{TlsError, acceptor_from_der, load_acceptor};
pub use users::{AuthError, UserDb};

use crate::envelope::{Extensions, MailFrom, RcptTo};
use crate::replies::Reply;
use crate::store::spool::Spooled;

/// What the session knows about the connection when it asks the handler.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// EHLO/HELO argument.
    pub helo: String,
    /// The client greeted with EHLO (ESMTP), not HELO.
    pub esmtp: bool,
    pub tls: bool,
    /// AUTH identity, once authenticated.
    pub auth_user: Option<String>,
    /// Peer is in `client_networks` or authenticated, i.e. may relay.
    pub may_relay: bool,
    /// Whether the client is still connected (see [`PeerProbe`]).
    pub peer_probe: PeerProbe,
}

impl ConnectionInfo {
    pub fn peer_ip(&self) -> IpAddr {
        self.peer.ip()
    }
}

/// A complete transaction handed over at the end of DATA/BDAT.
#[derive(Debug)]
pub struct Transaction {
    pub queue_id: String,
    pub mail_from: MailFrom,
    /// The recipients the handler accepted, in order.
    pub rcpts: Vec<RcptTo>,
    /// The `Received:` header this gateway prepends (ends with CRLF).
    pub received: Vec<u8>,
    /// The message exactly as received (after dot-unstuffing), without our `Received:` line.
    pub message: Spooled,
    /// Whether the client is still there: asked before the next hop gets the end of the
    /// message, so that a client that gave up (and will retry) does not get a copy delivered.
    pub client: PeerProbe,
}

/// The gateway's side of one SMTP connection.
pub trait Handler: Send {
    /// Extensions to advertise in the EHLO reply (before the session adds its own, like STARTTLS).
    fn extensions(&mut self) -> impl Future<Output = Extensions> + Send;
    /// MAIL FROM was syntactically fine and allowed by the session's own checks.
    fn mail_from(
        &mut self,
        info: &ConnectionInfo,
        from: &MailFrom,
    ) -> impl Future<Output = Reply> + Send;
    /// RCPT TO passed relay control and limits; decide on this recipient.
    fn rcpt_to(
        &mut self,
        info: &ConnectionInfo,
        rcpt: &RcptTo,
    ) -> impl Future<Output = Reply> + Send;
    /// The message is complete; the reply is the transaction's outcome.
    fn data(
        &mut self,
        info: &ConnectionInfo,
        tx: Transaction,
    ) -> impl Future<Output = Reply> + Send;
    /// RSET, a new MAIL after a finished transaction, or the end of the connection.
    fn reset(&mut self) -> impl Future<Output = ()> + Send;
}

/// Creates one [`Handler`] per accepted connection.
pub trait HandlerFactory: Send + Sync + 'static {
    type Handler: Handler + 'static;
    fn handler(&self) -> Self::Handler;
}
