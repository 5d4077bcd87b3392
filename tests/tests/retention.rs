//! Issue 13: retention, deletion, cancellation and the catalogs, on real services. Before this round
//! nothing was ever deleted: every build record, registry manifest and component archive stayed.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};

use artifacts_runtime::configuration::RetentionPolicy;
use artifacts_schemas::{BranchName, ComponentName, ImageRepository};
use artifacts_tests::{
    allow_local_repositories, docker, manifest, require_docker, unique_name, GitRepo, Registry, TestApp, ADMIN_KEY,
};

const VERSIONS: usize = 40;
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

/// What the test's stores hold, as the issue counts it.
#[derive(Debug)]
struct Usage {
    build_records: usize,
    registry_tags: usize,
    registry_blobs: usize,
    registry_bytes: u64,
    archive_bytes: u64,
    worker_images: usize,
}

impl Usage {
    async fn measure(app: &TestApp, registry: &Registry, image: &str) -> Self {
        let count = |store: &async_nats::jetstream::kv::Store| {
            let store = store.clone();
            async move { store.keys().await.unwrap().count().await }
        };
        let (component, branch) = (ComponentName::parse(image).unwrap(), BranchName::parse("main").unwrap());
        let repository = ImageRepository::new(&component, &branch).to_string();
        let tags: Value = reqwest::get(format!("http://{}/v2/{repository}/tags/list", registry.address))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let (registry_blobs, registry_bytes) = blob_usage(&registry.storage_dir().join("docker/registry/v2/blobs"));
        let archives = app.nats.store.archives_bucket();
        let mut stream = app.nats.jetstream.get_stream(format!("OBJ_{archives}")).await.unwrap();
        let worker_images = docker(&["images", "--format", "{{.Repository}}"]).await;
        let worker_images = worker_images.lines().filter(|r| r.starts_with(&registry.address)).count();
        Usage {
            build_records: count(&artifacts_tests::raw_bucket(&app.nats, "builds").await).await,
            registry_tags: tags["tags"].as_array().map_or(0, Vec::len),
            registry_blobs,
            registry_bytes,
            archive_bytes: stream.info().await.unwrap().state.bytes,
            worker_images,
        }
    }
}

/// Blob files (`data`) under a registry's blob directory, and their bytes.
fn blob_usage(dir: &std::path::Path) -> (usize, u64) {
    let mut usage = (0, 0);
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            let (blobs, bytes) = blob_usage(&path);
            usage = (usage.0 + blobs, usage.1 + bytes);
        } else if entry.file_name() == "data" {
            usage = (usage.0 + 1, usage.1 + entry.metadata().unwrap().len());
        }
    }
    usage
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
    let (address, storage) = (registry.address.clone(), registry.storage_dir());
    let app = TestApp::spawn_with(|settings| {
        settings.registry.address = address;
        settings.registry.storage_dir = Some(storage);
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

    // Versions of one image target (submitted in order, built two at a time); the second is pinned.
    let image = unique_name("kept-image");
    let image_body = |n: usize| json!({"dockerfile": format!("FROM busybox\nRUN echo {n} > /n\n"), "component": image, "branch": "main", "architecture": "amd64"});
    let mut image_ids = Vec::new();
    for n in 0..VERSIONS {
        let (status, accepted) = post(&app, "/api/v1/images", image_body(n)).await;
        assert_eq!(status, 202, "{accepted}");
        image_ids.push(accepted["buildId"].as_str().unwrap().to_owned());
    }
    let mut image_builds = Vec::new();
    for id in &image_ids {
        let record = app.wait_for_build(id).await;
        assert_eq!(record["status"], "succeeded", "{record}");
        image_builds.push(record);
    }
    let pinned = image_ids[1].clone();
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

    let before = Usage::measure(&app, &registry, &image).await;
    println!("before collecting: {before:?}");
    assert_eq!(before.worker_images, 0, "pushed images leave the worker's engine at once");

    // Builds go on while the collector runs: two more image versions and a component version,
    // submitted with the collection.
    let collecting = post(&app, "/api/v1/gc", json!({}));
    let during = async {
        let mut ids = Vec::new();
        for n in [VERSIONS, VERSIONS + 1] {
            let (status, accepted) = post(&app, "/api/v1/images", image_body(n)).await;
            assert_eq!(status, 202, "{accepted}");
            ids.push(accepted["buildId"].as_str().unwrap().to_owned());
        }
        let body = json!({"url": dependant_repo.url(), "component": dependant, "tag": "v1", "architecture": "amd64", "force": true});
        let (status, accepted) = post(&app, "/api/v1/components", body).await;
        assert_eq!(status, 202, "{accepted}");
        ids.push(accepted["buildId"].as_str().unwrap().to_owned());
        ids
    };
    let ((status, report), during_ids) = tokio::join!(collecting, during);
    assert_eq!(status, 200, "{report}");
    for field in ["builds", "images", "components", "uploads"] {
        assert_eq!(
            report["removed"][field], dry["removed"][field],
            "the dry run said what the collection removed: {report}"
        );
    }
    let mut during_builds = Vec::new();
    for id in &during_ids {
        let record = app.wait_for_build(id).await;
        assert_eq!(record["status"], "succeeded", "a build submitted during the collection: {record}");
        during_builds.push(record);
    }
    // A second collection: the blobs of what the first removed are surely swept by now (the first may
    // have met a push in flight), and the builds made meanwhile stay.
    let (status, second) = post(&app, "/api/v1/gc", json!({})).await;
    assert_eq!(status, 200, "{second}");
    println!("collected {VERSIONS} versions each of an image and a component, keeping {KEEP}: {report}, then {second}");

    let after = Usage::measure(&app, &registry, &image).await;
    println!("after collecting: {after:?}");
    let removed = report["removed"]["builds"].as_u64().unwrap() as usize;
    assert_eq!(removed, (VERSIONS - IMAGE_KEEP - 1) + (VERSIONS - KEEP - 1), "{report}");
    assert_eq!(second["removed"]["builds"], 2, "the two older of the versions built meanwhile: {second}");
    assert_eq!(after.build_records, before.build_records + during_ids.len() - removed - 2, "{after:?}");
    // Each removed build's identical-work key went with it: every key left names a build that is left.
    let dedup_keys: Vec<String> = artifacts_tests::raw_bucket(&app.nats, "active")
        .await
        .keys()
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert!(dedup_keys.len() <= after.build_records, "{after:?}");
    for key in dedup_keys {
        let build_id = artifacts_tests::raw_bucket(&app.nats, "active").await.get(&key).await.unwrap().unwrap();
        let build_id = String::from_utf8(build_id.to_vec()).unwrap();
        assert!(
            artifacts_tests::raw_bucket(&app.nats, "builds").await.get(&build_id).await.unwrap().is_some(),
            "key {key} names removed build {build_id}"
        );
    }
    // The image keeps the policy's newest two and the pinned one, each with its own tag and its
    // attestation's (`sha256-<hex>.att`), plus `:amd64` and the neutral `latest` list.
    assert_eq!(after.registry_tags, IMAGE_KEEP + 1 + 2 + (IMAGE_KEEP + 1), "{after:?}");
    // Each image version is a manifest, a configuration and a layer, and its attestation a manifest, a
    // configuration and the envelope; the base layer is shared; one list
    // is left, the one `latest` names (each build replaced the one before), and at most one more of each
    // of the two builds made during the collection: two builds publishing `latest` at once both replace
    // the same list, and the list that lost the tag is only deleted by a collection once it is 5 s old
    // (`a_collection_deletes_the_manifest_lists_no_tag_names`), which the second may come before.
    let listed = 1 + 6 * (IMAGE_KEEP + 1) + 1;
    assert!((listed..=listed + 2).contains(&after.registry_blobs), "{after:?}");
    assert!(after.registry_bytes < before.registry_bytes, "blob space was reclaimed: {before:?} -> {after:?}");
    // The two image builds made meanwhile added six blobs each, and at most one list each.
    let reclaimed = report["removed"]["blobs"].as_u64().unwrap() + second["removed"]["blobs"].as_u64().unwrap();
    let reclaimable = before.registry_blobs + 6 * 2 - after.registry_blobs;
    assert!(
        (reclaimable..=reclaimable + 2).contains(&(reclaimed as usize)),
        "every blob that went was counted, once: {before:?} -> {after:?}, {report} {second}"
    );
    // Six archives are left of 41 (four of the library, two of the dependant), with no marker for the rest.
    assert!(
        after.archive_bytes * 41 < before.archive_bytes * 6 * 2,
        "archives of removed builds went: {before:?} -> {after:?}"
    );
    assert_eq!(after.worker_images, 0);
    for (component, kept) in [(&image, IMAGE_KEEP + 1), (&library, KEEP + 1)] {
        let key = format!("component/{}/0", artifacts_schemas::names::slug_with_hash(component));
        let page = artifacts_tests::raw_bucket(&app.nats, "build_index")
            .await
            .get(&key)
            .await
            .unwrap()
            .expect("an index page");
        let ids: Vec<String> = serde_json::from_slice(&page).unwrap();
        assert_eq!(ids.len(), kept, "removed builds left the index: {ids:?}");
    }

    let kept_images: Vec<String> =
        builds_of(&app, &image).await.iter().map(|b| b["buildId"].as_str().unwrap().to_owned()).collect();
    assert_eq!(
        kept_images.len(),
        IMAGE_KEEP + 1,
        "the policy's newest {IMAGE_KEEP} and the pinned one: {kept_images:?}"
    );
    assert!(kept_images.contains(&pinned));
    let all_images = image_builds.iter().chain(&during_builds[..2]);
    for (n, build) in all_images.enumerate() {
        let immutable = build["result"]["immutableName"].as_str().unwrap();
        let id = build["buildId"].as_str().unwrap().to_owned();
        let expected = if kept_images.contains(&id) { 200 } else { 404 };
        assert_eq!(manifest_status(&registry.address, immutable).await, expected, "image version {n}");
        if expected == 200 {
            // Every retained image pulls, by its digest, after the sweep.
            let repository = immutable.rsplit_once(':').unwrap().0;
            docker(&["pull", &format!("{repository}@{}", build["result"]["digest"].as_str().unwrap())]).await;
        }
    }
    let latest = during_builds[1]["result"]["imageName"].as_str().unwrap();
    docker(&["pull", latest]).await;

    let kept_library: Vec<Value> = builds_of(&app, &library).await;
    let kept_ids: Vec<&str> = kept_library.iter().map(|b| b["buildId"].as_str().unwrap()).collect();
    assert_eq!(kept_ids.len(), KEEP + 1, "the newest {KEEP} and the one a stored component depends on");
    assert!(kept_ids.contains(&depended_upon.as_str()));
    for build in &kept_library {
        // Every retained component archive is still stored, with its digest.
        let object = build["result"]["object"].as_str().unwrap();
        let mut reader =
            artifacts_tests::raw_objects(&app.nats, "archives").await.get(object).await.expect("a retained archive");
        let mut bytes = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut bytes).await.unwrap();
        let digest = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)));
        assert_eq!(digest, build["result"]["digest"].as_str().unwrap(), "archive of {}", build["buildId"]);
    }
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
    assert_eq!(page["items"][0]["buildId"], during_builds[1]["buildId"], "{page}");
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
