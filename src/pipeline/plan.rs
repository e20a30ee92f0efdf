//! The `plan` step: from the sender's policy and the message's analysis to what the gateway does
//! with the message, as a value.
//!
//! Pure (no I/O, no clock, no Cryptshare): `serve` acts on a [`Plan`] and `explain` prints one,
//! both built by the functions here, so the reasons `explain` shows are the ones the audit line
//! records and cannot drift from what `serve` does.

use crate::config::PolicyConfig;
use crate::mime::Analysis;
use crate::policy::{self, Rules, Selection};

/// The reason recorded when no `[[policy]]` matches the envelope sender.
const NO_POLICY: &str = "no policy matches the sender";

/// What happens to the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Relayed unchanged.
    Pass,
    /// The selected attachments go to Cryptshare; the rewritten message is relayed.
    Convert,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pass => "pass",
            Action::Convert => "convert",
        }
    }
}

/// The decision for one message.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The matched `[[policy]]`; `None` when no rule matches the sender.
    pub policy: Option<PolicyConfig>,
    /// The parts to move (empty: pass), their total and the reason in words.
    pub selection: Selection,
}

impl Plan {
    /// No rule for the sender. `total` is the candidates' size when the message was analysed
    /// anyway (`explain`); `serve` does not analyse such a message and passes 0.
    pub fn unmatched(total: u64) -> Plan {
        Plan {
            policy: None,
            selection: Selection {
                convert: Vec::new(),
                total,
                reason: NO_POLICY.into(),
                whole_message: false,
            },
        }
    }

    /// The analysis did not finish (a panic in the MIME engine): the message must not be lost,
    /// so it is relayed unchanged.
    pub fn analysis_failed(policy: PolicyConfig) -> Plan {
        Plan {
            policy: Some(policy),
            selection: Selection {
                convert: Vec::new(),
                total: 0,
                reason: "analysis failed; relayed unchanged".into(),
                whole_message: false,
            },
        }
    }

    /// The matched rule applied to the analysed message sent to `rcpts`.
    pub fn for_policy(policy: &PolicyConfig, analysis: &Analysis, rcpts: &[String]) -> Plan {
        Plan {
            policy: Some(policy.clone()),
            selection: policy::select_for(policy, analysis, rcpts),
        }
    }

    pub fn action(&self) -> Action {
        if self.selection.converts() {
            Action::Convert
        } else {
            Action::Pass
        }
    }

    pub fn policy_name(&self) -> Option<&str> {
        self.policy.as_ref().map(|p| p.name.as_str())
    }
}

/// The whole plan for an analysed message: the first rule matching `from`, applied.
pub fn plan(rules: &Rules, from: &str, rcpts: &[String], analysis: &Analysis) -> Plan {
    match rules.match_sender(from) {
        Some(p) => Plan::for_policy(p, analysis, rcpts),
        None => Plan::unmatched(analysis.candidates().map(|p| p.transfer_size()).sum()),
    }
}
