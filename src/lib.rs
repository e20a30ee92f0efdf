//! cryptshare-gateway: an SMTP relay that moves large attachments into Cryptshare transfers.
//!
//! Modules, one per concern: [`config`], [`smtp`] (session, server, client, replies), [`mime`]
//! (analyse, rewrite, notice), [`policy`], [`cryptshare`] (client, types), [`pipeline`] (the flow),
//! [`store`] (spool, state), [`sim`] (the Cryptshare emulator), [`ops`] (metrics, audit, systemd).

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
