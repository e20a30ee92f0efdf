//! sd_notify datagrams received on real Unix sockets (path and abstract), as systemd would.

use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::Duration;

use cryptshare_gateway::ops::notify::Notifier;

fn recv(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .expect("datagram within the read timeout");
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

fn listener(sock: UnixDatagram) -> UnixDatagram {
    // Only a guard against a hang: every message is sent before we read it.
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    sock
}

#[test]
fn lifecycle_messages_on_a_path_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = listener(UnixDatagram::bind(&path).unwrap());
    let n = Notifier::to_socket(path.to_str().unwrap(), None).unwrap();
    assert!(n.is_enabled());

    n.ready("listening on 127.0.0.1:2525").unwrap();
    assert_eq!(recv(&sock), "READY=1\nSTATUS=listening on 127.0.0.1:2525");

    n.reloading().unwrap();
    let msg = recv(&sock);
    let (first, second) = msg.split_once('\n').unwrap();
    assert_eq!(first, "RELOADING=1");
    let usec: u64 = second
        .strip_prefix("MONOTONIC_USEC=")
        .unwrap()
        .parse()
        .unwrap();
    assert!(usec > 0);

    // A status with a newline must not smuggle in a second assignment.
    n.status("reload failed\nREADY=1").unwrap();
    assert_eq!(recv(&sock), "STATUS=reload failed READY=1");

    n.stopping().unwrap();
    assert_eq!(recv(&sock), "STOPPING=1");

    n.watchdog().unwrap();
    assert_eq!(recv(&sock), "WATCHDOG=1");
}

#[test]
fn abstract_socket_names_start_with_at() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!(
        "csgw-test-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    );
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let sock = listener(UnixDatagram::bind_addr(&addr).unwrap());
    let n = Notifier::to_socket(&format!("@{name}"), None).unwrap();
    n.ready("ok").unwrap();
    assert_eq!(recv(&sock), "READY=1\nSTATUS=ok");
}

#[test]
fn disabled_notifier_is_a_no_op() {
    let n = Notifier::disabled();
    assert!(!n.is_enabled());
    n.ready("x").unwrap();
    n.stopping().unwrap();
    assert!(Arc::new(n).spawn_watchdog().is_none());
}

#[test]
fn missing_socket_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let n = Notifier::to_socket(dir.path().join("absent").to_str().unwrap(), None).unwrap();
    assert!(n.ready("x").is_err());
}

#[tokio::test]
async fn watchdog_task_pings_repeatedly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wd.sock");
    let sock = listener(UnixDatagram::bind(&path).unwrap());
    let n = Arc::new(
        Notifier::to_socket(path.to_str().unwrap(), Some(Duration::from_millis(20))).unwrap(),
    );
    assert_eq!(n.watchdog_timeout(), Some(Duration::from_millis(20)));
    let task = n.spawn_watchdog().expect("watchdog requested");
    let got = tokio::task::spawn_blocking(move || [recv(&sock), recv(&sock), recv(&sock)])
        .await
        .unwrap();
    task.abort();
    assert_eq!(got, ["WATCHDOG=1", "WATCHDOG=1", "WATCHDOG=1"]);
}

#[test]
fn reload_sequence_reports_to_systemd_and_metrics() {
    use cryptshare_gateway::ops::metrics::Format;
    use cryptshare_gateway::ops::{self, Metrics};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reload.sock");
    let sock = listener(UnixDatagram::bind(&path).unwrap());
    let n = Notifier::to_socket(path.to_str().unwrap(), None).unwrap();
    let metrics = Metrics::new();

    let ok: Option<u32> = ops::reload(&n, &metrics, || Ok::<_, String>(7));
    assert_eq!(ok, Some(7));
    assert!(recv(&sock).starts_with("RELOADING=1\nMONOTONIC_USEC="));
    assert_eq!(recv(&sock), "READY=1\nSTATUS=configuration reloaded");

    let refused: Option<u32> = ops::reload(&n, &metrics, || {
        Err("server.listen[0]: \"x\" is not an IP:port")
    });
    assert_eq!(refused, None);
    assert!(recv(&sock).starts_with("RELOADING=1\n"));
    assert_eq!(
        recv(&sock),
        "READY=1\nSTATUS=configuration reload refused: server.listen[0]: \"x\" is not an IP:port"
    );

    let text = metrics.encode(Format::Prometheus);
    assert!(
        text.contains("csgw_config_reloads_total{result=\"ok\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("csgw_config_reloads_total{result=\"failed\"} 1\n"),
        "{text}"
    );
}
