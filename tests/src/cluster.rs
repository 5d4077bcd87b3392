//! The stack on a 3-node NATS cluster with build workers as processes of their own, for the cluster
//! tests and the cluster benchmark: starting a worker host, submitting through failovers, waiting.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::{json, Value};
use tokio::process::Child;

use artifacts_schemas::Architecture;

use crate::engines::DockerEngine;
use crate::{require_docker, Registry, TestApp, ADMIN_KEY};

/// The stack on a fresh 3-node cluster (every stream, bucket and object store with 3 replicas), with no
/// build worker of its own, pushing to a registry of its own.
pub async fn cluster_app() -> (TestApp, Registry) {
    cluster_app_with(|_| {}).await
}

/// Like `cluster_app`, with more settings.
pub async fn cluster_app_with(configure: impl FnOnce(&mut artifacts_runtime::Settings)) -> (TestApp, Registry) {
    require_docker().await;
    cluster_app_without_engine(configure).await
}

/// Like `cluster_app_with`, for what needs no Docker engine (nothing is built).
pub async fn cluster_app_without_engine(
    configure: impl FnOnce(&mut artifacts_runtime::Settings),
) -> (TestApp, Registry) {
    let registry = Registry::start().await;
    let address = registry.address.clone();
    let app = TestApp::spawn_on_cluster(|settings| {
        settings.registry.address = address;
        settings.build.ack_wait_secs = 3;
        // Requests fail over to another node within this.
        settings.nats.request_timeout_secs = 5;
        configure(settings);
    })
    .await;
    (app, registry)
}

/// A build-image worker host: the function as a process, on `engine` (none: this machine's own),
/// building `architectures`, with `settings` (environment variables) besides; returns once it has
/// registered.
pub async fn worker(app: &TestApp, engine: Option<&DockerEngine>, architectures: &str) -> Child {
    worker_with(app, engine, architectures, &[]).await
}

pub async fn worker_with(
    app: &TestApp,
    engine: Option<&DockerEngine>,
    architectures: &str,
    settings: &[(&str, &str)],
) -> Child {
    let mut command = app.build_image_command();
    command.env("ARTIFACTS__BUILD__ARCHITECTURES", architectures).env_remove("DOCKER_HOST");
    if let Some(engine) = engine {
        command.env("ARTIFACTS__DOCKER__HOST", &engine.host);
    }
    command.envs(settings.iter().copied());
    let child = command.spawn().expect("artifacts-build-image starts");
    let platforms: Vec<&str> =
        architectures.split(',').map(|a| Architecture::parse(a).expect("an architecture").platform()).collect();
    for _ in 0..100 {
        if offered(app).await.iter().any(|offer| platforms.iter().all(|p| offer.split(',').any(|o| o == *p))) {
            return child;
        }
    }
    panic!("the worker for {architectures} did not register");
}

/// The `architectures` metadata of every build-image worker that answers `$SRV.INFO` within 200 ms.
pub async fn offered(app: &TestApp) -> Vec<String> {
    let inbox = app.nats.client.new_inbox();
    let mut answers = app.nats.client.subscribe(inbox.clone()).await.unwrap();
    app.nats.client.publish_with_reply("$SRV.INFO.artifacts-build-image", inbox, "".into()).await.unwrap();
    let mut offered = Vec::new();
    while let Ok(Some(answer)) = tokio::time::timeout(Duration::from_millis(200), answers.next()).await {
        let info: Value = serde_json::from_slice(&answer.payload).unwrap_or_default();
        offered.push(info["metadata"]["architectures"].as_str().unwrap_or("").to_owned());
    }
    offered
}

/// Submits an image build, retrying while the cluster elects a new leader (a 503 is not an acceptance).
pub async fn submit(app: &TestApp, component: &str, dockerfile: &str, architecture: &str) -> String {
    let body =
        json!({"dockerfile": dockerfile, "component": component, "branch": "main", "architecture": architecture});
    for _ in 0..30 {
        let response = app.http.post(app.url("/api/v1/images")).bearer_auth(ADMIN_KEY).json(&body).send().await;
        let Ok(response) = response else { continue };
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or_default();
        match status.as_u16() {
            202 => return answer["buildId"].as_str().unwrap().to_owned(),
            503 => tokio::time::sleep(Duration::from_millis(500)).await,
            _ => panic!("{status}: {answer}"),
        }
    }
    panic!("the submission of {component} was never accepted");
}

/// Waits for the build's end, through failovers (a lookup that fails is asked again).
pub async fn finished(app: &TestApp, build_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(240);
    while Instant::now() < deadline {
        if let Ok(response) =
            app.http.get(app.url(&format!("/api/v1/builds/{build_id}"))).bearer_auth(ADMIN_KEY).send().await
        {
            let record: Value = response.json().await.unwrap_or_default();
            if ["succeeded", "failed", "cancelled"].contains(&record["status"].as_str().unwrap_or("")) {
                return record;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("build {build_id} did not finish");
}

/// A listing, asked again while it answers 503 (a listing reads every key, and a consumer created while
/// a node's streams elect new leaders can time out: the 503 says to retry).
pub async fn listing(app: &TestApp, path: &str) -> Value {
    for _ in 0..20 {
        let response = app.get(path).await;
        if response.status() != 503 {
            assert_eq!(response.status(), 200, "{path}");
            return response.json().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("{path} answered 503 for 10 s");
}

/// The node whose server leads `stream`.
pub async fn leader_of(app: &TestApp, stream: &str) -> String {
    let mut stream = app.nats.jetstream.get_stream(stream).await.expect("the stream");
    let info = stream.info().await.expect("stream info");
    info.cluster.as_ref().and_then(|cluster| cluster.leader.clone()).expect("a clustered stream has a leader")
}
