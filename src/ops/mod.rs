//! Operations: Prometheus metrics, the ops HTTP endpoint (`/metrics`, `/healthz`, `/readyz`),
//! systemd notification, log setup with secret redaction, and the per-message audit line.
//!
//! Nothing here depends on the SMTP, MIME or Cryptshare modules: they call into it.

pub mod audit;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod notify;

pub use audit::{AuditFile, AuditLog, AuditRecord, Decision};
pub use http::{Component, Readiness};
pub use logging::{LogFormat, Redacted, Secret};
pub use metrics::{MessageResult, Metrics, TlsSide, TxOutcome};
pub use notify::Notifier;
