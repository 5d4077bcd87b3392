use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    artifacts_runtime::run("artifacts-build-component", artifacts_build_component::run).await
}
