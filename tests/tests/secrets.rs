//! Build secrets (issue 28): the routes and NATS subjects (admin only, never a value in an answer), the
//! value encrypted at rest, and component builds that read a secret at `/run/secrets/<name>` (in memory,
//! read-only) while their log shows `***` in its place and components outside its patterns cannot have it.

use std::io::Read;

use futures::StreamExt;
use serde_json::{json, Value};
use sha2::Digest;

use artifacts_tests::{key_header, manifest, require_docker, unique_name, GitRepo, TestApp, ADMIN_KEY};

/// A stack whose secrets key lives in a directory of this test's own.
async fn app() -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("keys").join("secrets.key");
    let app = TestApp::spawn_with(|settings| {
        artifacts_tests::allow_local_repositories(settings);
        settings.secrets.key_file = Some(key_file);
    })
    .await;
    (app, dir)
}

/// A value no test output could hold by chance.
fn random_value(label: &str) -> String {
    format!("{label}-{}", hex::encode(rand::random::<[u8; 12]>()))
}

async fn put(app: &TestApp, key: &str, body: Value) -> (u16, Value) {
    let response = app.http.post(app.url("/api/v1/secrets")).bearer_auth(key).json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn list(app: &TestApp, key: &str) -> (u16, Value) {
    let response = app.http.get(app.url("/api/v1/secrets")).bearer_auth(key).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn delete(app: &TestApp, key: &str, name: &str) -> (u16, Value) {
    let response = app.http.delete(app.url(&format!("/api/v1/secrets/{name}"))).bearer_auth(key).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Every raw value of the secrets bucket, as NATS holds them.
async fn bucket_values(app: &TestApp) -> Vec<Vec<u8>> {
    let store = artifacts_tests::raw_bucket(&app.nats, "secrets").await;
    let keys: Vec<String> = store.keys().await.unwrap().map(|k| k.unwrap()).collect().await;
    let mut values = Vec::new();
    for key in keys {
        values.push(store.get(key).await.unwrap().unwrap().to_vec());
    }
    values
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle.as_bytes())
}

#[tokio::test]
async fn admins_manage_secrets_and_no_answer_holds_a_value() {
    let (app, _dir) = app().await;
    let value = random_value("npm");
    let (status, created) =
        put(&app, ADMIN_KEY, json!({"name": "npm-token", "value": value, "components": ["web-*"]})).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"], "created");
    assert_eq!(created["name"], "npm-token");
    assert_eq!(created["components"], json!(["web-*"]));
    assert!(created["createdAt"].is_string() && created.get("errorMessage").is_some(), "{created}");
    assert!(!created.to_string().contains(&value));

    let newer = random_value("npm2");
    let (status, updated) =
        put(&app, ADMIN_KEY, json!({"name": "npm-token", "value": newer, "components": ["web-*", "api"]})).await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["status"], "updated");
    assert_eq!(updated["createdAt"], created["createdAt"], "a replaced secret keeps its creation time");
    assert!(!updated.to_string().contains(&newer));

    let (status, listed) = list(&app, ADMIN_KEY).await;
    assert_eq!(status, 200);
    assert_eq!(listed["status"], "ok");
    assert!(listed.get("errorMessage").is_some(), "{listed}");
    let secrets = listed["secrets"].as_array().unwrap();
    assert_eq!(secrets.len(), 1);
    assert_eq!(secrets[0]["name"], "npm-token");
    assert_eq!(secrets[0]["components"], json!(["web-*", "api"]));
    assert!(secrets[0]["updatedAt"].is_string());
    assert!(!listed.to_string().contains(&value) && !listed.to_string().contains(&newer));

    // At rest: neither the value nor its base64 is in the bucket.
    use base64::Engine as _;
    let values = bucket_values(&app).await;
    assert_eq!(values.len(), 1);
    for encoded in [newer.clone(), base64::engine::general_purpose::STANDARD.encode(&newer)] {
        assert!(!contains(&values[0], &encoded), "the bucket holds the value in the clear");
    }

    // Keys without the admin scope cannot even list.
    let (builder, _) = app.create_key(json!({"name": "builder", "scopes": ["build"]})).await;
    assert_eq!(put(&app, &builder, json!({"name": "x", "value": "v", "components": ["a"]})).await.0, 403);
    assert_eq!(list(&app, &builder).await.0, 403);
    let (status, refused) = delete(&app, &builder, "npm-token").await;
    assert_eq!(status, 403);
    assert!(refused["errorMessage"].as_str().unwrap().contains("admin"), "{refused}");
    assert_eq!(app.http.get(app.url("/api/v1/secrets")).send().await.unwrap().status(), 401);

    // Bad input is a 400 that says what to fix.
    for (body, says) in [
        (json!({"name": "Bad Name", "value": "v", "components": ["a"]}), "secret name"),
        (json!({"name": "..", "value": "v", "components": ["a"]}), "secret name"),
        (json!({"name": "x".repeat(65), "value": "v", "components": ["a"]}), "secret name"),
        (json!({"name": "big", "value": "v".repeat(64 * 1024 + 1), "components": ["a"]}), "64 KiB"),
        (json!({"name": "none", "value": "v", "components": []}), "at least one component pattern"),
        (json!({"name": "pat", "value": "v", "components": ["Bad/"]}), "component pattern"),
        (json!({"name": "nofield", "components": ["a"]}), "value"),
    ] {
        let (status, answer) = put(&app, ADMIN_KEY, body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["status"], "invalid");
        assert!(answer["errorMessage"].as_str().unwrap().contains(says), "{answer}");
    }
    let exactly = "v".repeat(64 * 1024);
    assert_eq!(put(&app, ADMIN_KEY, json!({"name": "big", "value": exactly, "components": ["a"]})).await.0, 201);
    assert_eq!(delete(&app, ADMIN_KEY, "Bad%20Name").await.0, 400);

    // A limited admin manages only secrets within its patterns.
    let (limited, _) =
        app.create_key(json!({"name": "team-a admin", "scopes": ["admin"], "components": ["team-a*"]})).await;
    let (status, answer) =
        put(&app, &limited, json!({"name": "team-a-tok", "value": "v", "components": ["team-a-x"]})).await;
    assert_eq!(status, 201, "{answer}");
    let (status, answer) = put(&app, &limited, json!({"name": "wide", "value": "v", "components": ["*"]})).await;
    assert_eq!(status, 403, "{answer}");
    assert!(answer["errorMessage"].as_str().unwrap().contains("team-a*"), "{answer}");
    let (status, _) = put(&app, &limited, json!({"name": "npm-token", "value": "v", "components": ["team-a"]})).await;
    assert_eq!(status, 403, "a limited admin cannot take over a wider secret");
    let names: Vec<Value> =
        list(&app, &limited).await.1["secrets"].as_array().unwrap().iter().map(|s| s["name"].clone()).collect();
    assert_eq!(names, vec![json!("team-a-tok")]);
    assert_eq!(delete(&app, &limited, "npm-token").await.0, 403);

    let (status, deleted) = delete(&app, ADMIN_KEY, "npm-token").await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["status"], "deleted");
    let (status, gone) = delete(&app, ADMIN_KEY, "npm-token").await;
    assert_eq!(status, 404, "{gone}");
    assert!(gone["errorMessage"].as_str().unwrap().contains("npm-token"));

    // The key file was made private on first use.
    use std::os::unix::fs::PermissionsExt;
    let key_file = app.settings.secrets.key_file.clone().unwrap();
    assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
}

#[tokio::test]
async fn nats_subjects_answer_as_the_routes_do() {
    let (app, _dir) = app().await;
    let value = random_value("nats");
    let body = json!({"name": "deploy.key", "value": value, "components": ["svc"]}).to_string();
    let reply = app.nats_request("artifacts.secret.put", &body).await;
    let answer: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(answer["status"], "created", "{answer}");
    assert!(!String::from_utf8_lossy(&reply.payload).contains(&value));
    let reply = app.nats_request("artifacts.secret.put", &body).await;
    assert_eq!(serde_json::from_slice::<Value>(&reply.payload).unwrap()["status"], "updated");

    let reply = app.nats_request("artifacts.secret.list", "{}").await;
    let listed: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(listed["secrets"][0]["name"], "deploy.key", "{listed}");
    assert!(!String::from_utf8_lossy(&reply.payload).contains(&value));

    let (reader, _) = app.create_key(json!({"name": "reader", "scopes": ["read"]})).await;
    for subject in ["artifacts.secret.put", "artifacts.secret.list", "artifacts.secret.delete"] {
        let reply = app.nats_request_with(subject, key_header(&reader), &body).await;
        let code = reply.headers.as_ref().and_then(|h| h.get("Nats-Service-Error-Code")).map(|v| v.to_string());
        assert_eq!(code.as_deref(), Some("403"), "{subject}");
    }
    let reply = app.nats_request("artifacts.secret.put", r#"{"name":"../x","value":"v","components":["a"]}"#).await;
    let code = reply.headers.as_ref().and_then(|h| h.get("Nats-Service-Error-Code")).map(|v| v.to_string());
    assert_eq!(code.as_deref(), Some("400"));

    let reply = app.nats_request("artifacts.secret.delete", r#"{"name":"deploy.key"}"#).await;
    assert_eq!(serde_json::from_slice::<Value>(&reply.payload).unwrap()["status"], "deleted");
    let reply = app.nats_request("artifacts.secret.delete", r#"{"name":"deploy.key"}"#).await;
    let code = reply.headers.as_ref().and_then(|h| h.get("Nats-Service-Error-Code")).map(|v| v.to_string());
    assert_eq!(code.as_deref(), Some("404"));
}

/// Submits a component build and waits for its record.
async fn build(app: &TestApp, url: &str, component: &str, tag: &str) -> Value {
    let body = json!({"url": url, "component": component, "tag": tag, "architecture": "amd64"});
    let response =
        app.http.post(app.url("/api/v1/components")).bearer_auth(ADMIN_KEY).json(&body).send().await.unwrap();
    let answer: Value = response.json().await.unwrap();
    let build_id = answer["buildId"].as_str().unwrap_or_else(|| panic!("{answer}")).to_owned();
    app.wait_for_build(&build_id).await
}

/// The regular files of a stored component (path -> bytes).
async fn archive_files(app: &TestApp, component: &str, tag: &str) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    let (bytes, _) = app.stored_archive(component, tag).await;
    let mut files = Vec::new();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        files.push((path, content));
    }
    (bytes, files)
}

fn with_secrets(command: &str, secrets: &[&str]) -> String {
    format!("{}secrets = {:?}\n", manifest(command, &[]), secrets)
}

#[tokio::test]
async fn a_component_build_reads_its_secret_in_memory_and_never_shows_it() {
    require_docker().await;
    let (app, _dir) = app().await;
    let component = unique_name("with-secret");
    let value = random_value("registry-token");
    let (status, answer) =
        put(&app, ADMIN_KEY, json!({"name": "tok", "value": value, "components": [component]})).await;
    assert_eq!(status, 201, "{answer}");
    let repo = GitRepo::new().await;
    let command = "set -e; sha256sum /run/secrets/tok | cut -d' ' -f1 > /out/hash; \
        echo \"the token is $(cat /run/secrets/tok)\"; \
        grep ' /run/secrets ' /proc/mounts | cut -d' ' -f3; \
        if (echo x > /run/secrets/tok) 2>/dev/null; then echo writable; else echo read-only; fi; \
        ls /out";
    repo.commit_and_tag(&[("artifact.toml", &with_secrets(command, &["tok"]), false)], "v1").await;
    let record = build(&app, &repo.url(), &component, "v1").await;
    assert_eq!(record["status"], "succeeded", "{record}");
    assert!(!record.to_string().contains(&value), "the record holds the value");

    let (bytes, files) = archive_files(&app, &component, "v1").await;
    let hash = files
        .iter()
        .find(|(path, _)| path.ends_with("hash"))
        .map(|(_, c)| String::from_utf8_lossy(c).trim().to_owned());
    assert_eq!(hash.as_deref(), Some(hex::encode(sha2::Sha256::digest(value.as_bytes())).as_str()), "{files:?}");
    assert!(files.iter().all(|(path, content)| !path.contains("secrets") && !contains(content, &value)));
    assert!(!contains(&bytes, &value));

    let (lines, status) = app.follow_logs(record["buildId"].as_str().unwrap()).await;
    assert_eq!(status, "succeeded");
    let log = lines.join("\n");
    assert!(!log.contains(&value), "the log shows the value:\n{log}");
    assert!(lines.iter().any(|line| line == "the token is ***"), "{log}");
    assert!(lines.iter().any(|line| line == "tmpfs"), "/run/secrets is not in memory:\n{log}");
    assert!(lines.iter().any(|line| line == "read-only"), "{log}");
}

#[tokio::test]
async fn a_component_outside_the_patterns_cannot_have_the_secret() {
    require_docker().await;
    let (app, _dir) = app().await;
    let component = unique_name("outsider");
    let value = random_value("not-yours");
    let (status, _) =
        put(&app, ADMIN_KEY, json!({"name": "team-tok", "value": value, "components": ["team-a-*"]})).await;
    assert_eq!(status, 201);
    let repo = GitRepo::new().await;
    repo.commit_and_tag(
        &[("artifact.toml", &with_secrets("cat /run/secrets/team-tok > /out/x", &["team-tok"]), false)],
        "v1",
    )
    .await;
    let record = build(&app, &repo.url(), &component, "v1").await;
    assert_eq!(record["status"], "failed", "{record}");
    let message = record["errorMessage"].as_str().unwrap();
    assert!(message.contains("team-tok") && message.contains(&component), "{message}");
    assert!(!record.to_string().contains(&value));

    // A secret that does not exist fails the same way, naming it.
    repo.commit_and_tag(&[("artifact.toml", &with_secrets("true", &["no-such-secret"]), false)], "v2").await;
    let record = build(&app, &repo.url(), &component, "v2").await;
    assert_eq!(record["status"], "failed", "{record}");
    assert!(record["errorMessage"].as_str().unwrap().contains("no-such-secret"), "{record}");

    // A bad name in artifact.toml is the repository's mistake, said as such.
    repo.commit_and_tag(&[("artifact.toml", &with_secrets("true", &["Bad/Name"]), false)], "v3").await;
    let record = build(&app, &repo.url(), &component, "v3").await;
    assert_eq!(record["status"], "failed", "{record}");
    assert!(record["errorMessage"].as_str().unwrap().contains("secret name"), "{record}");
}

/// Runs the `artifacts` program against the app with `key`, `stdin` as its standard input.
async fn cli(app: &TestApp, key: &str, args: &[&str], stdin: &str) -> (i32, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(artifacts_tests::workspace_binary("artifacts"))
        .args(args)
        .env("ARTIFACTS_URL", &app.address)
        .env("ARTIFACTS_KEY", key)
        .env("HOME", "/nonexistent")
        .env_remove("XDG_CONFIG_HOME")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let output = child.wait_with_output().await.unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.code().unwrap_or(-1), text(&output.stdout), text(&output.stderr))
}

#[tokio::test]
async fn the_cli_sets_lists_and_removes_secrets_reading_values_from_standard_input() {
    let (app, _dir) = app().await;
    let value = random_value("cli");
    let (code, out, err) =
        cli(&app, ADMIN_KEY, &["secret", "set", "cli-tok", "--component", "app-*"], &format!("{value}\n")).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("cli-tok") && out.contains("created"), "{out}");
    assert!(!out.contains(&value) && !err.contains(&value));
    // Stored without the trailing line break: a build's hash of it matches the value's.
    let component = artifacts_schemas::ComponentName::parse("app-one").unwrap();
    let found = artifacts_runtime::secrets::for_component(&app.nats, &component).await.unwrap();
    assert_eq!(found, vec![("cli-tok".to_owned(), value.clone().into_bytes())]);

    let (code, out, _) = cli(&app, ADMIN_KEY, &["secret", "ls", "--json"], "").await;
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed["secrets"][0]["name"], "cli-tok");
    assert!(!out.contains(&value));
    let (code, out, _) = cli(&app, ADMIN_KEY, &["secret", "ls"], "").await;
    assert_eq!(code, 0);
    assert!(out.contains("cli-tok") && out.contains("app-*"), "{out}");

    let (reader, _) = app.create_key(json!({"name": "reader", "scopes": ["read"]})).await;
    let (code, _, err) = cli(&app, &reader, &["secret", "ls"], "").await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("admin"), "{err}");
    let (code, _, err) = cli(&app, ADMIN_KEY, &["secret", "set", "cli-tok"], "v").await;
    assert_eq!(code, 2, "no --component is a usage error: {err}");
    let (code, _, err) = cli(&app, ADMIN_KEY, &["secret", "set", "Bad", "--component", "a"], "v").await;
    assert_eq!(code, 1);
    assert!(err.contains("secret name"), "{err}");

    let (code, out, _) = cli(&app, ADMIN_KEY, &["secret", "rm", "cli-tok", "--json"], "").await;
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["status"], "deleted");
    let (code, _, err) = cli(&app, ADMIN_KEY, &["secret", "rm", "cli-tok"], "").await;
    assert_eq!(code, 1);
    assert!(err.contains("cli-tok"), "{err}");
}

#[tokio::test]
async fn the_dashboard_sets_lists_and_removes_secrets_for_admins_only() {
    use fantoccini::Locator;
    let (app, _dir) = app().await;
    let browser = artifacts_tests::browser::Browser::start().await;
    let home = app.url("/");
    browser.sign_in(&home, ADMIN_KEY).await;
    browser.go(&format!("{home}#/secrets")).await;
    let value = random_value("page");
    browser.wait_for("#secret-name").await.send_keys("page-tok").await.unwrap();
    browser.wait_for("#secret-value").await.send_keys(&value).await.unwrap();
    browser.wait_for("#secret-components").await.send_keys("web-*, api").await.unwrap();
    browser.client.find(Locator::Css(".key-form button")).await.unwrap().click().await.unwrap();
    browser.wait_for_text("table", "page-tok").await;
    let page = browser.wait_for_text("#view", "web-*").await;
    assert!(!page.contains(&value), "the page shows the value");
    browser.screenshot("secrets").await;
    let stored = list(&app, ADMIN_KEY).await.1;
    assert_eq!(stored["secrets"][0]["components"], json!(["web-*", "api"]), "{stored}");

    browser.script("window.confirm = () => true; return null").await;
    browser.client.find(Locator::Css("button[aria-label='Remove page-tok']")).await.unwrap().click().await.unwrap();
    browser.wait_for_text("#view", "No secrets yet").await;
    assert_eq!(list(&app, ADMIN_KEY).await.1["secrets"], json!([]));

    let (builder, _) = app.create_key(json!({"name": "builder", "scopes": ["build"]})).await;
    browser.sign_out().await;
    browser.sign_in(&home, &builder).await;
    assert!(browser.client.find(Locator::Css("#nav-secrets[hidden]")).await.is_ok(), "the secrets page is an admin's");
}
