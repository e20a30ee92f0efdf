//! Configuration errors an operator can act on (issue 12, item 3): wrong types are refused, not
//! coerced; enum errors list the valid values; keys are written `policy[0].on_error`; the file
//! is named once, with the line; an error from a `CSGW__…` variable names the variable; policy
//! keys can be overridden from the environment; list items are trimmed. Exact messages.

use std::path::Path;

use cryptshare_gateway::config::{Config, NextHop, OnError};

fn write(dir: &Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("gateway.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// The error for `text` (and `env`), with the file's path replaced by `FILE`.
fn error(text: &str, env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), text);
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    let e = Config::load_with_env(&p, env).unwrap_err().to_string();
    e.replace(&p.display().to_string(), "FILE")
}

fn load(text: &str, env: &[(&str, &str)]) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), text);
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    Config::load_with_env(&p, env).unwrap()
}

const MIN: &str = "[server]\n[relay]\nnext_hop = \"127.0.0.1:10026\"\n";

fn policy(line: &str) -> String {
    format!("{MIN}[[policy]]\nname = \"p\"\nsenders = [\"*@example.org\"]\n{line}\n")
}

#[test]
fn wrong_types_are_refused_with_file_line_and_key() {
    for (line, want) in [
        (
            "notify_recipients = \"no\"",
            "FILE:7: policy[0].notify_recipients: expected true or false, found string \"no\"",
        ),
        (
            "notify_recipients = 1",
            "FILE:7: policy[0].notify_recipients: expected true or false, found integer 1",
        ),
        (
            "expiration_days = \"5\"",
            "FILE:7: policy[0].expiration_days: expected a whole number, found string \"5\"",
        ),
        (
            "threshold = 10485760.5",
            "FILE:7: policy[0].threshold: expected a whole number, found float 10485760.5",
        ),
        (
            "expiration_days = -1",
            "FILE:7: policy[0].expiration_days: -1 is out of range (0 to 4294967295)",
        ),
        (
            "internal_domains = \"example.org\"",
            "FILE:7: policy[0].internal_domains: expected a list, found string \"example.org\"",
        ),
        (
            "on_error = \"temp-fail\"",
            "FILE:7: policy[0].on_error: \"temp-fail\" is not one of tempfail, deliver-original, reject",
        ),
        (
            "password_mode = true",
            "FILE:7: policy[0].password_mode: expected one of generated, none, manual, found boolean true",
        ),
    ] {
        assert_eq!(error(&policy(line), &[]), want, "{line}");
    }
}

#[test]
fn unknown_keys_and_missing_keys_have_a_line() {
    assert_eq!(
        error(
            "[server]\nmax_mesage_size = 5\n[relay]\nnext_hop = \"a:1\"\n",
            &[]
        ),
        "FILE:2: server.max_mesage_size: unknown key (valid: listen, listen_tls, hostname, \
         greeting, max_message_size, max_recipients, client_networks, proxy_protocol, proxy_networks, max_connections, \
         max_connections_per_ip, outside_connections_percent, idle_timeout, command_timeout, \
         session_timeout, outside_session_timeout, max_errors, max_received_headers, max_line_length, \
         spool_memory_limit, shutdown_grace, tls, auth)"
    );
    assert_eq!(
        error("[server]\n[relay]\ntls = \"off\"\n", &[]),
        "FILE:2: relay.next_hop: missing (required)"
    );
    assert_eq!(
        error("[relay]\nnext_hop = \"a:1\"\n", &[]),
        "FILE: server: missing (required)"
    );
    assert_eq!(
        error("[server\n", &[]),
        "FILE:1: TOML syntax: unclosed table, expected `]`"
    );
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    assert_eq!(
        Config::load_with_env(&missing, []).unwrap_err().to_string(),
        format!("{}: no such file", missing.display())
    );
}

#[test]
fn typed_values_name_key_and_index() {
    for (text, want) in [
        (
            "[server]\nlisten = [\n  \"127.0.0.1:25\",\n  \"nonsense\",\n]\n[relay]\nnext_hop = \"a:1\"\n",
            "FILE:4: server.listen[1]: \"nonsense\" is not an IP:port (invalid socket address syntax)",
        ),
        (
            "[server]\nclient_networks = [\"10.0.0.0/33\"]\n[relay]\nnext_hop = \"a:1\"\n",
            "FILE:2: server.client_networks[0]: \"10.0.0.0/33\" is not a network (CIDR)",
        ),
        (
            "[server]\nproxy_protocol = true\nproxy_networks = [\"10.0.0.5\", \"proxy\"]\n[relay]\nnext_hop = \"a:1\"\n",
            "FILE:3: server.proxy_networks[1]: \"proxy\" is not a network (CIDR)",
        ),
        (
            "[server]\nproxy_protocol = true\n[relay]\nnext_hop = \"a:1\"\n",
            "FILE: server.proxy_networks: server.proxy_protocol = true needs the addresses of the \
             proxies in server.proxy_networks (a list of networks like \"192.0.2.10/32\")",
        ),
        (
            "[server]\n[relay]\nnext_hop = \"nohost\"\n",
            "FILE:3: relay.next_hop: \"nohost\" is not host:port or maildir:DIR",
        ),
        (
            "[server]\n[relay]\nnext_hop = \"a:1\"\n[metrics]\nlisten = \"9325\"\n",
            "FILE:5: metrics.listen: \"9325\" is not an IP:port (invalid socket address syntax)",
        ),
        (
            "[server]\n[relay]\nnext_hop = \"a:1\"\n[[policy]]\nname = \"x\"\nsenders = [\"a*b@c\"]\n",
            "FILE:6: policy[0].senders[0]: \"a*b@c\": the local part is either * or a literal",
        ),
        (
            "[server]\n[relay]\nnext_hop = \"a:1\"\n[cryptshare]\nurl = \"ftp://x\"\n",
            "FILE:5: cryptshare.url: \"ftp://x\" must be an http(s):// URL or \"embedded\"",
        ),
        (
            "[server]\nmax_line_length = 998\n[relay]\nnext_hop = \"a:1\"\n",
            "FILE:2: server.max_line_length: 0 (no limit) or at least 1000 (RFC 5321 requires lines of 1000 octets)",
        ),
    ] {
        assert_eq!(error(text, &[]), want);
    }
}

#[test]
fn environment_errors_name_the_variable_not_the_file() {
    for (var, value, want) in [
        (
            "CSGW__POLICY__0__NOTIFY_RECIPIENTS",
            "no",
            "CSGW__POLICY__0__NOTIFY_RECIPIENTS: policy[0].notify_recipients: expected true or false, found \"no\"",
        ),
        (
            "CSGW__POLICY__0__EXPIRATION_DAYS",
            "5 days",
            "CSGW__POLICY__0__EXPIRATION_DAYS: policy[0].expiration_days: expected a whole number, found \"5 days\"",
        ),
        (
            "CSGW__POLICY__0__ON_ERROR",
            "temp-fail",
            "CSGW__POLICY__0__ON_ERROR: policy[0].on_error: \"temp-fail\" is not one of tempfail, deliver-original, reject",
        ),
        (
            "CSGW__SERVER__LISTEN",
            "127.0.0.1:25, localhost:25",
            "CSGW__SERVER__LISTEN: server.listen[1]: \"localhost:25\" is not an IP:port (invalid socket address syntax)",
        ),
        (
            "CSGW__SERVER__MAX_MESSAGE_SIZE",
            "0",
            "CSGW__SERVER__MAX_MESSAGE_SIZE: server.max_message_size: must be greater than 0",
        ),
        (
            "CSGW__SERVER__COLOUR",
            "blue",
            "CSGW__SERVER__COLOUR: server.colour: unknown key (valid: listen, listen_tls, hostname, \
             greeting, max_message_size, max_recipients, client_networks, proxy_protocol, proxy_networks, max_connections, \
             max_connections_per_ip, outside_connections_percent, idle_timeout, command_timeout, \
             session_timeout, outside_session_timeout, max_errors, max_received_headers, max_line_length, \
             spool_memory_limit, shutdown_grace, tls, auth)",
        ),
        (
            "CSGW__POLICY__2__NAME",
            "x",
            "CSGW__POLICY__2__NAME: index 2 is past the end of the list (indexes 0 to 1 exist or add one)",
        ),
        (
            "CSGW__RELAY__NEXT_HOP__HOST",
            "x",
            "CSGW__RELAY__NEXT_HOP__HOST: \"host\" is below a value, not a section",
        ),
    ] {
        assert_eq!(error(&policy(""), &[(var, value)]), want, "{var}");
    }
}

#[test]
fn environment_values_are_typed_by_the_key() {
    let c = load(
        &policy(""),
        &[
            ("CSGW__POLICY__0__NOTIFY_RECIPIENTS", "false"),
            ("CSGW__POLICY__0__ON_ERROR", "deliver-original"),
            ("CSGW__POLICY__0__THRESHOLD", "1000"),
            // A name that looks like a number stays a string.
            ("CSGW__POLICY__0__NAME", "123"),
            (
                "CSGW__SERVER__CLIENT_NETWORKS",
                " 10.0.0.0/8 ,192.168.0.0/16 ",
            ),
            ("CSGW__SERVER__LISTEN_TLS", ""),
            ("CSGW__SERVER__IDLE_TIMEOUT", "60"),
            ("CSGW__RELAY__NEXT_HOP", "maildir:/tmp/x"),
            ("OTHER__VARIABLE", "ignored"),
        ],
    );
    let p = &c.policy[0];
    assert_eq!(
        (
            p.name.as_str(),
            p.notify_recipients,
            p.on_error,
            p.threshold
        ),
        ("123", false, OnError::DeliverOriginal, 1000)
    );
    assert_eq!(
        c.server.client_networks,
        vec![
            "10.0.0.0/8".parse::<ipnet::IpNet>().unwrap(),
            "192.168.0.0/16".parse().unwrap()
        ]
    );
    assert!(c.server.listen_tls.is_empty());
    assert_eq!(c.server.idle_timeout.as_secs(), 60);
    assert_eq!(c.relay.next_hop, NextHop::Maildir("/tmp/x".into()));

    // A rule added from the environment alone.
    let c = load(
        MIN,
        &[
            ("CSGW__POLICY__0__NAME", "env"),
            ("CSGW__POLICY__0__SENDERS", "*@example.org, *@*.example.org"),
        ],
    );
    assert_eq!(c.policy[0].senders, ["*@example.org", "*@*.example.org"]);
}

#[test]
fn defaults_types_and_clamps() {
    let c = load(MIN, &[]);
    assert_eq!(c.server.listen, ["127.0.0.1:2525".parse().unwrap()]);
    assert_eq!(c.server.max_message_size, 104_857_600);
    assert_eq!(
        c.relay.next_hop,
        NextHop::Smtp {
            host: "127.0.0.1".into(),
            port: 10026
        }
    );
    // Timeouts of 0 s are raised to 1 s, in one place.
    let c = load(
        "[server]\n[relay]\nnext_hop = \"a:1\"\nconnect_timeout = 0\ncommand_timeout = 0\n[cryptshare]\ntimeout = 0\n",
        &[],
    );
    assert_eq!(
        [
            c.relay.connect_timeout,
            c.relay.command_timeout,
            c.cryptshare.timeout
        ],
        [std::time::Duration::from_secs(1); 3]
    );
}

#[test]
fn client_id_never_shows_in_debug_output() {
    let c = load(
        &format!(
            "{MIN}[cryptshare]\nclient_id = \"SecretClientId0123456789abcdefghijklmnopqrstuvwxyzABCD\"\n"
        ),
        &[],
    );
    assert!(!format!("{c:?}").contains("SecretClientId"));
    assert_eq!(
        c.cryptshare.client_id.as_ref().map(|s| s.expose().as_str()),
        Some("SecretClientId0123456789abcdefghijklmnopqrstuvwxyzABCD")
    );
}

#[test]
fn auth_throttling_keys() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(
        &users,
        "alice:$2b$04$abcdefghijklmnopqrstuu5sEXkjPzjZq6Vt0i4JLF0zC0Hf7mO6\n",
    )
    .unwrap();
    let section = |extra: &str| {
        format!(
            "{MIN}[server.auth]\nusers_file = \"{}\"\n{extra}",
            users.display()
        )
    };
    let a = load(&section(""), &[]).server.auth.unwrap();
    assert_eq!((a.failure_delay.as_secs(), a.max_failures), (1, 3));
    let a = load(&section("failure_delay = 0\nmax_failures = 5\n"), &[])
        .server
        .auth
        .unwrap();
    assert_eq!((a.failure_delay.as_secs(), a.max_failures), (0, 5));
    assert_eq!(
        error(&section("max_failures = 0\n"), &[]),
        "FILE:6: server.auth.max_failures: must be at least 1"
    );
    assert_eq!(
        error(&section("failure_delay = 61\n"), &[]),
        "FILE:6: server.auth.failure_delay: at most 60 seconds (it grows with each failure, and clients time out)"
    );
}

#[test]
fn state_backend_keys() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let state = |lines: &str| format!("{MIN}[state]\nbackend = \"postgres\"\n{lines}");
    let c = load(&format!("{MIN}[state]\n"), &[]);
    assert_eq!(
        c.state.backend,
        cryptshare_gateway::config::StateBackend::File
    );
    let c = load(
        &state("url = \"postgres://gw:s3cret@db.example.org/gateway?sslmode=require\"\n"),
        &[],
    );
    assert_eq!((c.state.pool_size, c.state.lease.as_secs()), (8, 30));
    // The password never prints.
    let url = c.state.url.as_ref().unwrap();
    assert_eq!(
        url.to_string(),
        "postgres://gw:[redacted]@db.example.org/gateway?sslmode=require"
    );
    assert_eq!(
        format!("{url:?}"),
        "postgres://gw:[redacted]@db.example.org/gateway?sslmode=require"
    );
    assert!(!format!("{c:?}").contains("s3cret"));
    assert_eq!(
        cryptshare_gateway::config::DbUrl::new(
            "postgres://gw@db/x?password=s3cret&sslmode=disable"
        )
        .to_string(),
        "postgres://gw@db/x?password=[redacted]&sslmode=disable"
    );
    assert_eq!(
        error(&format!("{MIN}[state]\nbackend = \"mysql\"\n"), &[]),
        "FILE:5: state.backend: \"mysql\" is not one of file, postgres"
    );
    assert_eq!(
        error(&state(""), &[]),
        "FILE: state.url: state.backend = \"postgres\" needs state.url (e.g. \"postgres://gateway@db.example.org/gateway?sslmode=require\")"
    );
    assert_eq!(
        error(&state("url = \"mysql://gw:s3cret@db/gateway\"\n"), &[]),
        "FILE:6: state.url: mysql://gw:[redacted]@db/gateway must be a postgres:// or postgresql:// URL"
    );
    assert_eq!(
        error(&state("url = \"postgres://gw@db\"\n"), &[]),
        "FILE:6: state.url: postgres://gw@db names no database (postgres://user@host/DATABASE)"
    );
    assert_eq!(
        error(
            &state(&format!(
                "url = \"postgres://gw:s3cret@db/gateway\"\npassword_file = \"{}\"\n",
                pw.display()
            )),
            &[]
        ),
        "FILE:7: state.password_file: set the password either in state.url or in state.password_file, not both"
    );
    let c = load(
        &state(&format!(
            "url = \"postgres://gw@db/gateway\"\npassword_file = \"{}\"\n",
            pw.display()
        )),
        &[],
    );
    assert_eq!(c.state.password_file.as_deref(), Some(pw.as_path()));
    assert_eq!(
        error(
            &state("url = \"postgres://gw@db/gateway\"\npassword_file = \"/nonexistent/pw\"\n"),
            &[]
        ),
        "FILE:7: state.password_file: /nonexistent/pw: no such file"
    );
    assert_eq!(
        error(
            &state("url = \"postgres://gw@db/gateway\"\npool_size = 0\n"),
            &[]
        ),
        "FILE:7: state.pool_size: must be at least 1"
    );
    assert_eq!(
        error(
            &state("url = \"postgres://gw@db/gateway\"\nlease = \"1s\"\n"),
            &[]
        ),
        "FILE:7: state.lease: at least 2 seconds (it is renewed every third of it)"
    );
}

/// Issue 14's keys: `content`, `subject_tag_message`, `receipt_from`, `sender_receipt`,
/// `notice_attachment` — each error names the key and the valid values.
#[test]
fn whole_message_and_receipt_keys() {
    for (line, want) in [
        (
            "content = \"all\"",
            "FILE:7: policy[0].content: \"all\" is not one of attachments, message",
        ),
        (
            "subject_tag_message = true",
            "FILE:7: policy[0].subject_tag_message: needs a subject_tag (true: a message with the \
             tag goes as a whole; valid: true with subject_tag set, or false)",
        ),
        (
            "receipt_from = \"Gateway <gw@example.org\"",
            "FILE:7: policy[0].receipt_from: \"Gateway <gw@example.org\" is not an address (valid: \
             \"gateway@example.org\" or \"Cryptshare Gateway <gateway@example.org>\", ASCII, one line)",
        ),
        (
            "sender_receipt = \"yes\"",
            "FILE:7: policy[0].sender_receipt: expected true or false, found string \"yes\"",
        ),
        (
            "notice_attachment = 1",
            "FILE:7: policy[0].notice_attachment: expected true or false, found integer 1",
        ),
    ] {
        assert_eq!(error(&policy(line), &[]), want, "{line}");
    }
    let cfg = load(
        &policy(
            "content = \"message\"\nsender_receipt = true\nreceipt_from = \"GW <gw@example.org>\"\n\
             subject_tag = \"[secure]\"\nsubject_tag_message = true\nnotice_attachment = true",
        ),
        &[],
    );
    let p = &cfg.policy[0];
    assert_eq!(p.content, cryptshare_gateway::config::Content::Message);
    assert!(p.sender_receipt && p.subject_tag_message && p.notice_attachment);
    assert_eq!(p.receipt_from.as_deref(), Some("GW <gw@example.org>"));
    let d = &load(&policy(""), &[]).policy[0];
    assert_eq!(d.content, cryptshare_gateway::config::Content::Attachments);
    assert!(!d.sender_receipt && !d.subject_tag_message && !d.notice_attachment);
    assert_eq!(d.receipt_from, None);
}
