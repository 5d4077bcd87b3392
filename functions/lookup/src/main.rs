use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    artifacts_runtime::run("artifacts-lookup", |_settings, nats, shutdown| artifacts_lookup::run(nats, shutdown)).await
}
