//! Once a submission is answered, its build happens: through a worker killed mid-build and through a
//! restart of nats-server. The build-image function runs here as a real process, so it can be killed.
//! A job that fails at every delivery is not retried forever: it goes to the dead-letter stream.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::process::Child;

use artifacts_tests::{require_docker, Registry, TestApp, ADMIN_KEY};

/// Starts the function as a process and waits until it serves submissions.
async fn build_image_process(app: &TestApp) -> Child {
    let child =
        app.build_image_command().env("ARTIFACTS__BUILD__SLOTS", "1").spawn().expect("artifacts-build-image starts");
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

/// The worker loop the git trigger runs on, with a handler that always fails: after the last allowed
/// delivery the job is stored on the dead-letter stream with the reason, and leaves the queue.
#[tokio::test]
async fn a_job_failing_at_every_delivery_goes_to_the_dead_letter_stream() {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    use artifacts_runtime::jobs::{self, DeadLetter, Outcome, WorkerSpec, DEAD_LETTER_REASON_HEADER};
    use artifacts_store::ResourceNames;

    let app = TestApp::spawn().await;
    let nats = app.nats.clone();
    let subject = "artifacts.test.jobs".to_owned();
    let stream = async_nats::jetstream::stream::Config {
        name: "TEST_JOBS".into(),
        subjects: vec![subject.clone()],
        retention: async_nats::jetstream::stream::RetentionPolicy::WorkQueue,
        ..Default::default()
    };
    nats.jetstream.create_stream(stream).await.unwrap();
    nats.jetstream.publish(subject.clone(), r#"{"job":1}"#.into()).await.unwrap().await.unwrap();

    let dead_subject = nats.subjects.dead_letter(&subject);
    let spec = WorkerSpec {
        stream: "TEST_JOBS".into(),
        consumer: "test".into(),
        subject,
        slots: 1,
        ack_wait: Duration::from_secs(3),
        dead_letter: Some(DeadLetter { subject: dead_subject.clone(), max_deliveries: 3 }),
    };
    let deliveries = Arc::new(AtomicI64::new(0));
    let seen = Arc::clone(&deliveries);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (worker_nats, stop) = (nats.clone(), shutdown.clone());
    let worker = tokio::spawn(async move {
        let handle = move |_: Value, delivery: jobs::Delivery| {
            seen.fetch_max(delivery.delivered, Ordering::SeqCst);
            async { Outcome::Retry(Duration::ZERO) }
        };
        jobs::work(&worker_nats, spec, handle, stop).await
    });

    let dead_letters =
        nats.jetstream.get_stream(ResourceNames::new(&nats.subjects).dead_letter_stream()).await.unwrap();
    let mut buried = None;
    for _ in 0..300 {
        if let Ok(message) = dead_letters.get_last_raw_message_by_subject(&dead_subject).await {
            buried = Some(message);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let buried = buried.expect("the job reached the dead-letter stream within 30 s");
    assert_eq!(&buried.payload[..], br#"{"job":1}"#);
    let reason = buried.headers.get(DEAD_LETTER_REASON_HEADER).map(|value| value.to_string());
    assert_eq!(reason.as_deref(), Some("failed at each of 3 deliveries"));
    assert_eq!(deliveries.load(Ordering::SeqCst), 3, "delivered three times, no more");
    let mut queue = nats.jetstream.get_stream("TEST_JOBS").await.unwrap();
    let mut left = u64::MAX;
    for _ in 0..50 {
        left = queue.info().await.unwrap().state.messages;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "the job left the queue");
    shutdown.cancel();
    worker.await.unwrap().unwrap();
}
