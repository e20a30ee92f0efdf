//! The operations HTTP endpoint on `[metrics] listen`: `/metrics`, `/healthz`, `/readyz`.
//!
//! Readiness is pushed, not pulled: the server, the relay and the Cryptshare client (or the probe
//! tasks from [`spawn_probe`]) report into [`Readiness`], and `/readyz` only reads it. A scrape or
//! a load balancer's health check therefore never opens connections to the next hop or Cryptshare.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::NextHop;
use crate::ops::metrics::{Format, Metrics};
use crate::ops::probe::smtp_probe;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("metrics.listen: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A dependency `/readyz` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// All SMTP listeners are bound.
    Listeners,
    /// The next hop answered greeting and EHLO (or the maildir is a directory).
    NextHop,
    /// The Cryptshare server answered.
    Cryptshare,
    /// The state database answers (`[state] backend = "postgres"`; the file store always
    /// counts as ready).
    StateStore,
}

impl Component {
    fn name(self) -> &'static str {
        match self {
            Component::Listeners => "listeners",
            Component::NextHop => "next hop",
            Component::Cryptshare => "cryptshare",
            Component::StateStore => "state store",
        }
    }
}

/// The readiness of each component: `Ok` or the reason it is not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyState {
    pub listeners: Result<(), String>,
    pub next_hop: Result<(), String>,
    pub cryptshare: Result<(), String>,
    /// Ready from the start: only the PostgreSQL backend reports into it.
    pub state_store: Result<(), String>,
    /// Set on shutdown: load balancers should stop sending new connections.
    pub draining: bool,
}

impl Default for ReadyState {
    fn default() -> Self {
        let pending = || Err("not checked yet".to_string());
        ReadyState {
            listeners: pending(),
            next_hop: pending(),
            cryptshare: pending(),
            state_store: Ok(()),
            draining: false,
        }
    }
}

impl ReadyState {
    /// `Ok` when everything is ready, otherwise every reason, `; `-separated.
    pub fn check(&self) -> Result<(), String> {
        if self.draining {
            return Err("shutting down".into());
        }
        let reasons: Vec<String> = [
            (Component::Listeners, &self.listeners),
            (Component::NextHop, &self.next_hop),
            (Component::Cryptshare, &self.cryptshare),
            (Component::StateStore, &self.state_store),
        ]
        .into_iter()
        .filter_map(|(c, r)| r.as_ref().err().map(|e| format!("{}: {e}", c.name())))
        .collect();
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons.join("; "))
        }
    }
}

/// Shared readiness flags. Starts "not ready" for every component.
#[derive(Debug)]
pub struct Readiness {
    state: watch::Sender<ReadyState>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl Readiness {
    pub fn new() -> Readiness {
        Readiness {
            state: watch::Sender::new(ReadyState::default()),
        }
    }

    /// Record a component's state; `Err` carries the reason shown by `/readyz`.
    pub fn set(&self, component: Component, status: Result<(), String>) {
        self.state.send_if_modified(|s| {
            let slot = match component {
                Component::Listeners => &mut s.listeners,
                Component::NextHop => &mut s.next_hop,
                Component::Cryptshare => &mut s.cryptshare,
                Component::StateStore => &mut s.state_store,
            };
            if *slot == status {
                false
            } else {
                *slot = status;
                true
            }
        });
    }

    /// Mark the gateway as shutting down; `/readyz` answers 503 from now on.
    pub fn set_draining(&self) {
        self.state
            .send_if_modified(|s| !std::mem::replace(&mut s.draining, true));
    }

    pub fn check(&self) -> Result<(), String> {
        self.state.borrow().check()
    }

    pub fn snapshot(&self) -> ReadyState {
        self.state.borrow().clone()
    }

    /// Watch changes (e.g. to log a component going down, or in tests to wait for a probe).
    pub fn subscribe(&self) -> watch::Receiver<ReadyState> {
        self.state.subscribe()
    }
}

/// Run `probe` every `interval` (first run immediately; `interval` must not be zero) and record
/// its result for `component`, until the returned task is aborted.
pub fn spawn_probe<F, Fut>(
    readiness: Arc<Readiness>,
    component: Component,
    interval: Duration,
    mut probe: F,
) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let status = probe().await;
            readiness.set(component, status);
        }
    })
}

/// Readiness of the next hop: an SMTP greeting and `EHLO helo` answered with 2xx, then `QUIT`
/// (see [`crate::ops::probe`]), all within `timeout`; for `maildir:DIR`, that the directory
/// exists.
pub async fn probe_next_hop(
    next_hop: &NextHop,
    helo: &str,
    timeout: Duration,
) -> Result<(), String> {
    match next_hop {
        NextHop::Maildir(dir) => {
            if dir.is_dir() {
                Ok(())
            } else {
                Err(format!("{}: no such directory", dir.display()))
            }
        }
        NextHop::Smtp { host, port } => smtp_probe(host, *port, helo, timeout).await,
    }
}

/// Reachability of the Cryptshare server at `cryptshare.url`: a TCP connect to its host and port
/// within `timeout`. Deliberately no HTTP request: it must not cost the server a session or a
/// log entry every few seconds, and TLS or API errors show up on real calls anyway.
/// `embedded` is always reachable.
pub async fn probe_cryptshare(url: &str, timeout: Duration) -> Result<(), String> {
    if url == "embedded" {
        return Ok(());
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    let (Some(host), Some(port)) = (parsed.host_str(), parsed.port_or_known_default()) else {
        return Err(format!("{url}: no host"));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    connect_probe(host, port, timeout).await
}

async fn connect_probe(host: &str, port: u16, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("{host}:{port}: {e}")),
        Err(_) => Err(format!("{host}:{port}: connect timed out")),
    }
}

/// A running ops HTTP server.
#[derive(Debug)]
pub struct HttpServer {
    /// The bound address (useful with port 0).
    pub local_addr: SocketAddr,
    /// Finishes after the shutdown future resolved and open requests were answered.
    pub task: JoinHandle<std::io::Result<()>>,
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

/// Bind `addr` and serve `/metrics`, `/healthz`, `/readyz` until `shutdown` resolves. Binding
/// happens before this returns, so a bind error is reported to the caller at start-up.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<HttpServer, HttpError> {
    let bind_err = |source| HttpError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
    let local_addr = listener.local_addr().map_err(bind_err)?;
    let app = router(metrics, readiness);
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    });
    Ok(HttpServer { local_addr, task })
}

fn router(metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, readiness })
}

async fn metrics_handler(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let wants_openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let format = if wants_openmetrics {
        Format::OpenMetrics
    } else {
        Format::Prometheus
    };
    (
        [(header::CONTENT_TYPE, format.content_type())],
        app.metrics.encode(format),
    )
        .into_response()
}

async fn healthz() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "ok\n",
    )
        .into_response()
}

async fn readyz(State(app): State<AppState>) -> Response {
    let text = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    match app.readiness.check() {
        Ok(()) => (StatusCode::OK, text, "ready\n".to_string()).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            text,
            format!("not ready: {reason}\n"),
        )
            .into_response(),
    }
}
