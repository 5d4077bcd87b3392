//! Issue 14: the README's tour, run as written (`examples/tour.sh`) against the stack `artifacts up`
//! starts, so it cannot drift from what works; and the examples fail with one plain line, not pages of
//! tracebacks, when the stack is down.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use artifacts_tests::up::UpStack;
use artifacts_tests::{free_port, repo_root, require_docker, require_program};

#[tokio::test]
async fn the_readme_tour_runs_end_to_end_on_a_fresh_stack() {
    require_docker().await;
    require_program("git", "git");
    let tour_dir = tempfile::tempdir().expect("a temporary directory");
    let roots = tour_dir.path().to_str().unwrap().to_owned();
    let stack =
        UpStack::start(&[("ARTIFACTS__GIT__ALLOWED_SCHEMES", "https,file"), ("ARTIFACTS__GIT__FILE_ROOTS", &roots)])
            .await;
    let run = Command::new("bash")
        .arg(repo_root().join("examples/tour.sh"))
        .env("ARTIFACTS_URL", &stack.gateway)
        .env("ARTIFACTS_KEY", &stack.admin_key)
        .env("TOUR_DIR", tour_dir.path())
        // The client beside the stack's binaries, as `scripts/up` leaves it.
        .env("PATH", client_path())
        // From another directory than the repository's, as a reader would run it.
        .current_dir(tour_dir.path())
        .stdin(Stdio::null())
        .output();
    let output = tokio::time::timeout(Duration::from_secs(600), run).await.expect("the tour ends").expect("bash runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    println!("{stdout}");
    assert!(output.status.success(), "the tour stopped:\n{stdout}\n{stderr}");
    assert!(stdout.contains("tour: every step answered as the README says"), "{stdout}");
    assert!(stdout.contains("hi, built"), "the image ran: {stdout}");
    assert!(stdout.contains("bin/hello"), "the component's archive lists its files: {stdout}");
    assert!(stdout.lines().any(|line| line == "build succeeded"), "the text log ends with the status: {stdout}");
    assert!(!stdout.contains('\u{1b}'), "no terminal codes reach the log: {stdout}");
    assert!(stdout.contains("logged in to"), "the client logged in: {stdout}");
    assert!(stdout.contains("hello-cli-image"), "the client built the image and looked it up: {stdout}");
}

/// `PATH` with the directory of the workspace's `artifacts` binary first.
fn client_path() -> std::ffi::OsString {
    let dir = artifacts_tests::workspace_binary("artifacts").parent().expect("a directory").to_path_buf();
    let rest = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(dir).chain(std::env::split_paths(&rest))).expect("a PATH")
}

#[tokio::test]
async fn the_nats_example_says_in_one_line_that_nothing_answers() {
    let python = require_program("python3", "python3");
    let down = format!("nats://127.0.0.1:{}", free_port());
    let run = Command::new(python)
        .arg(repo_root().join("examples/nats_request.py"))
        .args(["--server", &down, "artifacts.image.get", "{}"])
        .env("ARTIFACTS_KEY", "ak_0123456789abcdef_secret")
        .current_dir(std::env::temp_dir())
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run).await.expect("it gives up").expect("python runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("No module named 'nats'") {
        panic!("nats-py is missing: run the suite with scripts/test, which installs it into target/python");
    }
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line, no traceback: {stderr}");
    assert!(stderr.contains("cannot connect to NATS"), "{stderr}");
}
