//! The conversion pipeline: the gateway's [`Handler`](crate::inbound::Handler) joining the SMTP
//! core, the policy, the MIME engine, Cryptshare and the relay.
//!
//! Per transaction, MAIL FROM and RCPT TO go straight to the next hop (cut-through, so the
//! client sees the next hop's per-recipient verdicts). At the end of DATA the message takes
//! named steps, one file each:
//!
//! - `plan`: the sender's policy and the message's analysis → pass or convert, with the
//!   reason, as a value (`explain` prints the same value);
//! - `transfer`: the Cryptshare workflow, one function per step (token and transfer policy →
//!   session → settings → files → finalize → active);
//! - `recovery`: an earlier attempt's transfer to reuse or adopt, its session to delete, the
//!   clean-up of a failed attempt and of a crashed run;
//! - `message`: the rewrite and the relay, in order;
//! - `outcome`: the one place where conversion failures become SMTP replies (per the policy's
//!   `on_error`), and the audit line and message metrics of every message.
//!
//! The client's reply is the outcome: `250` only after the next hop's `250`.
//!
//! All or nothing: if any Cryptshare step fails, no rewritten message is relayed and the
//! server-side session is deleted. Exactly once: a finished transfer is recorded in the
//! [`StateStore`](crate::store::state::StateStore) under the message key (envelope + bytes). An
//! upstream retry of the same message — after our 4xx, or after a crash — reuses it and
//! produces the same rewritten message instead of a second transfer.

mod explain;
mod facts;
mod gateway;
mod message;
mod outcome;
mod plan;
mod recovery;
mod server_policy;
mod spool;
mod transfer;

use sha2::{Digest, Sha256};

use crate::cryptshare;

pub use explain::{Envelope, ExplainError, Source as EnvelopeSource, explain, explain_with};
pub use gateway::{Gateway, GatewayFactory, GatewayHandler};
pub use plan::{Action, Plan, plan};
pub use server_policy::{
    Finding, LiveCheck, check_live as check_server_policies, findings as server_policy_findings,
    test_sender,
};
pub use spool::Spool;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("cryptshare: {0}")]
    Cryptshare(#[from] cryptshare::Error),
    #[error("cryptshare.client_id: {0}")]
    ClientId(String),
    #[error("embedded Cryptshare emulator: {0}")]
    Embedded(String),
    #[error("state.dir: {0}")]
    State(#[from] crate::store::state::StateError),
    #[error("audit.file: {0}")]
    Audit(#[from] crate::ops::audit::AuditError),
    #[error("queue: {0}")]
    Queue(#[from] crate::store::queue::QueueError),
    #[error("relay: {0}")]
    Relay(#[from] crate::outbound::RelayError),
    #[error("{0}")]
    Dkim(#[from] crate::outbound::dkim::DkimError),
}

/// SHA-256 over the envelope and the message bytes (not our `Received:` line, which differs on
/// every attempt).
pub fn message_key(from: &str, rcpts: &[String], raw: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(from.to_ascii_lowercase().as_bytes());
    h.update([0]);
    let mut r: Vec<String> = rcpts.iter().map(|r| r.to_ascii_lowercase()).collect();
    r.sort();
    for a in &r {
        h.update(a.as_bytes());
        h.update([0]);
    }
    h.update([0]);
    h.update(raw);
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_key_ignores_recipient_order_and_case() {
        let a = message_key("A@x.org", &["b@y.org".into(), "c@z.org".into()], b"m");
        let b = message_key("a@x.org", &["C@z.org".into(), "b@y.org".into()], b"m");
        assert_eq!(a, b);
        assert_ne!(a, message_key("a@x.org", &["b@y.org".into()], b"m"));
        assert_ne!(
            a,
            message_key("a@x.org", &["b@y.org".into(), "c@z.org".into()], b"n")
        );
    }
}
