//! Issue 12: the registry behind the service's keys, driven with the real `docker` CLI against a real
//! registry configured as `artifacts up` configures it (token authentication, realm = the gateway).
//! Reproduced before: anyone who reached the registry could delete a manifest, push under any
//! component's repository, and a key limited to one component could pull every other team's images.

use std::path::Path;

use serde_json::{json, Value};
use tokio::process::Command;

use artifacts_runtime::registry_auth::{self, TOKEN_PATH};
use artifacts_tests::{unique_name, TestApp, ADMIN_KEY};

/// Runs the docker CLI with its own configuration directory (its saved logins), input on stdin.
async fn docker_as(config: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use tokio::io::AsyncWriteExt as _;
    let mut child = Command::new("docker")
        .env("DOCKER_CONFIG", config)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the docker CLI runs");
    let mut input = child.stdin.take().expect("piped");
    input.write_all(stdin.unwrap_or_default().as_bytes()).await.unwrap();
    drop(input);
    let output = child.wait_with_output().await.unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

async fn build_image(app: &TestApp, component: &str) -> Value {
    let body = json!({"dockerfile": format!("FROM busybox\nRUN echo {component} > /which\n"), "component": component, "branch": "main", "architecture": "amd64"});
    let response =
        app.http.post(app.url("/api/v1/images?wait=120")).bearer_auth(ADMIN_KEY).json(&body).send().await.unwrap();
    let record: Value = response.json().await.unwrap();
    assert_eq!(record["status"], "succeeded", "a build still pushes: {record}");
    record
}

/// A token for `scope`, asked with `key` as the Basic password: (status, granted access).
async fn token(app: &TestApp, key: &str, scope: &str) -> (u16, Value) {
    let answer = app
        .http
        .get(app.url(TOKEN_PATH))
        .query(&[("service", registry_auth::SERVICE), ("scope", scope)])
        .basic_auth("anyone", Some(key))
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let body: Value = answer.json().await.unwrap();
    let access = body["token"]
        .as_str()
        .and_then(|token| token.split('.').nth(1))
        .map(|claims| {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims).unwrap();
            serde_json::from_slice::<Value>(&bytes).unwrap()["access"].clone()
        })
        .unwrap_or(body);
    (status, access)
}

#[tokio::test]
async fn registry_access_follows_api_keys() {
    let (app, registry, _signing) = TestApp::spawn_with_token_registry().await;
    let registry_address = registry.address.clone();

    let (mine, theirs) = (unique_name("reg-mine"), unique_name("reg-theirs"));
    let my_image = build_image(&app, &mine).await["result"]["imageName"].as_str().unwrap().to_owned();
    let their_image = build_image(&app, &theirs).await["result"]["imageName"].as_str().unwrap().to_owned();

    // Nobody without a key: the catalog and a manifest delete are refused by the registry itself.
    let http = reqwest::Client::new();
    let catalog = http.get(format!("http://{registry_address}/v2/_catalog")).send().await.unwrap();
    assert_eq!(catalog.status(), 401);
    let (repository, _) = my_image.trim_start_matches(&format!("{registry_address}/")).split_once(':').unwrap();
    let anonymous_delete =
        http.delete(format!("http://{registry_address}/v2/{repository}/manifests/amd64")).send().await.unwrap();
    assert_eq!(anonymous_delete.status(), 401);

    let (reader, key_id) = app.create_key(json!({"name": "reader", "scopes": ["read"], "components": [mine]})).await;
    let config = tempfile::tempdir().unwrap();
    let (logged_in, output) = docker_as(
        config.path(),
        &["login", &registry_address, "--username", "anyone", "--password-stdin"],
        Some(&reader),
    )
    .await;
    assert!(logged_in, "docker login with a read key: {output}");
    let (pulled, output) = docker_as(config.path(), &["pull", &my_image], None).await;
    assert!(pulled, "the key's own component pulls: {output}");
    let (pulled, output) = docker_as(config.path(), &["pull", &their_image], None).await;
    assert!(!pulled, "another component's image does not pull: {output}");
    assert!(output.contains("denied") || output.contains("unauthorized"), "{output}");

    let evil = format!("{registry_address}/{repository}:evil");
    docker_as(config.path(), &["tag", &my_image, &evil], None).await;
    let (pushed, output) = docker_as(config.path(), &["push", &evil], None).await;
    assert!(!pushed, "a read key cannot push: {output}");
    docker_as(config.path(), &["rmi", &evil], None).await;

    // The token endpoint grants no more than asked and allowed.
    let (status, access) = token(&app, &reader, &format!("repository:{repository}:pull,push,delete")).await;
    assert_eq!(status, 200);
    assert_eq!(access, json!([{"type": "repository", "name": repository, "actions": ["pull"]}]));
    let (their_repository, _) =
        their_image.trim_start_matches(&format!("{registry_address}/")).split_once(':').unwrap();
    let (_, access) = token(&app, &reader, &format!("repository:{their_repository}:pull")).await;
    assert_eq!(access, json!([]));
    let (_, access) = token(&app, ADMIN_KEY, &format!("repository:{their_repository}:pull,push")).await;
    assert_eq!(access[0]["actions"], json!(["pull", "push"]), "an admin key may push");
    let (status, _) = token(&app, "ak_0000000000000000_wrong", "repository:x:pull").await;
    assert_eq!(status, 401);

    // A revoked key gets no new token.
    let revoked =
        app.http.delete(app.url(&format!("/api/v1/keys/{key_id}"))).bearer_auth(ADMIN_KEY).send().await.unwrap();
    assert_eq!(revoked.status(), 200);
    let (status, _) = token(&app, &reader, &format!("repository:{repository}:pull")).await;
    assert_eq!(status, 401, "a revoked key is refused at its next token request");
    println!("registry: read key pulled its own component, was denied another's, push and delete; revoked: 401");
}
