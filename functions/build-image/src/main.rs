use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    artifacts_runtime::run("artifacts-build-image", artifacts_build_image::run).await
}
