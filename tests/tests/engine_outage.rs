//! Failures by type, for the Docker engine: a worker whose engine does not answer (its socket missing, as
//! while `dockerd` restarts) hands its builds back without counting an attempt, for as long as the outage
//! lasts (up to `build.engine_outage_secs`), and builds them once the engine is back: an outage longer than
//! `build.max_attempts` retries fails no build.

use std::time::{Duration, Instant};

use serde_json::Value;

use artifacts_tests::cluster::{finished, submit, worker_with};
use artifacts_tests::{Registry, TestApp};

/// Longer than three counted attempts take (retries after 5 s and 10 s).
const OUTAGE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_build_waits_out_an_engine_outage_without_using_up_its_attempts() {
    artifacts_tests::require_docker().await;
    let registry = Registry::start().await;
    let address = registry.address.clone();
    let app = TestApp::spawn_without_builder(|settings| settings.registry.address = address).await;
    assert_eq!(app.settings.build.max_attempts, 3, "the outage outlasts this many attempts");
    // The worker's engine socket: absent for now, then a link to this machine's engine.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let host = format!("unix://{}", socket.display());
    let _worker = worker_with(&app, None, "amd64", &[("ARTIFACTS__DOCKER__HOST", host.as_str())]).await;

    let component = format!("engineaway-{}", std::process::id());
    let build_id = submit(&app, &component, &format!("FROM busybox\nRUN echo {component} > /x\n"), "amd64").await;
    let back_at = Instant::now() + OUTAGE;
    let mut record = Value::Null;
    while Instant::now() < back_at {
        record = app.get(&format!("/api/v1/builds/{build_id}")).await.json().await.unwrap_or_default();
        assert!(["queued", "running"].contains(&record["status"].as_str().unwrap_or("")), "{record}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let said = record["errorMessage"].as_str().unwrap_or("");
    assert!(said.contains("Docker engine"), "the record says why it waits: {record}");
    assert!(record["attempts"].as_u64().unwrap_or(0) <= 1, "no attempt counted: {record}");

    // The engine is back.
    std::os::unix::fs::symlink("/var/run/docker.sock", &socket).unwrap();
    let record = finished(&app, &build_id).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    assert_eq!(record["attempts"], 1, "{record}");
}

/// The bound: an engine that stays away past `build.engine_outage_secs` (0 here) is taken to be broken,
/// and builds fail after `build.max_attempts`, saying where the engine was looked for. (A worker process
/// of its own: the outage is the process's.)
#[tokio::test]
async fn a_broken_engine_fails_builds_after_bounded_attempts() {
    let app = TestApp::spawn_without_builder(|_| {}).await;
    let settings = [
        ("ARTIFACTS__DOCKER__HOST", "unix:///nonexistent/docker.sock"),
        ("ARTIFACTS__BUILD__ENGINE_OUTAGE_SECS", "0"),
        ("ARTIFACTS__BUILD__MAX_ATTEMPTS", "2"),
    ];
    let _worker = worker_with(&app, None, "amd64", &settings).await;
    let build_id = submit(&app, &format!("noengine-{}", std::process::id()), "FROM busybox\n", "amd64").await;
    let record = finished(&app, &build_id).await;
    assert_eq!(record["status"], "failed", "{record}");
    assert!(
        record["errorMessage"].as_str().unwrap().contains("no Docker engine at unix:///nonexistent/docker.sock"),
        "{record}"
    );
    assert_eq!(record["attempts"], 2, "{record}");
}
