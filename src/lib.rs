//! cryptshare-gateway: an SMTP relay that moves large attachments into Cryptshare transfers.
//!
//! The flow of a message: [`inbound`] (SMTP server and session) → [`pipeline`] (policy, analysis,
//! the Cryptshare transfer, the outcome) → [`outbound`] (relay to the next hop). Below them:
//! [`envelope`] and [`replies`] (the SMTP vocabulary both sides share), [`policy`], [`mime`]
//! (analyse, rewrite, notice), [`cryptshare`] (client, types), [`store`] (spool, state),
//! [`config`], [`ops`] (metrics, audit, systemd) and [`sim`] (the Cryptshare emulator).
//! Nothing imports a module above it; test fixtures live in `testkit/`, not here.

pub mod config;
pub mod cryptshare;
pub mod envelope;
pub mod inbound;
pub mod mime;
pub mod ops;
pub mod outbound;
pub mod pipeline;
pub mod policy;
pub mod replies;
pub mod sim;
pub mod store;

/// Install the process-wide rustls crypto provider (aws-lc-rs). Call once at start-up, before
/// any TLS configuration is built; calling it again is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
