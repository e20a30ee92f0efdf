//! systemd readiness protocol (`sd_notify(3)`), without libsystemd.
//!
//! The protocol is one datagram of `KEY=VALUE` lines to the `AF_UNIX` socket named in
//! `$NOTIFY_SOCKET` (a path, or an abstract name written with a leading `@`). Outside systemd
//! the variable is unset and every call is a no-op, so the gateway runs the same under a
//! terminal, in tests and as a `Type=notify` service.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

/// Sends state changes to the service manager.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID`. Never fails: a missing or
    /// unusable socket yields a disabled notifier (systemd then times the start out, which
    /// names the problem better than a refusal to start would).
    pub fn from_env() -> Notifier {
        let env = |k: &str| std::env::var(k).ok();
        let target = env("NOTIFY_SOCKET").and_then(|s| match connect(&s) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!("NOTIFY_SOCKET {s:?} unusable, not notifying systemd: {e}");
                None
            }
        });
        let watchdog = watchdog_interval(
            env("WATCHDOG_USEC").as_deref(),
            env("WATCHDOG_PID").as_deref(),
            std::process::id(),
        );
        Notifier { target, watchdog }
    }

    /// Notify the socket `addr` (a path or `@abstract`), with an explicit watchdog period.
    pub fn to_socket(addr: &str, watchdog: Option<Duration>) -> io::Result<Notifier> {
        Ok(Notifier {
            target: Some(connect(addr)?),
            watchdog,
        })
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier {
            target: None,
            watchdog: None,
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// The service's `WatchdogSec=`, if systemd asked for keep-alives.
    pub fn watchdog_timeout(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Start-up finished: listeners are bound. `status` is shown by `systemctl status`.
    pub fn ready(&self, status: &str) -> io::Result<()> {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)))
    }

    /// A reload began. `MONOTONIC_USEC` lets `Type=notify-reload` (systemd ≥ 253) match this
    /// message to the reload it requested; older versions ignore it. Send [`Notifier::ready`] when done.
    pub fn reloading(&self) -> io::Result<()> {
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()))
    }

    /// Shutdown began.
    pub fn stopping(&self) -> io::Result<()> {
        self.send("STOPPING=1")
    }

    pub fn status(&self, status: &str) -> io::Result<()> {
        self.send(&format!("STATUS={}", one_line(status)))
    }

    pub fn watchdog(&self) -> io::Result<()> {
        self.send("WATCHDOG=1")
    }

    /// Send raw `KEY=VALUE` lines.
    pub fn send(&self, state: &str) -> io::Result<()> {
        match &self.target {
            Some((sock, addr)) => sock.send_to_addr(state.as_bytes(), addr).map(|_| ()),
            None => Ok(()),
        }
    }

    /// Keep-alive task: `WATCHDOG=1` at half the watchdog timeout (as `sd_watchdog_enabled(3)`
    /// recommends) for as long as the runtime runs. None when no watchdog was requested.
    /// Because it runs on the same runtime as the sessions, a wedged runtime stops the pings
    /// and systemd restarts the service.
    pub fn spawn_watchdog(self: &Arc<Self>) -> Option<JoinHandle<()>> {
        let period = self.watchdog? / 2;
        if !self.is_enabled() || period.is_zero() {
            return None;
        }
        let me = Arc::clone(self);
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = me.watchdog() {
                    tracing::warn!("systemd watchdog notification failed: {e}");
                }
            }
        }))
    }
}

fn connect(addr: &str) -> io::Result<(UnixDatagram, SocketAddr)> {
    let sock_addr = if let Some(name) = addr.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(name.as_bytes())?
    } else if addr.starts_with('/') {
        SocketAddr::from_pathname(Path::new(addr))?
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not an absolute path or @abstract name",
        ));
    };
    let sock = UnixDatagram::unbound()?;
    // A stuck service manager must not stall the runtime thread that sends.
    sock.set_write_timeout(Some(Duration::from_secs(1)))?;
    Ok((sock, sock_addr))
}

/// `WATCHDOG_USEC` applies to us only when `WATCHDOG_PID` is unset or names our pid
/// (`sd_watchdog_enabled(3)`); a child process must not inherit the parent's duty.
fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, my_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(my_pid)
    {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Newlines would start new assignments in the datagram.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_env_rules() {
        assert_eq!(
            watchdog_interval(Some("30000000"), None, 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_interval(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(watchdog_interval(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("abc"), None, 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
    }

    #[test]
    fn relative_socket_path_is_refused() {
        assert!(Notifier::to_socket("relative/sock", None).is_err());
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_usec();
        let b = monotonic_usec();
        assert!(a > 0 && b >= a);
    }
}
