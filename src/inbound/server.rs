//! The SMTP listener: binds `server.listen` (plain, STARTTLS when configured) and
//! `server.listen_tls` (implicit TLS), limits concurrent connections, runs one
//! session ([`super::serve`]) per connection and shuts down gracefully. Under socket activation it serves the
//! sockets systemd passed instead ([`Server::bind_with`]).
//!
//! # Connection limits
//! A slot of the `max_connections` semaphore is taken *before* `accept()`: when all slots are
//! busy the server stops accepting and further clients wait in the kernel's listen backlog
//! instead of being accepted and starved.
//!
//! Clients outside `client_networks` are counted as well, at accept time and before anything else
//! happens on the connection ([`ConnectionCounts`]): at most `max_connections_per_ip` from one
//! address, and together at most `outside_connections_percent` of `max_connections`. One more is
//! answered `421 4.7.0` with a single non-blocking write and closed at once, so its slot is back
//! within microseconds, and the remaining share of the slots stays free for clients inside: a
//! flood from outside can fill at most its own share and never keeps an internal MTA from its
//! greeting. Both limits are read from the settings current at accept time (reloadable).
//!
//! # Behind a proxy (PROXY protocol)
//! With `proxy_protocol` on, a connection from `proxy_networks` starts with a PROXY v1/v2
//! header ([`super::proxy`]) that names the real client, read before anything else and before
//! the TLS handshake of an implicit-TLS listener. Such a connection takes its `max_connections`
//! slot at accept like any other (so the proxy's connections are bounded however slowly it
//! sends headers, for [`proxy::HEADER_TIMEOUT`] at most), but is counted per address only once
//! the header has named the client: the per-IP and outside limits then apply to the client, not
//! to the proxy, which would otherwise hit `max_connections_per_ip` at once. A missing or
//! garbled header closes the connection without a greeting (logged). From then on the client's
//! address is the session's peer: relay permission, Received header, logs, XFORWARD, the audit
//! line and the spool see it. Peers outside `proxy_networks` are direct clients; their bytes
//! are never read as a PROXY header.
//!
//! # Graceful shutdown
//! When the `shutdown` future of [`Server::run`] completes: the listeners are closed, sessions
//! without an open transaction are closed with `421 4.3.2`, sessions in a transaction may finish
//! it (and are then closed the same way). After `shutdown_grace` seconds the remaining sessions
//! get `421 4.3.2` at once, also in the middle of a transaction; nothing was acknowledged to their
//! clients, so nothing is lost (a client whose message the next hop accepted in that last instant
//! may send it again, a duplicate rather than a loss).
//!
//! # Reload
//! Every new connection takes the settings snapshot current at accept time (a
//! `tokio::sync::watch` channel). [`Reloader::reload`] builds new settings from a new
//! configuration (re-reading the TLS certificate and the users file) and swaps them in: new
//! sessions use them, open sessions keep theirs. Listener addresses, `max_connections` and
//! `shutdown_grace` are fixed at [`Server::bind`]; changing them needs a restart.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};

use super::PeerProbe;
use super::limits::{ConnectionCounts, OutsideSlot, Refusal};
use super::proxy;
use super::session::{self, ConnectionMeta, ShutdownSignal};
use super::settings::{SessionSettings, SettingsError};
use super::{Handler, HandlerFactory};
use crate::config::Config;
use crate::ops::activation::InheritedListener;
use crate::ops::{Metrics, TlsSide};
use crate::replies;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    // Not `source`: the message carries the cause already, anyhow's chain would repeat it.
    #[error("{key}: cannot listen on {addr}: {error}")]
    Bind {
        key: &'static str,
        addr: String,
        error: std::io::Error,
    },
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("server.tls: implicit TLS listeners are running; TLS cannot be removed by a reload")]
    TlsRemoved,
    // Not `source`: the message carries the cause already, anyhow's chain would repeat it.
    #[error("inherited fd {fd} ({addr}): {error}")]
    Inherited {
        fd: i32,
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("inherited fd {fd} ({addr}) serves implicit TLS, which needs [server.tls]")]
    InheritedTlsWithoutTls { fd: i32, addr: SocketAddr },
}

struct Listener {
    socket: TcpListener,
    implicit_tls: bool,
}

/// Swaps the session settings of a running [`Server`]; cheap to clone.
#[derive(Clone)]
pub struct Reloader {
    settings: Arc<watch::Sender<Arc<SessionSettings>>>,
    has_tls_listeners: bool,
    metrics: Arc<Metrics>,
}

impl Reloader {
    /// Apply a new configuration to connections accepted from now on.
    pub fn reload(&self, cfg: &Config) -> Result<(), ServerError> {
        let mut new = SessionSettings::from_config(cfg, self.metrics.clone())?;
        new.keep_lockout_of(&self.current());
        self.replace(new)
    }

    /// Install settings built by the caller (tests tune values that have no configuration key).
    pub fn replace(&self, settings: SessionSettings) -> Result<(), ServerError> {
        if self.has_tls_listeners && settings.tls.is_none() {
            return Err(ServerError::TlsRemoved);
        }
        self.settings.send_replace(Arc::new(settings));
        Ok(())
    }

    /// The settings new connections get.
    pub fn current(&self) -> Arc<SessionSettings> {
        self.settings.borrow().clone()
    }
}

/// Bound listeners, ready to [`run`](Server::run).
pub struct Server {
    listeners: Vec<Listener>,
    reloader: Reloader,
    max_connections: usize,
    shutdown_grace: Duration,
}

impl Server {
    /// Bind every listener of `[server]` and load TLS certificate and users file. Connections
    /// and inbound TLS handshakes are counted in `metrics`.
    pub async fn bind(cfg: &Config, metrics: Arc<Metrics>) -> Result<Server, ServerError> {
        Self::bind_with(cfg, Vec::new(), metrics).await
    }

    /// [`Server::bind`], unless the service manager passed listening sockets (socket activation,
    /// [`crate::ops::activation`]): then those are served and `server.listen` / `server.listen_tls`
    /// are not bound. An inherited socket named `smtps` (`FileDescriptorName=smtps`) or bound to
    /// an address of `server.listen_tls` serves implicit TLS; every other one plain SMTP.
    pub async fn bind_with(
        cfg: &Config,
        inherited: Vec<InheritedListener>,
        metrics: Arc<Metrics>,
    ) -> Result<Server, ServerError> {
        let settings = SessionSettings::from_config(cfg, metrics.clone())?;
        let mut listeners = Vec::new();
        let tls_addrs = &cfg.server.listen_tls;
        let activated = !inherited.is_empty();
        for s in inherited {
            let implicit_tls =
                s.name.as_deref() == Some("smtps") || tls_addrs.contains(&s.local_addr);
            if implicit_tls && settings.tls.is_none() {
                return Err(ServerError::InheritedTlsWithoutTls {
                    fd: s.fd,
                    addr: s.local_addr,
                });
            }
            let socket =
                TcpListener::from_std(s.listener).map_err(|error| ServerError::Inherited {
                    fd: s.fd,
                    addr: s.local_addr,
                    error,
                })?;
            tracing::info!(
                fd = s.fd,
                listen = %s.local_addr,
                name = s.name.as_deref().unwrap_or(""),
                role = if implicit_tls { "smtps" } else { "smtp" },
                "using socket passed by systemd"
            );
            listeners.push(Listener {
                socket,
                implicit_tls,
            });
        }
        let configured = if activated {
            tracing::info!("socket activation: server.listen and server.listen_tls are not bound");
            Vec::new()
        } else {
            vec![
                ("server.listen", &cfg.server.listen, false),
                ("server.listen_tls", &cfg.server.listen_tls, true),
            ]
        };
        for (key, addrs, implicit_tls) in configured {
            for addr in addrs {
                let socket = bind(*addr).map_err(|error| ServerError::Bind {
                    key,
                    addr: addr.to_string(),
                    error,
                })?;
                listeners.push(Listener {
                    socket,
                    implicit_tls,
                });
            }
        }
        let has_tls_listeners = listeners.iter().any(|l| l.implicit_tls);
        Ok(Server {
            listeners,
            reloader: Reloader {
                settings: Arc::new(watch::Sender::new(Arc::new(settings))),
                has_tls_listeners,
                metrics,
            },
            max_connections: cfg.server.max_connections,
            shutdown_grace: cfg.server.shutdown_grace,
        })
    }

    /// Addresses of the plain (STARTTLS-capable) listeners, in configuration order; with port 0
    /// the port the system picked.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs(false)
    }

    /// Addresses of the implicit-TLS listeners.
    pub fn local_tls_addrs(&self) -> Vec<SocketAddr> {
        self.addrs(true)
    }

    fn addrs(&self, implicit_tls: bool) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter(|l| l.implicit_tls == implicit_tls)
            .filter_map(|l| l.socket.local_addr().ok())
            .collect()
    }

    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// See [`Reloader::reload`].
    pub fn reload(&self, cfg: &Config) -> Result<(), ServerError> {
        self.reloader.reload(cfg)
    }

    /// Accept connections until `shutdown` completes, then shut down gracefully (module docs).
    /// Returns when every session has ended.
    pub async fn run<F: HandlerFactory>(self, factory: Arc<F>, shutdown: impl Future<Output = ()>) {
        let Server {
            listeners,
            reloader,
            max_connections,
            shutdown_grace,
        } = self;
        let slots = Arc::new(Semaphore::new(max_connections));
        let outside = ConnectionCounts::default();
        let signal = ShutdownSignal::default();
        // Every session holds a clone; `recv()` returns None once all of them have ended.
        let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
        let mut next = 0usize;
        for l in &listeners {
            if let Ok(addr) = l.socket.local_addr() {
                tracing::info!(%addr, implicit_tls = l.implicit_tls, "listening");
            }
        }
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                p = slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let accepted = tokio::select! {
                _ = &mut shutdown => break,
                r = accept_any(&listeners, &mut next) => r,
            };
            let (stream, peer, implicit_tls) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning; the slot is returned.
                    tracing::warn!(error = %e, "accept failed");
                    drop(permit);
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            };
            let settings = reloader.current();
            // A proxy's connection is counted once its header names the client; until then
            // it holds only its `max_connections` slot (module docs).
            let proxied = settings.expects_proxy_header(&peer);
            let counted = if proxied {
                None
            } else {
                match count(&outside, peer, &settings, max_connections) {
                    Ok(slot) => slot,
                    Err(why) => {
                        refuse(stream, peer, why, &settings);
                        drop(permit);
                        continue;
                    }
                }
            };
            let admission = Admission {
                proxied,
                counted,
                outside: outside.clone(),
                max_connections,
            };
            let handler = factory.handler();
            let signal = signal.clone();
            let alive = alive_tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let _alive = alive;
                connection(
                    stream,
                    peer,
                    implicit_tls,
                    handler,
                    settings,
                    signal,
                    admission,
                )
                .await;
            });
        }
        drop(listeners);
        signal.drain.cancel();
        drop(alive_tx);
        tracing::info!("shutting down: no new connections, finishing open transactions");
        if tokio::time::timeout(shutdown_grace, alive_rx.recv())
            .await
            .is_err()
        {
            tracing::info!("shutdown grace period over: closing remaining sessions");
            signal.abort.cancel();
            // Sessions answer 421 and close promptly; the bound only guards against a client that
            // never reads.
            let _ = tokio::time::timeout(Duration::from_secs(10), alive_rx.recv()).await;
        }
    }
}

/// Listen backlog: a burst of connections (a flood, or many MTAs after an outage) beyond the
/// usual 128 would overflow the accept queue, and with SYN cookies a client whose final ACK was
/// dropped believes it is connected and waits for a greeting that never comes, an insider too.
/// The kernel caps it at `net.core.somaxconn` (4096 on current kernels).
const LISTEN_BACKLOG: u32 = 1024;

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv6() {
        tokio::net::TcpSocket::new_v6()?
    } else {
        tokio::net::TcpSocket::new_v4()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Count a connection of `peer` unless it is inside `client_networks` (then `None`).
fn count(
    outside: &ConnectionCounts,
    peer: SocketAddr,
    settings: &SessionSettings,
    max_connections: usize,
) -> Result<Option<OutsideSlot>, Refusal> {
    if settings.may_relay(&peer) {
        return Ok(None);
    }
    outside
        .try_take(
            peer.ip(),
            settings.max_connections_per_ip,
            settings.outside_limit(max_connections),
        )
        .map(Some)
}

/// How a connection was let in: its outside slot if counted at accept, or (`proxied`) what it
/// takes to count it once the PROXY header has named the client.
struct Admission {
    proxied: bool,
    counted: Option<OutsideSlot>,
    outside: ConnectionCounts,
    max_connections: usize,
}

/// Answer an over-limit outside client `421 4.7.0` and close: one write that never waits (a
/// fresh socket's send buffer takes it; a client that made it fail loses only the reply).
fn refuse(stream: TcpStream, peer: SocketAddr, why: Refusal, settings: &SessionSettings) {
    let r = match why {
        Refusal::PerIp => replies::too_many_connections_from_ip(&settings.hostname),
        Refusal::Outside => replies::too_many_connections(&settings.hostname),
    };
    tracing::debug!(%peer, reason = ?why, "connection refused: limit reached");
    let _ = stream.try_write(&r.to_bytes());
    // Dropped here: closed. An implicit-TLS client gets the reply in clear text, which it
    // cannot read, but the close tells it the same.
}

async fn accept_any(
    listeners: &[Listener],
    next: &mut usize,
) -> std::io::Result<(TcpStream, SocketAddr, bool)> {
    if listeners.is_empty() {
        return std::future::pending().await;
    }
    let start = *next % listeners.len();
    *next = next.wrapping_add(1);
    std::future::poll_fn(|cx| {
        for i in 0..listeners.len() {
            let l = &listeners[(start + i) % listeners.len()];
            if let Poll::Ready(r) = l.socket.poll_accept(cx) {
                return Poll::Ready(r.map(|(s, peer)| (s, peer, l.implicit_tls)));
            }
        }
        Poll::Pending
    })
    .await
}

async fn connection<H: Handler + 'static>(
    mut stream: TcpStream,
    peer: SocketAddr,
    implicit_tls: bool,
    handler: H,
    settings: Arc<SessionSettings>,
    signal: ShutdownSignal,
    admission: Admission,
) {
    // Replies are small and latency-bound: no Nagle delay.
    let _ = stream.set_nodelay(true);
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let mut _counted = admission.counted;
    let peer = if admission.proxied {
        let proxy = peer;
        let timeout = proxy::HEADER_TIMEOUT.min(settings.idle_timeout);
        let header = tokio::select! {
            _ = signal.drain.cancelled() => return,
            r = proxy::read_header(&mut stream, timeout) => r,
        };
        let client = match header {
            Ok(h) => {
                tracing::debug!(%proxy, version = h.version, addrs = ?h.addrs, "PROXY header");
                h.client(proxy)
            }
            Err(e) => {
                // No greeting: what follows is not from a client we know (postscreen does the same).
                tracing::warn!(%proxy, error = %e, "connection from a proxy closed: no valid PROXY header");
                return;
            }
        };
        match count(
            &admission.outside,
            client,
            &settings,
            admission.max_connections,
        ) {
            Ok(slot) => _counted = slot,
            Err(why) => return refuse(stream, client, why, &settings),
        }
        tracing::debug!(peer = %client, %proxy, %local, implicit_tls, "connection");
        client
    } else {
        tracing::debug!(%peer, %local, implicit_tls, "connection");
        peer
    };
    let metrics = &settings.metrics;
    let _open = metrics.connection_opened(if implicit_tls { "smtps" } else { "smtp" });
    let probe = PeerProbe::of(&stream);
    if !implicit_tls {
        let meta = ConnectionMeta {
            peer,
            local,
            tls: false,
            probe,
        };
        return session::serve(stream, meta, handler, settings, signal).await;
    }
    let Some(acceptor) = settings.tls.clone() else {
        return;
    };
    let handshake = tokio::time::timeout(settings.idle_timeout, acceptor.accept(stream));
    let tls = tokio::select! {
        _ = signal.drain.cancelled() => return,
        r = handshake => r,
    };
    metrics.tls_handshake(TlsSide::Inbound, matches!(tls, Ok(Ok(_))));
    match tls {
        Ok(Ok(tls)) => {
            let meta = ConnectionMeta {
                peer,
                local,
                tls: true,
                probe,
            };
            session::serve(tls, meta, handler, settings, signal).await;
        }
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}
