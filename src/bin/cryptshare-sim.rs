//! `cryptshare-sim --listen ADDR --data DIR [--client-id ID]`: the Cryptshare REST API emulator.
//!
//! By default every well-formed client id is trusted for client-id verification, as if
//! registered; `--client-id` restricts that to one id. The default is a permissive,
//! well-configured server; strictness switches (`--bind-session-tokens`, `--token-rate-limit`,
//! `--processing-ms`, `--nulls-and-extra-fields`, `--proxy-page`, `--token-validity`,
//! `--locked-down`, `--refuse-recipient`, `--whole-day-expiry`) make it
//! behave like a stricter or slower one. Faults, the policy and the switches can be changed at
//! run time under `/_sim/` (see the `sim` module and docs/cryptshare-sim.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use cryptshare_gateway::sim::{Emulator, Endpoint, FaultSpec, SimOptions, SimPolicy, SimSwitches};

#[derive(Parser)]
#[command(
    name = "cryptshare-sim",
    version,
    about = "Cryptshare REST API emulator"
)]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1:8443 (port 0 picks one; the address is printed).
    #[arg(long)]
    listen: SocketAddr,
    /// Directory for uploaded files and notification mails.
    #[arg(long)]
    data: PathBuf,
    /// The only client id trusted for client-id verification.
    #[arg(long)]
    client_id: Option<String>,
    /// Server policy as JSON (keys of SimPolicy), e.g. '{"max_total_size":1048576}'.
    #[arg(long)]
    policy: Option<String>,
    /// A fault to inject from the start, as JSON (FaultSpec); repeatable.
    #[arg(long)]
    fault: Vec<String>,
    /// Highest supported minor API version.
    #[arg(long, default_value_t = 8)]
    api_minor: u32,
    /// Token validity in seconds.
    #[arg(long, default_value_t = 3600)]
    token_validity: u64,
    /// Status polls answered PROCESSING after finalize.
    #[arg(long, default_value_t = 1)]
    processing_polls: u32,
    /// Base of absolute URLs (Location, download links) instead of http://<Host header>.
    #[arg(long)]
    public_url: Option<String>,
    /// All strictness switches as JSON (keys of SimSwitches); the flags below override it.
    #[arg(long)]
    switches: Option<String>,
    /// Answers carry explicit nulls and an undeclared property in every object.
    #[arg(long)]
    nulls_and_extra_fields: bool,
    /// Finalized transfers stay PROCESSING for this many milliseconds.
    #[arg(long)]
    processing_ms: Option<u64>,
    /// A transfer session accepts only the token it was created with (403/3002 otherwise).
    #[arg(long)]
    bind_session_tokens: bool,
    /// At most N tokens per sender and client id per minute (more: 429/2007).
    #[arg(long, value_name = "N")]
    token_rate_limit: Option<u32>,
    /// Answer every call with a reverse proxy's HTML error page with this status (e.g. 502).
    #[arg(long, value_name = "STATUS")]
    proxy_page: Option<u16>,
    /// A locked-down policy: file names, ZIP contents, download notifications and the recipient
    /// notification are not changeable (PATCHing them: 409/2001), password mode GENERATED only.
    /// Applied before --policy, whose keys override it.
    #[arg(long)]
    locked_down: bool,
    /// Refuse recipients matching this address pattern (`*` wildcard) in the transfer policy
    /// (`failedRecipients`, POLICY_MISMATCH); repeatable.
    #[arg(long, value_name = "PATTERN")]
    refuse_recipient: Vec<String>,
    /// Check expiry dates in whole days (to the end of their UTC day), as a server counting
    /// calendar days does.
    #[arg(long)]
    whole_day_expiry: bool,
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("cryptshare-sim: {msg}");
    std::process::exit(2);
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut opts = SimOptions::new(args.listen, args.data);
    opts.client_id = args.client_id;
    if args.locked_down {
        opts.policy = SimPolicy::locked_down();
    }
    if let Some(p) = &args.policy {
        // Keys given override the base (the default or the locked-down policy).
        let mut base = serde_json::to_value(&opts.policy).unwrap_or_default();
        let over: serde_json::Value =
            serde_json::from_str(p).unwrap_or_else(|e| fail(format_args!("--policy: {e}")));
        if let (Some(b), Some(o)) = (base.as_object_mut(), over.as_object()) {
            b.extend(o.clone());
        } else {
            fail("--policy: must be a JSON object");
        }
        opts.policy = serde_json::from_value::<SimPolicy>(base)
            .unwrap_or_else(|e| fail(format_args!("--policy: {e}")));
    }
    opts.policy
        .refused_recipients
        .extend(args.refuse_recipient.iter().cloned());
    for f in &args.fault {
        opts.faults.push(
            serde_json::from_str::<FaultSpec>(f)
                .unwrap_or_else(|e| fail(format_args!("--fault: {e}"))),
        );
    }
    opts.api_minor = args.api_minor;
    opts.token_validity = Duration::from_secs(args.token_validity);
    opts.processing_polls = args.processing_polls;
    opts.public_url = args.public_url;
    if let Some(j) = &args.switches {
        opts.switches = serde_json::from_str::<SimSwitches>(j)
            .unwrap_or_else(|e| fail(format_args!("--switches: {e}")));
    }
    let sw = &mut opts.switches;
    sw.nulls_and_extra_fields |= args.nulls_and_extra_fields;
    sw.bind_session_tokens |= args.bind_session_tokens;
    sw.whole_day_expiry |= args.whole_day_expiry;
    if let Some(ms) = args.processing_ms {
        sw.processing_time = Some(Duration::from_millis(ms));
    }
    if args.token_rate_limit.is_some() {
        sw.token_rate_limit = args.token_rate_limit;
    }
    if let Some(status) = args.proxy_page {
        if !(400..=599).contains(&status) {
            fail(format_args!("--proxy-page: {status}: must be 400 to 599"));
        }
        opts.faults
            .push(FaultSpec::proxy_page(Endpoint::Any, status));
    }
    let handle = Emulator::start(opts).await.unwrap_or_else(|e| fail(e));
    // Handlers first: a script may send SIGTERM as soon as it has read the line below.
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).unwrap_or_else(|e| fail(e));
    let mut int = signal(SignalKind::interrupt()).unwrap_or_else(|e| fail(e));
    // Scripts wait for this line to learn the port.
    println!("listening on {}", handle.url());
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    handle.shutdown().await;
}
