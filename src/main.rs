//! The `cryptshare-gateway` command line. `anyhow` lives here only; modules use typed errors.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cryptshare_gateway::config::Config;
use cryptshare_gateway::smtp::relay::{PassThrough, Relay};
use cryptshare_gateway::smtp::server::Server;
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
    },
    /// Validate a configuration file: exit 0 when valid, 2 naming the wrong key otherwise.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// Dry run: which policy matches, which parts would be converted and why. Contacts no server.
    Explain {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        from: String,
        #[arg(long = "to", required = true)]
        to: Vec<String>,
        #[arg(long)]
        json: bool,
        message: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(_) => {
                println!("{}: OK", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", config.display());
                ExitCode::from(2)
            }
        },
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
                    eprintln!("{}: {e}", config.display());
                    return ExitCode::from(2);
                }
            };
            match cryptshare_gateway::mime::explain::explain(&cfg, &from, &to, &message, json) {
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
        Command::Serve { config: path } => {
            let cfg = match Config::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{}: {e}", path.display());
                    return ExitCode::from(2);
                }
            };
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .init();
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(serve(path, cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("cryptshare-gateway: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn serve(path: PathBuf, cfg: Config) -> anyhow::Result<()> {
    cryptshare_gateway::install_crypto_provider();
    std::fs::create_dir_all(&cfg.state.dir)
        .with_context(|| format!("state.dir: cannot create {}", cfg.state.dir.display()))?;
    let relay = Relay::new(&cfg).context("relay")?;
    let server = Server::bind(&cfg).await?;
    for a in server.local_addrs() {
        tracing::info!(listen = %a, "SMTP listener ready");
    }
    let reloader = server.reloader();
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match Config::load(&path) {
                Ok(new) => match reloader.reload(&new) {
                    Ok(()) => tracing::info!(config = %path.display(), "configuration reloaded"),
                    Err(e) => {
                        tracing::error!(error = %e, "reload refused; keeping the old configuration")
                    }
                },
                Err(e) => {
                    tracing::error!(error = %e, "reload refused; keeping the old configuration")
                }
            }
        }
    });
    let mut term = signal(SignalKind::terminate())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
        tracing::info!("shutting down: no new connections, finishing open transactions");
    };
    server
        .run(Arc::new(PassThrough::new(relay)), shutdown)
        .await;
    Ok(())
}
