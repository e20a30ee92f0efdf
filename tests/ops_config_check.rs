//! `check-config` refuses what `serve` refuses (issue 12, item 2: one validation for
//! check-config, start-up and reload), and `show-config` prints the effective configuration with
//! each value's source (item 4). Both run the real binary.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_cryptshare-gateway");

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Run `args … --config DIR/gateway.toml`, with DIR replaced by `DIR` in the output.
fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(dir.join("gateway.toml"))
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .output()
        .expect("run cryptshare-gateway");
    let d = dir.display().to_string();
    Run {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8_lossy(&out.stdout).replace(&d, "DIR"),
        stderr: String::from_utf8_lossy(&out.stderr).replace(&d, "DIR"),
    }
}

fn pem_pair(name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A valid configuration in `dir` plus `extra`; state in `dir/state`.
fn config(dir: &Path, extra: &str) -> PathBuf {
    let p = dir.join("gateway.toml");
    std::fs::write(
        &p,
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[relay]\nnext_hop = \"127.0.0.1:10026\"\n\
             [state]\ndir = \"{}/state\"\n{extra}",
            dir.display()
        ),
    )
    .unwrap();
    p
}

/// Each mistake that makes `serve` refuse to start: `check-config` exits 2 with the same
/// message, and so does `serve` (before binding anything).
#[test]
fn check_config_refuses_what_serve_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (cert, key) = pem_pair("gw.test");
    let (_, other_key) = pem_pair("other.test");
    std::fs::write(d.join("cert.pem"), &cert).unwrap();
    std::fs::write(d.join("key.pem"), &key).unwrap();
    std::fs::write(d.join("other-key.pem"), &other_key).unwrap();
    std::fs::write(d.join("garbage.pem"), "not a certificate\n").unwrap();
    std::fs::write(d.join("users"), "alice:not-a-hash\n").unwrap();
    std::fs::create_dir(d.join("tpl")).unwrap();
    std::fs::write(
        d.join("tpl/notice.fr.txt"),
        "Fichiers :\n{{files}}\nLien : {{dowload_url}}\n",
    )
    .unwrap();
    std::fs::create_dir(d.join("tpl2")).unwrap();
    std::fs::write(
        d.join("tpl2/notice.en.html"),
        "<p>{{count}}</p>\n<p>{{sender</p>\n",
    )
    .unwrap();
    let rule = |lang: &str, dir: &str| {
        format!(
            "[[policy]]\nname = \"r\"\nsenders = [\"*\"]\nlanguage = \"{lang}\"\ntemplate_dir = \"{}/{dir}\"\n",
            d.display()
        )
    };
    const VALID: &str = "(valid placeholders: {{count}}, {{files}}, {{expires}}, {{sender}}, {{tracking_id}}, {{download_url}}, {{instructions}})";
    let tls = |c: &str, k: &str| {
        format!(
            "[server.tls]\ncert = \"{}/{c}\"\nkey = \"{}/{k}\"\n",
            d.display(),
            d.display()
        )
    };
    for (extra, want) in [
        (
            tls("garbage.pem", "key.pem"),
            "DIR/gateway.toml: server.tls.cert: DIR/garbage.pem: no CERTIFICATE in PEM file\n",
        ),
        (
            tls("cert.pem", "other-key.pem"),
            "DIR/gateway.toml: server.tls: keys may not be consistent: KeyMismatch\n",
        ),
        (
            format!("[audit]\nfile = \"{}/no-such-dir/audit.log\"\n", d.display()),
            "DIR/gateway.toml: audit.file: DIR/no-such-dir/audit.log: directory DIR/no-such-dir does not exist\n",
        ),
        (
            "[cryptshare]\nurl = \"https://cryptshare.example.org\"\nclient_id = \"abcdefghij0123456789\"\n".to_string(),
            "DIR/gateway.toml: cryptshare.client_id: must be 50 to 4000 letters and digits (got 20 characters)\n",
        ),
        (
            "[cryptshare]\nurl = \"https://cryptshare.example.org\"\n".to_string(),
            "DIR/gateway.toml: cryptshare.client_id: missing (or set cryptshare.client_id_file)\n",
        ),
        (
            format!("[server.auth]\nusers_file = \"{}/users\"\n", d.display()),
            "DIR/gateway.toml: server.auth.users_file: DIR/users line 1: hash must be argon2 ($argon2…) or bcrypt ($2b$…)\n",
        ),
        (
            rule("auto", "tpl"),
            &*format!("DIR/gateway.toml:11: policy[0].template_dir: DIR/tpl/notice.fr.txt line 3: unknown placeholder \"{{{{dowload_url}}}}\" {VALID}\n"),
        ),
        (
            rule("en", "tpl2"),
            &*format!("DIR/gateway.toml:11: policy[0].template_dir: DIR/tpl2/notice.en.html line 2: unclosed {{{{ in \"{{{{sender</p>\" {VALID}\n"),
        ),
        (
            "[[policy]]\nname = \"r\"\nsenders = [\"*\"]\nlanguage = \"pt\"\n".to_string(),
            "DIR/gateway.toml:10: policy[0].language: \"pt\" has no built-in texts (valid: \"auto\", \"en\", \"de\", \"fr\", \"es\", \"it\", \"nl\")\n",
        ),
    ] {
        config(d, &extra);
        let check = run(d, &["check-config"], &[]);
        assert_eq!((check.code, check.stdout.as_str(), check.stderr.as_str()), (2, "", want), "{extra}");
        let serve = run(d, &["serve"], &[]);
        assert_eq!((serve.code, serve.stderr.as_str()), (2, want), "serve: {extra}");
    }
    // The valid one passes, and creates nothing (state.dir does not exist yet).
    config(d, &tls("cert.pem", "key.pem"));
    let ok = run(d, &["check-config"], &[]);
    assert_eq!(
        (ok.code, ok.stdout.as_str(), ok.stderr.as_str()),
        (0, "DIR/gateway.toml: OK\n", "")
    );
    assert!(!d.join("state").exists());
}

#[test]
fn show_config_lists_effective_values_with_sources() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    config(
        d,
        "[cryptshare]\nurl = \"https://cs.example.org\"\n\
         client_id = \"SecretClientId0123456789abcdefghijklmnopqrstuvwxyzABCD\"\n\
         [[policy]]\nname = \"example.org\"\nsenders = [\"*@example.org\"]\nthreshold = 1000\n",
    );
    let env = [
        ("CSGW__SERVER__MAX_RECIPIENTS", "7"),
        ("CSGW__POLICY__0__NOTIFY_RECIPIENTS", "false"),
    ];
    let n = run(d, &["show-config", "-n"], &env);
    assert_eq!((n.code, n.stderr.as_str()), (0, ""));
    assert_eq!(
        n.stdout,
        "cryptshare.client_id = \"[redacted]\"  # file:9\n\
         cryptshare.url = \"https://cs.example.org\"  # file:8\n\
         policy[0].name = \"example.org\"  # file:11\n\
         policy[0].notify_recipients = false  # env CSGW__POLICY__0__NOTIFY_RECIPIENTS\n\
         policy[0].senders = [\"*@example.org\"]  # file:12\n\
         policy[0].threshold = 1000  # file:13\n\
         relay.next_hop = \"127.0.0.1:10026\"  # file:4\n\
         server.listen = [\"127.0.0.1:0\"]  # file:2\n\
         server.max_recipients = 7  # env CSGW__SERVER__MAX_RECIPIENTS\n\
         state.dir = \"DIR/state\"  # file:6\n"
    );
    let all = run(d, &["show-config"], &env);
    assert_eq!(all.code, 0);
    assert!(!all.stdout.contains("SecretClientId"));
    for line in [
        "cryptshare.timeout = 60  # default\n",
        "policy[0].on_error = \"tempfail\"  # default\n",
        "policy[0].expiration_days = 14  # default\n",
        "relay.command_timeout = 300  # default\n",
        "relay.xforward = true  # default\n",
        "queue.mode = \"inline\"  # default\n",
        "queue.max_lifetime = \"5d\"  # default\n",
        "server.client_networks = [\"127.0.0.0/8\", \"::1/128\"]  # default\n",
        "server.max_recipients = 7  # env CSGW__SERVER__MAX_RECIPIENTS\n",
        "state.retention_days = 14  # default\n",
    ] {
        assert!(all.stdout.contains(line), "{line}: {}", all.stdout);
    }
    // Every line of -n is in the full listing, which has one line per key.
    assert!(n.stdout.lines().all(|l| all.stdout.contains(l)));
    assert_eq!(all.stdout.lines().count(), 75, "{}", all.stdout);
    // A broken configuration: the same message as check-config, exit 2.
    let bad = run(
        d,
        &["show-config"],
        &[("CSGW__SERVER__MAX_RECIPIENTS", "many")],
    );
    assert_eq!(
        (bad.code, bad.stdout.as_str(), bad.stderr.as_str()),
        (
            2,
            "",
            "CSGW__SERVER__MAX_RECIPIENTS: server.max_recipients: expected a whole number, found \"many\"\n"
        )
    );
}
