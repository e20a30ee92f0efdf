//! Operations: Prometheus metrics, the ops HTTP endpoint (`/metrics`, `/healthz`, `/readyz`),
//! systemd notification, log setup with secret redaction, the per-message audit line, and
//! `find` over the audit trail and the state store.
//!
//! Nothing here depends on the SMTP, MIME or Cryptshare modules: they call into it.

pub mod activation;
pub mod audit;
pub mod find;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod probe;
pub mod queue;

pub use audit::{AuditFile, AuditLog, AuditRecord, Decision, QueueOutcome};
pub use http::{Component, Readiness};
pub use logging::{LogFormat, Redacted, Secret};
pub use metrics::{MessageResult, Metrics, TlsSide, TxOutcome};
pub use notify::Notifier;

use std::fmt::Display;

/// The SIGHUP sequence around a configuration load: tell systemd `RELOADING=1`, run `load`,
/// count the result in `csgw_config_reloads_total`, log it, and report `READY=1` again (with the
/// outcome as `STATUS=`). Returns the new value, or None when it was refused — the caller then
/// keeps the old one.
pub fn reload<T, E: Display>(
    notifier: &Notifier,
    metrics: &Metrics,
    load: impl FnOnce() -> Result<T, E>,
) -> Option<T> {
    if let Err(e) = notifier.reloading() {
        tracing::warn!("systemd reload notification failed: {e}");
    }
    let result = load();
    metrics.config_reload(result.is_ok());
    let status = match &result {
        Ok(_) => {
            tracing::info!("configuration reloaded");
            "configuration reloaded".to_string()
        }
        Err(e) => {
            tracing::error!("configuration reload refused, keeping the old configuration: {e}");
            format!("configuration reload refused: {e}")
        }
    };
    if let Err(e) = notifier.ready(&status) {
        tracing::warn!("systemd ready notification failed: {e}");
    }
    result.ok()
}
