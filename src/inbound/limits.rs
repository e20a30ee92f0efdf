//! Limits per client address for clients outside `client_networks`: concurrent connections
//! ([`ConnectionCounts`], taken at accept time) and failed AUTH attempts across sessions
//! ([`AuthLockout`], like Postfix's anvil). Both key a client by [`client_key`]: its IPv4
//! address, or the /64 of an IPv6 address (one host usually owns a whole /64, so counting single
//! IPv6 addresses would limit nothing).
//!
//! Both tables live in memory and are bounded: a connection entry exists only while the
//! connection does, and the lock-out table keeps at most [`LOCKOUT_MAX_CLIENTS`] addresses
//! (expired entries are dropped first; when every entry is live, the address that failed longest
//! ago is forgotten).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The address a client is counted under.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

/// Why an outside connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections_per_ip` reached for this address.
    PerIp,
    /// The outside share of `max_connections` is in use.
    Outside,
}

#[derive(Default)]
struct Counts {
    per_ip: HashMap<IpAddr, usize>,
    outside: usize,
}

/// Open connections of clients outside `client_networks`, per address and in total.
#[derive(Clone, Default)]
pub struct ConnectionCounts {
    inner: Arc<Mutex<Counts>>,
}

/// One counted outside connection; dropping it gives the place back.
pub struct OutsideSlot {
    counts: ConnectionCounts,
    key: IpAddr,
}

impl ConnectionCounts {
    /// Count a new connection from `ip` unless one of the two limits is reached.
    pub fn try_take(
        &self,
        ip: IpAddr,
        per_ip: usize,
        outside: usize,
    ) -> Result<OutsideSlot, Refusal> {
        let key = client_key(ip);
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mine = c.per_ip.get(&key).copied().unwrap_or(0);
        if mine >= per_ip {
            return Err(Refusal::PerIp);
        }
        if c.outside >= outside {
            return Err(Refusal::Outside);
        }
        c.outside += 1;
        *c.per_ip.entry(key).or_insert(0) += 1;
        Ok(OutsideSlot {
            counts: self.clone(),
            key,
        })
    }

    /// Outside connections open now.
    pub fn outside(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).outside
    }
}

impl Drop for OutsideSlot {
    fn drop(&mut self) {
        let mut c = self.counts.inner.lock().unwrap_or_else(|e| e.into_inner());
        c.outside = c.outside.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.key);
            }
        }
    }
}

/// Most client addresses the lock-out table remembers.
pub const LOCKOUT_MAX_CLIENTS: usize = 100_000;

/// Failed AUTH attempts per client address across sessions: `failures` within `window` lock the
/// address out until the oldest of them is older than `window`. Shared by every session and kept
/// over a reload.
pub struct AuthLockout {
    failures: u32,
    window: Duration,
    table: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl std::fmt::Debug for AuthLockout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthLockout")
            .field("failures", &self.failures)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

/// The configuration's defaults (`server.auth.lockout_failures`, `lockout_window`).
impl Default for AuthLockout {
    fn default() -> Self {
        AuthLockout::new(10, Duration::from_secs(600))
    }
}

impl AuthLockout {
    pub fn new(failures: u32, window: Duration) -> AuthLockout {
        AuthLockout {
            failures: failures.max(1),
            window,
            table: Mutex::new(HashMap::new()),
        }
    }

    /// The same table with new limits (a reload): the counts so far stay.
    pub fn with_limits(&self, failures: u32, window: Duration) -> AuthLockout {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner()).clone();
        AuthLockout {
            failures: failures.max(1),
            window,
            table: Mutex::new(table),
        }
    }

    /// `(failures, window)`.
    pub fn limits(&self) -> (u32, Duration) {
        (self.failures, self.window)
    }

    /// Is `ip` locked out now?
    pub fn locked(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let Some(q) = t.get_mut(&client_key(ip)) else {
            return false;
        };
        self.expire(q, now);
        q.len() >= self.failures as usize
    }

    /// Count a failed attempt of `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let now = Instant::now();
        let key = client_key(ip);
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if !t.contains_key(&key) && t.len() >= LOCKOUT_MAX_CLIENTS {
            t.retain(|_, q| q.back().is_some_and(|&last| now - last < self.window));
            if t.len() >= LOCKOUT_MAX_CLIENTS {
                let oldest = t
                    .iter()
                    .min_by_key(|(_, q)| q.back().copied())
                    .map(|(k, _)| *k);
                if let Some(k) = oldest {
                    t.remove(&k);
                }
            }
        }
        let q = t.entry(key).or_default();
        self.expire(q, now);
        q.push_back(now);
        // More than the limit is never needed to decide.
        while q.len() > self.failures as usize {
            q.pop_front();
        }
    }

    fn expire(&self, q: &mut VecDeque<Instant>, now: Instant) {
        while q.front().is_some_and(|&t| now - t >= self.window) {
            q.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn connection_limits_per_ip_and_outside_total() {
        let counts = ConnectionCounts::default();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let a1 = counts.try_take(ip("192.0.2.1"), 2, 3).unwrap();
        let _a2 = counts.try_take(ip("192.0.2.1"), 2, 3).unwrap();
        assert_eq!(
            counts.try_take(ip("192.0.2.1"), 2, 3).err(),
            Some(Refusal::PerIp)
        );
        let _b = counts.try_take(ip("192.0.2.2"), 2, 3).unwrap();
        assert_eq!(
            counts.try_take(ip("192.0.2.3"), 2, 3).err(),
            Some(Refusal::Outside)
        );
        drop(a1);
        assert_eq!(counts.outside(), 2);
        assert!(counts.try_take(ip("192.0.2.1"), 2, 3).is_ok());
    }

    #[test]
    fn lockout_counts_across_calls_and_expires() {
        let l = AuthLockout::new(3, Duration::from_secs(3600));
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let other: IpAddr = "192.0.2.10".parse().unwrap();
        for _ in 0..2 {
            l.failed(ip);
        }
        assert!(!l.locked(ip));
        l.failed(ip);
        assert!(l.locked(ip));
        assert!(!l.locked(other));
        // A reload keeps the counts.
        assert!(l.with_limits(3, Duration::from_secs(3600)).locked(ip));
        // A zero window forgets at once.
        let short = l.with_limits(3, Duration::ZERO);
        assert!(!short.locked(ip));
    }
}
