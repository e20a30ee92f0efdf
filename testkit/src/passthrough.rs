//! A [`HandlerFactory`] that relays every message unchanged.

use cryptshare_gateway::envelope::{Extensions, MailFrom, RcptTo};
use cryptshare_gateway::inbound::{ConnectionInfo, Handler, HandlerFactory, Transaction};
use cryptshare_gateway::outbound::{Relay, RelayTransaction};
use cryptshare_gateway::replies::Reply;

/// Relays every message unchanged through the library's [`Relay`]: the gateway without its
/// pipeline, to test the inbound session and the relay together.
#[derive(Clone)]
pub struct PassThrough {
    relay: Relay,
}

impl PassThrough {
    pub fn new(relay: Relay) -> PassThrough {
        PassThrough { relay }
    }
}

impl HandlerFactory for PassThrough {
    type Handler = PassThroughHandler;

    fn handler(&self) -> PassThroughHandler {
        PassThroughHandler {
            relay: self.relay.clone(),
            tx: self.relay.begin(),
        }
    }
}

/// One connection's [`Handler`] of [`PassThrough`].
pub struct PassThroughHandler {
    relay: Relay,
    tx: RelayTransaction,
}

impl Handler for PassThroughHandler {
    async fn extensions(&mut self) -> Extensions {
        self.relay.extensions().await
    }

    async fn mail_from(&mut self, _info: &ConnectionInfo, from: &MailFrom) -> Reply {
        self.tx.mail_from(from).await
    }

    async fn rcpt_to(&mut self, _info: &ConnectionInfo, rcpt: &RcptTo) -> Reply {
        self.tx.rcpt_to(rcpt).await
    }

    async fn data(&mut self, _info: &ConnectionInfo, tx: Transaction) -> Reply {
        self.tx
            .data(&[tx.received.as_slice(), tx.message.as_bytes()])
            .await
    }

    async fn reset(&mut self) {
        self.tx.reset().await
    }
}
