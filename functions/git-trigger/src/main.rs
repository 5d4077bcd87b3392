use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    artifacts_runtime::run("artifacts-git-trigger", artifacts_git_trigger::run).await
}
