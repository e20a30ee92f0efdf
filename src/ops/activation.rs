//! systemd socket activation (`sd_listen_fds(3)`), without libsystemd.
//!
//! With `cryptshare-gateway.socket` enabled, systemd binds the SMTP ports itself and passes the
//! listening sockets as fds 3, 4, … with `LISTEN_PID` (our pid), `LISTEN_FDS` (their number) and
//! optionally `LISTEN_FDNAMES` (the units' `FileDescriptorName=`, colon-separated). The gateway
//! then serves those sockets instead of binding `server.listen` / `server.listen_tls`: the ports
//! stay open across restarts (clients wait in the backlog instead of being refused) and port 25
//! needs no `CAP_NET_BIND_SERVICE`.
//!
//! [`take_listen_fds`] must run while the process is single-threaded: it removes the variables
//! from the environment so that child processes do not mistake the fds for theirs.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, RawFd};

/// The first inherited fd (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;

/// A listening TCP socket passed by the service manager.
#[derive(Debug)]
pub struct InheritedListener {
    /// The fd number it arrived as (for messages; the socket itself is in `listener`).
    pub fd: RawFd,
    /// Its `FileDescriptorName=`, when systemd passed names.
    pub name: Option<String>,
    /// Non-blocking, close-on-exec.
    pub listener: TcpListener,
    pub local_addr: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("socket activation: {var}={value:?} is not valid ({why})")]
    BadVariable {
        var: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("socket activation: inherited fd {fd} is not a listening TCP socket: {why}")]
    NotListeningTcp { fd: RawFd, why: String },
}

/// The sockets systemd passed to this process, in fd order; empty when it passed none (or they
/// were meant for another process: `LISTEN_PID` differs). Unsets `LISTEN_PID`, `LISTEN_FDS` and
/// `LISTEN_FDNAMES` in every case.
///
/// Call before any thread is started (the environment is changed).
pub fn take_listen_fds() -> Result<Vec<InheritedListener>, ActivationError> {
    let var = |k: &str| std::env::var(k).ok();
    let (pid, fds, names) = (var("LISTEN_PID"), var("LISTEN_FDS"), var("LISTEN_FDNAMES"));
    for k in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // SAFETY: documented precondition: the process has no other threads yet, so nothing
        // reads the environment concurrently.
        unsafe { std::env::remove_var(k) };
    }
    let Some(count) = listen_fds_for(
        pid.as_deref(),
        fds.as_deref(),
        names.as_deref(),
        std::process::id(),
    )?
    else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(count.len());
    for (i, name) in count.into_iter().enumerate() {
        // `listen_fds_for` bounds the count, so this cannot overflow.
        let fd = FIRST_FD + i as RawFd;
        out.push(adopt(fd, name)?);
    }
    Ok(out)
}

/// The names of the fds meant for process `me` (one entry per fd, `None` without
/// `LISTEN_FDNAMES`), or None when there are none for us.
fn listen_fds_for(
    pid: Option<&str>,
    fds: Option<&str>,
    names: Option<&str>,
    me: u32,
) -> Result<Option<Vec<Option<String>>>, ActivationError> {
    let Some(pid) = pid else { return Ok(None) };
    let pid: u32 = pid
        .trim()
        .parse()
        .map_err(|_| ActivationError::BadVariable {
            var: "LISTEN_PID",
            value: pid.to_string(),
            why: "not a process id",
        })?;
    if pid != me {
        return Ok(None);
    }
    let Some(fds) = fds else { return Ok(None) };
    let bad_count = |why| ActivationError::BadVariable {
        var: "LISTEN_FDS",
        value: fds.to_string(),
        why,
    };
    let n: usize = fds.trim().parse().map_err(|_| bad_count("not a number"))?;
    // Far above any sensible number of listeners; keeps the fd arithmetic in range.
    if n > 4096 {
        return Err(bad_count("more than 4096 descriptors"));
    }
    if n == 0 {
        return Ok(None);
    }
    let names: Vec<Option<String>> = match names {
        None => vec![None; n],
        Some(list) => {
            let v: Vec<Option<String>> = list.split(':').map(|s| Some(s.to_string())).collect();
            if v.len() != n {
                return Err(ActivationError::BadVariable {
                    var: "LISTEN_FDNAMES",
                    value: list.to_string(),
                    why: "the number of names differs from LISTEN_FDS",
                });
            }
            v
        }
    };
    Ok(Some(names))
}

fn sockopt(fd: RawFd, level: libc::c_int, opt: libc::c_int) -> std::io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `v`, which is that large.
    let rc = unsafe { libc::getsockopt(fd, level, opt, (&raw mut v).cast(), &mut len) };
    if rc == 0 {
        Ok(v)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Check that `fd` is a listening TCP socket, then take ownership of it.
fn adopt(fd: RawFd, name: Option<String>) -> Result<InheritedListener, ActivationError> {
    let not = |why: String| ActivationError::NotListeningTcp { fd, why };
    let ty = sockopt(fd, libc::SOL_SOCKET, libc::SO_TYPE).map_err(|e| not(e.to_string()))?;
    if ty != libc::SOCK_STREAM {
        return Err(not(format!("socket type {ty}, not a stream socket")));
    }
    let domain = sockopt(fd, libc::SOL_SOCKET, libc::SO_DOMAIN).map_err(|e| not(e.to_string()))?;
    if domain != libc::AF_INET && domain != libc::AF_INET6 {
        return Err(not(format!("address family {domain}, not IPv4/IPv6")));
    }
    let listening =
        sockopt(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN).map_err(|e| not(e.to_string()))?;
    if listening == 0 {
        return Err(not("the socket is not listening".to_string()));
    }
    // SAFETY: the service manager handed this fd to us (LISTEN_PID is our pid) and nothing else
    // in the process refers to it; it is a listening TCP socket, checked above.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    listener
        .set_nonblocking(true)
        .map_err(|e| not(format!("cannot make it non-blocking: {e}")))?;
    // SAFETY: fcntl on an fd we own; F_SETFD only changes the close-on-exec flag.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return Err(not(format!(
            "cannot set close-on-exec: {}",
            std::io::Error::last_os_error()
        )));
    }
    let local_addr = listener
        .local_addr()
        .map_err(|e| not(format!("no local address: {e}")))?;
    Ok(InheritedListener {
        fd,
        name,
        listener,
        local_addr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_for_our_pid() {
        assert!(listen_fds_for(None, Some("2"), None, 7).unwrap().is_none());
        assert!(
            listen_fds_for(Some("8"), Some("2"), None, 7)
                .unwrap()
                .is_none()
        );
        assert!(listen_fds_for(Some("7"), None, None, 7).unwrap().is_none());
        assert!(
            listen_fds_for(Some("7"), Some("0"), None, 7)
                .unwrap()
                .is_none()
        );
        assert_eq!(
            listen_fds_for(Some("7"), Some("2"), None, 7).unwrap(),
            Some(vec![None, None])
        );
    }

    #[test]
    fn names_are_colon_separated_and_must_match_the_count() {
        assert_eq!(
            listen_fds_for(Some("7"), Some("2"), Some("smtp:smtps"), 7).unwrap(),
            Some(vec![Some("smtp".to_string()), Some("smtps".to_string())])
        );
        let e = listen_fds_for(Some("7"), Some("2"), Some("smtp"), 7).unwrap_err();
        assert_eq!(
            e.to_string(),
            "socket activation: LISTEN_FDNAMES=\"smtp\" is not valid \
             (the number of names differs from LISTEN_FDS)"
        );
    }

    #[test]
    fn malformed_variables_are_errors() {
        let e = listen_fds_for(Some("x"), Some("1"), None, 7).unwrap_err();
        assert!(e.to_string().contains("LISTEN_PID=\"x\""), "{e}");
        let e = listen_fds_for(Some("7"), Some("-1"), None, 7).unwrap_err();
        assert!(e.to_string().contains("LISTEN_FDS=\"-1\""), "{e}");
        let e = listen_fds_for(Some("7"), Some("100000"), None, 7).unwrap_err();
        assert!(e.to_string().contains("more than 4096"), "{e}");
    }
}
