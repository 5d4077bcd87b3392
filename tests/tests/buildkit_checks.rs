//! Issue 28, "Done when": what the other BuildKit tests leave out. The `bind` and `tmpfs` mounts build, are
//! pulled back and run with the expected output (cache and secret mounts: `buildkit.rs`); and every
//! Dockerfile check of the second round still refuses under BuildKit, including BuildKit's own ways to
//! name an image (`RUN --mount=...,from=<image>`), with the registry behind tokens as `artifacts up` runs
//! it: a registry `FROM`, `COPY --from` and mount of another team's image (403 at submission), another
//! caller's context (403), and `ADD http://` of the registry's API or the gateway (the build fails: 401).

use serde_json::{json, Value};

use artifacts_tests::{context_tar, docker, TestApp, ADMIN_KEY};

fn component(test: &str) -> String {
    format!("bkc-{test}-{}", std::process::id())
}

/// Submits a multipart build (Dockerfile and context) with `key`; the status and the answer.
async fn submit(app: &TestApp, key: &str, component: &str, dockerfile: &str, context: &[(&str, &str)]) -> (u16, Value) {
    let form = reqwest::multipart::Form::new()
        .part("dockerfile", reqwest::multipart::Part::bytes(dockerfile.as_bytes().to_vec()).file_name("Dockerfile"))
        .part("context", reqwest::multipart::Part::bytes(context_tar(context)).file_name("context.tar"))
        .text("component", component.to_owned())
        .text("branch", "main")
        .text("architecture", "amd64")
        .text("force", "true");
    let response = app.http.post(app.url("/api/v1/images")).bearer_auth(key).multipart(form).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// A JSON submission with `key`: the status and the answer.
async fn post(app: &TestApp, key: &str, body: &Value) -> (u16, Value) {
    let response = app.http.post(app.url("/api/v1/images")).bearer_auth(key).json(body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn bind_and_tmpfs_mounts_build_pull_and_run() {
    let (app, _registry) = TestApp::spawn_with_registry(|_| {}).await;
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let dockerfile = format!(
        "FROM busybox AS tools\nRUN echo from-stage-{nonce} > /tool\n\
         FROM busybox\n\
         RUN --mount=type=bind,source=input.txt,target=/in/input.txt cp /in/input.txt /copied\n\
         RUN --mount=type=bind,from=tools,source=/tool,target=/t cat /t > /tool-copy\n\
         RUN --mount=type=tmpfs,target=/scratch echo x > /scratch/left && \
             grep ' /scratch ' /proc/mounts | cut -d' ' -f3 > /scratch-fs\n\
         CMD cat /copied /tool-copy /scratch-fs && ls -A /scratch && ls -A /in\n"
    );
    let (status, accepted) =
        submit(&app, ADMIN_KEY, &component("mounts"), &dockerfile, &[("input.txt", "from-context\n")]).await;
    assert_eq!(status, 202, "{accepted}");
    let record = app.wait_for_build(accepted["buildId"].as_str().unwrap()).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    let image = record["result"]["imageName"].as_str().unwrap();
    let _ = tokio::process::Command::new("docker").args(["rmi", "--force", image]).output().await;
    docker(&["pull", image]).await;
    // A bind mount is read in its step only; a tmpfs is in memory and leaves nothing in the image.
    assert_eq!(
        docker(&["run", "--rm", "--network", "none", image]).await,
        format!("from-context\nfrom-stage-{nonce}\ntmpfs\n")
    );
}

#[tokio::test]
async fn the_second_rounds_dockerfile_checks_still_refuse_under_buildkit() {
    let (app, registry, _signing) = TestApp::spawn_with_token_registry().await;
    let pid = std::process::id();
    // Another team's image, with a private file from its context.
    let victim = format!("victim-{pid}");
    let (status, accepted) =
        submit(&app, ADMIN_KEY, &victim, "FROM busybox\nCOPY private.txt /\n", &[("private.txt", "private\n")]).await;
    assert_eq!(status, 202, "{accepted}");
    let built = app.wait_for_build(accepted["buildId"].as_str().unwrap()).await;
    assert_eq!(built["status"], "succeeded", "{built}");
    let victim_image = built["result"]["imageName"].as_str().unwrap().to_owned();
    let repository = victim_image.trim_start_matches(&format!("{}/", registry.address)).split(':').next().unwrap();
    let context =
        format!("contexts/{}", built["request"]["contextDigest"].as_str().unwrap().trim_start_matches("sha256:"));

    let (team_a, _) =
        app.create_key(json!({"name": "team-a", "scopes": ["build"], "components": [format!("team-a-{pid}*")]})).await;
    let mine = format!("team-a-{pid}-img");
    let port = registry.address.rsplit(':').next().unwrap();
    for (why, dockerfile) in [
        ("FROM", format!("FROM {victim_image}\nRUN cat /private.txt\n")),
        ("FROM, another spelling", format!("FROM localhost:{port}/{repository}:amd64\n")),
        ("COPY --from", format!("FROM busybox\nCOPY --from={victim_image} /private.txt /\n")),
        (
            "RUN --mount=type=bind,from=",
            format!("FROM busybox\nRUN --mount=type=bind,from={victim_image},target=/v cat /v/private.txt\n"),
        ),
        (
            "RUN --mount=type=cache,from=",
            format!("FROM busybox\nRUN --mount=type=cache,from={victim_image},source=/,target=/v cat /v/private.txt\n"),
        ),
        (
            "a mount in a later stage",
            format!("FROM busybox AS a\nFROM busybox\nRUN --mount=from={victim_image},target=/v true\n"),
        ),
    ] {
        let body = json!({"dockerfile": dockerfile, "component": mine, "branch": "main", "architecture": "amd64"});
        let (status, answer) = post(&app, &team_a, &body).await;
        assert_eq!(status, 403, "{why}: {answer}");
        assert!(answer["errorMessage"].as_str().unwrap().contains(&victim), "{why}: {answer}");
    }

    // A context named by its digest is its uploader's (or its component's), no one else's.
    let reuse = json!({"dockerfile": "FROM busybox\nCOPY private.txt /\n", "component": mine, "branch": "main", "architecture": "amd64", "context": context});
    let (status, answer) = post(&app, &team_a, &reuse).await;
    assert_eq!(status, 403, "{answer}");

    // `ADD <url>` is fetched by BuildKit itself, outside the step's network, with no credentials: the
    // registry's API and the gateway answer 401, and the build fails saying so.
    for url in [
        format!("http://{}/v2/{repository}/manifests/amd64", registry.address),
        format!("http://localhost:{port}/v2/_catalog"),
        format!("{}/api/v1/builds", app.address),
    ] {
        let dockerfile = format!("FROM busybox\nADD {url} /fetched\nRUN cat /fetched\n");
        let body = json!({"dockerfile": dockerfile, "component": mine, "branch": "main", "architecture": "amd64", "force": true});
        let (status, accepted) = post(&app, &team_a, &body).await;
        assert_eq!(status, 202, "{url}: {accepted}");
        let record = app.wait_for_build(accepted["buildId"].as_str().unwrap()).await;
        assert_eq!(record["status"], "failed", "{url}: {record}");
        assert!(record["errorMessage"].as_str().unwrap().contains("401"), "{url}: {record}");
    }
}
