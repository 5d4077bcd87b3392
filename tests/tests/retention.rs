//! Issue 13: retention, deletion, cancellation and the catalogs, on real services. Before this round
//! nothing was ever deleted: every build record, registry manifest and component archive stayed.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};

use artifacts_runtime::configuration::RetentionPolicy;
use artifacts_tests::{
    allow_local_repositories, docker, manifest, require_docker, unique_name, GitRepo, Registry, TestApp, ADMIN_KEY,
};

const VERSIONS: usize = 8;
const KEEP: usize = 3;
/// What a policy for the image's component keeps instead (`[[retention.policies]]`).
const IMAGE_KEEP: usize = 2;

async fn post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let answer = app.http.post(app.url(path)).bearer_auth(ADMIN_KEY).json(&body).send().await.unwrap();
    (answer.status().as_u16(), answer.json().await.unwrap_or_default())
}

async fn delete(app: &TestApp, path: &str) -> (u16, Value) {
    let answer = app.http.delete(app.url(path)).bearer_auth(ADMIN_KEY).send().await.unwrap();
    (answer.status().as_u16(), answer.json().await.unwrap_or_default())
}

async fn builds_of(app: &TestApp, component: &str) -> Vec<Value> {
    let list: Value = app.get(&format!("/api/v1/builds?component={component}&limit=500")).await.json().await.unwrap();
    list["builds"].as_array().cloned().unwrap()
}

/// The registry's answer for a manifest (200 present, 404 gone).
async fn manifest_status(registry: &str, image_name: &str) -> u16 {
    let (repository, tag) = image_name.trim_start_matches(&format!("{registry}/")).split_once(':').unwrap();
    let url = format!("http://{registry}/v2/{repository}/manifests/{tag}");
    let accept = "application/vnd.docker.distribution.manifest.v2+json";
    reqwest::Client::new().get(url).header("Accept", accept).send().await.unwrap().status().as_u16()
}

#[test]
fn the_collector_keeps_what_the_policy_says_and_users_cancel_pin_and_delete() {
    // The scenario's future nests deeper than a test thread's 2 MiB stack holds in a debug build.
    let runs = std::thread::Builder::new()
        .stack_size(16 << 20)
        .spawn(|| tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(scenario()));
    runs.unwrap().join().unwrap();
}

async fn scenario() {
    require_docker().await;
    let registry = Registry::start().await;
    let address = registry.address.clone();
    let app = TestApp::spawn_with(|settings| {
        settings.registry.address = address;
        settings.retention.keep_successful = KEEP;
        settings.retention.gc_interval_secs = 0;
        settings.retention.policies = vec![RetentionPolicy {
            components: "kept-image*".into(),
            keep_successful: Some(IMAGE_KEEP),
            failed_days: None,
        }];
        allow_local_repositories(settings);
    })
    .await;

    // Versions of one image target; the second is pinned.
    let image = unique_name("kept-image");
    let mut image_builds = Vec::new();
    for n in 0..VERSIONS {
        let body = json!({"dockerfile": format!("FROM busybox\nRUN echo {n} > /n\n"), "component": image, "branch": "main", "architecture": "amd64"});
        let (status, record) = post(&app, "/api/v1/images?wait=120", body).await;
        assert_eq!((status, &record["status"]), (200, &json!("succeeded")), "{record}");
        image_builds.push(record);
    }
    let pinned = image_builds[1]["buildId"].as_str().unwrap().to_owned();
    let (status, record) = post(&app, &format!("/api/v1/builds/{pinned}/pin"), json!({})).await;
    assert_eq!((status, record["pinned"].as_bool()), (200, Some(true)), "{record}");

    // Versions of one component target (commits on `main`); a dependant built on the third.
    let repo = GitRepo::new().await;
    let (library, dependant) = (unique_name("kept-lib"), unique_name("kept-app"));
    let dependant_repo = GitRepo::new().await;
    let mut library_builds = Vec::new();
    for n in 0..VERSIONS {
        repo.commit_and_tag(
            &[("artifact.toml", &manifest(&format!("echo {n} > /out/n"), &[]), false)],
            &format!("v{n}"),
        )
        .await;
        let body = json!({"url": repo.url(), "component": library, "tag": "main", "architecture": "amd64"});
        let (status, record) = post(&app, "/api/v1/components?wait=120", body).await;
        assert_eq!((status, &record["status"]), (200, &json!("succeeded")), "{record}");
        library_builds.push(record);
        if n == 2 {
            let recipe = manifest("cat /deps/*/n > /out/n", &[(library.as_str(), "main")]);
            dependant_repo.commit_and_tag(&[("artifact.toml", &recipe, false)], "v1").await;
            let body =
                json!({"url": dependant_repo.url(), "component": dependant, "tag": "v1", "architecture": "amd64"});
            let (status, record) = post(&app, "/api/v1/components?wait=120", body).await;
            assert_eq!((status, &record["status"]), (200, &json!("succeeded")), "{record}");
        }
    }
    let depended_upon = library_builds[2]["buildId"].as_str().unwrap().to_owned();

    let (status, dry) = post(&app, "/api/v1/gc", json!({"dryRun": true})).await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(builds_of(&app, &image).await.len(), VERSIONS, "a dry run removes nothing");
    let dedup_keys = || async { app.nats.stores.active.keys().await.unwrap().count().await };
    let keys_before = dedup_keys().await;
    let (status, report) = post(&app, "/api/v1/gc", json!({})).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["removed"], dry["removed"], "the dry run said what the collection removed");
    println!("collected {VERSIONS} versions each of an image and a component, keeping {KEEP}: {report}");

    let kept_images: Vec<String> =
        builds_of(&app, &image).await.iter().map(|b| b["buildId"].as_str().unwrap().to_owned()).collect();
    assert_eq!(
        kept_images.len(),
        IMAGE_KEEP + 1,
        "the policy's newest {IMAGE_KEEP} and the pinned one: {kept_images:?}"
    );
    let removed = report["removed"]["builds"].as_u64().unwrap() as usize;
    assert_eq!(removed, (VERSIONS - IMAGE_KEEP - 1) + (VERSIONS - KEEP - 1), "{report}");
    assert_eq!(dedup_keys().await, keys_before - removed, "each removed build's identical-work key went with it");
    for (component, kept) in [(&image, IMAGE_KEEP + 1), (&library, KEEP + 1)] {
        let key = format!("component/{}/0", artifacts_schemas::names::slug_with_hash(component));
        let page = app.nats.stores.build_index.get(&key).await.unwrap().expect("an index page");
        let ids: Vec<String> = serde_json::from_slice(&page).unwrap();
        assert_eq!(ids.len(), kept, "removed builds left the index: {ids:?}");
    }
    assert!(kept_images.contains(&pinned));
    for (n, build) in image_builds.iter().enumerate() {
        let immutable = build["result"]["immutableName"].as_str().unwrap();
        let id = build["buildId"].as_str().unwrap().to_owned();
        let expected = if kept_images.contains(&id) { 200 } else { 404 };
        assert_eq!(manifest_status(&registry.address, immutable).await, expected, "image version {n}");
    }
    let latest = image_builds.last().unwrap()["result"]["imageName"].as_str().unwrap();
    docker(&["pull", latest]).await;

    let kept_library: Vec<String> =
        builds_of(&app, &library).await.iter().map(|b| b["buildId"].as_str().unwrap().to_owned()).collect();
    assert_eq!(kept_library.len(), KEEP + 1, "the newest {KEEP} and the one a stored component depends on");
    assert!(kept_library.contains(&depended_upon));
    let found: Value = app
        .get(&format!("/api/v1/components?component={library}&tag=main&architecture=amd64"))
        .await
        .json()
        .await
        .unwrap();
    let archive = app.http.get(found["component"].as_str().unwrap()).bearer_auth(ADMIN_KEY).send().await.unwrap();
    assert_eq!(archive.status(), 200, "the retained component still downloads");

    // The catalogs list what is stored, a page at a time.
    let page: Value =
        app.get(&format!("/api/v1/catalog/components?component={library}&limit=1")).await.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
    let page: Value = app.get(&format!("/api/v1/catalog/images?component={image}")).await.json().await.unwrap();
    assert_eq!(page["items"][0]["buildId"], image_builds.last().unwrap()["buildId"], "{page}");
    assert!(page["nextCursor"].is_null());

    // Deleting: a depended-upon component is a 409 naming its dependant; the rest answer 404 at once.
    let (status, refused) = delete(&app, &format!("/api/v1/components/{library}/main/amd64")).await;
    assert_eq!(status, 409, "{refused}");
    assert!(refused["errorMessage"].as_str().unwrap().contains(&dependant), "{refused}");
    let (status, _) = delete(&app, &format!("/api/v1/components/{dependant}/v1/amd64")).await;
    assert_eq!(status, 200);
    let gone = app.get(&format!("/api/v1/components?component={dependant}&tag=v1&architecture=amd64")).await;
    assert_eq!(gone.status(), 202, "a deleted component whose source is known is built again on lookup");
    let (status, deleted) = delete(&app, &format!("/api/v1/images/{image}/main/amd64")).await;
    assert_eq!((status, &deleted["status"]), (200, &json!("deleted")));
    let gone = app.get(&format!("/api/v1/images?component={image}&branch=main&architecture=amd64")).await;
    assert_eq!(gone.status(), 404);

    // Cancelling a running build stops its container.
    let slow = unique_name("cancelled");
    repo.commit_and_tag(&[("artifact.toml", &manifest("sleep 60", &[]), false)], "slow").await;
    let body = json!({"url": repo.url(), "component": slow, "tag": "slow", "architecture": "amd64"});
    let (status, accepted) = post(&app, "/api/v1/components", body).await;
    assert_eq!(status, 202, "{accepted}");
    let build_id = accepted["buildId"].as_str().unwrap().to_owned();
    let label = format!("label=artifacts.build-id={build_id}");
    for _ in 0..300 {
        if !docker(&["ps", "-q", "--filter", &label]).await.trim().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, record) = post(&app, &format!("/api/v1/builds/{build_id}/cancel"), json!({})).await;
    assert_eq!((status, &record["status"]), (200, &json!("cancelled")), "{record}");
    let mut left = usize::MAX;
    for _ in 0..100 {
        left = docker(&["ps", "-aq", "--filter", &label]).await.lines().count();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "the cancelled build's container is gone");
    let (status, _) = post(&app, &format!("/api/v1/builds/{build_id}/cancel"), json!({})).await;
    assert_eq!(status, 409, "an ended build cannot be cancelled");
}
