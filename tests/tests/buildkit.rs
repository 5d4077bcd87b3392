//! Issue 28: image builds go through the engine's BuildKit. Each Dockerfile feature builds, is pulled
//! back from the real registry and runs with the expected output; foreign architectures under QEMU are
//! labelled as such; what the built-in frontend cannot read is refused with its line; the registry is
//! one layer cache for every worker.

use serde_json::{json, Value};
use sha2::Digest as _;

use artifacts_schemas::Architecture;
use artifacts_tests::engines::DockerEngine;
use artifacts_tests::{context_tar, docker, require_docker, Registry, TestApp, ADMIN_KEY};

fn component(test: &str) -> String {
    format!("bk-{test}-{}", std::process::id())
}

/// Submits a multipart build (Dockerfile, context, optional target) and waits for its record.
async fn build(app: &TestApp, component: &str, branch: &str, dockerfile: &str, context: &[(&str, &str)]) -> Value {
    let form = reqwest::multipart::Form::new()
        .part("dockerfile", reqwest::multipart::Part::bytes(dockerfile.as_bytes().to_vec()).file_name("Dockerfile"))
        .part("context", reqwest::multipart::Part::bytes(context_tar(context)).file_name("context.tar"))
        .text("component", component.to_owned())
        .text("branch", branch.to_owned())
        .text("architecture", "amd64")
        .text("force", "true");
    let response =
        app.http.post(app.url("/api/v1/images")).bearer_auth(ADMIN_KEY).multipart(form).send().await.unwrap();
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    app.wait_for_build(accepted["buildId"].as_str().unwrap()).await
}

/// Removes the local copy of an image and pulls it back from the registry.
async fn pull(image: &str) {
    let _ = tokio::process::Command::new("docker").args(["rmi", "--force", image]).output().await;
    docker(&["pull", image]).await;
}

const FEATURES: &str = "\
FROM busybox AS unused
RUN exit 7

FROM busybox AS deps
RUN echo from-deps > /dep

FROM busybox
ARG TARGETARCH
ARG TARGETPLATFORM
ARG BUILDPLATFORM
RUN echo NONCE > /nonce
COPY --from=deps /dep /dep
COPY . /ctx/
RUN --mount=type=cache,target=/cache echo cache-mounted > /cache/x && cp /cache/x /from-cache && echo step-output-line
RUN --mount=type=secret,id=absent if [ -e /run/secrets/absent ]; then echo secret-present; else echo secret-absent; fi > /secret
RUN echo \"$TARGETARCH $TARGETPLATFORM $BUILDPLATFORM\" > /platform
CMD cat /dep /from-cache /secret /platform && ls -A /ctx
";

#[tokio::test]
async fn buildkit_dockerfile_features_build_pull_and_run() {
    let (app, _registry) = TestApp::spawn_with_registry(|_| {}).await;
    let component = component("features");
    let context = [("hello.txt", "hello\n"), (".dockerignore", "ignored.txt\n"), ("ignored.txt", "no\n")];
    // A step unique to this run, so the steps after it run here rather than come from an earlier run's cache.
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos().to_string();
    let features = FEATURES.replace("NONCE", &nonce);
    let record = build(&app, &component, "main", &features, &context).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    let build_id = record["buildId"].as_str().unwrap();

    // The log: one line per step with its name, its output, timings.
    let (lines, end) = app.follow_logs(build_id).await;
    assert_eq!(end, "succeeded");
    let step = lines.iter().find(|l| l.contains("] RUN --mount=type=cache")).unwrap_or_else(|| panic!("{lines:#?}"));
    let number = step.split_whitespace().next().unwrap().to_owned();
    assert!(number.starts_with('#'), "{step}");
    assert!(
        lines.iter().any(|l| l.starts_with(&format!("{number} ")) && l.ends_with(" step-output-line")),
        "{lines:#?}"
    );
    assert!(lines.iter().any(|l| l.starts_with(&format!("{number} DONE ")) && l.ends_with('s')), "{lines:#?}");
    assert!(!lines.iter().any(|l| l.contains("exit 7")), "the unused stage is not built: {lines:#?}");

    let image = record["result"]["imageName"].as_str().unwrap();
    pull(image).await;
    let output = docker(&["run", "--rm", "--network", "none", image]).await;
    assert_eq!(
        output, "from-deps\ncache-mounted\nsecret-absent\namd64 linux/amd64 linux/amd64\n.dockerignore\nhello.txt\n",
        "no .artifacts.Dockerfile, nothing .dockerignore leaves out"
    );
    let found =
        docker(&["run", "--rm", "--network", "none", image, "find", "/", "-name", "*.Dockerfile", "-xdev"]).await;
    assert_eq!(found, "", "no file of the service's is in the image");
    let arch = docker(&["image", "inspect", "-f", "{{.Architecture}}", image]).await;
    assert_eq!(arch.trim(), "amd64");

    // The same build again on the same engine: its steps come from the cache and say so.
    let again = build(&app, &component, "main", &features, &context).await;
    assert_eq!(again["status"], "succeeded", "{again}");
    let (lines, _) = app.follow_logs(again["buildId"].as_str().unwrap()).await;
    assert!(lines.iter().any(|l| l.ends_with(" CACHED")), "{lines:#?}");
}

#[tokio::test]
async fn a_target_builds_that_stage_is_checked_and_is_part_of_what_is_built() {
    let (app, _registry) = TestApp::spawn_with_registry(|_| {}).await;
    let component = component("target");
    let dockerfile = "FROM busybox AS first\nRUN echo first > /stage\nFROM busybox AS second\nRUN exit 9\n";
    let body = |target: Option<&str>| {
        let mut body =
            json!({"dockerfile": dockerfile, "component": component, "branch": "main", "architecture": "amd64"});
        if let Some(target) = target {
            body["target"] = json!(target);
        }
        body
    };
    let (status, accepted) = app.post_image("", &body(Some("first"))).await;
    assert_eq!(status, 202, "{accepted}");
    let record = app.wait_for_build(accepted["buildId"].as_str().unwrap()).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    assert_eq!(record["request"]["target"], "first");
    let image = record["result"]["imageName"].as_str().unwrap();
    pull(image).await;
    assert_eq!(docker(&["run", "--rm", "--network", "none", image, "cat", "/stage"]).await, "first\n");

    // Without a target it is another build (the last stage, which fails).
    let (status, other) = app.post_image("", &body(None)).await;
    assert_eq!(status, 202, "{other}");
    assert_ne!(other["buildId"], accepted["buildId"]);
    let failed = app.wait_for_build(other["buildId"].as_str().unwrap()).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let message = failed["errorMessage"].as_str().unwrap();
    assert!(message.contains("exit code: 9"), "{message}");

    for (target, why) in [("Bad!", "is not a stage name"), ("third", "is not a stage of the Dockerfile")] {
        let (status, refused) = app.post_image("", &body(Some(target))).await;
        assert_eq!(status, 400, "{refused}");
        assert!(refused["errorMessage"].as_str().unwrap().contains(why), "{refused}");
    }
}

#[tokio::test]
async fn what_the_built_in_frontend_cannot_read_is_refused_with_its_line() {
    let (app, _registry) = TestApp::spawn_with_registry(|_| {}).await;
    let component = component("syntax");
    let submit = |dockerfile: &str| json!({"dockerfile": dockerfile, "component": component, "branch": "main", "architecture": "amd64"});
    let (status, refused) = app.post_image("", &submit("# syntax=docker/dockerfile:1.4\nFROM busybox\n")).await;
    assert_eq!(status, 400, "{refused}");
    let message = refused["errorMessage"].as_str().unwrap();
    assert!(message.starts_with("line 1: ") && message.contains("docker/dockerfile:1.4"), "{message}");

    let (status, refused) = app.post_image("", &submit("FROM busybox\n\nRUN <<EOF\necho hi\nEOF\n")).await;
    assert_eq!(status, 400, "{refused}");
    let message = refused["errorMessage"].as_str().unwrap();
    assert!(message.starts_with("line 3: ") && message.contains("heredoc"), "{message}");
    let (status, refused) = app.post_image("", &submit("FROM busybox\nCOPY <<EOF /x\nhi\nEOF\n")).await;
    assert_eq!(status, 400, "{refused}");
    assert!(refused["errorMessage"].as_str().unwrap().starts_with("line 2: "), "{refused}");

    // A frontend image the engine has is the operator's choice: the submission is accepted.
    let frontend = format!("artifacts-test-frontend:{}", std::process::id());
    docker(&["tag", "busybox:latest", &frontend]).await;
    let (status, accepted) =
        app.post_image("", &submit(&format!("# syntax={frontend}\nFROM busybox\nRUN <<EOF\nEOF\n"))).await;
    assert_eq!(status, 202, "{accepted}");
    app.wait_for_build(accepted["buildId"].as_str().unwrap()).await;
    docker(&["rmi", &frontend]).await;
}

#[tokio::test]
async fn an_arm64_image_built_under_qemu_says_arm64() {
    require_docker().await;
    let registry = Registry::start().await;
    let engine = DockerEngine::start().await;
    engine.load_busybox(Architecture::Arm64).await;
    let (address, host) = (registry.address.clone(), engine.host.clone());
    let app = TestApp::spawn_with(|settings| {
        settings.registry.address = address;
        settings.docker.host = Some(host);
        settings.build.architectures = vec!["arm64".into()];
    })
    .await;
    let dockerfile = "FROM busybox\nARG TARGETARCH\nRUN echo \"$(uname -m) $TARGETARCH\" > /arch\nCMD cat /arch\n";
    let body =
        json!({"dockerfile": dockerfile, "component": component("arm"), "branch": "main", "architecture": "arm64"});
    let (status, accepted) = app.post_image("", &body).await;
    assert_eq!(status, 202, "{accepted}");
    let record = app.wait_for_build(accepted["buildId"].as_str().unwrap()).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    let image = record["result"]["imageName"].as_str().unwrap();
    engine.docker(&["pull", image]).await;
    assert_eq!(engine.docker(&["image", "inspect", "-f", "{{.Architecture}}", image]).await.trim(), "arm64");
    assert_eq!(engine.docker(&["run", "--rm", "--network", "none", image]).await, "aarch64 arm64\n");
}

/// Builds `FROM busybox`, a slow step, then `last`; after the engine's build cache and images are gone
/// (as on a worker that never built it), the slow step comes from the registry's inline cache.
#[tokio::test]
async fn a_fresh_engine_reuses_the_layers_other_workers_pushed() {
    let registry = Registry::start().await;
    let engine = DockerEngine::start().await;
    engine.load_busybox(Architecture::Amd64).await;
    let (address, host) = (registry.address.clone(), engine.host.clone());
    let app = TestApp::spawn_with(|settings| {
        settings.registry.address = address;
        settings.docker.host = Some(host);
    })
    .await;
    let component = component("cache");
    let dockerfile = |last: &str| format!("FROM busybox\nRUN sleep 3 && echo slow > /slow\nRUN echo {last} > /last\n");
    let first = build(&app, &component, "main", &dockerfile("one"), &[("a.txt", "a\n")]).await;
    assert_eq!(first["status"], "succeeded", "{first}");

    // A fresh worker: no build cache, no images but its base.
    let fresh = || async {
        engine.docker(&["builder", "prune", "-af"]).await;
        let images = engine.docker(&["images", "-q", "--filter", "reference=*/*"]).await;
        for id in images.split_whitespace() {
            engine.docker(&["rmi", "--force", id]).await;
        }
    };
    fresh().await;
    // Another branch of the component: the cache comes from the main branch's image.
    let second = build(&app, &component, "feature/x", &dockerfile("two"), &[("a.txt", "a\n")]).await;
    assert_eq!(second["status"], "succeeded", "{second}");
    let (lines, _) = app.follow_logs(second["buildId"].as_str().unwrap()).await;
    let slow = lines.iter().find(|l| l.contains("RUN sleep 3")).unwrap_or_else(|| panic!("{lines:#?}"));
    let number = slow.split_whitespace().next().unwrap();
    assert!(lines.contains(&format!("{number} CACHED")), "{lines:#?}");
    let image = second["result"]["imageName"].as_str().unwrap();
    engine.docker(&["pull", image]).await;
    assert_eq!(
        engine.docker(&["run", "--rm", "--network", "none", image, "cat", "/slow", "/last"]).await,
        "slow\ntwo\n"
    );

    // Turned off, a fresh worker runs every step again.
    let (address, host) = (registry.address.clone(), engine.host.clone());
    let uncached = TestApp::spawn_with(|settings| {
        settings.registry.address = address;
        settings.docker.host = Some(host);
        settings.build.registry_cache = false;
    })
    .await;
    fresh().await;
    let third = build(&uncached, &component, "main", &dockerfile("three"), &[("a.txt", "a\n")]).await;
    assert_eq!(third["status"], "succeeded", "{third}");
    let (lines, _) = uncached.follow_logs(third["buildId"].as_str().unwrap()).await;
    assert!(!lines.iter().any(|l| l.ends_with(" CACHED") && !l.contains("FROM")), "{lines:#?}");
    let slow = lines.iter().find(|l| l.contains("RUN sleep 3")).unwrap_or_else(|| panic!("{lines:#?}"));
    let number = slow.split_whitespace().next().unwrap();
    assert!(!lines.contains(&format!("{number} CACHED")), "{lines:#?}");
}

#[tokio::test]
async fn a_build_mounts_the_secrets_of_its_component_and_shows_them_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("secrets.key");
    let (app, _registry) = TestApp::spawn_with_registry(|settings| settings.secrets.key_file = Some(key_file)).await;
    let component = component("secret");
    let value = format!("tok-{}-value", std::process::id());
    let body = json!({"name": "tok", "value": value, "components": [component]});
    let response = app.http.post(app.url("/api/v1/secrets")).bearer_auth(ADMIN_KEY).json(&body).send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.text().await.unwrap());
    let other = json!({"name": "other", "value": "not-for-this-component", "components": ["someone-else"]});
    let response = app.http.post(app.url("/api/v1/secrets")).bearer_auth(ADMIN_KEY).json(&other).send().await.unwrap();
    assert!(response.status().is_success());

    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let dockerfile = format!(
        "FROM busybox\nRUN echo {nonce}\n\
         RUN --mount=type=secret,id=tok cat /run/secrets/tok && echo && sha256sum < /run/secrets/tok > /hash\n\
         RUN --mount=type=secret,id=other if [ -e /run/secrets/other ]; then echo other-present; else echo other-absent; fi > /other\n"
    );
    let record = build(&app, &component, "main", &dockerfile, &[("a.txt", "a\n")]).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    let (lines, _) = app.follow_logs(record["buildId"].as_str().unwrap()).await;
    assert!(lines.iter().any(|l| l.ends_with(" ***")), "the value's line is masked: {lines:#?}");
    assert!(!lines.iter().any(|l| l.contains(&value)), "{lines:#?}");
    assert!(!record.to_string().contains(&value), "{record}");

    let image = record["result"]["imageName"].as_str().unwrap();
    pull(image).await;
    let expected = hex::encode(sha2::Sha256::digest(value.as_bytes()));
    let inside = docker(&["run", "--rm", "--network", "none", image, "cat", "/hash", "/other"]).await;
    assert_eq!(inside, format!("{expected}  -\nother-absent\n"));
    let saved = tokio::process::Command::new("docker").args(["save", image]).output().await.unwrap();
    assert!(saved.status.success());
    let needle = value.as_bytes();
    assert!(!saved.stdout.windows(needle.len()).any(|w| w == needle), "the value is in no layer");
}

#[tokio::test]
async fn add_from_the_gateway_is_refused_under_buildkit_too() {
    // BuildKit fetches `ADD <url>` itself, outside the step's network `none`, with no key: the gateway
    // answers 401. (The registry behind tokens does the same; this test's registry has no tokens.)
    let (app, _registry) = TestApp::spawn_with_registry(|_| {}).await;
    for url in [format!("{}/api/v1/builds", app.address)] {
        let dockerfile = format!("FROM busybox\nADD {url} /fetched\nRUN cat /fetched\n");
        let body = json!({"dockerfile": dockerfile, "component": component("addurl"), "branch": "main", "architecture": "amd64", "force": true});
        let (status, accepted) = app.post_image("", &body).await;
        assert_eq!(status, 202, "{accepted}");
        let record = app.wait_for_build(accepted["buildId"].as_str().unwrap()).await;
        assert_eq!(record["status"], "failed", "{url}: {record}");
        assert!(record["errorMessage"].as_str().unwrap().contains("401"), "{url}: {record}");
    }
}

/// BuildKit keys a cache mount by its id alone (the target path when none is given): two teams' builds on
/// one engine once shared `/cache`, so one read what the other left there. Each component's cache mounts
/// are its own; a component still reuses its own.
#[tokio::test]
async fn cache_mounts_are_each_components_own() {
    let (app, _registry) = TestApp::spawn_with_registry(|_| {}).await;
    let run = std::process::id();
    // What a step leaves in its cache mount and what it found there, as the image's /seen.
    let dockerfile = |marker: &str| {
        format!(
            "FROM busybox\nARG RUN_ID={run}-{marker}\nRUN --mount=type=cache,target=/shared-cache \
             (cat /shared-cache/left 2>/dev/null || echo nothing) > /seen && echo {marker} > /shared-cache/left\n\
             CMD [\"cat\", \"/seen\"]\n"
        )
    };
    let seen = |record: &Value| {
        let image = record["result"]["imageName"].as_str().unwrap_or_else(|| panic!("{record}")).to_owned();
        async move {
            pull(&image).await;
            docker(&["run", "--rm", "--network", "none", &image]).await
        }
    };
    let team_a = component("cache-team-a");
    let first = build(&app, &team_a, "main", &dockerfile("secret-of-team-a"), &[("a.txt", "a\n")]).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    let team_b = component("cache-team-b");
    let other = build(&app, &team_b, "main", &dockerfile("team-b"), &[("b.txt", "b\n")]).await;
    assert_eq!(other["status"], "succeeded", "{other}");
    assert_eq!(seen(&other).await.trim(), "nothing", "team B does not see team A's cache");
    let again = build(&app, &team_a, "main", &dockerfile("second"), &[("a.txt", "a\n")]).await;
    assert_eq!(again["status"], "succeeded", "{again}");
    assert_eq!(seen(&again).await.trim(), "secret-of-team-a", "team A reuses its own cache");
}
