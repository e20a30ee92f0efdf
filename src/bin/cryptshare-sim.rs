//! `cryptshare-sim --listen ADDR --data DIR [--client-id ID]`: the Cryptshare REST API emulator.
//!
//! By default every well-formed client id is trusted for client-id verification, as if
//! registered; `--client-id` restricts that to one id. Faults and the policy can be changed at
//! run time under `/_sim/` (see the `sim` module).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use cryptshare_gateway::sim::{Emulator, FaultSpec, SimOptions, SimPolicy};

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
    if let Some(p) = &args.policy {
        opts.policy = serde_json::from_str::<SimPolicy>(p)
            .unwrap_or_else(|e| fail(format_args!("--policy: {e}")));
    }
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
    let handle = Emulator::start(opts).await.unwrap_or_else(|e| fail(e));
    // Scripts wait for this line to learn the port.
    println!("listening on {}", handle.url());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .unwrap_or_else(|e| fail(e));
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    handle.shutdown().await;
}
