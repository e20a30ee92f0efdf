//! The `cryptshare-gateway` command line. `anyhow` lives here only; modules use typed errors.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cryptshare_gateway::config::Config;

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
        Command::Serve { config } => match Config::load(&config) {
            Ok(_) => {
                eprintln!("serve: not built yet");
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("{}: {e}", config.display());
                ExitCode::from(2)
            }
        },
    }
}
