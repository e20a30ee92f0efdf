//! The `cryptshare-gateway` command line. `anyhow` lives here only; modules use typed errors.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cryptshare_gateway::config::{Config, Loaded, NextHop, NextHopTls};
use cryptshare_gateway::inbound::{Server, SessionSettings};
use cryptshare_gateway::ops::{self, Component, LogFormat, Notifier, Readiness};
use cryptshare_gateway::pipeline::{Gateway, GatewayFactory};
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(
    name = "cryptshare-gateway",
    version,
    about = "SMTP gateway that moves large attachments into Cryptshare transfers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        #[arg(long)]
        config: PathBuf,
        /// Log format: human (default) or json.
        #[arg(long, default_value = "human")]
        log_format: LogFormat,
    },
    /// Validate a configuration file as `serve` would (certificates, key, users file, client id,
    /// audit and state directories): exit 0 when valid, 2 naming the wrong key otherwise.
    ///
    /// `--online` also asks the Cryptshare Server's transfer policy, for each `[[policy]]`, for a
    /// test sender (`--sender`, else the rule's first sender pattern made concrete, e.g.
    /// `check-config@example.org`) sending to `--recipient` (else to itself): exit 2 when the
    /// server forbids what a rule demands (naming the key), warnings for settings the server
    /// decides itself.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        online: bool,
        #[arg(long, requires = "online")]
        sender: Option<String>,
        #[arg(long, requires = "online")]
        recipient: Option<String>,
    },
    /// The effective configuration, defaults included: one `key = value  # source` line each
    /// (source: file:LINE, env VARIABLE or default); secrets redacted.
    ShowConfig {
        #[arg(long)]
        config: PathBuf,
        /// Only the values set in the file or the environment (like `postconf -n`).
        #[arg(short = 'n', long)]
        non_default: bool,
    },
    /// What the gateway did with a message: its audit records (`[audit] file` and uncompressed
    /// rotations) and state records (`state.dir`), one line each or JSON. Exit 0 when something
    /// was found, 1 when nothing was, 2 on a configuration or read error.
    Find {
        #[arg(long)]
        config: PathBuf,
        #[command(flatten)]
        key: FindKey,
        #[arg(long)]
        json: bool,
    },
    /// Spool mode's queue: list, show ID, retry ID (now), delete ID (no DSN), hold ID, release ID.
    /// Exit 0 when done, 1 when there is no such message (or it is held, or being delivered
    /// right now), 2 when the configuration or the queue cannot be read.
    Queue {
        #[command(subcommand)]
        action: QueueCommand,
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[arg(long, global = true)]
        json: bool,
    },
    /// Dry run: which policy matches, which parts would be converted and why. Contacts no server.
    /// MESSAGE `-` reads standard input (`postcat -bh -q ID | … explain --config FILE -`).
    /// Without --from / --to the envelope comes from the headers (Return-Path, Sender or From;
    /// To, Cc and Bcc), and the output says so.
    Explain {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        from: Option<String>,
        #[arg(long = "to")]
        to: Vec<String>,
        #[arg(long)]
        json: bool,
        message: PathBuf,
    },
}

#[derive(Subcommand)]
enum QueueCommand {
    /// Every queued message: id, place (active, hold, corrupt), arrival, size, sender,
    /// recipients pending, attempts, next attempt, last reason.
    List,
    /// One message, each recipient with its state and last reply.
    Show { id: String },
    /// Try the message now.
    Retry { id: String },
    /// Drop the message without a DSN.
    Delete { id: String },
    /// Keep the message from being tried until released.
    Hold { id: String },
    /// Let a held message be tried again, now.
    Release { id: String },
}

impl QueueCommand {
    fn split(&self) -> (ops::queue::Action, Option<&str>) {
        use ops::queue::Action;
        match self {
            QueueCommand::List => (Action::List, None),
            QueueCommand::Show { id } => (Action::Show, Some(id)),
            QueueCommand::Retry { id } => (Action::Retry, Some(id)),
            QueueCommand::Delete { id } => (Action::Delete, Some(id)),
            QueueCommand::Hold { id } => (Action::Hold, Some(id)),
            QueueCommand::Release { id } => (Action::Release, Some(id)),
        }
    }
}

fn queue(config: Option<&std::path::Path>, cmd: &QueueCommand, json: bool) -> ExitCode {
    let Some(config) = config else {
        eprintln!("queue: --config FILE is required");
        return ExitCode::from(2);
    };
    let cfg = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let (action, id) = cmd.split();
    let out = ops::queue::run(&cfg, action, id, json);
    print!("{}", out.stdout);
    eprint!("{}", out.stderr);
    ExitCode::from(out.code)
}

/// Exactly one thing to look for.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct FindKey {
    /// The Message-ID header (angle brackets optional).
    #[arg(long, value_name = "ID")]
    message_id: Option<String>,
    /// The Cryptshare transfer's tracking id.
    #[arg(long, value_name = "ID")]
    tracking_id: Option<String>,
    /// The gateway's queue id (in its Received: header and log lines).
    #[arg(long, value_name = "ID")]
    queue_id: Option<String>,
    /// The envelope sender (`<>` for the null sender).
    #[arg(long, value_name = "ADDR")]
    sender: Option<String>,
}

impl FindKey {
    fn query(&self) -> ops::find::Query {
        use ops::find::Query;
        match (
            &self.message_id,
            &self.tracking_id,
            &self.queue_id,
            &self.sender,
        ) {
            (Some(v), ..) => Query::message_id(v),
            (_, Some(v), ..) => Query::tracking_id(v),
            (_, _, Some(v), _) => Query::queue_id(v),
            (.., Some(v)) => Query::sender(v),
            // clap's group requires one.
            (None, None, None, None) => unreachable!("find needs a key"),
        }
    }
}

fn find(config: &std::path::Path, key: &FindKey, json: bool) -> ExitCode {
    let cfg = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let query = key.query();
    let found = match ops::find::find(&cfg, &query) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("find: {e}");
            return ExitCode::from(2);
        }
    };
    for note in &found.notes {
        eprintln!("find: {note}");
    }
    if json {
        print!("{}", ops::find::render_json(&query, &found));
    } else {
        print!("{}", ops::find::render_text(&found));
    }
    if found.is_empty() {
        eprintln!("find: nothing found for {}", query.describe());
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig {
            config,
            online,
            sender,
            recipient,
        } => match load_checked(&config) {
            Ok(cfg) if online => {
                check_online(&config, &cfg, sender.as_deref(), recipient.as_deref())
            }
            Ok(_) => {
                println!("{}: OK", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::ShowConfig {
            config,
            non_default,
        } => match Loaded::read(&config, std::env::vars()) {
            Ok(loaded) => {
                print!("{}", loaded.render(non_default));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Find { config, key, json } => find(&config, &key, json),
        Command::Queue {
            action,
            config,
            json,
        } => queue(config.as_deref(), &action, json),
        Command::Explain {
            config,
            from,
            to,
            json,
            message,
        } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            match cryptshare_gateway::pipeline::explain_with(
                &cfg,
                from.as_deref(),
                &to,
                &message,
                json,
            ) {
                Ok(out) => {
                    print!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("explain: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Serve {
            config: path,
            log_format,
        } => {
            // First, while the process is still single-threaded: it edits the environment.
            let inherited = match ops::activation::take_listen_fds() {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("cryptshare-gateway: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let cfg = match load_checked(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            if let Err(e) = ops::logging::init(log_format, None) {
                eprintln!("cannot set up logging: {e}");
                return ExitCode::FAILURE;
            }
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(serve(path, cfg, inherited)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    let e = error_chain(&e);
                    tracing::error!("{e}");
                    eprintln!("cryptshare-gateway: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn serve(
    path: PathBuf,
    cfg: Config,
    inherited: Vec<ops::activation::InheritedListener>,
) -> anyhow::Result<()> {
    // Handlers first: until they exist, the default action of SIGHUP, SIGUSR1 (a logrotate
    // postrotate, say) and SIGTERM is to kill the process outright. Signals arriving during
    // start-up wait in the streams and are handled once the gateway runs.
    let mut hup = signal(SignalKind::hangup())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    cryptshare_gateway::install_crypto_provider();
    std::fs::create_dir_all(&cfg.state.dir)
        .with_context(|| format!("state.dir: cannot create {}", cfg.state.dir.display()))?;
    if let NextHop::Maildir(dir) = &cfg.relay.next_hop {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("relay.next_hop: cannot create {}", dir.display()))?;
    }
    let metrics = ops::metrics::global().clone();
    metrics.init_policies(cfg.policy.iter().map(|p| p.name.as_str()));
    let notifier = Arc::new(Notifier::from_env());
    let readiness = Arc::new(Readiness::new());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    let gateway = Gateway::new(&cfg, metrics.clone()).await?;
    // The rules against the live server's transfer policy (warnings only), off the start-up path.
    let embedded_url = gateway.embedded().map(|h| h.url());
    if let Ok(client) = cryptshare_gateway::cryptshare::Client::from_config(
        &cfg.cryptshare,
        embedded_url.as_deref(),
        Arc::new(ops::Metrics::new()),
    ) {
        tokio::spawn(warn_server_policies(client, cfg.clone()));
    }
    // Under socket activation the listen keys are not used at all, so a change is no news.
    let activated = !inherited.is_empty();
    let server = Server::bind_with(&cfg, inherited, metrics.clone()).await?;
    for a in server.local_addrs() {
        tracing::info!(listen = %a, "SMTP listener ready");
    }
    for a in server.local_tls_addrs() {
        tracing::info!(listen = %a, "SMTPS (implicit TLS) listener ready");
    }
    readiness.set(Component::Listeners, Ok(()));
    if let Some(m) = &cfg.metrics {
        let addr = m.listen;
        let mut rx = stop_rx.clone();
        let http = ops::http::serve(addr, metrics.clone(), readiness.clone(), async move {
            let _ = rx.wait_for(|s| *s).await;
        })
        .await?;
        tracing::info!(listen = %http.local_addr, "metrics endpoint ready");
    }
    spawn_probes(&cfg, &gateway, &readiness);
    if let Some(mut health) = gateway.state().health() {
        // The PostgreSQL store checks itself (with backoff while it is down); `/readyz` shows it.
        let readiness = readiness.clone();
        tokio::spawn(async move {
            loop {
                let now = health.borrow_and_update().clone();
                readiness.set(Component::StateStore, now);
                if health.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    // SIGHUP: re-read the file; a broken one is refused and the old configuration stays.
    let reloader = server.reloader();
    {
        let (notifier, metrics, gateway) = (notifier.clone(), metrics.clone(), gateway.clone());
        // What the start-up built; restart-only settings stay as they were then.
        let started = cfg.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let loaded = ops::reload(&notifier, &metrics, || {
                    let new = load_checked(&path)?;
                    reloader.reload(&new).map_err(|e| e.to_string())?;
                    Ok::<_, String>(new)
                });
                if let Some(new) = loaded {
                    gateway.reload(&new);
                    metrics.init_policies(new.policy.iter().map(|p| p.name.as_str()));
                    let pending = restart_only_changes(&started, &new, activated);
                    if !pending.is_empty() {
                        tracing::warn!(
                            keys = %pending.join(", "),
                            "changed settings take effect at the next restart, not on reload"
                        );
                    }
                }
                gateway.reopen_audit();
            }
        });
    }
    // SIGUSR1: reopen the audit file and nothing else. logrotate's postrotate sends this one, so
    // that a nightly rotation never loads a configuration file somebody is still editing (SIGHUP
    // would reload it and, if it parses, apply it).
    {
        let gateway = gateway.clone();
        tokio::spawn(async move {
            while usr1.recv().await.is_some() {
                gateway.reopen_audit();
                tracing::info!("audit file reopened (SIGUSR1)");
            }
        });
    }
    let shutdown = {
        let (notifier, readiness) = (notifier.clone(), readiness.clone());
        async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            // The server logs the shutdown itself once its listeners are closed.
            tracing::info!(signal = name, "shutdown requested");
            readiness.set_draining();
            let _ = notifier.stopping();
        }
    };
    if let Err(e) = notifier.ready("accepting mail") {
        tracing::warn!("systemd notification failed: {e}");
    }
    notifier.spawn_watchdog();
    server
        .run(Arc::new(GatewayFactory(gateway.clone())), shutdown)
        .await;
    // Queued messages are safe on disk: running deliveries may finish, no new one starts.
    if let Some(spool) = gateway.spool() {
        spool.drain(cfg.server.shutdown_grace).await;
    }
    let _ = stop_tx.send(true);
    tracing::info!("stopped");
    Ok(())
}

/// The one validation of `check-config`, start-up and reload: load the file (types, values,
/// files that must exist), then build what `serve` builds from it and can fail on, without
/// binding a socket or contacting a server — so that `systemctl reload` (whose `ExecReload`
/// runs `check-config`) never passes a file the gateway then refuses.
/// `check-config --online`: the rules against the live server's transfer policy.
fn check_online(
    path: &std::path::Path,
    cfg: &Config,
    sender: Option<&str>,
    recipient: Option<&str>,
) -> ExitCode {
    use cryptshare_gateway::{cryptshare, pipeline};
    if cfg.cryptshare.url == "embedded" {
        println!(
            "{}: OK (cryptshare.url = \"embedded\": no server to ask)",
            path.display()
        );
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("check-config: {e}");
            return ExitCode::from(2);
        }
    };
    let client =
        match cryptshare::Client::from_config(&cfg.cryptshare, None, Arc::new(ops::Metrics::new()))
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{}: cryptshare: {e}", path.display());
                return ExitCode::from(2);
            }
        };
    let checks = rt.block_on(pipeline::check_server_policies(
        &client,
        &cfg.policy,
        sender,
        recipient,
    ));
    let mut failed = false;
    for c in checks {
        match c.result {
            Err(e) => {
                failed = true;
                eprintln!("{}: {e}", path.display());
            }
            Ok(findings) => {
                for f in findings {
                    failed |= f.error;
                    let level = if f.error { "error" } else { "warning" };
                    eprintln!("{}: {level}: {}: {}", path.display(), f.key, f.message);
                }
            }
        }
    }
    if failed {
        ExitCode::from(2)
    } else {
        println!(
            "{}: OK (checked against {})",
            path.display(),
            client.api_url()
        );
        ExitCode::SUCCESS
    }
}

/// At start-up: one warning per difference between a rule and the live server's policy; an
/// unreachable server is only a warning (the gateway answers 451 until it is back).
async fn warn_server_policies(client: cryptshare_gateway::cryptshare::Client, cfg: Config) {
    for c in
        cryptshare_gateway::pipeline::check_server_policies(&client, &cfg.policy, None, None).await
    {
        match c.result {
            Err(e) => {
                tracing::warn!(error = %e, "cannot check the policy against the Cryptshare server")
            }
            Ok(findings) => {
                for f in findings {
                    tracing::warn!(key = %f.key, error = f.error, "{}", f.message);
                }
            }
        }
    }
}

fn load_checked(path: &std::path::Path) -> Result<Config, String> {
    let cfg = Config::load(path).map_err(|e| e.to_string())?;
    preflight(&cfg).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(cfg)
}

fn preflight(cfg: &Config) -> Result<(), String> {
    use cryptshare_gateway::cryptshare;
    cryptshare_gateway::install_crypto_provider();
    // [server.tls] (certificate chain, the key matching it) and [server.auth] (the users file):
    // the session settings every connection gets.
    SessionSettings::from_config(cfg, Arc::new(ops::Metrics::new())).map_err(|e| e.to_string())?;
    if cfg.relay.tls != NextHopTls::Off
        && let Some(ca) = &cfg.relay.ca_file
    {
        cryptshare_gateway::outbound::tls_connector(cfg.relay.tls, Some(ca))
            .map_err(|e| format!("relay.ca_file: {e}"))?;
    }
    if let NextHop::Maildir(dir) = &cfg.relay.next_hop {
        creatable_dir(dir).map_err(|e| format!("relay.next_hop: {}: {e}", dir.display()))?;
    }
    // The embedded emulator accepts any id (and `serve` makes one up when there is none).
    if cfg.cryptshare.url != "embedded" {
        cryptshare::load_client_id(&cfg.cryptshare).map_err(|e| e.to_string())?;
        cryptshare::Client::from_config(&cfg.cryptshare, None, Arc::new(ops::Metrics::new()))
            .map_err(|e| format!("cryptshare: {e}"))?;
    }
    creatable_dir(&cfg.state.dir)
        .map_err(|e| format!("state.dir: {}: {e}", cfg.state.dir.display()))?;
    if let Some(a) = &cfg.audit {
        audit_writable(&a.file).map_err(|e| format!("audit.file: {}: {e}", a.file.display()))?;
    }
    if let Some(d) = &cfg.dkim {
        cryptshare_gateway::outbound::dkim::Signer::from_config(d).map_err(|e| e.to_string())?;
    }
    // The notice templates are read and checked by `Config::validate` (reloads too).
    Ok(())
}

/// `dir` exists and is writable, or can be created (its nearest existing ancestor is writable).
fn creatable_dir(dir: &std::path::Path) -> Result<(), String> {
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => existing = p,
            _ => return Ok(()),
        }
    }
    if !existing.is_dir() {
        return Err(format!("{} is not a directory", existing.display()));
    }
    // An unnamed temporary file: nothing is left behind.
    tempfile::tempfile_in(existing)
        .map(drop)
        .map_err(|e| format!("cannot write in {}: {e}", existing.display()))
}

/// The audit file can be appended to: it exists and is writable, or its directory exists and is
/// writable (`serve` creates the file, not the directory).
fn audit_writable(file: &std::path::Path) -> Result<(), String> {
    if file.exists() {
        return std::fs::OpenOptions::new()
            .append(true)
            .open(file)
            .map(drop)
            .map_err(|e| e.to_string());
    }
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    if !dir.is_dir() {
        return Err(format!("directory {} does not exist", dir.display()));
    }
    tempfile::tempfile_in(dir)
        .map(drop)
        .map_err(|e| format!("cannot write in {}: {e}", dir.display()))
}

/// Settings a reload cannot apply: bound sockets, the relay, the Cryptshare client, the state
/// store and the audit sink are built once at start. Compared through `Debug` (the values are
/// never logged, only the key names: the Cryptshare section holds the client id).
fn restart_only_changes(old: &Config, new: &Config, activated: bool) -> Vec<&'static str> {
    fn differs<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
        format!("{a:?}") != format!("{b:?}")
    }
    let (o, n) = (&old.server, &new.server);
    [
        ("server.listen", !activated && differs(&o.listen, &n.listen)),
        (
            "server.listen_tls",
            !activated && differs(&o.listen_tls, &n.listen_tls),
        ),
        (
            "server.max_connections",
            o.max_connections != n.max_connections,
        ),
        (
            "server.shutdown_grace",
            o.shutdown_grace != n.shutdown_grace,
        ),
        ("relay", differs(&old.relay, &new.relay)),
        ("cryptshare", differs(&old.cryptshare, &new.cryptshare)),
        ("state", differs(&old.state, &new.state)),
        ("metrics", differs(&old.metrics, &new.metrics)),
        ("audit", differs(&old.audit, &new.audit)),
    ]
    .into_iter()
    .filter_map(|(k, changed)| changed.then_some(k))
    .collect()
}

/// The checks behind `/readyz`, every `metrics.probe_interval`. Nothing is probed without
/// `[metrics]` (no one could read the result) or with an interval of 0; the components not
/// probed count as ready, so that `/readyz` then reflects the listeners and shutdown only.
fn spawn_probes(cfg: &Config, gateway: &Gateway, readiness: &Arc<Readiness>) {
    let interval = cfg
        .metrics
        .as_ref()
        .map_or(Duration::ZERO, |m| m.probe_interval);
    if interval.is_zero() {
        readiness.set(Component::NextHop, Ok(()));
        readiness.set(Component::Cryptshare, Ok(()));
        return;
    }
    // The conversation with the next hop may take what a relay connection may take to greet.
    let (next_hop, helo) = (cfg.relay.next_hop.clone(), cfg.server.hostname.clone());
    let timeout = cfg.relay.connect_timeout;
    ops::http::spawn_probe(readiness.clone(), Component::NextHop, interval, move || {
        let (nh, helo) = (next_hop.clone(), helo.clone());
        async move { ops::http::probe_next_hop(&nh, &helo, timeout).await }
    });
    let cs_url = match gateway.embedded() {
        Some(h) => h.url(),
        None => cfg.cryptshare.url.clone(),
    };
    ops::http::spawn_probe(
        readiness.clone(),
        Component::Cryptshare,
        interval,
        move || {
            let url = cs_url.clone();
            async move { ops::http::probe_cryptshare(&url, CRYPTSHARE_PROBE_TIMEOUT).await }
        },
    );
}

const CRYPTSHARE_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The error and its causes on one line, leaving out a cause whose text the line already carries
/// (most of our messages name their cause, and anyhow's `{:#}` would print it twice).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.is_empty() {
            out = text;
        } else if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}
