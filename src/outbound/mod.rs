//! Outbound: everything that talks to the next hop.
//!
//! - [`Relay`] (`relay.rs`): the pool of next-hop connections and the per-client
//!   [`RelayTransaction`] that opens the next hop at MAIL FROM (cut-through), or the maildir
//!   target (`maildir.rs`) for `relay.next_hop = "maildir:DIR"`.
//! - [`SmtpClient`] (`client.rs`): one connection to the next hop, byte-transparent, with
//!   PIPELINING, CHUNKING, DSN, STARTTLS and XFORWARD (`xforward.rs`, [`ClientOrigin`]); its TLS
//!   settings in `tls.rs` ([`tls_connector`]); its wire helpers (EHLO parsing, xtext, checks)
//!   in `wire.rs`.
//! - [`dkim::Signer`] (`dkim.rs`): the `DKIM-Signature:` of a relayed message (`[dkim]`).
//! - [`RelayError`] and [`reply_for`] (`error.rs`): what can fail and the one mapping to the
//!   client's reply, shared by client and relay.
//!
//! Outbound knows nothing of the inbound session: it takes the envelope types of
//! [`crate::envelope`] and answers with [`crate::replies::Reply`].

mod client;
pub mod dkim;
mod error;
mod maildir;
mod relay;
mod tls;
mod wire;
mod xforward;

pub use client::{
    Capabilities, ClientSettings, DataFailure, EnvelopeReplies, PhaseTimeouts, SmtpClient,
};
pub use error::{RelayError, reply_for};
pub use relay::{Relay, RelayTransaction};
pub use tls::tls_connector;
pub use xforward::ClientOrigin;
