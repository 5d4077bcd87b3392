//! Authorization holds on every path (issue 9): each test replays an attack that worked against the
//! first round, over HTTP and over NATS, on real nats-server, Docker engine, registry and git.

use std::time::Duration;

use serde_json::{json, Value};

use artifacts_tests::{
    allow_local_repositories, key_header, manifest, require_docker, unique_name as name, GitRepo, Registry, TestApp,
    ADMIN_KEY,
};

async fn post(app: &TestApp, key: &str, path: &str, body: &Value) -> (u16, Value) {
    let response = app.http.post(app.url(path)).bearer_auth(key).json(body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(app: &TestApp, key: &str, path: &str) -> (u16, Value) {
    let response = app.http.get(app.url(path)).bearer_auth(key).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Submits a component build with `key` and waits for its final record.
async fn build_component(app: &TestApp, key: &str, url: &str, component: &str, tag: &str) -> Value {
    let body = json!({"url": url, "component": component, "tag": tag, "architecture": "amd64"});
    let (status, answer) = post(app, key, "/api/v1/components", &body).await;
    assert_eq!(status, 202, "{answer}");
    app.wait_for_build(answer["buildId"].as_str().unwrap()).await
}

async fn builds_of(app: &TestApp, component: &str) -> Vec<Value> {
    let (_, list) = get(app, ADMIN_KEY, &format!("/api/v1/builds?component={component}")).await;
    list["builds"].as_array().cloned().unwrap_or_default()
}

/// Waits until the git trigger has taken every push event from its stream.
async fn pushes_handled(app: &TestApp) {
    let stream = app.nats.jetstream.get_stream("ARTIFACTS_PUSH").await.unwrap();
    for _ in 0..300 {
        let mut consumer: async_nats::jetstream::consumer::PullConsumer =
            stream.get_consumer("git-trigger").await.unwrap();
        let info = consumer.info().await.unwrap();
        if info.num_pending == 0 && info.num_ack_pending == 0 && info.delivered.stream_sequence > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the git trigger did not handle the pushes within 30 s");
}

/// Reproduction 1: a read key started a build through a lookup with `url` and replaced the recorded
/// source of another team's component.
#[tokio::test]
async fn a_read_key_never_builds_and_a_source_moves_only_by_an_admin() {
    require_docker().await;
    let app = TestApp::spawn_with(allow_local_repositories).await;
    let victim = name("victim");
    let (victim_repo, evil_repo) = (GitRepo::new().await, GitRepo::new().await);
    for tag in ["v1", "v2", "v3"] {
        victim_repo
            .commit_and_tag(&[("artifact.toml", &manifest("echo victim > /out/who.txt", &[]), false)], tag)
            .await;
        evil_repo.commit_and_tag(&[("artifact.toml", &manifest("echo evil > /out/who.txt", &[]), false)], tag).await;
    }
    let first = build_component(&app, ADMIN_KEY, &victim_repo.url(), &victim, "v1").await;
    assert_eq!(first["status"], "succeeded", "{first}");

    let (reader, _) = app.create_key(json!({"name": "reader", "scopes": ["read"]})).await;
    let lookup = format!(
        "/api/v1/components?component={victim}&tag=v2&architecture=amd64&url={}",
        evil_repo.url().replace('/', "%2F")
    );
    let (status, answer) = get(&app, &reader, &lookup).await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["status"], "not_found");
    assert!(answer["errorMessage"].as_str().unwrap().contains("build scope"), "{answer}");
    // The same over NATS, with the same answer.
    let query = json!({"component": victim, "tag": "v2", "architecture": "amd64", "url": evil_repo.url()});
    let over_nats = app.nats_request_with("artifacts.component.get", key_header(&reader), &query.to_string()).await;
    let over_nats: Value = serde_json::from_slice(&over_nats.payload).unwrap();
    assert_eq!(over_nats["status"], "not_found", "{over_nats}");
    assert_eq!(builds_of(&app, &victim).await.len(), 1, "the read key started no build");

    let (builder, _) = app.create_key(json!({"name": "builder", "scopes": ["build"]})).await;
    let body = json!({"url": evil_repo.url(), "component": victim, "tag": "v2", "architecture": "amd64"});
    let (status, answer) = post(&app, &builder, "/api/v1/components", &body).await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["errorMessage"].as_str().unwrap().contains(&victim_repo.url()),
        "it names the current URL: {answer}"
    );

    // The admin's later lookup without a URL builds the victim's own repository.
    let (status, answer) =
        get(&app, ADMIN_KEY, &format!("/api/v1/components?component={victim}&tag=v3&architecture=amd64")).await;
    assert_eq!(status, 202, "{answer}");
    let built = app.wait_for_build(answer["buildId"].as_str().unwrap()).await;
    assert_eq!(built["status"], "succeeded", "{built}");
    assert_eq!(built["request"]["url"], victim_repo.url());

    // A push to the attacker's repository rebuilds nothing of the victim's.
    let before = builds_of(&app, &victim).await.len();
    let push = json!({"repository": evil_repo.url(), "ref": "refs/tags/v3", "after": "e".repeat(40)});
    app.publish_push(&push).await;
    pushes_handled(&app).await;
    assert_eq!(builds_of(&app, &victim).await.len(), before);
}

/// Reproduction 3: NATS bypassed API keys: any connection could build with any identity and set
/// `trigger`, and store megabytes of push events.
#[tokio::test]
async fn nats_requests_need_a_key_and_never_choose_their_identity() {
    require_docker().await;
    let app = TestApp::spawn().await;
    let component = name("nats-auth");
    let image = json!({"dockerfile": "FROM busybox\nRUN true\n", "component": component, "branch": "main", "architecture": "amd64"});

    let anonymous =
        app.nats_request_with("artifacts.image.build", async_nats::HeaderMap::new(), &image.to_string()).await;
    let code = |message: &async_nats::Message| {
        message.headers.as_ref().and_then(|h| h.get("Nats-Service-Error-Code")).map(|v| v.as_str().to_owned())
    };
    assert_eq!(code(&anonymous).as_deref(), Some("401"));
    let body: Value = serde_json::from_slice(&anonymous.payload).unwrap();
    assert_eq!(body["status"], "unauthorized");

    let (reader, _) = app.create_key(json!({"name": "reader", "scopes": ["read"]})).await;
    let refused = app.nats_request_with("artifacts.image.build", key_header(&reader), &image.to_string()).await;
    assert_eq!(code(&refused).as_deref(), Some("403"));

    let (alice, alice_id) =
        app.create_key(json!({"name": "alice", "scopes": ["build"], "linuxUsername": "alice"})).await;
    let mut impersonating = key_header(&alice);
    impersonating.insert("linux_username", "root-impersonated");
    let refused = app.nats_request_with("artifacts.image.build", impersonating, &image.to_string()).await;
    assert_eq!(code(&refused).as_deref(), Some("403"), "{:?}", String::from_utf8_lossy(&refused.payload));

    // Claimed key ids and triggers are ignored: the service sets them.
    let mut headers = key_header(&alice);
    headers.insert("Artifacts-Api-Key-Id", "someone-else");
    let mut forged = image.clone();
    forged["trigger"] =
        json!({"forge": "github", "pusher": "mallory", "repository": "x", "ref": "refs/heads/main", "commit": "0"});
    let accepted = app.nats_request_with("artifacts.image.build", headers, &forged.to_string()).await;
    assert_eq!(code(&accepted), None, "{:?}", String::from_utf8_lossy(&accepted.payload));
    let accepted: Value = serde_json::from_slice(&accepted.payload).unwrap();
    let record = app.wait_for_build(accepted["buildId"].as_str().unwrap()).await;
    assert_eq!(record["requestedBy"]["apiKeyId"], alice_id.as_str());
    assert_eq!(record["requestedBy"]["linuxUsername"], "alice");
    assert!(record["request"].get("trigger").is_none(), "{record}");

    // Push events: the build scope, a size cap, and who sent it set by the service.
    let push = json!({"repository": "https://example.com/a/b.git", "ref": "refs/heads/main", "after": "a".repeat(40), "forge": "github", "pusher": "mallory"});
    let refused = app.nats_request_with("artifacts.git.push", key_header(&reader), &push.to_string()).await;
    assert_eq!(code(&refused).as_deref(), Some("403"));
    let refused: Value = serde_json::from_slice(&refused.payload).unwrap();
    assert_eq!(refused["error"]["code"], 403, "JetStream clients see a publish error: {refused}");
    let mut huge = push.clone();
    huge["pusher"] = json!("x".repeat(900 * 1024));
    let refused = app.nats_request_with("artifacts.git.push", key_header(&alice), &huge.to_string()).await;
    assert_eq!(code(&refused).as_deref(), Some("413"));
    let stored = app
        .nats
        .jetstream
        .publish_with_headers("artifacts.git.push", key_header(&alice), push.to_string().into())
        .await
        .unwrap()
        .await
        .expect("a JetStream publish with a build key is acknowledged");
    let stream = app.nats.jetstream.get_stream("ARTIFACTS_PUSH").await.unwrap();
    let message = stream.get_raw_message(stored.sequence).await.unwrap();
    let event: Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(event["forge"], "nats");
    assert_eq!(event["apiKeyId"], alice_id.as_str());
    assert_eq!(event["pusher"], "alice");
    let config = stream.cached_info().config.clone();
    assert!(config.max_bytes > 0 && config.max_message_size > 0, "the push stream has byte caps");
}

/// Reproduction 4: a key limited to `team-a*` read another team's component through a dependency, an
/// image through `FROM`, and reused a context it never uploaded.
#[tokio::test]
async fn component_patterns_hold_through_dependencies_images_and_contexts() {
    require_docker().await;
    let registry = Registry::start().await;
    let address = registry.address.clone();
    let app = TestApp::spawn_with(|s| {
        allow_local_repositories(s);
        s.registry.address = address;
    })
    .await;
    let victim = name("victim-lib");
    let repo = GitRepo::new().await;
    repo.commit_and_tag(&[("artifact.toml", &manifest("echo secret > /out/secret.txt", &[]), false)], "v1").await;
    assert_eq!(build_component(&app, ADMIN_KEY, &repo.url(), &victim, "v1").await["status"], "succeeded");

    let pid = std::process::id();
    let (team_a, _) =
        app.create_key(json!({"name": "team-a", "scopes": ["build"], "components": [format!("team-a-{pid}*")]})).await;
    let thief = format!("team-a-{pid}-thief");
    let thief_repo = GitRepo::new().await;
    let steal = format!("cat /deps/{victim}/secret.txt > /out/stolen.txt");
    thief_repo.commit_and_tag(&[("artifact.toml", &manifest(&steal, &[(&victim, "v1")]), false)], "v1").await;
    let record = build_component(&app, &team_a, &thief_repo.url(), &thief, "v1").await;
    assert_eq!(record["status"], "failed", "{record}");
    assert!(record["errorMessage"].as_str().unwrap().contains("outside the components"), "{record}");

    // The victim's image, with a private file in its context.
    let victim_image = format!("victim-img-{pid}");
    let context = {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(7);
        header.set_mode(0o644);
        builder.append_data(&mut header, "private.txt", &b"secret\n"[..]).unwrap();
        builder.into_inner().unwrap()
    };
    let form = reqwest::multipart::Form::new()
        .part(
            "dockerfile",
            reqwest::multipart::Part::bytes(b"FROM busybox\nCOPY private.txt /\n".to_vec()).file_name("Dockerfile"),
        )
        .text("component", victim_image.clone())
        .text("branch", "main")
        .text("architecture", "amd64")
        .part("context", reqwest::multipart::Part::bytes(context).file_name("context.tar"));
    let response =
        app.http.post(app.url("/api/v1/images?wait=120")).bearer_auth(ADMIN_KEY).multipart(form).send().await.unwrap();
    let built: Value = response.json().await.unwrap();
    assert_eq!(built["status"], "succeeded", "{built}");
    let context_object =
        format!("contexts/{}", built["request"]["contextDigest"].as_str().unwrap().trim_start_matches("sha256:"));

    let port = registry.address.rsplit(':').next().unwrap();
    let mine = format!("team-a-{pid}-img");
    for (why, dockerfile, build_args) in [
        (
            "FROM",
            format!("FROM {}/{victim_image}-main-image:amd64\nRUN cat /private.txt\n", registry.address),
            json!({}),
        ),
        ("another spelling", format!("FROM localhost:{port}/{victim_image}-main-image:amd64\n"), json!({})),
        (
            "a build argument",
            "ARG BASE\nFROM ${BASE}\n".to_owned(),
            json!({"BASE": format!("{}/{victim_image}-main-image:amd64", registry.address)}),
        ),
        (
            "COPY --from",
            format!("FROM busybox\nCOPY --from={}/{victim_image}-main-image:amd64 /private.txt /\n", registry.address),
            json!({}),
        ),
    ] {
        let body = json!({"dockerfile": dockerfile, "component": mine, "branch": "main", "architecture": "amd64", "buildArgs": build_args});
        let (status, answer) = post(&app, &team_a, "/api/v1/images", &body).await;
        assert_eq!(status, 403, "{why}: {answer}");
        assert!(answer["errorMessage"].as_str().unwrap().contains(&victim_image), "{why}: {answer}");
    }

    // A context named by its digest alone is the uploader's (or its component's), no one else's.
    let reuse = json!({"dockerfile": "FROM busybox\nCOPY private.txt /\n", "component": mine, "branch": "main", "architecture": "amd64", "context": context_object});
    let (status, answer) = post(&app, &team_a, "/api/v1/images", &reuse).await;
    assert_eq!(status, 403, "{answer}");
    let mut own = reuse.clone();
    own["component"] = json!(victim_image);
    let (status, answer) = post(&app, ADMIN_KEY, "/api/v1/images", &own).await;
    assert_eq!(status, 202, "the uploader may reuse its context: {answer}");
}

/// Reproduction 5: an admin key limited to `team-a*` and pinned to `alice` made an unlimited admin key
/// pinned to `root`, and revoked other keys.
#[tokio::test]
async fn keys_manage_only_keys_within_their_own_limits() {
    let app = TestApp::spawn().await;
    let (limited, _) = app
        .create_key(
            json!({"name": "team-a admin", "scopes": ["admin"], "components": ["team-a*"], "linuxUsername": "alice"}),
        )
        .await;
    for (why, request) in [
        (
            "unlimited, pinned to root",
            json!({"name": "x", "scopes": ["admin"], "components": null, "linuxUsername": "root"}),
        ),
        ("wider patterns", json!({"name": "x", "scopes": ["read"], "components": ["team-*"]})),
        ("another identity", json!({"name": "x", "scopes": ["read"], "linuxUsername": "root"})),
    ] {
        let (status, body) = app.create_key_as(&limited, request).await.unwrap_err();
        assert_eq!(status, 403, "{why}: {body}");
    }
    // What a new key leaves out, it inherits.
    let (_, child) = app.create_key_as(&limited, json!({"name": "child", "scopes": ["build"]})).await.unwrap();
    let (_, listed) = get(&app, &limited, "/api/v1/keys").await;
    let keys = listed["keys"].as_array().unwrap();
    let child_info = keys.iter().find(|k| k["keyId"] == child.as_str()).expect("the child is listed");
    assert_eq!(child_info["components"], json!(["team-a*"]));
    assert_eq!(child_info["linuxUsername"], "alice");

    let (_, other) = app.create_key(json!({"name": "team-b", "scopes": ["read"], "components": ["team-b*"]})).await;
    assert!(keys.iter().all(|k| k["keyId"] != other.as_str()), "keys outside its limits are not listed");
    let revoke = |id: String| {
        let request = app.http.delete(app.url(&format!("/api/v1/keys/{id}"))).bearer_auth(&limited);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(revoke(other).await, 403);
    assert_eq!(revoke(child).await, 200);
}

/// Reproduction 6: a chain of relative symlinks in a component's output was stored, and extracting the
/// archive made `passwd -> /etc/passwd`.
#[tokio::test]
async fn an_output_with_a_chain_of_links_climbing_out_is_refused() {
    require_docker().await;
    let app = TestApp::spawn_with(allow_local_repositories).await;
    let repo = GitRepo::new().await;
    let links = "mkdir -p /out/a && ln -s .. /out/a/b && ln -s a/b/.. /out/c && ln -s c/.. /out/e \
                 && ln -s e/.. /out/g && ln -s g/.. /out/h && ln -s h/etc/passwd /out/passwd";
    repo.commit_and_tag(&[("artifact.toml", &manifest(links, &[]), false)], "v1").await;
    let component = name("link-chain");
    let record = build_component(&app, ADMIN_KEY, &repo.url(), &component, "v1").await;
    assert_eq!(record["status"], "failed", "{record}");
    assert!(record["errorMessage"].as_str().unwrap().contains("resolves outside"), "{record}");
    let (status, _) =
        get(&app, ADMIN_KEY, &format!("/api/v1/components?component={component}&tag=v1&architecture=amd64")).await;
    assert_ne!(status, 200, "nothing was stored");
}

/// Reproduction 7: with `file` allowed, a refused path and a missing one got different answers.
#[tokio::test]
async fn file_urls_outside_the_roots_and_missing_ones_answer_alike() {
    let app = TestApp::spawn_with(allow_local_repositories).await;
    let mut answers = Vec::new();
    for url in ["file:///etc/shadow", "file:///nonexistent/repository", "/etc"] {
        let body = json!({"url": url, "component": name("probe"), "tag": "v1", "architecture": "amd64"});
        let (status, answer) = post(&app, ADMIN_KEY, "/api/v1/components", &body).await;
        assert_eq!(status, 400, "{url}: {answer}");
        answers.push(answer["errorMessage"].as_str().unwrap().replace(url, "<url>"));
    }
    assert!(answers.windows(2).all(|pair| pair[0] == pair[1]), "{answers:#?}");
    assert!(answers[0].contains("git.file_roots"), "{answers:?}");
}
