use std::process::ExitCode;

use artifacts_gateway::startup::Application;

#[tokio::main]
async fn main() -> ExitCode {
    artifacts_runtime::run("artifacts-gateway", |settings, nats, shutdown| async move {
        let app = Application::build(settings, nats).await?;
        app.run_until_stopped(shutdown).await?;
        Ok(())
    })
    .await
}
