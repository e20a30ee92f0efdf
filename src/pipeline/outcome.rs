//! The `outcome` step: the one place where conversion failures become SMTP replies, and where
//! every message ends — its audit line and its message metrics.
//!
//! The replies come from the catalogue ([`replies`]), so the texts stay readable next to the
//! other codes of SPEC §3; this file decides which one a failure gets. A [`Report`] follows the
//! message through the steps and collects what the audit line says; [`Recorder`] writes it when
//! the client gets its final reply — relayed, tempfailed or rejected.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::plan::Plan;
use super::transfer::{ConvertError, Converted};
use crate::config::OnError;
use crate::ops::audit::{AuditLog, AuditRecord, Decision};
use crate::ops::{MessageResult, Metrics};
use crate::replies::{self, Reply};
use crate::store::spool::Spooled;

/// How a failed conversion ends, per the policy's `on_error`.
#[derive(Debug)]
pub(super) enum Failure {
    DeliverOriginal,
    Reply(Reply),
}

/// The one place where conversion failures become SMTP replies (SPEC §3):
/// - a failure after finalize, when the transfer exists or may exist, is always `451`: the
///   retry adopts that transfer (exactly once); delivering the original would send the files
///   twice, a `554` would bounce a message whose files went out;
/// - a permanent refusal by the Cryptshare policy (sender, recipients, size) is never
///   retried for days: `554 5.7.1` unless the rule says `deliver-original`;
/// - a local fault (the state store, the disk) is not Cryptshare's and says so: `451 4.3.0`
///   whatever `on_error` says — the state store is what keeps a retry from making a second
///   transfer, so neither the original nor a bounce may stand in for it;
/// - everything else (unreachable, timeout, 5xx, 429, token refused) is `451` with
///   `tempfail`, the original with `deliver-original`, `554` with `reject`.
pub(super) fn on_failure(e: &ConvertError, on_error: OnError) -> Failure {
    if e.after_finalize() {
        return Failure::Reply(replies::transfer_not_confirmed(&e.short()));
    }
    if is_local(e) {
        return Failure::Reply(replies::local_error(&e.short()));
    }
    if on_error == OnError::DeliverOriginal {
        return Failure::DeliverOriginal;
    }
    Failure::Reply(match (e.is_refusal(), on_error) {
        (true, _) => replies::attachments_refused(&e.short()),
        (false, OnError::Reject) => replies::attachments_not_moved(&e.short()),
        (false, _) => replies::cryptshare_unavailable(&e.short()),
    })
}

/// The gateway's own trouble, not the Cryptshare Server's.
fn is_local(e: &ConvertError) -> bool {
    matches!(e, ConvertError::State(_) | ConvertError::Local(_))
}

/// What the audit line of one message says, collected step by step, and the clock of its total.
pub(super) struct Report {
    record: AuditRecord,
    started: Instant,
}

impl Report {
    /// At the end of DATA: the envelope and the message as received.
    pub fn new(queue_id: &str, sender: &str, rcpts: &[String], message: &Spooled) -> Report {
        let mut record = AuditRecord::new(queue_id, Decision::Pass);
        record.sender = sender.to_string();
        record.recipients = rcpts.to_vec();
        record.size = message.len() as u64;
        record.message_id = header_message_id(message.as_bytes());
        Report {
            record,
            started: Instant::now(),
        }
    }

    /// Spool mode: which attempt of the queued message this is.
    pub fn attempt(&mut self, number: u32) {
        self.record.attempt = Some(number);
    }

    /// The plan's rule and reason.
    pub fn planned(&mut self, plan: &Plan) {
        self.record.policy = plan.policy_name().map(str::to_string);
        self.record.reason = plan.selection.reason.clone();
    }

    /// The transfer step succeeded.
    pub fn converted(&mut self, c: &Converted) {
        self.record.files = c.audit_files();
        self.record.tracking_id = Some(c.tracking_id.clone());
        if c.reused {
            self.record.reason = format!(
                "{}; reused the transfer of an earlier attempt",
                self.record.reason
            );
        }
        self.record.durations.cryptshare_ms = c.cryptshare_ms;
    }

    /// The transfer step failed after `spent` in it (the Cryptshare calls that did run, their
    /// retries and the clean-up count: the time the message waited for Cryptshare).
    pub fn conversion_failed(&mut self, e: &ConvertError, spent: Duration) {
        self.record.reason = format!("conversion failed: {e}");
        self.record.durations.cryptshare_ms = spent.as_millis() as u64;
    }

    /// The server's policy refused `refused` (not all recipients): the transfer is for the
    /// others, and `refused` get the original (`deliver-original`).
    pub fn partly_refused(&mut self, refused: &[String], reason: &str) {
        self.record.reason = format!(
            "{}; {reason}; the original to {} (deliver-original)",
            self.record.reason,
            refused.join(", ")
        );
    }

    /// Per-recipient links: `sent` copies went out now, `earlier` were delivered by an earlier
    /// attempt, of `total`.
    pub fn copies(&mut self, sent: usize, earlier: usize, total: usize) {
        self.record.reason = format!(
            "{}; per-recipient copies: {sent} of {total} sent now, {earlier} delivered earlier",
            self.record.reason
        );
    }

    /// The rewrite after a finished transfer failed.
    pub fn rewrite_failed(&mut self, e: &crate::mime::RewriteError) {
        self.record.reason = format!("rewrite failed: {e}");
    }
}

/// Where messages end: the audit log and the message metrics. Owned by the gateway.
pub(super) struct Recorder {
    pub metrics: Arc<Metrics>,
    pub log: AuditLog,
}

impl Recorder {
    /// The message went to the next hop (or tried to): `reply` is the client's reply,
    /// `next_hop` the next hop's own answer, `relay` the time the hand-over took.
    pub fn relayed(
        &self,
        mut report: Report,
        decision: Decision,
        reply: Reply,
        next_hop: Option<&Reply>,
        relay: Duration,
    ) -> Reply {
        self.metrics.next_hop(Some(reply.code), relay);
        report.record.durations.relay_ms = relay.as_millis() as u64;
        report.record.relay = next_hop.map(Reply::to_string);
        self.finish(report, decision, reply)
    }

    /// A conversion failure with its reply (see [`on_failure`]).
    pub fn refused(&self, report: Report, reply: Reply) -> Reply {
        let decision = if reply.is_transient() {
            Decision::Tempfail
        } else {
            Decision::Reject
        };
        self.finish(report, decision, reply)
    }

    /// The transfer exists and is recorded, but the message could not be rewritten: a retry
    /// reuses the transfer.
    pub fn rewrite_failed(&self, report: Report) -> Reply {
        self.finish(
            report,
            Decision::Tempfail,
            replies::local_error("rewrite failed"),
        )
    }

    /// The end of every message: stamped with the time of the final reply, the audit line and
    /// the message metrics.
    fn finish(&self, report: Report, decision: Decision, reply: Reply) -> Reply {
        let mut rec = report.record.stamped();
        rec.decision = decision;
        rec.reply = reply.to_string();
        rec.durations.total_ms = report.started.elapsed().as_millis() as u64;
        self.count(&rec);
        if let Err(e) = self.log.write(&rec) {
            tracing::error!(error = %e, queue_id = %rec.queue_id, "cannot write the audit line");
        }
        reply
    }

    fn count(&self, rec: &AuditRecord) {
        let policy = rec.policy.as_deref();
        let result = match rec.decision {
            Decision::Convert => MessageResult::Converted,
            Decision::Pass => MessageResult::Passed,
            Decision::DeliverOriginal | Decision::Tempfail | Decision::Reject => {
                MessageResult::Failed
            }
        };
        // A message refused by the next hop was not converted or passed in the end.
        let relayed = rec.reply.starts_with('2');
        self.metrics.message(
            policy,
            if relayed {
                result
            } else {
                MessageResult::Failed
            },
        );
        // Only a transfer made now uploaded anything (a reused one made no Cryptshare call).
        if rec.decision == Decision::Convert && rec.durations.cryptshare_ms > 0 {
            self.metrics.uploaded(
                policy,
                rec.files.len() as u64,
                rec.files.iter().map(|f| f.size).sum(),
            );
        }
    }
}

/// The `Message-ID:` of the message, for the audit line.
fn header_message_id(raw: &[u8]) -> Option<String> {
    let msg = mail_parser::MessageParser::default().parse_headers(raw)?;
    msg.message_id()
        .map(|s| s.chars().filter(|c| !c.is_control()).take(250).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(f: Failure) -> Option<String> {
        match f {
            Failure::DeliverOriginal => None,
            Failure::Reply(r) => Some(r.to_string()),
        }
    }

    #[test]
    fn failure_outcomes_follow_on_error_except_after_finalize_and_local_faults() {
        let local = || ConvertError::Local("disk full".into());
        let temp = || {
            ConvertError::Cryptshare(crate::cryptshare::Error::local(
                crate::cryptshare::ErrorKind::Temporary,
                "upload",
                "timeout",
            ))
        };
        let refused = || ConvertError::PolicyRefused("sender not allowed".into());
        let after = || ConvertError::AfterFinalize("timeout".into());
        for on_error in [OnError::Tempfail, OnError::Reject, OnError::DeliverOriginal] {
            assert_eq!(
                reply(on_failure(&local(), on_error)).as_deref(),
                Some("451 4.3.0 Local error, try again later (disk full)")
            );
        }
        let brief = temp().short();
        assert_eq!(
            reply(on_failure(&temp(), OnError::Tempfail)),
            Some(format!(
                "451 4.3.0 Cryptshare unavailable, try again later: {brief}"
            ))
        );
        assert_eq!(
            reply(on_failure(&temp(), OnError::Reject)),
            Some(format!(
                "554 5.3.0 Attachments could not be moved to Cryptshare: {brief}"
            ))
        );
        assert!(reply(on_failure(&temp(), OnError::DeliverOriginal)).is_none());
        for on_error in [OnError::Tempfail, OnError::Reject] {
            assert_eq!(
                reply(on_failure(&refused(), on_error)).as_deref(),
                Some(
                    "554 5.7.1 Attachments refused by the Cryptshare policy: refused by the Cryptshare transfer policy: sender not allowed"
                )
            );
        }
        assert!(reply(on_failure(&refused(), OnError::DeliverOriginal)).is_none());
        for on_error in [OnError::Tempfail, OnError::Reject, OnError::DeliverOriginal] {
            assert_eq!(
                reply(on_failure(&after(), on_error)).as_deref(),
                Some(
                    "451 4.3.0 Cryptshare transfer not confirmed, try again later: transfer sent, not yet confirmed: timeout"
                )
            );
        }
    }
}
