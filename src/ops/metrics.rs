//! Prometheus metrics: one registry, typed recording methods, text encoders.
//!
//! Every metric family is registered once in [`Metrics::new`], so a scrape shows all families
//! (with zero samples for label sets not seen yet) and a typo in a metric name cannot create a
//! second family at run time. Label values come from closed enums or from configuration (policy
//! names, listener kinds): nothing client-controlled becomes a label, which bounds cardinality.

use std::sync::atomic::AtomicI64;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

/// Prefix of every metric name.
pub const PREFIX: &str = "csgw";

/// Label value used when no policy matched a message.
pub const NO_POLICY: &str = "none";

/// Latency buckets in seconds. Cryptshare uploads and next-hop DATA replies can legitimately take
/// minutes (RFC 5321 gives the final dot 10 minutes), so the tail goes up to 600 s.
const LATENCY_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Which text format `/metrics` answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text exposition format 0.0.4 (what `curl` and most scrapers get).
    Prometheus,
    /// OpenMetrics 1.0 text (negotiated by `Accept: application/openmetrics-text`).
    OpenMetrics,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The end of an SMTP transaction, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxOutcome {
    /// 2xx at the end of DATA.
    Accepted,
    /// 4xx at the end of DATA: the client keeps the message and retries.
    TempFailed,
    /// 5xx at the end of DATA.
    Rejected,
    /// The transaction never got a final reply (RSET, disconnect, shutdown).
    Aborted,
}

impl TxOutcome {
    pub fn from_reply_code(code: u16) -> TxOutcome {
        match code {
            200..=299 => TxOutcome::Accepted,
            400..=499 => TxOutcome::TempFailed,
            _ => TxOutcome::Rejected,
        }
    }

    fn label(self) -> &'static str {
        match self {
            TxOutcome::Accepted => "accepted",
            TxOutcome::TempFailed => "tempfail",
            TxOutcome::Rejected => "rejected",
            TxOutcome::Aborted => "aborted",
        }
    }
}

/// What the pipeline did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageResult {
    /// Attachments moved to Cryptshare, rewritten message relayed.
    Converted,
    /// No rule or below threshold: relayed untouched.
    Passed,
    /// Conversion was due but failed (the policy's `on_error` decided the reply).
    Failed,
}

impl MessageResult {
    fn label(self) -> &'static str {
        match self {
            MessageResult::Converted => "converted",
            MessageResult::Passed => "passed",
            MessageResult::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsSide {
    /// STARTTLS or implicit TLS from an SMTP client.
    Inbound,
    /// STARTTLS towards the next hop.
    Outbound,
}

impl TlsSide {
    fn label(self) -> &'static str {
        match self {
            TlsSide::Inbound => "inbound",
            TlsSide::Outbound => "outbound",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    policy: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    endpoint: &'static str,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NextHopLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TlsLabels {
    side: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

fn unix_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The gateway's metrics. Share it as `Arc<Metrics>`; every method takes `&self` and is cheap
/// (atomic increments, plus a read lock on the label map for labelled families).
pub struct Metrics {
    registry: Registry,
    connections: Family<ListenerLabels, Counter>,
    connections_active: Gauge,
    transactions: Family<OutcomeLabels, Counter>,
    transactions_active: Gauge,
    messages: Family<MessageLabels, Counter>,
    uploaded_bytes: Family<PolicyLabels, Counter>,
    uploaded_files: Family<PolicyLabels, Counter>,
    cryptshare_calls: HistogramFamily<CallLabels>,
    next_hop: HistogramFamily<NextHopLabels>,
    tls_handshakes: Family<TlsLabels, Counter>,
    config_reloads: Family<ResultLabels, Counter>,
    config_last_reload: Gauge<i64, AtomicI64>,
    dsns: Family<DsnLabels, Counter>,
    deferrals: Counter,
    queue_messages: Gauge,
    queue_oldest: Gauge<i64, AtomicI64>,
    state_db: crate::store::postgres::DbMetrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DsnLabels {
    action: &'static str,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix(PREFIX);
        let connections = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "connections",
            "SMTP connections accepted, by listener kind (smtp, smtps)",
            connections.clone(),
        );
        let connections_active = Gauge::default();
        registry.register(
            "connections_active",
            "SMTP sessions currently open",
            connections_active.clone(),
        );
        let transactions = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "transactions",
            "SMTP transactions by final outcome (accepted, tempfail, rejected, aborted)",
            transactions.clone(),
        );
        let transactions_active = Gauge::default();
        registry.register(
            "transactions_active",
            "SMTP transactions between MAIL FROM and their final reply",
            transactions_active.clone(),
        );
        let messages = Family::<MessageLabels, Counter>::default();
        registry.register(
            "messages",
            "Messages by matched policy and result (converted, passed, failed)",
            messages.clone(),
        );
        let uploaded_bytes = Family::<PolicyLabels, Counter>::default();
        registry.register_with_unit(
            "uploaded",
            "Attachment bytes uploaded to Cryptshare, by policy",
            Unit::Bytes,
            uploaded_bytes.clone(),
        );
        let uploaded_files = Family::<PolicyLabels, Counter>::default();
        registry.register(
            "uploaded_files",
            "Files uploaded to Cryptshare, by policy",
            uploaded_files.clone(),
        );
        let cryptshare_calls: HistogramFamily<CallLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "cryptshare_request_duration",
            "Cryptshare REST API call latency by endpoint and HTTP status (\"error\" = no response)",
            Unit::Seconds,
            cryptshare_calls.clone(),
        );
        let next_hop: HistogramFamily<NextHopLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "next_hop_duration",
            "Time to hand a message to the next hop, by reply class (2xx, 4xx, 5xx, error)",
            Unit::Seconds,
            next_hop.clone(),
        );
        let tls_handshakes = Family::<TlsLabels, Counter>::default();
        registry.register(
            "tls_handshakes",
            "TLS handshakes by side (inbound, outbound) and result (ok, failed)",
            tls_handshakes.clone(),
        );
        let config_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads (SIGHUP) by result (ok, failed)",
            config_reloads.clone(),
        );
        let config_last_reload = Gauge::<i64, AtomicI64>::default();
        config_last_reload.set(unix_seconds());
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load",
            config_last_reload.clone(),
        );
        let dsns = Family::<DsnLabels, Counter>::default();
        registry.register(
            "dsns",
            "Delivery status notifications queued to senders (spool mode), by action (failed, delayed)",
            dsns.clone(),
        );
        let deferrals = Counter::default();
        registry.register(
            "queue_deferrals",
            "Delivery attempts of queued messages that ended in a retry later (spool mode)",
            deferrals.clone(),
        );
        let queue_messages = Gauge::default();
        registry.register(
            "queue_messages",
            "Messages in the spool-mode queue (active and held)",
            queue_messages.clone(),
        );
        let queue_oldest = Gauge::<i64, AtomicI64>::default();
        registry.register_with_unit(
            "queue_oldest_age",
            "Age of the oldest message in the spool-mode queue (0 when empty)",
            Unit::Seconds,
            queue_oldest.clone(),
        );
        let state_db = crate::store::postgres::DbMetrics::default();
        registry.register_with_unit(
            "state_db_operation_duration",
            "State database (state.backend = postgres) operations by kind: pool checkout and statements",
            Unit::Seconds,
            state_db.operations.clone(),
        );
        registry.register(
            "state_db_operation_errors",
            "State database operations that failed, by kind",
            state_db.errors.clone(),
        );
        registry.register(
            "state_db_pool_connections",
            "State database connections open (idle and in use)",
            state_db.pool_size.clone(),
        );
        registry.register(
            "state_db_pool_idle_connections",
            "State database connections open and idle",
            state_db.pool_idle.clone(),
        );
        registry.register(
            "state_db_pool_max_connections",
            "State database connections allowed (state.pool_size)",
            state_db.pool_max.clone(),
        );
        registry.register(
            "state_db_pool_waiting",
            "Tasks waiting for a state database connection",
            state_db.pool_waiting.clone(),
        );
        registry.register(
            "state_db_up",
            "1 while the state database answers the health check, else 0",
            state_db.up.clone(),
        );
        let start = Gauge::<i64, AtomicI64>::default();
        start.set(unix_seconds());
        registry.register("start_time_seconds", "Unix time the gateway started", start);
        registry.register(
            "build",
            "Build information",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        let m = Metrics {
            registry,
            connections,
            connections_active,
            transactions,
            transactions_active,
            messages,
            uploaded_bytes,
            uploaded_files,
            cryptshare_calls,
            next_hop,
            tls_handshakes,
            config_reloads,
            config_last_reload,
            dsns,
            deferrals,
            queue_messages,
            queue_oldest,
            state_db,
        };
        m.init_closed_label_sets();
        m
    }

    /// Families only appear in the exposition once a label set exists. Creating the closed
    /// label sets up front makes every family visible from the first scrape and lets `rate()`
    /// see the first increment (a series that appears at 1 has no 0 to rise from).
    fn init_closed_label_sets(&self) {
        for action in ["failed", "delayed"] {
            let _ = self.dsns.get_or_create(&DsnLabels { action });
        }
        for outcome in [
            TxOutcome::Accepted,
            TxOutcome::TempFailed,
            TxOutcome::Rejected,
            TxOutcome::Aborted,
        ] {
            let _ = self.transactions.get_or_create(&OutcomeLabels {
                outcome: outcome.label(),
            });
        }
        for result in ["2xx", "4xx", "5xx", "error"] {
            let _ = self.next_hop.get_or_create(&NextHopLabels { result });
        }
        for side in [TlsSide::Inbound, TlsSide::Outbound] {
            for result in ["ok", "failed"] {
                let _ = self.tls_handshakes.get_or_create(&TlsLabels {
                    side: side.label(),
                    result,
                });
            }
        }
        for result in ["ok", "failed"] {
            let _ = self.config_reloads.get_or_create(&ResultLabels { result });
        }
        self.init_policies(std::iter::empty());
    }

    /// Create the per-policy series at zero for the configured policy names (plus `none`); call
    /// at start-up and after a reload. Series of policies removed by a reload stay until restart.
    pub fn init_policies<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        for policy in std::iter::once(NO_POLICY).chain(names) {
            for result in [
                MessageResult::Converted,
                MessageResult::Passed,
                MessageResult::Failed,
            ] {
                let _ = self.messages.get_or_create(&MessageLabels {
                    policy: policy.to_string(),
                    result: result.label(),
                });
            }
            let labels = PolicyLabels {
                policy: policy.to_string(),
            };
            let _ = self.uploaded_bytes.get_or_create(&labels);
            let _ = self.uploaded_files.get_or_create(&labels);
        }
    }

    /// A connection was accepted on `listener` (`"smtp"` or `"smtps"`). The active gauge stays
    /// raised until the guard is dropped, so early returns and panics cannot leak a session.
    #[must_use = "the session counts as active until the guard is dropped"]
    pub fn connection_opened(self: &Arc<Self>, listener: &str) -> ConnectionGuard {
        self.connections
            .get_or_create(&ListenerLabels {
                listener: listener.to_string(),
            })
            .inc();
        self.connections_active.inc();
        ConnectionGuard {
            metrics: Arc::clone(self),
        }
    }

    /// A transaction began (MAIL FROM accepted). Call [`TransactionGuard::finish`] with the final
    /// reply; dropping the guard unfinished counts the transaction as aborted.
    #[must_use = "finish the guard with the final reply"]
    pub fn transaction_started(self: &Arc<Self>) -> TransactionGuard {
        self.transactions_active.inc();
        TransactionGuard {
            metrics: Arc::clone(self),
            done: false,
        }
    }

    /// Count a finished transaction without a guard.
    pub fn transaction(&self, outcome: TxOutcome) {
        self.transactions
            .get_or_create(&OutcomeLabels {
                outcome: outcome.label(),
            })
            .inc();
    }

    /// A message went through the pipeline; `policy` is the matched rule's name (None: no rule).
    pub fn message(&self, policy: Option<&str>, result: MessageResult) {
        self.messages
            .get_or_create(&MessageLabels {
                policy: policy.unwrap_or(NO_POLICY).to_string(),
                result: result.label(),
            })
            .inc();
    }

    /// A DSN was queued (`failed`: a failure report, else a delay warning).
    pub fn dsn(&self, failed: bool) {
        let action = if failed { "failed" } else { "delayed" };
        self.dsns.get_or_create(&DsnLabels { action }).inc();
    }

    /// A queued message's attempt ended in "try again later".
    pub fn deferred(&self) {
        self.deferrals.inc();
    }

    /// The queue's length and the age of its oldest message, in seconds.
    /// The state database's handles, for `store::postgres` to record into.
    pub fn state_db(&self) -> crate::store::postgres::DbMetrics {
        self.state_db.clone()
    }

    pub fn queue(&self, messages: usize, oldest_age: i64) {
        self.queue_messages.set(messages as i64);
        self.queue_oldest.set(oldest_age);
    }

    /// Files and bytes uploaded to Cryptshare for one message.
    pub fn uploaded(&self, policy: Option<&str>, files: u64, bytes: u64) {
        let labels = PolicyLabels {
            policy: policy.unwrap_or(NO_POLICY).to_string(),
        };
        self.uploaded_files.get_or_create(&labels).inc_by(files);
        self.uploaded_bytes.get_or_create(&labels).inc_by(bytes);
    }

    /// One Cryptshare REST call. `endpoint` is a fixed name chosen by the client (e.g. `"token"`,
    /// `"create_session"`, `"upload"`); `status` is the HTTP status, None when no response came
    /// (connect error, timeout, TLS failure).
    pub fn cryptshare_call(&self, endpoint: &'static str, status: Option<u16>, elapsed: Duration) {
        let status = match status {
            Some(s) => s.to_string(),
            None => "error".to_string(),
        };
        self.cryptshare_calls
            .get_or_create(&CallLabels { endpoint, status })
            .observe(elapsed.as_secs_f64());
    }

    /// One hand-over to the next hop (connect to final reply), by the final reply code; None when
    /// the next hop could not be reached or broke off.
    pub fn next_hop(&self, reply_code: Option<u16>, elapsed: Duration) {
        let result = match reply_code {
            Some(200..=299) => "2xx",
            Some(400..=499) => "4xx",
            Some(500..=599) => "5xx",
            _ => "error",
        };
        self.next_hop
            .get_or_create(&NextHopLabels { result })
            .observe(elapsed.as_secs_f64());
    }

    pub fn tls_handshake(&self, side: TlsSide, ok: bool) {
        self.tls_handshakes
            .get_or_create(&TlsLabels {
                side: side.label(),
                result: if ok { "ok" } else { "failed" },
            })
            .inc();
    }

    /// A SIGHUP reload finished; `ok = false` means the new configuration was refused and the old
    /// one stays in force.
    pub fn config_reload(&self, ok: bool) {
        self.config_reloads
            .get_or_create(&ResultLabels {
                result: if ok { "ok" } else { "failed" },
            })
            .inc();
        if ok {
            self.config_last_reload.set(unix_seconds());
        }
    }

    /// Render the registry.
    pub fn encode(&self, format: Format) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail; the encoders only propagate the writer's errors.
        let _ = match format {
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            }
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut out, &self.registry)
            }
        };
        out
    }
}

/// Keeps `csgw_connections_active` raised while a session lives.
#[derive(Debug)]
pub struct ConnectionGuard {
    metrics: Arc<Metrics>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.metrics.connections_active.dec();
    }
}

/// Keeps `csgw_transactions_active` raised until the transaction has a final reply.
#[derive(Debug)]
pub struct TransactionGuard {
    metrics: Arc<Metrics>,
    done: bool,
}

impl TransactionGuard {
    pub fn finish(mut self, outcome: TxOutcome) {
        self.done = true;
        self.metrics.transaction(outcome);
    }
}

impl Drop for TransactionGuard {
    fn drop(&mut self) {
        self.metrics.transactions_active.dec();
        if !self.done {
            self.metrics.transaction(TxOutcome::Aborted);
        }
    }
}

/// A process-wide instance for code that has no handle passed in. Tests should build their own
/// [`Metrics::new`] so that parallel tests do not see each other's counts.
pub fn global() -> &'static Arc<Metrics> {
    static GLOBAL: OnceLock<Arc<Metrics>> = OnceLock::new();
    GLOBAL.get_or_init(|| Arc::new(Metrics::new()))
}
