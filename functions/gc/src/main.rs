use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    artifacts_runtime::run("artifacts-gc", artifacts_gc::run).await
}
