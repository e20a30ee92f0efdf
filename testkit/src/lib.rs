//! Test fixtures of cryptshare-gateway, kept out of the library (nothing in `src/` is test-only):
//! a scriptable SMTP next hop ([`sink::Sink`]) and a pass-through handler
//! ([`passthrough::PassThrough`]) that runs the inbound session straight into the relay, and
//! envelope builders ([`envelope::mail`], [`envelope::rcpt`]).
//! A dev-dependency of the gateway's tests; never published.

pub mod envelope;
pub mod passthrough;
pub mod sink;

pub use passthrough::{PassThrough, PassThroughHandler};
pub use sink::{Script, Sink, Stage};
