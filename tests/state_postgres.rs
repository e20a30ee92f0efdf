//! Issue 15, scale-out: real `cryptshare-gateway serve` processes on one PostgreSQL state store
//! (`[state] backend = "postgres"`), the in-test Cryptshare emulator and next hops on loopback.
//!
//! - three nodes start at once (the migrations run once, under the advisory lock); a message
//!   whose next hop fails on node 1 is retried on node 2: one transfer, one delivery;
//! - two nodes receive the same message at once: one transfer;
//! - the node converting a message is SIGKILLed in the middle of its upload (held by the
//!   emulator's latency switch); the retry on another node waits for the dead node's lease to
//!   run out and continues the session: one transfer;
//! - a dead node's session that no retry continues is deleted by another node after the lease;
//! - per-recipient copies: a copy delivered by node 1 is not sent again by node 2's retry;
//! - PostgreSQL stopped: `451 4.3.0` for a message to convert, `/readyz` 503; started again:
//!   `/readyz` 200 and the message is accepted;
//! - a node started while PostgreSQL is down: it listens, `451 4.3.0`, `/readyz` 503 with the
//!   reason; the database back: it applies the migrations and accepts the message;
//! - PostgreSQL stopped while two spool-mode nodes deliver and take mail: `451` during the
//!   outage, every message delivered exactly once (the deliveries in flight record their end
//!   when it is back, within the lease), one transfer per converted message;
//! - TLS to PostgreSQL (`sslmode=require`) verified against `state.ca_file` (the server's
//!   connections are TLS 1.3), the password from `state.password_file`; without the CA the node
//!   is not ready (`UnknownIssuer`) and answers 451;
//! - spool mode on the shared queue: 100 messages queued across three nodes while the next hop
//!   refuses, one node SIGKILLed, the next hop back: the other two deliver every message exactly
//!   once (the dead node's too, after its leases ran out), one transfer per converted message;
//!   the `queue` commands list, hold and release messages in the database.
//!
//! The database comes from `scripts/test-postgres.sh` (a private cluster: `CSG_TEST_PG_URL`,
//! `CSG_TEST_PG_CTL`); without it these tests fail, they never skip. Each test has its own
//! database. The test that stops the server takes [`CLUSTER`] exclusively.

mod pipeline_support;
#[path = "pipeline_support/process.rs"]
mod process;
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cryptshare_gateway::replies::Reply;
use cryptshare_gateway::sim::{Endpoint, FaultSpec};
use cryptshare_gateway_testkit::sink::{Script, Sink};
use pipeline_support::*;
use process::{Gw, LIMIT, spawn_gateway, try_send};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn queue_command(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cryptshare-gateway"))
        .arg("queue")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Shared by the tests that only use the cluster; exclusive for the one that stops it.
static CLUSTER: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Short, so that a dead node's claim runs out quickly.
const LEASE: &str = "2s";

fn admin_url() -> String {
    std::env::var("CSG_TEST_PG_URL").unwrap_or_else(|_| {
        panic!(
            "CSG_TEST_PG_URL is not set: run these tests under scripts/test-postgres.sh \
             (e.g. `scripts/test-postgres.sh cargo test --test state_postgres`), which starts \
             a private PostgreSQL cluster"
        )
    })
}

fn pg_ctl(action: &str) {
    let ctl = std::env::var("CSG_TEST_PG_CTL")
        .expect("CSG_TEST_PG_CTL is not set: run under scripts/test-postgres.sh");
    let st = std::process::Command::new(ctl)
        .arg(action)
        .status()
        .unwrap();
    assert!(st.success(), "pg_ctl {action}: {st}");
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL: {e}"));
    tokio::spawn(conn);
    client
}

/// A new, empty database on the test cluster; its URL.
async fn fresh_database() -> String {
    let admin = admin_url();
    let name = format!("csgw_{:016x}", rand::random::<u64>());
    connect(&admin)
        .await
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    assert!(admin.contains("/postgres?"), "{admin}");
    admin.replace("/postgres?", &format!("/{name}?"))
}

/// The same database over the cluster's Unix socket (`postgres://user:pw@%2Fdir:port/db`).
fn unix_socket_url(tcp: &str) -> String {
    let dir = std::env::var("CSG_TEST_PG_SOCKET")
        .expect("CSG_TEST_PG_SOCKET is not set: run under scripts/test-postgres.sh");
    let at = tcp.rfind("@127.0.0.1:").unwrap();
    let rest = &tcp[at + "@127.0.0.1".len()..];
    let rest = rest.replace("sslmode=disable", "sslmode=prefer");
    format!("{}@{}{rest}", &tcp[..at], dir.replace('/', "%2F"))
}

/// One node's configuration in its own directory (its own file state dir, unused, and audit).
fn node_config(root: &Path, n: usize, next_hop: SocketAddr, emu: SocketAddr, url: &str) -> PathBuf {
    node_config_with(root, n, next_hop, emu, url, "")
}

fn node_config_with(
    root: &Path,
    n: usize,
    next_hop: SocketAddr,
    emu: SocketAddr,
    url: &str,
    extra: &str,
) -> PathBuf {
    node_config_full(root, n, next_hop, emu, url, "", extra)
}

/// With `state` appended to the `[state]` table (its `lease` replaces [`LEASE`]) and `extra`
/// to the file.
fn node_config_full(
    root: &Path,
    n: usize,
    next_hop: SocketAddr,
    emu: SocketAddr,
    url: &str,
    state: &str,
    extra: &str,
) -> PathBuf {
    let lease = if state.contains("lease =") {
        String::new()
    } else {
        format!("lease = \"{LEASE}\"\n")
    };
    let dir = root.join(format!("node{n}"));
    std::fs::create_dir_all(&dir).unwrap();
    let text = config_text(
        &dir,
        &next_hop.to_string(),
        &format!("http://{emu}"),
        &policy("tempfail"),
    )
    .replace(
        "[state]\n",
        &format!("[state]\nbackend = \"postgres\"\nurl = \"{url}\"\npool_size = 4\n{lease}{state}"),
    );
    let (path, cfg) = write_config(&dir, &format!("{text}{extra}"));
    assert_eq!(
        cfg.state.backend,
        cryptshare_gateway::config::StateBackend::Postgres
    );
    path
}

fn message(seed: u64) -> Vec<u8> {
    let att = payload(64 * 1024, seed);
    mixed(
        HEADERS,
        "figures attached",
        &[(
            "Content-Type: application/pdf; name=\"q.pdf\"\r\nContent-Disposition: attachment; filename=\"q.pdf\"",
            &att,
        )],
    )
}

const OK: &str = "250 2.0.0 OK, relayed (Queued as SINK)\r\n";

async fn send_one(gw: &Gw, msg: &[u8]) -> Result<String, String> {
    tokio::time::timeout(
        LIMIT,
        try_send(gw.smtp, "alice@example.org", "bob@example.net", msg),
    )
    .await
    .expect("no reply within the limit")
}

/// Poll `f` until it holds, at most [`LIMIT`].
async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_and_a_retry_on_another_node_make_one_transfer_and_one_delivery() {
    let _shared = CLUSTER.read().await;
    let url = fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(dir.path().join("sim")).await;
    let failing = Sink::start(Script {
        data_reply: Reply::new(451, [4, 3, 0], "Next hop busy"),
        ..Script::default()
    })
    .await
    .unwrap();
    let good = Sink::start(Script::default()).await.unwrap();
    let configs = [
        node_config(dir.path(), 1, failing.addr(), emu.addr(), &url),
        node_config(dir.path(), 2, good.addr(), emu.addr(), &url),
        // Node 3 on the Unix socket.
        node_config(
            dir.path(),
            3,
            good.addr(),
            emu.addr(),
            &unix_socket_url(&url),
        ),
    ];
    // All three at once: the migrations must run once, the others waiting on the lock.
    let (n1, n2, n3) = tokio::join!(
        spawn_gateway(&configs[0]),
        spawn_gateway(&configs[1]),
        spawn_gateway(&configs[2])
    );
    let db = connect(&url).await;
    let versions: Vec<i32> = db
        .query(
            "SELECT version FROM csgw_schema_version ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [1, 2]);

    let msg = message(1);
    let first = send_one(&n1, &msg).await.unwrap();
    assert_eq!(first, "451 4.3.0 Next hop busy\r\n");
    assert_eq!(emu.transfers().len(), 1);
    let state: String = db
        .query_one("SELECT record->>'state' FROM csgw_transfers", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(state, "finished");

    // The upstream retries on another node: it reuses the transfer.
    assert_eq!(send_one(&n2, &msg).await.unwrap(), OK);
    let ts = emu.transfers();
    assert_eq!(ts.len(), 1, "{ts:?}");
    assert_eq!(emu.stats().sessions_created, 1);
    let got = good.messages();
    assert_eq!(got.len(), 1);
    assert!(String::from_utf8_lossy(&got[0].data).contains(&ts[0].tracking_id));
    assert!(failing.messages().is_empty());
    // Node 3 (Unix socket) sees the same record: a retry there is answered from it too.
    assert_eq!(send_one(&n3, &msg).await.unwrap(), OK);
    assert_eq!(emu.transfers().len(), 1);
    assert_eq!(good.messages().len(), 2);
    // show-config names the database with the password redacted.
    let password = url
        .split_once("csgw:")
        .unwrap()
        .1
        .split_once('@')
        .unwrap()
        .0;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cryptshare-gateway"))
        .args(["show-config", "--config"])
        .arg(&configs[0])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    let line = shown
        .lines()
        .find(|l| l.starts_with("state.url = "))
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(
        line.starts_with("state.url = \"postgres://csgw:[redacted]@127.0.0.1:"),
        "{line}"
    );
    assert!(!shown.contains(password), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_receiving_the_same_message_at_once_make_one_transfer() {
    let _shared = CLUSTER.read().await;
    let url = fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(dir.path().join("sim")).await;
    // The first upload takes a second: the two attempts overlap for sure.
    emu.inject_fault(
        FaultSpec {
            endpoint: Endpoint::Upload,
            ..FaultSpec::default()
        }
        .with_latency(Duration::from_secs(1))
        .times(1),
    );
    let sink = Sink::start(Script::default()).await.unwrap();
    let c1 = node_config(dir.path(), 1, sink.addr(), emu.addr(), &url);
    let c2 = node_config(dir.path(), 2, sink.addr(), emu.addr(), &url);
    let (a, b) = tokio::join!(spawn_gateway(&c1), spawn_gateway(&c2));
    let msg = message(2);
    let (ra, rb) = tokio::join!(send_one(&a, &msg), send_one(&b, &msg));
    assert_eq!(ra.unwrap(), OK);
    assert_eq!(rb.unwrap(), OK);
    let ts = emu.transfers();
    assert_eq!(ts.len(), 1, "{ts:?}");
    assert_eq!(emu.stats().sessions_created, 1);
    assert_eq!(emu.stats().faults_fired, 1);
    // Both attempts relayed the notice of that one transfer (each client got its 250).
    let got = sink.messages();
    assert_eq!(got.len(), 2);
    for m in &got {
        assert!(String::from_utf8_lossy(&m.data).contains(&ts[0].tracking_id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_converting_node_then_another_node_completes_after_the_lease() {
    let _shared = CLUSTER.read().await;
    let url = fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(dir.path().join("sim")).await;
    // The upload of node 1 is held by the emulator until long after the kill.
    emu.inject_fault(
        FaultSpec {
            endpoint: Endpoint::Upload,
            ..FaultSpec::default()
        }
        .with_latency(Duration::from_secs(60))
        .times(1),
    );
    let sink = Sink::start(Script::default()).await.unwrap();
    let c1 = node_config(dir.path(), 1, sink.addr(), emu.addr(), &url);
    let c2 = node_config(dir.path(), 2, sink.addr(), emu.addr(), &url);
    let (mut n1, n2) = tokio::join!(spawn_gateway(&c1), spawn_gateway(&c2));
    let msg = message(3);
    let first = {
        let (addr, msg) = (n1.smtp, msg.clone());
        tokio::spawn(
            async move { try_send(addr, "alice@example.org", "bob@example.net", &msg).await },
        )
    };
    // Mid-conversion: the session exists and its upload is being held.
    until("the upload reached the emulator", async || {
        emu.stats().faults_fired == 1
    })
    .await;
    assert_eq!(emu.open_sessions(), 1);
    let db = connect(&url).await;
    let row = db
        .query_one(
            "SELECT record->>'state', lease_owner IS NOT NULL AND locked_until > now() \
             FROM csgw_transfers",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "pending");
    assert!(row.get::<_, bool>(1), "node 1 holds the lease");
    n1.child.kill().await.unwrap();
    assert!(first.await.unwrap().is_err(), "the killed node answered");

    // The upstream's retry on node 2 waits for the lease and continues the session.
    assert_eq!(send_one(&n2, &msg).await.unwrap(), OK);
    let ts = emu.transfers();
    assert_eq!(ts.len(), 1, "{ts:?}");
    let stats = emu.stats();
    assert_eq!(stats.sessions_created, 1, "the retry continued the session");
    assert_eq!(stats.sessions_deleted, 0);
    assert_eq!(emu.open_sessions(), 0);
    let got = sink.messages();
    assert_eq!(got.len(), 1);
    assert!(String::from_utf8_lossy(&got[0].data).contains(&ts[0].tracking_id));
    let state: String = db
        .query_one("SELECT record->>'state' FROM csgw_transfers", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(state, "finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pending_session_of_a_dead_node_is_cleaned_up_by_another_after_the_lease() {
    let _shared = CLUSTER.read().await;
    let url = fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(dir.path().join("sim")).await;
    emu.inject_fault(
        FaultSpec {
            endpoint: Endpoint::Upload,
            ..FaultSpec::default()
        }
        .with_latency(Duration::from_secs(60))
        .times(1),
    );
    let sink = Sink::start(Script::default()).await.unwrap();
    let mut n1 = spawn_gateway(&node_config(dir.path(), 1, sink.addr(), emu.addr(), &url)).await;
    let first = {
        let (addr, msg) = (n1.smtp, message(6));
        tokio::spawn(
            async move { try_send(addr, "alice@example.org", "bob@example.net", &msg).await },
        )
    };
    until("the upload reached the emulator", async || {
        emu.stats().faults_fired == 1
    })
    .await;
    n1.child.kill().await.unwrap();
    assert!(first.await.unwrap().is_err());
    // Its token as good as expired: the session cannot be continued by a retry any more.
    let db = connect(&url).await;
    let n = db
        .execute(
            "UPDATE csgw_transfers SET record = jsonb_set(record, '{session,token_valid_until}', '0') \
             WHERE record->>'state' = 'pending'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    // No retry comes; node 2 (started after the crash) sweeps once node 1's lease ran out.
    let _n2 = spawn_gateway(&node_config(dir.path(), 2, sink.addr(), emu.addr(), &url)).await;
    until("the dead node's session deleted", async || {
        emu.stats().sessions_deleted == 1
    })
    .await;
    until("its record removed", async || {
        db.query_one("SELECT count(*) FROM csgw_transfers", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
            == 0
    })
    .await;
    assert_eq!(emu.open_sessions(), 0);
    assert!(emu.transfers().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_recipient_copies_delivered_by_one_node_are_not_sent_again_by_another() {
    let _shared = CLUSTER.read().await;
    let url = fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(dir.path().join("sim")).await;
    let sink = Sink::start(Script::default()).await.unwrap();
    sink.script(|s| {
        s.data_replies_once.insert(
            "carol@example.net".into(),
            Reply::new(451, [4, 3, 0], "Mailbox busy, try later"),
        );
    });
    // Appended to the [[policy]] table, the last one of the file.
    let links = "links = \"per-recipient\"\n";
    let c1 = node_config_with(dir.path(), 1, sink.addr(), emu.addr(), &url, links);
    let c2 = node_config_with(dir.path(), 2, sink.addr(), emu.addr(), &url, links);
    let (n1, n2) = tokio::join!(spawn_gateway(&c1), spawn_gateway(&c2));
    let rcpts = ["bob@example.net", "carol@example.net", "dave@example.com"];
    let msg = message(5);
    assert_eq!(
        send(n1.smtp, "alice@example.org", &rcpts, &msg).await,
        "451 4.3.0 Mailbox busy, try later\r\n"
    );
    assert_eq!(sink.messages().len(), 2);
    let db = connect(&url).await;
    let delivered: Vec<String> = db
        .query(
            "SELECT recipient FROM csgw_delivered ORDER BY recipient",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(delivered, ["bob@example.net", "dave@example.com"]);

    // The retry on node 2 sends carol's copy only, from the same transfer.
    assert_eq!(send(n2.smtp, "alice@example.org", &rcpts, &msg).await, OK);
    let got = sink.messages();
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[2].rcpt_to, ["RCPT TO:<carol@example.net>"]);
    assert_eq!(emu.transfers().len(), 1);
    assert_eq!(emu.stats().sessions_created, 1);
    let n: i64 = db
        .query_one("SELECT count(*) FROM csgw_delivered", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
}

/// A free loopback address for a node's `[metrics]` endpoint, and the `[metrics]` table that
/// puts it there (no background probes).
fn metrics_endpoint() -> (SocketAddr, String) {
    let m = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    (
        m,
        format!("[metrics]\nlisten = \"{m}\"\nprobe_interval = 0\n"),
    )
}

/// `GET /readyz`: the status code (0 before the endpoint listens: it starts after SMTP).
async fn readyz(addr: SocketAddr) -> u16 {
    readyz_page(addr).await.0
}

/// `GET /readyz`: the status code and the body (the reasons it is not ready).
async fn readyz_page(addr: SocketAddr) -> (u16, String) {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    s.write_all(b"GET /readyz HTTP/1.0\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let page = String::from_utf8_lossy(&out);
    let body = page.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (page[9..12].parse().unwrap(), body.to_string())
}

/// What the database-outage tests start with: a fresh database, the emulator, a sink, and the
/// configuration of node 1 with `/readyz` and `/metrics` (the gateway itself is the test's).
struct OneNode {
    url: String,
    emu: Emu,
    sink: Sink,
    metrics: SocketAddr,
    cfg: PathBuf,
    _dir: tempfile::TempDir,
}

async fn one_node() -> OneNode {
    let url = fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(dir.path().join("sim")).await;
    let sink = Sink::start(Script::default()).await.unwrap();
    let (metrics, extra) = metrics_endpoint();
    let cfg = node_config_with(dir.path(), 1, sink.addr(), emu.addr(), &url, &extra);
    OneNode {
        url,
        emu,
        sink,
        metrics,
        cfg,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_down_is_451_and_not_ready_then_back_accepted_again() {
    let _alone = CLUSTER.write().await;
    // `_dir` first: locals drop in reverse, so the directory goes after what lives in it.
    let OneNode {
        _dir,
        url: _,
        emu,
        sink,
        metrics,
        cfg,
    } = one_node().await;
    let gw = spawn_gateway(&cfg).await;
    until("ready", async || readyz(metrics).await == 200).await;

    pg_ctl("stop");
    let down = send_one(&gw, &message(4)).await;
    until("not ready while the database is down", async || {
        readyz(metrics).await == 503
    })
    .await;
    // The metrics say so too, and count the failed operation.
    let text = metrics_text(metrics).await;
    assert!(text.contains("\ncsgw_state_db_up 0\n"), "{text}");
    assert!(
        text.lines().any(
            |l| l.starts_with("csgw_state_db_operation_errors_total{op=") && !l.ends_with(" 0")
        ),
        "{text}"
    );
    pg_ctl("start");
    let down = down.unwrap();
    assert!(
        down.starts_with("451 4.3.0 Local error, try again later (state"),
        "{down}"
    );
    assert!(emu.transfers().is_empty());
    assert!(sink.messages().is_empty());

    until("ready again", async || readyz(metrics).await == 200).await;
    assert_eq!(send_one(&gw, &message(4)).await.unwrap(), OK);
    assert_eq!(emu.transfers().len(), 1);
    assert_eq!(sink.messages().len(), 1);
    let text = metrics_text(metrics).await;
    assert!(text.contains("\ncsgw_state_db_up 1\n"), "{text}");
    assert!(
        text.contains("\ncsgw_state_db_pool_max_connections 4\n"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l
            .starts_with("csgw_state_db_operation_duration_seconds_count{op=\"put\"}")
            && !l.ends_with(" 0")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_while_the_database_is_down_answers_451_then_takes_mail_when_it_is_back() {
    let _alone = CLUSTER.write().await;
    // A new database: the node applies the migrations only once it reaches the server.
    // `_dir` first: locals drop in reverse, so the directory goes after what lives in it.
    let OneNode {
        _dir,
        url,
        emu,
        sink,
        metrics,
        cfg,
    } = one_node().await;

    pg_ctl("stop");
    // It starts (a systemd restart during an outage, or a site booting before its database)...
    let gw = spawn_gateway(&cfg).await;
    until("the endpoint listens", async || readyz(metrics).await != 0).await;
    let (code, body) = readyz_page(metrics).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("state store"), "{body}");
    assert!(body.contains("Connection refused"), "{body}");
    // ... and takes no mail it could not record.
    let down = send_one(&gw, &message(5)).await.unwrap();
    assert!(
        down.starts_with("451 4.3.0 Local error, try again later (state"),
        "{down}"
    );
    pg_ctl("start");

    until("ready once the database answers", async || {
        readyz(metrics).await == 200
    })
    .await;
    let c = connect(&url).await;
    let version: i32 = c
        .query_one("SELECT max(version) FROM csgw_schema_version", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, 2);
    assert_eq!(send_one(&gw, &message(5)).await.unwrap(), OK);
    assert_eq!(emu.transfers().len(), 1);
    assert_eq!(sink.messages().len(), 1);
}

/// The password in a test URL (`postgres://csgw:PASSWORD@…`).
fn password_of(url: &str) -> String {
    let rest = &url["postgres://csgw:".len()..];
    rest[..rest.find('@').unwrap()].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_database_is_verified_against_state_ca_file_and_the_password_comes_from_a_file()
{
    let _shared = CLUSTER.read().await;
    let url = fresh_database().await;
    let ca = std::env::var("CSG_TEST_PG_CA")
        .expect("CSG_TEST_PG_CA is not set: run under scripts/test-postgres.sh");
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(dir.path().join("sim")).await;
    let sink = Sink::start(Script::default()).await.unwrap();
    // TLS required, the password not in the URL but in a file.
    let password = password_of(&url);
    let pw_file = dir.path().join("pg-password");
    std::fs::write(&pw_file, format!("{password}\n")).unwrap();
    let tls_url = url
        .replace(&format!(":{password}@"), "@")
        .replace("sslmode=disable", "sslmode=require");
    let pw = format!("password_file = \"{}\"\n", pw_file.display());
    let (m1, x1) = metrics_endpoint();
    let cfg1 = node_config_full(
        dir.path(),
        1,
        sink.addr(),
        emu.addr(),
        &tls_url,
        &format!("{pw}ca_file = \"{ca}\"\n"),
        &x1,
    );
    let gw1 = spawn_gateway(&cfg1).await;
    until("node 1 ready over TLS", async || readyz(m1).await == 200).await;
    assert_eq!(send_one(&gw1, &message(6)).await.unwrap(), OK);
    assert_eq!(emu.transfers().len(), 1);
    // The server says the gateway's connections are TLS.
    let c = connect(&url).await;
    let rows = c
        .query(
            "SELECT s.ssl, s.version FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'cryptshare-gateway' AND a.datname = current_database()",
            &[],
        )
        .await
        .unwrap();
    assert!(!rows.is_empty());
    for r in &rows {
        assert!(r.get::<_, bool>(0), "a gateway connection without TLS");
        assert_eq!(r.get::<_, Option<String>>(1).as_deref(), Some("TLSv1.3"));
    }

    // Without the CA the server's certificate is not trusted (rustls always verifies, whatever
    // the sslmode): the node starts, is not ready, says why, and takes no mail.
    let (m2, x2) = metrics_endpoint();
    let cfg2 = node_config_full(dir.path(), 2, sink.addr(), emu.addr(), &tls_url, &pw, &x2);
    let gw2 = spawn_gateway(&cfg2).await;
    until("node 2's endpoint listens", async || readyz(m2).await != 0).await;
    let (code, body) = readyz_page(m2).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("UnknownIssuer"), "{body}");
    assert!(
        !body.contains(&password),
        "the password is on /readyz: {body}"
    );
    let refused = send_one(&gw2, &message(7)).await.unwrap();
    assert!(
        refused.starts_with("451 4.3.0 Local error, try again later (state"),
        "{refused}"
    );
    assert_eq!(emu.transfers().len(), 1);
}

async fn metrics_text(addr: SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Message `n` of the spool test: every fourth one with a 64 KB attachment (converted), the
/// others a few KB of text.
fn spool_message(n: usize) -> Vec<u8> {
    let headers = format!(
        "From: Alice Example <alice@example.org>\r\nTo: bob@example.net\r\n\
         Subject: shared queue {n}\r\nMessage-ID: <shared-queue-{n}@example.org>\r\n\
         Date: Mon, 02 Mar 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
    );
    if n.is_multiple_of(4) {
        let name = format!("shared-{n:03}.bin");
        mixed(
            &headers,
            &format!("message {n}"),
            &[(
                &format!(
                    "Content-Type: application/octet-stream; name=\"{name}\"\r\n\
                     Content-Disposition: attachment; filename=\"{name}\""
                ),
                &payload(64 * 1024, n as u64 + 11),
            )],
        )
    } else {
        let body = base64_lines(&payload(1024 + (n % 7) * 512, n as u64));
        format!("{headers}Content-Type: text/plain\r\n\r\n{body}").into_bytes()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_mode_on_the_shared_queue_a_dead_nodes_messages_are_delivered_once_by_the_others() {
    const MESSAGES: usize = 100;
    let _shared = CLUSTER.read().await;
    let url = fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(dir.path().join("sim")).await;
    // The next hop refuses every sender at first: everything waits in the queue.
    let sink = Sink::start(Script {
        mail_reply: Reply::new(451, [4, 3, 0], "Try again later"),
        ..Script::default()
    })
    .await
    .unwrap();
    let spool = "[queue]\nmode = \"spool\"\nmin_backoff = \"1s\"\nmax_backoff = \"1s\"\n\
                 concurrency = 4\nmin_free_space = 0\n";
    let configs: Vec<PathBuf> = (1..=3)
        .map(|n| node_config_with(dir.path(), n, sink.addr(), emu.addr(), &url, spool))
        .collect();
    let (n1, n2, n3) = tokio::join!(
        spawn_gateway(&configs[0]),
        spawn_gateway(&configs[1]),
        spawn_gateway(&configs[2])
    );
    let mut nodes = [n1, n2, n3];
    // Round robin over the nodes, four clients at a time.
    let mut ids = std::collections::HashMap::new();
    for batch in (0..MESSAGES).collect::<Vec<_>>().chunks(4) {
        let sends = batch.iter().map(|&n| {
            let addr = nodes[n % 3].smtp;
            async move {
                let r = try_send(
                    addr,
                    "alice@example.org",
                    "bob@example.net",
                    &spool_message(n),
                )
                .await;
                (n, r)
            }
        });
        for (n, r) in futures_util::future::join_all(sends).await {
            let reply = r.unwrap();
            let id = reply
                .strip_prefix("250 2.0.0 queued as ")
                .and_then(|r| r.strip_suffix("\r\n"))
                .unwrap_or_else(|| panic!("message {n}: {reply:?}"))
                .to_string();
            ids.insert(n, id);
        }
    }
    let db = connect(&url).await;
    let by_node: Vec<i64> = db
        .query(
            "SELECT count(*) FROM csgw_queue GROUP BY queued_by ORDER BY queued_by",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(by_node.len(), 3, "queued by every node: {by_node:?}");
    assert_eq!(by_node.iter().sum::<i64>(), MESSAGES as i64);
    // Nothing got through, nothing was converted yet (the refusal comes before the data).
    until("every node tried", async || {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM csgw_queue WHERE (envelope->>'attempts')::int > 0",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        n == MESSAGES as i64
    })
    .await;
    assert!(sink.messages().is_empty());
    assert!(emu.transfers().is_empty());

    // The queue commands see the shared queue: list, and hold one message of node 1.
    let (code, out, err) = queue_command(&configs[1], &["list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), MESSAGES, "{out}");
    let held = ids[&3].clone();
    let (code, out, err) = loop {
        // Busy while a node's attempt holds it; the next try comes after that attempt.
        let r = queue_command(&configs[2], &["hold", &held]);
        if r.0 != 1 || !r.2.contains("being delivered") {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (code, out.as_str()),
        (0, format!("{held}: held\n").as_str()),
        "{err}"
    );

    // `find` reads the shared queue: a message node 1 queued, found through node 2's config.
    let (code, out, err) = find_command(&configs[1], &["--queue-id", &ids[&6], "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["queue"][0]["queue_id"], ids[&6].as_str(), "{out}");
    assert_eq!(v["queue"][0]["place"], "active");
    assert_eq!(
        v["queue"][0]["reason"], "451 4.3.0 Try again later",
        "{out}"
    );

    // Node 1 dies with its messages in the queue (some of them leased by its attempts).
    nodes[0].child.kill().await.unwrap();
    let ok = Script::default().mail_reply;
    sink.script(|s| s.mail_reply = ok);
    let want = MESSAGES - 1;
    until("every message but the held one delivered", async || {
        sink.messages().len() >= want
    })
    .await;
    let (code, out, err) = queue_command(&configs[1], &["release", &held]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("{held}: released, next attempt now\n"));
    until("the queue is empty", async || {
        let n: i64 = db
            .query_one("SELECT count(*) FROM csgw_queue", &[])
            .await
            .unwrap()
            .get(0);
        n == 0
    })
    .await;
    let got = sink.messages();
    let mut seen = std::collections::HashMap::<usize, usize>::new();
    for m in &got {
        let text = String::from_utf8_lossy(&m.data);
        let n: usize = text
            .split("Subject: shared queue ")
            .nth(1)
            .and_then(|t| t.split("\r\n").next())
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("no subject in {text}"));
        *seen.entry(n).or_default() += 1;
        if n.is_multiple_of(4) {
            assert!(
                text.contains("moved to a secure Cryptshare transfer"),
                "message {n} not converted"
            );
        }
    }
    for n in 0..MESSAGES {
        assert_eq!(seen.get(&n), Some(&1), "message {n} (queue id {})", ids[&n]);
    }
    assert_eq!(got.len(), MESSAGES);
    let transfers = emu.transfers();
    assert_eq!(transfers.len(), MESSAGES.div_ceil(4));
    assert_eq!(emu.open_sessions(), 0);
    // `find` reads the records in the database too.
    let tracking = transfers[0].tracking_id.as_str();
    let (code, out, err) = find_command(&configs[2], &["--tracking-id", tracking, "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["state"][0]["tracking_id"], tracking, "{out}");
    assert_eq!(v["state"][0]["state"], "finished");
    assert!(
        v["state"][0]["file"]
            .as_str()
            .unwrap()
            .starts_with("postgres:csgw_transfers/"),
        "{out}"
    );
}

fn find_command(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cryptshare-gateway"))
        .arg("find")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The subject numbers of the messages the sink received (`Subject: shared queue N`).
fn delivered_numbers(sink: &Sink) -> std::collections::HashMap<usize, usize> {
    let mut seen = std::collections::HashMap::<usize, usize>::new();
    for m in &sink.messages() {
        let text = String::from_utf8_lossy(&m.data);
        let n: usize = text
            .split("Subject: shared queue ")
            .nth(1)
            .and_then(|t| t.split("\r\n").next())
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("no subject in {text}"));
        *seen.entry(n).or_default() += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_run_in_spool_mode_loses_nothing_and_answers_4xx_while_down() {
    const BEFORE: usize = 24;
    const DURING: usize = 8;
    const AFTER: usize = 16;
    const CONCURRENCY: usize = 4;
    let _alone = CLUSTER.write().await;
    let url = fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(dir.path().join("sim")).await;
    // A next hop that takes a while for each message: deliveries are in flight when the
    // database goes away.
    let sink = Sink::start(Script {
        slow_data_end: Some(Duration::from_millis(300)),
        ..Script::default()
    })
    .await
    .unwrap();
    let spool = format!(
        "[queue]\nmode = \"spool\"\nmin_backoff = \"1s\"\nmax_backoff = \"1s\"\n\
         concurrency = {CONCURRENCY}\nmin_free_space = 0\n"
    );
    // No node dies here, so the lease can be as long as in production (30 s by default): what
    // matters is that it outlasts the outage, during which no node can renew it.
    let configs: Vec<PathBuf> = (1..=2)
        .map(|n| {
            let lease = "lease = \"10s\"\n";
            node_config_full(dir.path(), n, sink.addr(), emu.addr(), &url, lease, &spool)
        })
        .collect();
    let (n1, n2) = tokio::join!(spawn_gateway(&configs[0]), spawn_gateway(&configs[1]));
    let nodes = [n1, n2];
    let send = |n: usize| {
        let addr = nodes[n % 2].smtp;
        async move {
            let r = try_send(
                addr,
                "alice@example.org",
                "bob@example.net",
                &spool_message(n),
            )
            .await
            .unwrap_or_else(|e| panic!("message {n}: the connection died: {e}"));
            (n, r)
        }
    };
    let queued = |n: usize, r: &str| {
        assert!(r.starts_with("250 2.0.0 queued as "), "message {n}: {r:?}");
    };
    for batch in (0..BEFORE).collect::<Vec<_>>().chunks(4) {
        for (n, r) in futures_util::future::join_all(batch.iter().map(|&n| send(n))).await {
            queued(n, &r);
        }
    }
    // Some delivered, some on their way to the next hop, the rest waiting: the database dies.
    until("the first deliveries", async || !sink.messages().is_empty()).await;
    pg_ctl("stop");
    let stopped_with = sink.messages().len();
    // While it is down no message gets a 250: the queue is in the database.
    for (n, r) in futures_util::future::join_all((BEFORE..BEFORE + DURING).map(send)).await {
        assert!(
            r.starts_with("451 4.3.0 Local error, try again later"),
            "message {n} while the database is down: {r:?}"
        );
    }
    pg_ctl("start");
    // The upstream retries what got a 4xx, and sends more; a node takes mail again as soon as
    // its database answers (4xx until then).
    for batch in (BEFORE..BEFORE + DURING + AFTER)
        .collect::<Vec<_>>()
        .chunks(4)
    {
        for &n in batch {
            let mut tries = 0;
            loop {
                let (_, r) = send(n).await;
                if r.starts_with("250 ") {
                    queued(n, &r);
                    break;
                }
                assert!(r.starts_with("451 4.3.0 "), "message {n}: {r:?}");
                tries += 1;
                assert!(tries < 200, "message {n} never accepted: {r:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let total = BEFORE + DURING + AFTER;
    let db = connect(&url).await;
    until("the queue is empty", async || {
        let n: i64 = db
            .query_one("SELECT count(*) FROM csgw_queue", &[])
            .await
            .unwrap()
            .get(0);
        n == 0
    })
    .await;
    let seen = delivered_numbers(&sink);
    for n in 0..total {
        assert!(seen.contains_key(&n), "message {n} was lost");
    }
    // Exactly once: the deliveries in flight at the stop (their next hop said 250 while the
    // database was gone) record their end once it is back, within the lease, before any other
    // node may take them again.
    let twice: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        twice.is_empty(),
        "delivered more than once: {twice:?} ({stopped_with} delivered at the stop)"
    );
    let transfers = emu.transfers();
    assert_eq!(
        transfers.len(),
        total.div_ceil(4),
        "one transfer per converted message"
    );
    assert_eq!(emu.open_sessions(), 0);
}
