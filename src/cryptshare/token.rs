//! Verification tokens: one cached per sender for new work, and one pinned per transfer session
//! for the session's whole life.
//!
//! Why pinned: "transfer sessions may only be modified using the same verification token they
//! were created with" (openapi tag `transfer-session`). A token renewed for the sender — for a
//! second message of the same sender, or because the first one nears its `validUntil` — must
//! not be used on a session created with the old one, or every later call of that session
//! (including the clean-up DELETE) fails with 3002. So a session keeps the token it was created
//! with, and a token is renewed only when a *new* session starts and the cached one would not
//! last a whole workflow (`ClientOptions::token_reserve`, at most half the token's validity).
//! Renewing only then also keeps token requests rare ("in quick succession may cause rate
//! limiting").

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use reqwest::header::HeaderValue;

/// Outside sessions, a token this close to its `validUntil` is renewed before use (so it does
/// not expire in flight); at most a quarter of its validity.
const TOKEN_MARGIN: Duration = Duration::from_secs(30);
/// Assumed validity when the server gives no (parseable) `validUntil`.
pub(super) const TOKEN_DEFAULT_VALIDITY: Duration = Duration::from_secs(600);

#[derive(Clone)]
pub(super) struct Cached {
    pub(super) value: HeaderValue,
    pub(super) issued: SystemTime,
    pub(super) until: SystemTime,
}

impl Cached {
    fn remaining(&self, now: SystemTime) -> Duration {
        self.until.duration_since(now).unwrap_or_default()
    }
    fn validity(&self) -> Duration {
        self.until.duration_since(self.issued).unwrap_or_default()
    }
    /// Good for a single call outside a session.
    fn usable(&self, now: SystemTime) -> bool {
        self.remaining(now) > TOKEN_MARGIN.min(self.validity() / 4)
    }
    /// Good for a whole new workflow.
    fn lasts_a_session(&self, now: SystemTime, reserve: Duration) -> bool {
        let left = self.remaining(now);
        !left.is_zero() && left >= reserve.min(self.validity() / 2)
    }
}

/// What a token is needed for.
#[derive(Clone, Copy)]
pub(super) enum Need<'a> {
    /// A call outside any session (policy check, transfer status without a pin).
    Call,
    /// Creating a session, which then keeps the token.
    NewSession,
    /// A call on the session with this tracking id.
    Session(&'a str),
    /// After a refusal of a call begun at this time: only a token issued since then (by a
    /// concurrent re-verification) is worth trying; an older one may be just as stale.
    IssuedSince(SystemTime),
}

#[derive(Default)]
pub(super) struct Tokens {
    senders: Mutex<HashMap<String, Cached>>,
    /// Keyed by (lowercase sender, tracking id).
    sessions: Mutex<HashMap<(String, String), Cached>>,
    /// One verification at a time per sender: concurrent messages of one sender share it.
    verifying: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave the maps inconsistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Tokens {
    /// Forget the senders' tokens; pinned session tokens stay (their sessions need them).
    pub(super) fn clear_senders(&self) {
        lock(&self.senders).clear();
    }

    /// A token for `need`, without asking the server; `refused` was just rejected.
    pub(super) fn lookup(
        &self,
        sender: &str,
        need: Need<'_>,
        reserve: Duration,
        refused: Option<&HeaderValue>,
    ) -> Option<HeaderValue> {
        let key = sender.to_ascii_lowercase();
        let now = SystemTime::now();
        if let Need::Session(tid) = need
            && let Some(t) = lock(&self.sessions).get(&(key.clone(), tid.to_owned()))
            && Some(&t.value) != refused
        {
            // Whatever its age: no other token can modify this session.
            return Some(t.value.clone());
        }
        lock(&self.senders)
            .get(&key)
            .filter(|t| Some(&t.value) != refused)
            .filter(|t| match need {
                Need::NewSession => t.lasts_a_session(now, reserve),
                Need::Call | Need::Session(_) => t.usable(now),
                Need::IssuedSince(since) => t.issued >= since && t.usable(now),
            })
            .map(|t| t.value.clone())
    }

    pub(super) fn gate(&self, sender: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.verifying)
            .entry(sender.to_ascii_lowercase())
            .or_default()
            .clone()
    }

    pub(super) fn store_sender(&self, sender: &str, t: Cached) {
        let now = SystemTime::now();
        let mut map = lock(&self.senders);
        // Senders come and go; expired entries would otherwise pile up.
        map.retain(|_, t| t.until > now);
        map.insert(sender.to_ascii_lowercase(), t);
    }

    /// The sender's cached token, if it is `value` (to pin the token a session was made with).
    pub(super) fn sender_token(&self, sender: &str, value: &HeaderValue) -> Option<Cached> {
        lock(&self.senders)
            .get(&sender.to_ascii_lowercase())
            .filter(|t| t.value == *value)
            .cloned()
    }

    pub(super) fn pin(&self, sender: &str, tracking_id: &str, t: Cached) {
        let now = SystemTime::now();
        let mut map = lock(&self.sessions);
        map.retain(|_, t| t.until > now);
        map.insert((sender.to_ascii_lowercase(), tracking_id.to_owned()), t);
    }

    pub(super) fn pinned(&self, sender: &str, tracking_id: &str) -> Option<Cached> {
        lock(&self.sessions)
            .get(&(sender.to_ascii_lowercase(), tracking_id.to_owned()))
            .cloned()
    }

    pub(super) fn unpin(&self, sender: &str, tracking_id: &str) {
        lock(&self.sessions).remove(&(sender.to_ascii_lowercase(), tracking_id.to_owned()));
    }
}
