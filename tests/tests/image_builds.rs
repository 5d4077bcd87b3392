//! Image builds end to end through the real Docker engine and a real registry: a Dockerfile in, an image
//! that `docker pull` finds out.

use serde_json::{json, Value};

use artifacts_tests::{context_tar, docker, TestApp, ADMIN_KEY};

/// A unique component name per test, so tests sharing the Docker engine never share images.
fn component(test: &str) -> String {
    format!("{test}-{}", std::process::id())
}

#[tokio::test]
async fn dockerfile_with_context_builds_pushes_and_pulls() {
    let (app, _registry) = TestApp::spawn_with_registry(|_| {}).await;
    let component = component("e2e");
    let dockerfile = "FROM busybox\nCOPY hello.txt /hello.txt\nRUN echo built-by-artifacts > /greeting\nCMD cat /greeting /hello.txt\n";
    let form = reqwest::multipart::Form::new()
        .part("dockerfile", reqwest::multipart::Part::bytes(dockerfile.as_bytes().to_vec()).file_name("Dockerfile"))
        .part(
            "context",
            reqwest::multipart::Part::bytes(context_tar(&[("hello.txt", "hello from the context\n")]))
                .file_name("context.tar"),
        )
        .text("component", component.clone())
        .text("branch", "feature/e2e")
        .text("architecture", "x86_64");
    let response = app
        .http
        .post(app.url("/api/v1/images"))
        .bearer_auth(ADMIN_KEY)
        .header("linux_username", "alice")
        .header("X-Github-Username", "alice-gh")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["status"], "queued");
    assert_eq!(accepted["errorMessage"], Value::Null);
    let build_id = accepted["buildId"].as_str().unwrap().to_owned();
    assert_eq!(accepted["statusUrl"], format!("/api/v1/builds/{build_id}"));
    assert_eq!(accepted["logsUrl"], format!("/api/v1/builds/{build_id}/logs"));
    let image_name = accepted["imageName"].as_str().unwrap().to_owned();
    assert!(
        image_name.starts_with(&format!("{}/{component}-feature-e2e-", app.settings.registry.address)),
        "{image_name}"
    );
    assert!(image_name.ends_with("-image:amd64"), "{image_name}");

    let (lines, end) = app.follow_logs(&build_id).await;
    assert_eq!(end, "succeeded", "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("RUN echo built-by-artifacts")), "{lines:#?}");

    let record = app.wait_for_build(&build_id).await;
    assert_eq!(record["status"], "succeeded");
    assert_eq!(record["kind"], "image");
    assert_eq!(record["attempts"], 1);
    assert_eq!(record["requestedBy"]["linuxUsername"], "alice");
    assert_eq!(record["requestedBy"]["githubUsername"], "alice-gh");
    assert_eq!(record["requestedBy"]["apiKeyId"], "admin");
    assert!(record["request"]["dockerfileDigest"].as_str().unwrap().starts_with("sha256:"));
    assert!(record["request"]["contextDigest"].as_str().unwrap().starts_with("sha256:"));

    let query = format!("/api/v1/images?component={component}&branch=feature/e2e&architecture=amd64");
    let found: Value = app.get(&query).await.json().await.unwrap();
    assert_eq!(found["status"], "found");
    assert_eq!(found["imageName"], image_name.as_str());
    assert_eq!(found["buildId"], build_id.as_str());
    let digest = found["digest"].as_str().unwrap();
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "{digest}");
    assert_eq!(record["result"]["digest"], digest);

    // Only the registry has it now: remove every local tag, pull it back by name, run it.
    let immutable = record["result"]["immutableName"].as_str().unwrap();
    docker(&["rmi", "--force", &image_name, immutable]).await;
    docker(&["pull", &image_name]).await;
    let output = docker(&["run", "--rm", "--network", "none", &image_name]).await;
    assert_eq!(output, "built-by-artifacts\nhello from the context\n");
    let pulled_digest = docker(&["image", "inspect", "--format", "{{index .RepoDigests 0}}", &image_name]).await;
    assert!(pulled_digest.trim().ends_with(digest), "{pulled_digest} vs {digest}");
}

#[tokio::test]
async fn nats_clients_submit_with_identity_headers() {
    let (app, _registry) = TestApp::spawn_with_registry(|_| {}).await;
    let component = component("nats");
    let mut headers = artifacts_tests::key_header(ADMIN_KEY);
    headers.insert("linux_username", "bob");
    headers.insert("github_username", "bob-gh");
    let payload = json!({"dockerfile": "FROM busybox\nRUN echo over-nats > /x\n", "component": component, "branch": "main", "architecture": "amd64"});
    let reply = app
        .nats
        .client
        .request_with_headers("artifacts.image.build", headers, serde_json::to_vec(&payload).unwrap().into())
        .await
        .unwrap();
    assert!(reply.headers.as_ref().and_then(|h| h.get("Nats-Service-Error-Code")).is_none(), "{reply:?}");
    let accepted: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(accepted["status"], "queued");
    let record = app.wait_for_build(accepted["buildId"].as_str().unwrap()).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    assert_eq!(record["requestedBy"]["linuxUsername"], "bob");
    assert_eq!(record["requestedBy"]["githubUsername"], "bob-gh");
    assert_eq!(record["requestedBy"]["apiKeyId"], "admin", "the key the request came with");

    let lookup = app
        .nats_request(
            "artifacts.image.get",
            &json!({"component": component, "branch": "main", "architecture": "amd64"}).to_string(),
        )
        .await;
    let found: Value = serde_json::from_slice(&lookup.payload).unwrap();
    assert_eq!(found["status"], "found");
}

#[tokio::test]
async fn twenty_identical_submissions_make_one_build() {
    let (app, _registry) = TestApp::spawn_with_registry(|_| {}).await;
    let component = component("dedup");
    let body = json!({"dockerfile": "FROM busybox\nRUN sleep 2 && echo once > /once\n", "component": component, "branch": "main", "architecture": "amd64"});
    let answers = futures::future::join_all((0..20).map(|_| app.post_image("", &body))).await;
    let ids: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 202, "{body}");
            body["buildId"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let build_id = ids.into_iter().next().unwrap();
    let record = app.wait_for_build(&build_id).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    assert_eq!(record["attempts"], 1);
    let builds: Value = app.get(&format!("/api/v1/builds?component={component}")).await.json().await.unwrap();
    assert_eq!(builds["builds"].as_array().unwrap().len(), 1, "{builds}");
    let (lines, _) = app.follow_logs(&build_id).await;
    assert_eq!(lines.iter().filter(|l| l.contains("RUN sleep 2")).count(), 1, "one Docker build: {lines:#?}");

    // Once it has succeeded, the same submission answers with that build; `force` builds it again.
    let (status, again) = app.post_image("", &body).await;
    assert_eq!((status, &again["status"], &again["buildId"]), (202, &json!("succeeded"), &json!(build_id)));
    let mut forced = body;
    forced["force"] = json!(true);
    let (status, again) = app.post_image("", &forced).await;
    assert_eq!((status, &again["status"]), (202, &json!("queued")));
    assert_ne!(again["buildId"], build_id.as_str());
}

#[tokio::test]
async fn wait_returns_the_final_record() {
    let (app, _registry) = TestApp::spawn_with_registry(|_| {}).await;
    let body = json!({"dockerfile": "FROM busybox\nRUN true\n", "component": component("wait"), "branch": "main", "architecture": "linux/amd64"});
    let response =
        app.http.post(app.url("/api/v1/images?wait=120")).bearer_auth(ADMIN_KEY).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let record: Value = response.json().await.unwrap();
    assert_eq!(record["status"], "succeeded", "{record}");
    assert!(record["finishedAt"].is_string());

    let bad =
        app.http.post(app.url("/api/v1/images?wait=soon")).bearer_auth(ADMIN_KEY).json(&body).send().await.unwrap();
    assert_eq!(bad.status(), 400);
}

async fn failed_build(app: &TestApp, dockerfile: &str, test: &str) -> Value {
    let body =
        json!({"dockerfile": dockerfile, "component": component(test), "branch": "main", "architecture": "amd64"});
    let (status, accepted) = app.post_image("", &body).await;
    assert_eq!(status, 202, "{accepted}");
    let record = app.wait_for_build(accepted["buildId"].as_str().unwrap()).await;
    assert_eq!(record["status"], "failed", "{record}");
    record
}

#[tokio::test]
async fn failing_builds_say_why() {
    let (app, _registry) = TestApp::spawn_with_registry(|_| {}).await;

    let record = failed_build(&app, "FROM busybox\nRUN echo about-to-fail && exit 3\n", "runfail").await;
    let message = record["errorMessage"].as_str().unwrap();
    // BuildKit: `executor failed running [/bin/sh -c ...]: exit code: 3`, then the step's output.
    assert!(message.contains("exit code: 3"), "{message}");
    assert!(message.contains("about-to-fail"), "the last log lines are in the message: {message}");
    assert_eq!(record["attempts"], 1, "a failing RUN is not retried");

    let record = failed_build(&app, "FROM busybox\nNOTANINSTRUCTION foo\n", "syntax").await;
    assert!(record["errorMessage"].as_str().unwrap().to_lowercase().contains("unknown instruction"), "{record}");

    // Issue 14: a missing base image read as Docker's raw registry-1.docker.io DNS error.
    let record = failed_build(&app, "FROM no-such-base-image-artifacts:1\nRUN true\n", "nobase").await;
    let message = record["errorMessage"].as_str().unwrap();
    assert!(
        message.starts_with("base image no-such-base-image-artifacts:1 is not in the worker's Docker engine"),
        "{message}"
    );
    assert!(!message.contains("registry-1.docker.io"), "{message}");
    assert_eq!(record["attempts"], 1, "a missing base image is not retried");

    // Issue 14: Docker's colour codes reached errorMessage.
    let record =
        failed_build(&app, "FROM busybox\nRUN printf '\\033[31mred\\033[0m failure\\n' && exit 4\n", "ansi").await;
    let message = record["errorMessage"].as_str().unwrap();
    assert!(message.contains("red failure") && !message.contains('\u{1b}'), "{message:?}");

    let (status, refused) = app
        .post_image(
            "",
            &json!({"dockerfile": "FROM busybox\n", "component": component("arch"), "branch": "main", "architecture": "arm64"}),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert!(refused["errorMessage"].as_str().unwrap().contains("no build worker builds linux/arm64"), "{refused}");
}

#[tokio::test]
async fn a_build_past_its_timeout_fails() {
    let (app, _registry) = TestApp::spawn_with_registry(|s| s.build.timeout_secs = 3).await;
    let record = failed_build(&app, "FROM busybox\nRUN sleep 60\n", "timeout").await;
    assert!(record["errorMessage"].as_str().unwrap().contains("timed out after 3s"), "{record}");
}

#[tokio::test]
async fn an_unreachable_registry_fails_after_bounded_attempts() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (app, _registry) = TestApp::spawn_with_registry(|s| {
        s.registry.address = format!("127.0.0.1:{closed}");
        s.build.max_attempts = 2;
    })
    .await;
    let record = failed_build(&app, "FROM busybox\nRUN echo registry-test > /x\n", "noregistry").await;
    assert!(record["errorMessage"].as_str().unwrap().contains("cannot push to the registry"), "{record}");
    assert_eq!(record["attempts"], 2);
}
