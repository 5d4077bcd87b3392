//! Once a submission is answered, its build happens: through a worker killed mid-build and through a
//! restart of nats-server. The build-image function runs here as a real process, so it can be killed.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::process::{Child, Command};

use artifacts_tests::{require_docker, workspace_binary, Registry, TestApp, ADMIN_KEY};

/// Starts the function as a process and waits until it serves submissions.
async fn build_image_process(app: &TestApp) -> Child {
    let child = Command::new(workspace_binary("artifacts-build-image"))
        .env("ARTIFACTS__NATS__URL", app.nats_server.url())
        .env("ARTIFACTS_ADMIN_KEY", ADMIN_KEY)
        .env("ARTIFACTS__REGISTRY__ADDRESS", &app.settings.registry.address)
        .env("ARTIFACTS__BUILD__ACK_WAIT_SECS", app.settings.build.ack_wait_secs.to_string())
        .env("ARTIFACTS__BUILD__SLOTS", "1")
        .env("ARTIFACTS__LOG__FORMAT", "json")
        .env_remove("ARTIFACTS_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("artifacts-build-image starts");
    app.wait_for_service("artifacts-build-image").await;
    child
}

async fn app_without_builder() -> (TestApp, Registry) {
    require_docker().await;
    let registry = Registry::start().await;
    let address = registry.address.clone();
    let app = TestApp::spawn_without_builder(|settings| {
        settings.registry.address = address;
        settings.build.ack_wait_secs = 3;
    })
    .await;
    (app, registry)
}

async fn submit(app: &TestApp, component: &str, dockerfile: &str) -> String {
    let body = json!({"dockerfile": dockerfile, "component": component, "branch": "main", "architecture": "amd64"});
    let response = app.http.post(app.url("/api/v1/images")).bearer_auth(ADMIN_KEY).json(&body).send().await.unwrap();
    let status = response.status();
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(status, 202, "{accepted}");
    accepted["buildId"].as_str().unwrap().to_owned()
}

async fn status_of(app: &TestApp, build_id: &str) -> Value {
    app.get(&format!("/api/v1/builds/{build_id}")).await.json().await.unwrap()
}

#[tokio::test]
async fn a_build_survives_its_worker_being_killed() {
    let (app, _registry) = app_without_builder().await;
    let mut first = build_image_process(&app).await;
    let component = format!("killed-{}", std::process::id());
    let dockerfile = format!("FROM busybox\nRUN sleep 5 && echo {component} > /done\n");
    let build_id = submit(&app, &component, &dockerfile).await;

    let mut running = false;
    for _ in 0..200 {
        if status_of(&app, &build_id).await["status"] == "running" {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(running, "the first worker never started the build");
    tokio::time::sleep(Duration::from_secs(1)).await;
    first.kill().await.expect("SIGKILL");

    let _second = build_image_process(&app).await;
    let record = app.wait_for_build(&build_id).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    assert_eq!(record["attempts"], 2, "redelivered once after the kill: {record}");
    let (lines, end) = app.follow_logs(&build_id).await;
    assert_eq!(end, "succeeded");
    assert!(
        lines.iter().any(|l| l.contains("attempt 1 of 3")) && lines.iter().any(|l| l.contains("attempt 2 of 3")),
        "{lines:#?}"
    );
}

#[tokio::test]
async fn queued_builds_survive_a_nats_server_restart() {
    let (mut app, _registry) = app_without_builder().await;
    let _worker = build_image_process(&app).await;
    // One slot: the first build runs while the others wait in the queue.
    let mut ids = Vec::new();
    for n in 0..3 {
        let component = format!("restart{n}-{}", std::process::id());
        ids.push(submit(&app, &component, &format!("FROM busybox\nRUN sleep 2 && echo {component} > /x\n")).await);
    }
    assert_eq!(status_of(&app, &ids[2]).await["status"], "queued");
    app.nats_server.restart().await;
    for build_id in &ids {
        let record = app.wait_for_build(build_id).await;
        assert_eq!(record["status"], "succeeded", "{record}");
    }
}
