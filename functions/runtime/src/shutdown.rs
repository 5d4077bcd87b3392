//! Graceful shutdown: SIGINT or SIGTERM cancels a token that every loop watches, so a process stops
//! taking work, finishes (or hands back) what it holds, and exits.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How long a process may take to settle with NATS after the shutdown signal (and after the builds'
/// grace period) before it stops anyway (`artifacts up` waits a little longer before SIGKILL).
pub const GRACE: Duration = Duration::from_secs(8);

/// A token cancelled at the first SIGINT or SIGTERM, or when the process that started this one is gone
/// (`artifacts up` also asks for SIGTERM at its death, but that request can be lost: this does not
/// depend on it).
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let why = tokio::select! {
            _ = wait_for_signal() => "shutdown signal received",
            _ = orphaned() => "the process that started this one is gone",
        };
        // Cancel before logging: whatever becomes of the log line, the process stops.
        cancel.cancel();
        tracing::info!("{why}: finishing work in hand");
    });
    token
}

/// Resolves when this process's parent changes (it was reparented: its parent died).
async fn orphaned() {
    // SAFETY: getppid(2) has no preconditions and touches no memory.
    let parent = unsafe { libc::getppid() };
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        // SAFETY: as above.
        if unsafe { libc::getppid() } != parent {
            return;
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(err) => {
            tracing::warn!(%err, "cannot listen for SIGTERM; only Ctrl-C stops this process");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
