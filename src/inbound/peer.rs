//! "Is the client still there?" — a cheap probe of the inbound socket that the pipeline asks
//! right before it lets the next hop accept a message (issue 12, item 9).
//!
//! While the handler works on a message (a Cryptshare conversion can take longer than the
//! client's own timeout), the session does not read from the client. A client that gave up has
//! closed its side by then; relaying its message anyway would deliver it, and the client's retry
//! would deliver it a second time. The probe polls the socket without reading from it:
//! `POLLRDHUP` (the client sent FIN), `POLLHUP` or `POLLERR` (reset) mean gone. A client that
//! only half-closes (`shutdown(SHUT_WR)`) before reading the reply to its message counts as
//! gone too: it cannot be told apart from one that closed, and it gets a temporary failure, not
//! a lost message.
//!
//! The probe holds a duplicate of the socket's descriptor (one more descriptor per connection),
//! so that it can never poll a descriptor number that a later connection reused.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;

/// A handle on the client's socket; [`PeerProbe::default`] knows no socket and always answers
/// "connected" (in-memory streams, tests).
#[derive(Clone, Default)]
pub struct PeerProbe(Option<Arc<OwnedFd>>);

impl std::fmt::Debug for PeerProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "PeerProbe(socket)"
        } else {
            "PeerProbe(none)"
        })
    }
}

impl PeerProbe {
    /// A probe of `socket` (a TCP stream); without a descriptor to spare, one that always
    /// answers "connected" (the old behaviour).
    pub fn of(socket: &impl AsFd) -> PeerProbe {
        PeerProbe(socket.as_fd().try_clone_to_owned().ok().map(Arc::new))
    }

    /// False once the client closed or reset its connection. Never blocks, reads nothing.
    pub fn connected(&self) -> bool {
        let Some(fd) = &self.0 else {
            return true;
        };
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN | libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd we own, for a descriptor `fd` keeps open; timeout 0.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        if n <= 0 {
            return true;
        }
        p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn sees_a_closed_client_but_not_pending_data() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        let probe = PeerProbe::of(&server);
        assert!(probe.connected());
        client.write_all(b"QUIT\r\n").unwrap();
        assert!(probe.connected(), "pipelined data is not a close");
        drop(client);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while probe.connected() {
            assert!(std::time::Instant::now() < deadline, "close never seen");
            std::thread::yield_now();
        }
        assert!(PeerProbe::default().connected());
    }
}
