//! The ops HTTP endpoint over a real socket: `/metrics` parsed by the reference Python
//! Prometheus/OpenMetrics parsers (`pip install prometheus-client`), `/healthz`, `/readyz`.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cryptshare_gateway::ops::http::{self, Component, HttpError, Readiness};
use cryptshare_gateway::ops::metrics::{MessageResult, Metrics, TlsSide, TxOutcome};
use support::process::python;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A deliberately dumb HTTP/1.1 client so the bytes on the wire are what we assert.
async fn get(addr: SocketAddr, path: &str, extra_headers: &str) -> HttpResponse {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: test\r\n{extra_headers}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v == "chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

type Samples = BTreeMap<String, f64>;

/// Parse with the Python reference parser; returns family name → type and
/// `name{k="v",…}` (labels sorted) → value.
fn parse_with_python(text: &str, openmetrics: bool) -> (BTreeMap<String, String>, Samples) {
    let module = if openmetrics {
        "prometheus_client.openmetrics.parser"
    } else {
        "prometheus_client.parser"
    };
    let script = format!(
        r#"
import json, sys
from {module} import text_string_to_metric_families
fams = {{}}
samples = {{}}
for f in text_string_to_metric_families(sys.stdin.read()):
    fams[f.name] = f.type
    for s in f.samples:
        labels = ",".join('%s="%s"' % (k, v) for k, v in sorted(s.labels.items()))
        samples["%s{{%s}}" % (s.name, labels)] = s.value
print(json.dumps({{"families": fams, "samples": samples}}))
"#
    );
    let out = python(
        &script,
        &[],
        text.as_bytes(),
        "pip install prometheus-client",
    );
    assert!(
        out.status.success(),
        "parser rejected the exposition: {}\n---\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let fams = v["families"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, t)| (k.clone(), t.as_str().unwrap().to_string()))
        .collect();
    let samples = v["samples"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, x)| (k.clone(), x.as_f64().unwrap()))
        .collect();
    (fams, samples)
}

async fn start(
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
) -> (http::HttpServer, oneshot::Sender<()>) {
    let (tx, rx) = oneshot::channel::<()>();
    let server = http::serve(
        "127.0.0.1:0".parse().unwrap(),
        metrics,
        readiness,
        async move {
            let _ = rx.await;
        },
    )
    .await
    .unwrap();
    (server, tx)
}

fn sample(s: &Samples, key: &str) -> f64 {
    *s.get(key)
        .unwrap_or_else(|| panic!("no sample {key}; have {:#?}", s.keys()))
}

#[tokio::test]
async fn metrics_parse_and_counters_move() {
    let metrics = Arc::new(Metrics::new());
    metrics.init_policies(["example.org"]);
    let (server, stop) = start(metrics.clone(), Arc::new(Readiness::new())).await;

    let before = get(server.local_addr, "/metrics", "").await;
    assert_eq!(before.status, 200);
    assert_eq!(
        before.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let (fams, s0) = parse_with_python(&before.body, false);
    for (family, ty) in [
        ("csgw_connections_active", "gauge"),
        ("csgw_transactions", "counter"),
        ("csgw_transactions_active", "gauge"),
        ("csgw_messages", "counter"),
        ("csgw_uploaded_bytes", "counter"),
        ("csgw_uploaded_files", "counter"),
        ("csgw_next_hop_duration_seconds", "histogram"),
        ("csgw_tls_handshakes", "counter"),
        ("csgw_config_reloads", "counter"),
        ("csgw_config_last_reload_success_timestamp_seconds", "gauge"),
        ("csgw_start_time_seconds", "gauge"),
        ("csgw_build_info", "gauge"),
    ] {
        assert_eq!(fams.get(family).map(String::as_str), Some(ty), "{family}");
    }
    assert_eq!(sample(&s0, "csgw_connections_active{}"), 0.0);
    assert_eq!(
        sample(&s0, "csgw_transactions_total{outcome=\"accepted\"}"),
        0.0
    );
    assert_eq!(
        sample(
            &s0,
            "csgw_messages_total{policy=\"example.org\",result=\"converted\"}"
        ),
        0.0
    );
    // Open label sets (listener, endpoint/status) appear with their first event.
    assert!(!s0.keys().any(|k| k.starts_with("csgw_connections_total")));
    assert!(!fams.contains_key("csgw_cryptshare_request_duration_seconds"));
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        sample(&s0, &format!("csgw_build_info{{version=\"{version}\"}}")),
        1.0
    );

    // A converted message: TLS session, two Cryptshare calls, two files uploaded, relayed.
    let conn = metrics.connection_opened("127.0.0.1:2525");
    metrics.tls_handshake(TlsSide::Inbound, true);
    let tx = metrics.transaction_started();
    metrics.cryptshare_call("token", Some(200), Duration::from_millis(20));
    metrics.cryptshare_call("upload", Some(204), Duration::from_millis(1500));
    metrics.uploaded(Some("example.org"), 2, 31_457_280);
    metrics.next_hop(Some(250), Duration::from_millis(40));
    metrics.message(Some("example.org"), MessageResult::Converted);
    tx.finish(TxOutcome::from_reply_code(250));

    // A passed message (no policy) on the same connection, still in flight when scraped.
    let tx2 = metrics.transaction_started();
    metrics.next_hop(Some(250), Duration::from_millis(3));
    metrics.message(None, MessageResult::Passed);

    let mid = get(server.local_addr, "/metrics", "").await;
    let (fams1, s1) = parse_with_python(&mid.body, false);
    for (family, ty) in [
        ("csgw_connections", "counter"),
        ("csgw_cryptshare_request_duration_seconds", "histogram"),
    ] {
        assert_eq!(fams1.get(family).map(String::as_str), Some(ty), "{family}");
    }
    assert_eq!(sample(&s1, "csgw_connections_active{}"), 1.0);
    assert_eq!(sample(&s1, "csgw_transactions_active{}"), 1.0);
    assert_eq!(
        sample(&s1, "csgw_connections_total{listener=\"127.0.0.1:2525\"}"),
        1.0
    );
    assert_eq!(
        sample(&s1, "csgw_transactions_total{outcome=\"accepted\"}"),
        1.0
    );
    assert_eq!(
        sample(
            &s1,
            "csgw_messages_total{policy=\"example.org\",result=\"converted\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &s1,
            "csgw_messages_total{policy=\"none\",result=\"passed\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(&s1, "csgw_uploaded_bytes_total{policy=\"example.org\"}"),
        31_457_280.0
    );
    assert_eq!(
        sample(&s1, "csgw_uploaded_files_total{policy=\"example.org\"}"),
        2.0
    );
    assert_eq!(
        sample(
            &s1,
            "csgw_cryptshare_request_duration_seconds_count{endpoint=\"upload\",status=\"204\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &s1,
            "csgw_cryptshare_request_duration_seconds_bucket{endpoint=\"upload\",le=\"1\",status=\"204\"}"
        ),
        0.0
    );
    assert_eq!(
        sample(
            &s1,
            "csgw_cryptshare_request_duration_seconds_bucket{endpoint=\"upload\",le=\"2.5\",status=\"204\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(&s1, "csgw_next_hop_duration_seconds_count{result=\"2xx\"}"),
        2.0
    );
    assert_eq!(
        sample(
            &s1,
            "csgw_tls_handshakes_total{result=\"ok\",side=\"inbound\"}"
        ),
        1.0
    );

    // The in-flight transaction is cut off; a reload fails; the client disconnects.
    drop(tx2);
    metrics.config_reload(false);
    metrics.transaction(TxOutcome::from_reply_code(451));
    drop(conn);

    let after = get(server.local_addr, "/metrics", "").await;
    let (_, s2) = parse_with_python(&after.body, false);
    assert_eq!(sample(&s2, "csgw_connections_active{}"), 0.0);
    assert_eq!(sample(&s2, "csgw_transactions_active{}"), 0.0);
    assert_eq!(
        sample(&s2, "csgw_transactions_total{outcome=\"aborted\"}"),
        1.0
    );
    assert_eq!(
        sample(&s2, "csgw_transactions_total{outcome=\"tempfail\"}"),
        1.0
    );
    assert_eq!(
        sample(&s2, "csgw_config_reloads_total{result=\"failed\"}"),
        1.0
    );

    stop.send(()).unwrap();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn openmetrics_is_negotiated_and_strictly_valid() {
    let metrics = Arc::new(Metrics::new());
    metrics.cryptshare_call("finalize", None, Duration::from_millis(7));
    metrics.config_reload(true);
    let (server, _stop) = start(metrics, Arc::new(Readiness::new())).await;
    let r = get(
        server.local_addr,
        "/metrics",
        "Accept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(r.body.ends_with("# EOF\n"), "{}", r.body);
    let (fams, s) = parse_with_python(&r.body, true);
    assert_eq!(fams.get("csgw_build").map(String::as_str), Some("info"));
    assert_eq!(
        sample(
            &s,
            "csgw_cryptshare_request_duration_seconds_count{endpoint=\"finalize\",status=\"error\"}"
        ),
        1.0
    );
    assert_eq!(sample(&s, "csgw_config_reloads_total{result=\"ok\"}"), 1.0);
}

#[tokio::test]
async fn healthz_readyz_and_unknown_paths() {
    let readiness = Arc::new(Readiness::new());
    let (server, stop) = start(Arc::new(Metrics::new()), readiness.clone()).await;
    let addr = server.local_addr;

    let h = get(addr, "/healthz", "").await;
    assert_eq!((h.status, h.body.as_str()), (200, "ok\n"));

    let r = get(addr, "/readyz", "").await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.body,
        "not ready: listeners: not checked yet; next hop: not checked yet; cryptshare: not checked yet\n"
    );

    readiness.set(Component::Listeners, Ok(()));
    readiness.set(Component::Cryptshare, Ok(()));
    readiness.set(
        Component::NextHop,
        Err("127.0.0.1:10026: Connection refused".into()),
    );
    let r = get(addr, "/readyz", "").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            503,
            "not ready: next hop: 127.0.0.1:10026: Connection refused\n"
        )
    );

    readiness.set(Component::NextHop, Ok(()));
    let r = get(addr, "/readyz", "").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ready\n"));

    readiness.set_draining();
    let r = get(addr, "/readyz", "").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (503, "not ready: shutting down\n")
    );

    let n = get(addr, "/nope", "").await;
    assert_eq!(n.status, 404);

    stop.send(()).unwrap();
    // The server task ends once the shutdown future resolves.
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn bind_conflict_is_reported_with_the_key() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let err = http::serve(
        addr,
        Arc::new(Metrics::new()),
        Arc::new(Readiness::new()),
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, HttpError::Bind { .. }));
    assert!(
        err.to_string()
            .starts_with(&format!("metrics.listen: cannot listen on {addr}: ")),
        "{err}"
    );
}

/// A port that refuses connections for as long as the socket lives: bound (so no parallel test
/// can take it) but never listening.
fn refusing_port() -> (tokio::net::TcpSocket, u16) {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = s.local_addr().unwrap().port();
    (s, port)
}

// The next-hop probe (an SMTP conversation) and the probe task: tests/ops_probe.rs.

#[tokio::test]
async fn cryptshare_probe() {
    let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = up.local_addr().unwrap().port();
    let t = Duration::from_secs(5);
    assert_eq!(http::probe_cryptshare("embedded", t).await, Ok(()));
    assert_eq!(
        http::probe_cryptshare(&format!("http://127.0.0.1:{port}/"), t).await,
        Ok(())
    );
    let (_reserved, port) = refusing_port();
    let err = http::probe_cryptshare(&format!("https://127.0.0.1:{port}"), t)
        .await
        .unwrap_err();
    assert!(err.starts_with(&format!("127.0.0.1:{port}: ")), "{err}");
    assert!(http::probe_cryptshare("not a url", t).await.is_err());
}
