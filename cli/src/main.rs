//! `artifacts`: the command-line program of artifact storage.
//!
//! `artifacts up` runs the whole stack in the foreground (see [`up`]); `artifacts keys` manages API keys
//! through the gateway (see [`keys`]).

mod keys;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "artifacts", version, about = "Self-hosted build and artifact service")]
struct Cli {
    /// A TOML configuration file (default: `ARTIFACTS_CONFIG`, else none).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start NATS, the registry, the gateway and every function, each as its own process, until Ctrl-C.
    Up {
        /// Where NATS, the registry and the admin key keep their data.
        #[arg(long, default_value = "./.artifacts", value_name = "DIR")]
        data_dir: PathBuf,
    },
    /// Create, list and revoke API keys (needs an admin key).
    Keys(keys::KeysArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up { data_dir } => up::run(cli.config, data_dir).await,
        Command::Keys(args) => keys::run(cli.config, args).await,
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("artifacts: {err:#}");
            ExitCode::FAILURE
        }
    }
}
