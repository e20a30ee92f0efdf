//! What can go wrong while relaying, and the one mapping of it to the client's reply (SPEC §3):
//! a next hop that cannot be reached is `451 4.4.1`, a lost connection or a timeout `451 4.4.2`.
//! Its own file so that the client (which raises these errors) and the relay (which turns them
//! into replies) do not import each other.

use std::io;

use crate::config::ConfigError;
use crate::replies::{self, Reply};

/// Everything that can go wrong while relaying. [`reply_for`] turns each into the client's reply.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("TLS configuration for the next hop: {0}")]
    TlsConfig(String),
    #[error("cannot connect to next hop {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("timed out connecting to next hop {addr}")]
    ConnectTimeout { addr: String },
    #[error("next hop {addr} did not accept the session: {reason}")]
    Setup { addr: String, reason: String },
    #[error("next hop {addr} does not offer STARTTLS and relay.tls = required")]
    TlsRequired { addr: String },
    #[error("TLS with next hop {addr} failed: {reason}")]
    Tls { addr: String, reason: String },
    #[error("next hop timed out")]
    Timeout,
    #[error("connection to next hop lost: {0}")]
    Io(io::Error),
    #[error("next hop is closing the connection: {0}")]
    Closing(Reply),
    #[error("next hop protocol error: {0}")]
    Protocol(String),
    #[error("next hop refused the replayed envelope: {0}")]
    ReplayRefused(Reply),
    #[error("commands out of sequence: {0}")]
    Sequence(&'static str),
    #[error("maildir: {0}")]
    Maildir(io::Error),
    #[error("the client disconnected before the next hop had the message")]
    ClientGone,
}

/// The one mapping from relay errors to SMTP replies.
pub fn reply_for(e: &RelayError) -> Reply {
    match e {
        RelayError::Connect { source, .. } => {
            replies::next_hop_unavailable(&source.kind().to_string())
        }
        RelayError::ConnectTimeout { .. } => replies::next_hop_unavailable("connection timed out"),
        RelayError::Setup { .. } => replies::next_hop_unavailable("session refused"),
        RelayError::TlsRequired { .. } => replies::next_hop_unavailable("STARTTLS not offered"),
        RelayError::Tls { .. } => replies::next_hop_unavailable("TLS failed"),
        RelayError::Timeout => replies::next_hop_failed("timeout"),
        RelayError::Io(_) => replies::next_hop_failed("connection lost"),
        RelayError::Closing(_) => replies::next_hop_failed("connection closed"),
        RelayError::Protocol(_) => replies::next_hop_failed("protocol error"),
        RelayError::ReplayRefused(_) => replies::next_hop_failed("envelope refused on reconnect"),
        RelayError::Sequence(what) => replies::bad_sequence_in(what),
        RelayError::Config(_) | RelayError::TlsConfig(_) => replies::local_error("configuration"),
        RelayError::Maildir(_) => replies::local_error("cannot store message"),
        // Nobody reads this reply; the audit line does.
        RelayError::ClientGone => replies::local_error("client disconnected before delivery"),
    }
}
