//! Issue 28: identical work is still done once while build secrets are inputs. A build reads the values
//! of the secrets it uses (an image build: those its Dockerfile mounts that its component may use; a
//! component build: those its `artifact.toml` lists), so a changed value is a new build while a change to
//! a secret the build does not use still answers with the earlier build. What records that is a keyed
//! fingerprint (HMAC-SHA256 under a key derived from the stack's secrets key), never the value nor a
//! plain hash of it: the tests use a four-digit value, which a plain hash would give away at once.

use std::io::Read;

use base64::Engine as _;
use futures::StreamExt;
use serde_json::{json, Value};
use sha2::Digest;

use artifacts_tests::{docker, manifest, GitRepo, TestApp, ADMIN_KEY};

/// A stack with a registry and a secrets key of the test's own.
async fn app(dir: &tempfile::TempDir) -> (TestApp, artifacts_tests::Registry) {
    let key_file = dir.path().join("secrets.key");
    TestApp::spawn_with_registry(|settings| {
        artifacts_tests::allow_local_repositories(settings);
        settings.secrets.key_file = Some(key_file);
    })
    .await
}

async fn set_secret(app: &TestApp, name: &str, value: &str, components: &[&str]) {
    let body = json!({"name": name, "value": value, "components": components});
    let response = app.http.post(app.url("/api/v1/secrets")).bearer_auth(ADMIN_KEY).json(&body).send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.text().await.unwrap());
}

/// The forms a value could take in a record: as is, its plain SHA-256 (hex and base64), base64, hex.
fn forms(value: &str) -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let sha = sha2::Sha256::digest(value.as_bytes());
    vec![format!("\"{value}\""), hex::encode(sha), b64.encode(sha), b64.encode(value), hex::encode(value)]
}

/// Panics when `text` holds any form of any of `values`.
fn assert_holds_none(what: &str, text: &str, values: &[&str]) {
    for value in values {
        for form in forms(value) {
            assert!(!text.contains(&form), "{what} holds {form:?} (a form of a secret value): {text}");
        }
    }
}

/// Every key and value of the identical-work bucket (the dedup keys and the builds they name).
async fn dedup_entries(app: &TestApp) -> String {
    let store = &artifacts_tests::raw_bucket(&app.nats, "active").await;
    let keys: Vec<String> = store.keys().await.unwrap().map(|k| k.unwrap()).collect().await;
    let mut text = String::new();
    for key in keys {
        let value = store.get(&key).await.unwrap().unwrap_or_default();
        text.push_str(&format!("{key} {}\n", String::from_utf8_lossy(&value)));
    }
    text
}

/// The names and fingerprints a record's field lists.
fn inputs(listed: &Value) -> Vec<(String, String)> {
    listed
        .as_array()
        .map(|inputs| {
            inputs
                .iter()
                .map(|i| (i["name"].as_str().unwrap().to_owned(), i["fingerprint"].as_str().unwrap().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

async fn submit_image(app: &TestApp, component: &str, dockerfile: &str) -> Value {
    let body = json!({"dockerfile": dockerfile, "component": component, "branch": "main", "architecture": "amd64"});
    let (status, accepted) = app.post_image("", &body).await;
    assert_eq!(status, 202, "{accepted}");
    accepted
}

#[tokio::test]
async fn an_image_build_is_identical_while_the_secrets_it_mounts_are() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _registry) = app(&dir).await;
    let run = std::process::id();
    let component = format!("dedup-image-{run}");
    let (pin, npmrc, unused, foreign) = ("4711", format!("//npm/:_authToken={run}"), "unused-1", "foreign-1");
    set_secret(&app, "pin", pin, &[&component]).await;
    // Named by its mount's target, as BuildKit names a secret mount without an id.
    set_secret(&app, ".npmrc", &npmrc, &[&component]).await;
    set_secret(&app, "unused", unused, &[&component]).await;
    // Mounted, but not this component's: absent from the build, and no input of it.
    set_secret(&app, "foreign", foreign, &["someone-else"]).await;

    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let dockerfile = format!(
        "FROM busybox\nRUN echo {nonce}\n\
         RUN --mount=type=secret,id=pin sha256sum < /run/secrets/pin > /pin\n\
         RUN --mount=type=secret,target=/root/.npmrc sha256sum < /root/.npmrc > /npmrc\n\
         RUN --mount=type=secret,id=foreign if [ -e /run/secrets/foreign ]; then echo present; else echo absent; fi > /foreign\n\
         CMD cat /pin /npmrc /foreign\n"
    );
    let first = submit_image(&app, &component, &dockerfile).await;
    let first_id = first["buildId"].as_str().unwrap().to_owned();
    let record = app.wait_for_build(&first_id).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    let read = inputs(&record["request"]["secrets"]);
    let names: Vec<&str> = read.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, [".npmrc", "pin"], "what the Dockerfile mounts and the component may use: {record}");
    assert!(read.iter().all(|(_, f)| f.starts_with("hmac-sha256:") && f.len() == 12 + 64), "{read:?}");
    let image = record["result"]["imageName"].as_str().unwrap().to_owned();
    let sha = |value: &str| hex::encode(sha2::Sha256::digest(value.as_bytes()));
    let _ = tokio::process::Command::new("docker").args(["rmi", "--force", &image]).output().await;
    docker(&["pull", &image]).await;
    assert_eq!(
        docker(&["run", "--rm", "--network", "none", &image]).await,
        format!("{}  -\n{}  -\nabsent\n", sha(pin), sha(&npmrc))
    );

    // The same build again: the same build.
    let again = submit_image(&app, &component, &dockerfile).await;
    assert_eq!((again["buildId"].as_str(), again["status"].as_str()), (Some(first_id.as_str()), Some("succeeded")));

    // A secret the Dockerfile does not mount, and one it mounts but the component may not use: changed,
    // they build nothing.
    set_secret(&app, "unused", "unused-2", &[&component]).await;
    set_secret(&app, "foreign", "foreign-2", &["someone-else"]).await;
    let unchanged = submit_image(&app, &component, &dockerfile).await;
    assert_eq!(unchanged["buildId"].as_str(), Some(first_id.as_str()), "{unchanged}");

    // A secret it mounts, changed: a new build, which reads the new value.
    set_secret(&app, "pin", "4712", &[&component]).await;
    let changed = submit_image(&app, &component, &dockerfile).await;
    let second_id = changed["buildId"].as_str().unwrap().to_owned();
    assert_ne!(second_id, first_id, "a changed secret value is another build: {changed}");
    let second = app.wait_for_build(&second_id).await;
    assert_eq!(second["status"], "succeeded", "{second}");
    let read_now = inputs(&second["request"]["secrets"]);
    assert_eq!(read_now[0], read[0], ".npmrc did not change: {read_now:?}");
    assert_ne!(read_now[1], read[1], "pin did");
    let image = second["result"]["imageName"].as_str().unwrap();
    docker(&["pull", image]).await;
    assert!(docker(&["run", "--rm", "--network", "none", image]).await.starts_with(&sha("4712")));
    let again = submit_image(&app, &component, &dockerfile).await;
    assert_eq!(again["buildId"].as_str(), Some(second_id.as_str()), "{again}");

    // Its first value back: the first build's inputs again, so the first build answers.
    set_secret(&app, "pin", pin, &[&component]).await;
    let back = submit_image(&app, &component, &dockerfile).await;
    assert_eq!(back["buildId"].as_str(), Some(first_id.as_str()), "{back}");

    // The secret a mount's target names, changed: a new build too.
    set_secret(&app, ".npmrc", "//npm/:_authToken=other", &[&component]).await;
    let by_target = submit_image(&app, &component, &dockerfile).await;
    assert!(![first_id.as_str(), second_id.as_str()].contains(&by_target["buildId"].as_str().unwrap()));
    assert_eq!(app.wait_for_build(by_target["buildId"].as_str().unwrap()).await["status"], "succeeded");

    // A mount named by a variable cannot be told before building: every secret the component may use
    // counts (not the foreign one).
    let variable = format!("FROM busybox\nARG WHICH=pin\nRUN --mount=type=secret,id=$WHICH echo {nonce}\n");
    let accepted = submit_image(&app, &component, &variable).await;
    let record = app.wait_for_build(accepted["buildId"].as_str().unwrap()).await;
    let names: Vec<String> = inputs(&record["request"]["secrets"]).into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, [".npmrc", "pin", "unused"], "{record}");

    // Neither a value nor a plain hash of one is in a record, a listing, the dedup keys or the metrics.
    let values = [pin, "4712", npmrc.as_str(), "//npm/:_authToken=other", unused, "unused-2", foreign, "foreign-2"];
    for build_id in [&first_id, &second_id] {
        let record = app.get(&format!("/api/v1/builds/{build_id}")).await.text().await.unwrap();
        assert_holds_none("a build record", &record, &values);
    }
    let listed = app.get(&format!("/api/v1/builds?component={component}")).await.text().await.unwrap();
    assert_holds_none("the build listing", &listed, &values);
    assert_holds_none("the identical-work bucket", &dedup_entries(&app).await, &values);
    let secrets = app.get("/api/v1/secrets").await.text().await.unwrap();
    assert_holds_none("the secrets listing", &secrets, &values);
    let keys = app.get("/api/v1/keys").await.text().await.unwrap();
    assert_holds_none("the keys listing", &keys, &values);
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert_holds_none("the metrics", &metrics, &values);

    // The public schema describes the field.
    let doc: Value = app.get("/api/v1/openapi.json").await.json().await.unwrap();
    let summary = &doc["components"]["schemas"]["ImageBuildSummary"]["properties"]["secrets"];
    assert!(summary.to_string().contains("SecretInput"), "{summary}");
    assert!(doc["components"]["schemas"]["SecretInput"]["properties"]["fingerprint"].is_object());
}

/// The regular file `name` of a stored component's archive.
async fn archive_file(app: &TestApp, component: &str, tag: &str, name: &str) -> String {
    let (bytes, _) = app.stored_archive(component, tag).await;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().ends_with(name) {
            let mut content = String::new();
            entry.read_to_string(&mut content).unwrap();
            return content;
        }
    }
    panic!("no {name} in the archive of {component}@{tag}");
}

async fn submit_component(app: &TestApp, url: &str, component: &str) -> Value {
    let body = json!({"url": url, "component": component, "tag": "v1", "architecture": "amd64"});
    let response =
        app.http.post(app.url("/api/v1/components")).bearer_auth(ADMIN_KEY).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 202);
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_component_build_is_identical_while_the_secrets_its_recipe_lists_are() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _registry) = app(&dir).await;
    let component = format!("dedup-component-{}", std::process::id());
    set_secret(&app, "pin", "1234", &[&component]).await;
    set_secret(&app, "unused", "unused-1", &[&component]).await;
    let repo = GitRepo::new().await;
    let toml = format!(
        "{}secrets = [\"pin\"]\n",
        manifest("sha256sum < /run/secrets/pin > /out/pin; date +%s%N > /out/built", &[])
    );
    repo.commit_and_tag(&[("artifact.toml", &toml, false)], "v1").await;
    let url = repo.url();

    let first = submit_component(&app, &url, &component).await;
    let first_id = first["buildId"].as_str().unwrap().to_owned();
    let record = app.wait_for_build(&first_id).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    let read = inputs(&record["result"]["secrets"]);
    assert_eq!(read.len(), 1, "the recipe's one secret: {record}");
    assert_eq!(read[0].0, "pin");
    assert!(read[0].1.starts_with("hmac-sha256:"), "{read:?}");
    let sha = |value: &str| hex::encode(sha2::Sha256::digest(value.as_bytes()));
    assert_eq!(archive_file(&app, &component, "v1", "pin").await, format!("{}  -\n", sha("1234")));

    let again = submit_component(&app, &url, &component).await;
    assert_eq!((again["buildId"].as_str(), again["status"].as_str()), (Some(first_id.as_str()), Some("succeeded")));

    set_secret(&app, "unused", "unused-2", &[&component]).await;
    let unchanged = submit_component(&app, &url, &component).await;
    assert_eq!(unchanged["buildId"].as_str(), Some(first_id.as_str()), "an unlisted secret changed: {unchanged}");

    set_secret(&app, "pin", "1235", &[&component]).await;
    let changed = submit_component(&app, &url, &component).await;
    let second_id = changed["buildId"].as_str().unwrap().to_owned();
    assert_ne!(second_id, first_id, "a listed secret changed: {changed}");
    let second = app.wait_for_build(&second_id).await;
    assert_eq!(second["status"], "succeeded", "{second}");
    assert_ne!(inputs(&second["result"]["secrets"]), read);
    assert_eq!(archive_file(&app, &component, "v1", "pin").await, format!("{}  -\n", sha("1235")));
    let again = submit_component(&app, &url, &component).await;
    assert_eq!(again["buildId"].as_str(), Some(second_id.as_str()), "{again}");

    // The lookup answers the stored component, which names what it read without the value.
    let found = app.get(&format!("/api/v1/components?component={component}&tag=v1&architecture=amd64")).await;
    let found = found.text().await.unwrap();
    let values = ["1234", "1235", "unused-1", "unused-2"];
    assert_holds_none("the component lookup", &found, &values);
    for build_id in [&first_id, &second_id] {
        let record = app.get(&format!("/api/v1/builds/{build_id}")).await.text().await.unwrap();
        assert_holds_none("a build record", &record, &values);
    }
    assert_holds_none("the identical-work bucket", &dedup_entries(&app).await, &values);
}
