//! The runtime every artifacts process stands on.
//!
//! A function binary is a small `main` that calls [`run`] with its own work: the runtime reads the
//! layered [`configuration`], starts [`telemetry`], connects to [`nats`] (opening the stack's state, an
//! [`artifacts_store::Store`], which ensures every stream and bucket), installs its [`metrics`] recorder,
//! and cancels a token on SIGINT/SIGTERM ([`shutdown`]). Request/reply endpoints are NATS micro services
//! built with [`service::serve`]; the gateway calls them with [`service::call`].
//!
//! Nothing here speaks to a Docker engine or to the registry's HTTP API: that is `artifacts-engine`
//! (the engine, the registry client, build attempts and the build functions' frame), which only the
//! build hosts' processes link, so that the gateway and the `artifacts` command link no Docker or
//! registry-client code.
//!
//! ```text
//!  HTTP ──> gateway ──request/reply──> lookup, build submissions (NATS micro services)
//!                    └─JetStream────> durable jobs, push events ──> build workers, git trigger
//!                    artifacts_store::Store: KV buckets, object stores <── records and tarballs
//! ```

pub mod archive;
pub mod auth;
pub mod configuration;
pub mod jobs;
pub mod logs;
pub mod metrics;
pub mod nats;
pub mod nats_users;
pub mod provenance;
pub mod rate_limit;
pub mod registry_auth;
pub mod secrets;
pub mod service;
pub mod shutdown;
pub mod telemetry;
pub mod uploads;

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

pub use configuration::Settings;
pub use nats::Nats;

/// The command line every function binary shares.
#[derive(Debug, Parser)]
struct FunctionArgs {
    /// A TOML configuration file (default: `ARTIFACTS_CONFIG`, else none).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// A process's work, as its library makes it: boxed there, so that its state machine, and every async
/// function it awaits, is compiled once, in the library, rather than again in each binary that polls it
/// (an `async fn`'s code is generated where it is polled). Half of a first start's build went to
/// generating the same async code in each of the seven binaries (BENCHMARKS.md, "First start").
pub type Work = std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// The whole `main` of a function binary: settings, tracing, NATS, shutdown on signal, then `work`
/// until it returns. Errors are printed in full and turn into a failing exit code.
pub fn run(
    process_name: &'static str,
    work: fn(Settings, Nats, CancellationToken) -> Work,
) -> std::pin::Pin<Box<dyn Future<Output = ExitCode>>> {
    Box::pin(run_process(process_name, work))
}

async fn run_process(process_name: &'static str, work: fn(Settings, Nats, CancellationToken) -> Work) -> ExitCode {
    let args = FunctionArgs::parse();
    let settings = match Settings::load(args.config.as_deref()) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("{process_name}: {err}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&settings.log);
    crate::metrics::install(process_name);
    let shutdown = shutdown::on_signal();
    let stop_within = settings.stop_within();
    let working = async {
        let nats = tokio::select! {
            nats = nats::connect(&settings, process_name) => nats?,
            _ = shutdown.cancelled() => return Ok(()),
        };
        tokio::spawn(crate::metrics::keep_up(shutdown.clone()));
        tokio::spawn(crate::metrics::answer_scrapes(nats.clone(), shutdown.clone()));
        work(settings, nats, shutdown.clone()).await
    };
    // Finishing cleanly may need NATS, which may be stopping too: past the grace period, stop anyway.
    let overdue = async {
        shutdown.cancelled().await;
        tokio::time::sleep(stop_within).await;
    };
    let result = tokio::select! {
        result = working => result,
        _ = overdue => {
            tracing::warn!("{process_name} did not finish within {}s of the shutdown signal; stopping anyway", stop_within.as_secs());
            Ok(())
        }
    };
    match result {
        Ok(()) => {
            tracing::info!("{process_name} stopped");
            ExitCode::SUCCESS
        }
        Err(err) => {
            tracing::error!("{process_name} failed: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `name` on the `PATH`, or in the system directories a service's `PATH` may lack.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}
