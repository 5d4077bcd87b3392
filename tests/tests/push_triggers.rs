//! Rebuild on git push: the forges' real webhook payloads (from ../shared/fixtures/webhooks, with the
//! repository pointed at a local test repository), signed here with a test secret; and push events
//! published straight on NATS.

use std::time::Duration;

use serde_json::{json, Value};

use artifacts_tests::{
    manifest, require_docker, sign_webhook as sign, unique_name as name, webhook_fixture as fixture, GitRepo, TestApp,
    ADMIN_KEY, WEBHOOK_SECRET as SECRET,
};
const GITLAB_TOKEN: &str = "test-gitlab-token";

async fn app() -> TestApp {
    require_docker().await;
    TestApp::spawn_with(|s| {
        artifacts_tests::allow_local_repositories(s);
        s.hooks.github.secret = Some(artifacts_runtime::configuration::Secret::new(SECRET));
        s.hooks.gitea.secret = Some(artifacts_runtime::configuration::Secret::new(SECRET));
        s.hooks.gitlab.token = Some(artifacts_runtime::configuration::Secret::new(GITLAB_TOKEN));
    })
    .await
}

async fn github(app: &TestApp, event: &str, delivery: &str, body: &[u8], signature: Option<String>) -> (u16, Value) {
    let mut request = app
        .http
        .post(app.url("/api/v1/hooks/github"))
        .header("X-GitHub-Event", event)
        .header("X-GitHub-Delivery", delivery)
        .header("Content-Type", "application/json")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("X-Hub-Signature-256", format!("sha256={signature}"));
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Waits until `count` triggered builds of the component exist and have ended.
async fn wait_triggered(app: &TestApp, component: &str, count: usize) -> Vec<Value> {
    for _ in 0..600 {
        let builds = app.triggered_builds(component).await;
        if builds.len() >= count
            && builds.iter().all(|b| matches!(b["status"].as_str(), Some("succeeded" | "failed" | "cancelled")))
        {
            return builds;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{count} triggered builds of {component} did not end in time: {:#?}", app.triggered_builds(component).await);
}

/// Push events stored for the trigger (the stream also holds a pushed build's hand-over to its dependents).
async fn push_stream_messages(app: &TestApp) -> u64 {
    use futures::TryStreamExt;
    let stream = app.nats.jetstream.get_stream("ARTIFACTS_PUSH").await.unwrap();
    let subjects = stream.info_with_subjects("artifacts.git.push.accepted").await.unwrap();
    subjects.try_fold(0, |sum, (_, count)| async move { Ok(sum + count as u64) }).await.unwrap()
}

#[tokio::test]
async fn a_github_tag_push_builds_the_new_tag_once_however_often_delivered() {
    let app = app().await;
    let repo = GitRepo::new().await;
    let component = name("gh-tag");
    repo.commit_and_tag(&[("artifact.toml", &manifest("echo v1 > /out/version", &[]), false)], "v1").await;
    app.build_component(&repo.url(), &component, "v1").await;

    repo.commit_and_tag(&[("artifact.toml", &manifest("echo v2 > /out/version", &[]), false)], "v2").await;
    let mut payload = fixture("github-tag-push.json");
    payload["repository"]["clone_url"] = json!(format!("{}.git/", repo.url()));
    payload["ref"] = json!("refs/tags/v2");
    let body = serde_json::to_vec(&payload).unwrap();

    let (status, bad) = github(&app, "push", "delivery-1", &body, Some(sign(b"something else"))).await;
    assert_eq!(status, 401, "{bad}");
    let (status, _) = github(&app, "push", "delivery-1", &body, None).await;
    assert_eq!(status, 401);
    assert_eq!(push_stream_messages(&app).await, 0, "a refused delivery publishes nothing");

    let (status, accepted) = github(&app, "push", "delivery-1", &body, Some(sign(&body))).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["status"], "accepted");
    assert_eq!(accepted["duplicate"], false);
    let (status, again) = github(&app, "push", "delivery-1", &body, Some(sign(&body))).await;
    assert_eq!(status, 202);
    assert_eq!(again["duplicate"], true, "the redelivery collapses");
    assert_eq!(push_stream_messages(&app).await, 1);

    let builds = wait_triggered(&app, &component, 1).await;
    let build = &builds[0];
    assert_eq!(build["status"], "succeeded", "{build}");
    assert_eq!(build["request"]["tag"], "v2");
    let trigger = &build["request"]["trigger"];
    assert_eq!(trigger["forge"], "github");
    assert_eq!(trigger["deliveryId"], "delivery-1");
    assert_eq!(trigger["pusher"], "bradrydzewski");
    // The commit the tag names in the repository, not the one the payload claims (issue 27, item 4).
    assert_eq!(trigger["commit"], repo.head().await.as_str());

    // Another delivery of the same push (same repository, ref and commit) builds nothing more: the event
    // is stored (another delivery id), the trigger handles it, and it is the trigger that finds the commit
    // handled already.
    let (status, again) = github(&app, "push", "delivery-2", &body, Some(sign(&body))).await;
    assert_eq!((status, &again["duplicate"]), (202, &json!(false)), "{again}");
    assert_eq!(push_stream_messages(&app).await, 2, "the second delivery reaches the trigger");
    app.pushes_handled().await;
    assert_eq!(app.triggered_builds(&component).await.len(), 1, "{:#?}", app.triggered_builds(&component).await);
}

#[tokio::test]
async fn pings_other_events_deletions_and_malformed_bodies() {
    let app = app().await;
    let ping = serde_json::to_vec(&fixture("github-ping.json")).unwrap();
    let (status, body) = github(&app, "ping", "ping-1", &ping, Some(sign(&ping))).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = github(&app, "issues", "issue-1", &ping, Some(sign(&ping))).await;
    assert_eq!((status, body["status"].as_str()), (202, Some("ignored")));
    let garbage = b"{not json";
    let (status, _) = github(&app, "push", "bad-1", garbage, Some(sign(garbage))).await;
    assert_eq!(status, 400);

    let repo = GitRepo::new().await;
    let component = name("deleted");
    repo.commit_and_tag(&[("artifact.toml", &manifest("echo x > /out/x", &[]), false)], "v1").await;
    repo.branch("feature-branch").await;
    app.build_component(&repo.url(), &component, "feature-branch").await;
    // The branch moves on, so any push of it but a deletion would build its new commit.
    repo.commit_and_tag(&[("artifact.toml", &manifest("echo y > /out/x", &[]), false)], "v2").await;
    repo.move_branch("feature-branch").await;
    let mut payload = fixture("github-branch-delete.json");
    payload["repository"]["clone_url"] = json!(repo.url());
    let body = serde_json::to_vec(&payload).unwrap();
    let (status, _) = github(&app, "push", "delete-1", &body, Some(sign(&body))).await;
    assert_eq!(status, 202);
    assert_eq!(push_stream_messages(&app).await, 1, "the deletion reaches the trigger");
    app.pushes_handled().await;
    let triggered = app.triggered_builds(&component).await;
    assert!(triggered.is_empty(), "a deleted branch builds nothing: {triggered:#?}");
}

#[tokio::test]
async fn gitlab_and_gitea_deliveries_trigger_builds() {
    let app = app().await;
    let repo = GitRepo::new().await;
    let component = name("forges");
    repo.commit_and_tag(&[("artifact.toml", &manifest("echo one > /out/v", &[]), false)], "v1").await;
    app.build_component(&repo.url(), &component, "main").await;

    // GitLab: a tag push, authenticated by token.
    repo.commit_and_tag(&[("artifact.toml", &manifest("echo two > /out/v", &[]), false)], "v1.0.0").await;
    let mut payload = fixture("gitlab-tag-push.json");
    payload["project"]["git_http_url"] = json!(repo.url());
    let body = serde_json::to_vec(&payload).unwrap();
    let gitlab = |token: &'static str| {
        app.http
            .post(app.url("/api/v1/hooks/gitlab"))
            .header("X-Gitlab-Event", "Tag Push Hook")
            .header("X-Gitlab-Token", token)
            .header("Idempotency-Key", "gitlab-1")
            .body(body.clone())
            .send()
    };
    assert_eq!(gitlab("wrong").await.unwrap().status(), 401);
    assert_eq!(gitlab(GITLAB_TOKEN).await.unwrap().status(), 202);
    let builds = wait_triggered(&app, &component, 1).await;
    assert_eq!(builds[0]["status"], "succeeded", "{builds:#?}");
    assert_eq!(builds[0]["request"]["tag"], "v1.0.0");
    assert_eq!(builds[0]["request"]["trigger"]["forge"], "gitlab");

    // Gitea: a push to main (which has moved since) rebuilds the component built from main.
    let mut payload = fixture("gitea-push.json");
    payload["repository"]["clone_url"] = json!(repo.url());
    payload["ref"] = json!("refs/heads/main");
    let body = serde_json::to_vec(&payload).unwrap();
    let response = app
        .http
        .post(app.url("/api/v1/hooks/gitea"))
        .header("X-Gitea-Event", "push")
        .header("X-Gitea-Delivery", "gitea-1")
        .header("X-Gitea-Signature", sign(&body))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let builds = wait_triggered(&app, &component, 2).await;
    assert_eq!(builds[1]["status"], "succeeded", "{builds:#?}");
    assert_eq!(builds[1]["request"]["tag"], "main");
    assert_eq!(builds[1]["request"]["trigger"]["forge"], "gitea");
}

#[tokio::test]
async fn a_push_event_on_nats_rebuilds_dependents_after_their_dependency() {
    let app = app().await;
    let (lib, dependent) = (name("nats-lib"), name("nats-app"));
    let lib_repo = GitRepo::new().await;
    lib_repo.commit_and_tag(&[("artifact.toml", &manifest("echo lib-one > /out/lib.txt", &[]), false)], "v1").await;
    app.build_component(&lib_repo.url(), &lib, "main").await;
    let app_repo = GitRepo::new().await;
    let uses = format!("cat /deps/{lib}/lib.txt > /out/used.txt");
    app_repo.commit_and_tag(&[("artifact.toml", &manifest(&uses, &[(&lib, "main")]), false)], "v1").await;
    app.build_component(&app_repo.url(), &dependent, "v1").await;

    lib_repo.commit_and_tag(&[("artifact.toml", &manifest("echo lib-two > /out/lib.txt", &[]), false)], "v2").await;
    let event = json!({"repository": lib_repo.url(), "ref": "refs/heads/main", "after": "1".repeat(40), "deleted": false, "forge": "ci", "pusher": "dora"});
    let ack = app.publish_push(&event).await;
    assert!(!ack.duplicate);

    let lib_builds = wait_triggered(&app, &lib, 1).await;
    let app_builds = wait_triggered(&app, &dependent, 1).await;
    assert_eq!(lib_builds[0]["status"], "succeeded", "{lib_builds:#?}");
    assert_eq!(app_builds[0]["status"], "succeeded", "{app_builds:#?}");
    // Who pushed over NATS is the service's to say (the caller's key), not the payload's.
    assert_eq!(app_builds[0]["request"]["trigger"]["forge"], "nats");
    assert_eq!(app_builds[0]["request"]["trigger"]["apiKeyId"], "admin");
    assert!(app_builds[0]["request"]["trigger"]["pusher"].is_null(), "{app_builds:#?}");
    assert!(
        app_builds[0]["createdAt"].as_str().unwrap() >= lib_builds[0]["finishedAt"].as_str().unwrap(),
        "the dependent was rebuilt after its dependency"
    );
    let used = &app_builds[0]["result"]["dependencies"][0];
    assert_eq!(used["digest"], lib_builds[0]["result"]["digest"], "the dependent used the rebuilt dependency");
}

#[tokio::test]
async fn a_branch_push_rebuilds_the_images_of_that_component_and_branch() {
    require_docker().await;
    let registry = artifacts_tests::Registry::start().await;
    let address = registry.address.clone();
    let app = TestApp::spawn_with(|s| {
        artifacts_tests::allow_local_repositories(s);
        s.registry.address = address;
    })
    .await;
    let component = name("img-branch");
    let repo = GitRepo::new().await;
    repo.commit_and_tag(&[("artifact.toml", &manifest("echo x > /out/x", &[]), false)], "v1").await;
    app.build_component(&repo.url(), &component, "main").await;
    let image = json!({"dockerfile": format!("FROM busybox\nRUN echo {component} > /x\n"), "component": component, "branch": "main", "architecture": "amd64"});
    let response =
        app.http.post(app.url("/api/v1/images?wait=120")).bearer_auth(ADMIN_KEY).json(&image).send().await.unwrap();
    assert_eq!(response.status(), 200);

    // The branch moves (an event for an unmoved branch rebuilds nothing: what is built is the commit the
    // ref names).
    repo.commit_and_tag(&[("artifact.toml", &manifest("echo y > /out/x", &[]), false)], "v2").await;
    let event = json!({"repository": repo.url(), "ref": "refs/heads/main", "after": "2".repeat(40)});
    app.publish_push(&event).await;
    let builds = wait_triggered(&app, &component, 2).await;
    let kinds: Vec<&str> = builds.iter().map(|b| b["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"image") && kinds.contains(&"component"), "{builds:#?}");
    assert!(builds.iter().all(|b| b["status"] == "succeeded"), "{builds:#?}");
    let rebuilt_image = builds.iter().find(|b| b["kind"] == "image").unwrap();
    assert_eq!(rebuilt_image["request"]["trigger"]["forge"], "nats");
}

#[tokio::test]
async fn a_newer_push_cancels_the_queued_build_of_an_older_one() {
    require_docker().await;
    let app = TestApp::spawn_with(|s| {
        artifacts_tests::allow_local_repositories(s);
        s.build.slots = 1;
    })
    .await;
    let (busy, component) = (name("busy"), name("superseded"));
    let repo = GitRepo::new().await;
    repo.commit_and_tag(&[("artifact.toml", &manifest("echo x > /out/x", &[]), false)], "v1").await;
    app.build_component(&repo.url(), &component, "main").await;

    // Hold the only slot, so the triggered builds wait in the queue until the test cancels this build.
    let busy_repo = GitRepo::new().await;
    busy_repo.commit_and_tag(&[("artifact.toml", &manifest("sleep 300 && echo x > /out/x", &[]), false)], "v1").await;
    let body = json!({"url": busy_repo.url(), "component": busy, "tag": "v1", "architecture": "amd64"});
    let busy_build: Value = app
        .http
        .post(app.url("/api/v1/components"))
        .bearer_auth(ADMIN_KEY)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let busy_id = busy_build["buildId"].as_str().expect("a build id").to_owned();
    let status = |id: String| {
        let app = &app;
        async move { app.get(&format!("/api/v1/builds/{id}")).await.json::<Value>().await.unwrap()["status"].clone() }
    };
    let mut running = false;
    for _ in 0..600 {
        running = status(busy_id.clone()).await == "running";
        if running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(running, "the busy build holds the only slot: {}", status(busy_id.clone()).await);

    // Each push is handled before the next is sent: the second push finds the first one's build queued.
    let mut queued = Vec::new();
    for version in ["3", "4"] {
        repo.commit_and_tag(&[("artifact.toml", &manifest("echo x > /out/x", &[]), false)], &format!("v{version}"))
            .await;
        let event = json!({"repository": repo.url(), "ref": "refs/heads/main", "after": repo.head().await});
        app.publish_push(&event).await;
        app.pushes_handled().await;
        let builds = app.triggered_builds(&component).await;
        assert_eq!(builds.len(), queued.len() + 1, "push v{version} triggered a build: {builds:#?}");
        queued.push(builds.last().unwrap()["buildId"].as_str().unwrap().to_owned());
    }
    assert_eq!(status(busy_id.clone()).await, "running", "the slot was held throughout");
    // A different commit, so a different build, and the older one is cancelled rather than built for
    // nothing, while the newer one waits for the slot.
    assert_eq!(
        (status(queued[0].clone()).await, status(queued[1].clone()).await),
        ("cancelled".into(), "queued".into())
    );
    let cancel = app.http.post(app.url(&format!("/api/v1/builds/{busy_id}/cancel"))).bearer_auth(ADMIN_KEY).send();
    assert_eq!(cancel.await.unwrap().status(), 200, "the busy build is cancelled, freeing the slot");
    let builds = wait_triggered(&app, &component, 2).await;
    let statuses: Vec<&str> = builds.iter().map(|b| b["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["cancelled", "succeeded"], "{builds:#?}");
    let head = repo.head().await;
    assert_eq!(builds[1]["result"]["commit"], head.as_str(), "it built the newest commit");
}

/// Issue 10: a lookup arriving while a push-triggered build of the same component, tag and architecture
/// ran started a second identical build. What is built decides, not who asked: the lookup joins it.
#[tokio::test]
async fn a_lookup_during_a_pushed_build_joins_it() {
    let app = app().await;
    let repo = GitRepo::new().await;
    let component = name("join");
    repo.commit_and_tag(&[("artifact.toml", &manifest("echo v1 > /out/version", &[]), false)], "v1").await;
    app.build_component(&repo.url(), &component, "v1").await;
    repo.commit_and_tag(&[("artifact.toml", &manifest("sleep 3 && echo v2 > /out/version", &[]), false)], "v2").await;
    app.publish_push(&json!({"repository": repo.url(), "ref": "refs/tags/v2", "after": repo.head().await})).await;

    let pushed = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        loop {
            if let Some(build) = app.triggered_builds(&component).await.into_iter().next() {
                return build;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the push queued a build");
    let lookup = app.get(&format!("/api/v1/components?component={component}&tag=v2&architecture=amd64")).await;
    assert_eq!(lookup.status(), 202);
    let lookup: Value = lookup.json().await.unwrap();
    assert_eq!(lookup["buildId"], pushed["buildId"], "the lookup joined the pushed build: {lookup}");
    let done = wait_triggered(&app, &component, 1).await;
    assert_eq!(done[0]["status"], "succeeded", "{done:#?}");
    let all: Value = app.get(&format!("/api/v1/builds?component={component}")).await.json().await.unwrap();
    assert_eq!(all["builds"].as_array().unwrap().len(), 2, "v1, then one build of v2: {all}");
}
