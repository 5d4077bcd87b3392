//! Issue 27, items 2 and 3: tenants stay apart in what images they read and which registry repository
//! they write. Replayed on real nats-server, Docker engine, registry and git.

use serde_json::{json, Value};
use tokio::process::Command;

use artifacts_runtime::registry_auth::{self, TOKEN_PATH};
use artifacts_tests::{
    allow_local_repositories, require_docker, unique_name as name, GitRepo, Registry, TestApp, ADMIN_KEY,
};

async fn post(app: &TestApp, key: &str, path: &str, body: &Value) -> (u16, Value) {
    let response = app.http.post(app.url(path)).bearer_auth(key).json(body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Runs the docker CLI against the engine the workers use; (success, stdout and stderr).
async fn docker(args: &[&str]) -> (bool, String) {
    let output = Command::new("docker").args(args).output().await.expect("the docker CLI runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text.trim().to_owned())
}

/// Builds an image with `key` and waits for its record, which must say it succeeded.
async fn build_image(app: &TestApp, key: &str, component: &str, branch: &str, dockerfile: &str) -> Value {
    let body = json!({"dockerfile": dockerfile, "component": component, "branch": branch, "architecture": "amd64"});
    let (status, record) = post(app, key, "/api/v1/images?wait=120", &body).await;
    assert_eq!(status, 200, "{record}");
    assert_eq!(record["status"], "succeeded", "{record}");
    record
}

/// Builds a component with `key` and waits for its final record.
async fn build_component(app: &TestApp, key: &str, url: &str, component: &str, tag: &str) -> Value {
    let body = json!({"url": url, "component": component, "tag": tag, "architecture": "amd64"});
    let (status, answer) = post(app, key, "/api/v1/components", &body).await;
    assert_eq!(status, 202, "{answer}");
    app.wait_for_build(answer["buildId"].as_str().unwrap()).await
}

/// An `artifact.toml` that runs `command` in the builder image `image`.
fn manifest_in(image: &str, command: &str) -> String {
    format!("[build]\nimage = {image:?}\ncommand = [\"sh\", \"-c\", {command:?}]\noutput = \"/out\"\n")
}

/// Item 2: a build key limited to `team-a*` named another team's image as its builder image (its
/// registry name, left on the engine by a `FROM` pull, or a prefix of its image id) and read its secret.
/// A builder image is now an input like `FROM`: the configured builder images, or images of this
/// registry whose component the key may read, pulled from the registry before use.
#[tokio::test]
async fn builder_images_are_inputs_like_from() {
    require_docker().await;
    let registry = Registry::start().await;
    let address = registry.address.clone();
    let app = TestApp::spawn_with(|s| {
        allow_local_repositories(s);
        s.registry.address = address;
    })
    .await;
    let port = registry.address.rsplit(':').next().unwrap().to_owned();
    let pid = std::process::id();

    let victim = name("victim-db");
    let secret_dockerfile = "FROM busybox\nRUN echo victim-db-password-s3cr3t > /secret.txt\n";
    build_image(&app, ADMIN_KEY, &victim, "main", secret_dockerfile).await;
    let victim_image = format!("{}/{victim}-main-image:amd64", registry.address);
    // Left on the worker's engine, as another team's `FROM` pull leaves it.
    let (pulled, output) = docker(&["pull", &victim_image]).await;
    assert!(pulled, "{output}");
    let (_, id) = docker(&["image", "inspect", "--format", "{{.Id}}", &victim_image]).await;
    let hex = id.trim_start_matches("sha256:").to_owned();
    let engine_name = format!("victim-local-{pid}:1");
    docker(&["tag", &victim_image, &engine_name]).await;

    let (team_a, _) =
        app.create_key(json!({"name": "team-a", "scopes": ["build"], "components": [format!("team-a-{pid}*")]})).await;
    // The same key's `FROM` of that image is refused, as before.
    let from = format!("FROM {victim_image}\nRUN cat /secret.txt\n");
    let body = json!({"dockerfile": from, "component": format!("team-a-{pid}-img"), "branch": "main", "architecture": "amd64"});
    let (status, answer) = post(&app, &team_a, "/api/v1/images", &body).await;
    assert_eq!(status, 403, "{answer}");

    let steal = "cat /secret.txt > /out/stolen.txt";
    let repo = GitRepo::new().await;
    let thief = format!("team-a-{pid}-thief");
    for (tag, why, image, says) in [
        ("t1", "its registry name", victim_image.clone(), "may not read"),
        (
            "t2",
            "another spelling of the registry",
            format!("localhost:{port}/{victim}-main-image:amd64"),
            "may not read",
        ),
        ("t3", "an image-id prefix", hex[..8].to_owned(), "image id"),
        ("t4", "a whole image id", id.clone(), "image id"),
        ("t5", "another name on the engine", engine_name.clone(), "builder image"),
    ] {
        repo.commit_and_tag(&[("artifact.toml", &manifest_in(&image, steal), false)], tag).await;
        let record = build_component(&app, &team_a, &repo.url(), &thief, tag).await;
        assert_eq!(record["status"], "failed", "{why}: {record}");
        let message = record["errorMessage"].as_str().unwrap_or_default();
        assert!(message.contains(&image) && message.contains(says), "{why}: {record}");
        assert!(!record.to_string().contains("s3cr3t"), "{why}: {record}");
    }

    // The key's own registry image is used, pulled from the registry: a stale or forged copy under the
    // same name on the engine is not trusted as it is.
    let base = format!("team-a-{pid}-base");
    build_image(&app, &team_a, &base, "main", "FROM busybox\nRUN echo team-a-tools > /tools.txt\n").await;
    let base_image = format!("{}/{base}-main-image:amd64", registry.address);
    let (tagged, output) = docker(&["tag", "busybox:latest", &base_image]).await;
    assert!(tagged, "{output}");
    repo.commit_and_tag(&[("artifact.toml", &manifest_in(&base_image, "cp /tools.txt /out/"), false)], "own").await;
    let record = build_component(&app, &team_a, &repo.url(), &format!("team-a-{pid}-tool"), "own").await;
    assert_eq!(record["status"], "succeeded", "the key's own image, as the registry holds it: {record}");

    // The configured builder image, however it is spelled, and another team's image for a key that
    // may read it.
    repo.commit_and_tag(&[("artifact.toml", &manifest_in("busybox", "echo ok > /out/ok"), false)], "plain").await;
    let record = build_component(&app, &team_a, &repo.url(), &format!("team-a-{pid}-plain"), "plain").await;
    assert_eq!(record["status"], "succeeded", "the configured builder image: {record}");
    let record = build_component(&app, ADMIN_KEY, &repo.url(), &name("admin-reads"), "t1").await;
    assert_eq!(record["status"], "succeeded", "an admin key may read the victim's image: {record}");
    println!("builder images: 5 of another team's refused; own registry image pulled over a forged engine copy");
}

/// A token for `scope`, asked with `key` as the Basic password: the access it grants.
async fn granted(app: &TestApp, key: &str, repository: &str) -> Value {
    let answer = app
        .http
        .get(app.url(TOKEN_PATH))
        .query(&[("service", registry_auth::SERVICE), ("scope", &format!("repository:{repository}:pull"))])
        .basic_auth("anyone", Some(key))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.unwrap();
    let claims = body["token"].as_str().unwrap().split('.').nth(1).unwrap();
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims).unwrap();
    serde_json::from_slice::<Value>(&bytes).unwrap()["access"].clone()
}

fn pull(repository: &str) -> Value {
    json!([{"type": "repository", "name": repository, "actions": ["pull"]}])
}

/// Item 3: component `app77` on branch `web-main` and component `app77-web` on branch `main` shared the
/// repository `app77-web-main-image`: one team overwrote the other's tags and, having built first, was
/// granted pull on it. Now a repository belongs to one (component, branch), recorded at its first
/// submission; another pair is answered 409 naming the owner.
#[tokio::test]
async fn one_repository_holds_one_component_and_branch() {
    let (app, _registry, _signing) = TestApp::spawn_with_token_registry().await;
    let pid = std::process::id();
    let dockerfile = |who: &str| format!("FROM busybox\nRUN echo {who} > /which\n");

    // The other team builds first; the attacker's colliding pair is refused, its tags untouched.
    let (victim, attacker) = (format!("app{pid}-web"), format!("app{pid}"));
    let (victim_key, _) = app.create_key(json!({"name": "web", "scopes": ["build"], "components": [victim]})).await;
    let (attacker_key, _) = app.create_key(json!({"name": "app", "scopes": ["build"], "components": [attacker]})).await;
    let repository = format!("{victim}-main-image");
    let built = build_image(&app, &victim_key, &victim, "main", &dockerfile("victim")).await;
    assert!(built["result"]["imageName"].as_str().unwrap().contains(&repository), "{built}");
    let body = json!({"dockerfile": dockerfile("attacker"), "component": attacker, "branch": "web-main", "architecture": "amd64"});
    let (status, answer) = post(&app, &attacker_key, "/api/v1/images", &body).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["status"], "conflict", "{answer}");
    let message = answer["errorMessage"].as_str().unwrap();
    assert!(message.contains(&repository) && message.contains(&victim) && message.contains("main"), "{message}");
    assert!(message.contains("branch"), "says how to avoid it: {message}");
    let query = format!("/api/v1/images?component={victim}&branch=main&architecture=amd64");
    let record: Value = app.get(&query).await.json().await.unwrap();
    assert_eq!(record["digest"], built["result"]["digest"], "the victim's image is untouched: {record}");
    assert_eq!(granted(&app, &attacker_key, &repository).await, json!([]));
    assert_eq!(granted(&app, &victim_key, &repository).await, pull(&repository));

    // The attacker builds first: the other team's pair is refused (not silently pushed into a
    // repository whose pull rights follow the attacker), and the attacker reads only its own images.
    let (victim, attacker) = (format!("bpp{pid}-web"), format!("bpp{pid}"));
    let (victim_key, _) = app.create_key(json!({"name": "web", "scopes": ["build"], "components": [victim]})).await;
    let (attacker_key, _) = app.create_key(json!({"name": "app", "scopes": ["build"], "components": [attacker]})).await;
    let repository = format!("{victim}-main-image");
    build_image(&app, &attacker_key, &attacker, "web-main", &dockerfile("attacker")).await;
    let body =
        json!({"dockerfile": dockerfile("victim"), "component": victim, "branch": "main", "architecture": "amd64"});
    let (status, answer) = post(&app, &victim_key, "/api/v1/images", &body).await;
    assert_eq!(status, 409, "{answer}");
    let message = answer["errorMessage"].as_str().unwrap();
    assert!(message.contains(&attacker) && message.contains("web-main"), "names the owner: {message}");
    let (status, answer) = post(&app, ADMIN_KEY, "/api/v1/images", &body).await;
    assert_eq!(status, 409, "not even an admin key shares a repository: {answer}");
    assert_eq!(granted(&app, &victim_key, &repository).await, json!([]));

    // A literal branch spelled like another branch's slug with its hash.
    let component = name("slugged");
    let slugged = artifacts_schemas::names::slug_with_hash("feature/x");
    assert_ne!(slugged, "feature-x");
    build_image(&app, ADMIN_KEY, &component, "feature/x", &dockerfile("feature/x")).await;
    let body = json!({"dockerfile": dockerfile("literal"), "component": component, "branch": slugged, "architecture": "amd64"});
    let (status, answer) = post(&app, ADMIN_KEY, "/api/v1/images", &body).await;
    assert_eq!(status, 409, "{answer}");
    assert!(answer["errorMessage"].as_str().unwrap().contains("feature/x"), "{answer}");

    // A record of the previous version names only a component: it is read, and still keeps other
    // components out.
    let legacy = name("legacy");
    let legacy_repository = format!("{legacy}-web-main-image");
    artifacts_tests::raw_bucket(&app.nats, "repositories")
        .await
        .put(&legacy_repository, legacy.clone().into_bytes().into())
        .await
        .unwrap();
    let other = json!({"dockerfile": dockerfile("other"), "component": format!("{legacy}-web"), "branch": "main", "architecture": "amd64"});
    let (status, answer) = post(&app, ADMIN_KEY, "/api/v1/images", &other).await;
    assert_eq!(status, 409, "{answer}");
    let (reader, _) = app.create_key(json!({"name": "r", "scopes": ["read"], "components": [legacy]})).await;
    assert_eq!(granted(&app, &reader, &legacy_repository).await, pull(&legacy_repository));
    build_image(&app, ADMIN_KEY, &legacy, "web-main", &dockerfile("legacy")).await;
    println!("repositories: colliding pairs answered 409 both ways, slug-with-hash and legacy records too");
}
