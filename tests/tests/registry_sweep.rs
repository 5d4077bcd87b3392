//! Issue 13: the registry's blob sweep is safe with concurrent pushes, and what a push reaches is read
//! from an index. Before this round the blobs of deleted manifests stayed on disk (the sweep was left to
//! an operator, who had to stop pushes by hand), and every push read every source and component record.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use artifacts_schemas::{Architecture, TagName};
use artifacts_tests::{Registry, TestApp, ADMIN_KEY};

const LONG: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_sweep_waits_for_the_pushes_in_flight_and_pushes_wait_for_the_sweep() {
    let app = TestApp::spawn_without_builder(|_| {}).await;
    let gate = &app.nats.store;

    // A push in flight holds off a sweep until it ends.
    let (end_push, push_ended) = oneshot::channel::<()>();
    let pushing = AtomicBool::new(false);
    let push = gate.registry_push("build-1", LONG, async {
        pushing.store(true, Ordering::SeqCst);
        push_ended.await.unwrap();
        pushing.store(false, Ordering::SeqCst);
    });
    let sweep = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(pushing.load(Ordering::SeqCst), "the push is in flight when the sweep asks");
        let swept = gate.registry_sweep(LONG, async { !pushing.load(Ordering::SeqCst) });
        let outcome = tokio::join!(swept, async {
            tokio::time::sleep(Duration::from_millis(700)).await;
            end_push.send(()).unwrap();
        });
        outcome.0
    };
    let (pushed, swept) = tokio::join!(push, sweep);
    pushed.unwrap();
    assert_eq!(swept.unwrap(), Some(true), "the sweep ran, and only once the push had ended");

    // A sweep running holds off a push until it ends.
    let (end_sweep, sweep_ended) = oneshot::channel::<()>();
    let sweeping = AtomicBool::new(false);
    let sweep = gate.registry_sweep(LONG, async {
        sweeping.store(true, Ordering::SeqCst);
        sweep_ended.await.unwrap();
        sweeping.store(false, Ordering::SeqCst);
    });
    let push = async {
        while !sweeping.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let pushed = gate.registry_push("build-2", LONG, async { !sweeping.load(Ordering::SeqCst) });
        let outcome = tokio::join!(pushed, async {
            tokio::time::sleep(Duration::from_millis(700)).await;
            end_sweep.send(()).unwrap();
        });
        outcome.0
    };
    let (swept, pushed) = tokio::join!(sweep, push);
    assert_eq!(swept.unwrap(), Some(()));
    assert!(pushed.unwrap(), "the push ran, and only once the sweep had ended");

    // A push that does not end in time leaves the sweep to a later collection, and the gate opens again.
    let (end_push, push_ended) = oneshot::channel::<()>();
    let push = gate.registry_push("build-3", LONG, async { push_ended.await.unwrap() });
    let sweep = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let swept = gate.registry_sweep(Duration::from_millis(500), async {}).await.unwrap();
        let next = gate.registry_push("build-4", Duration::from_millis(500), async {}).await;
        end_push.send(()).unwrap();
        (swept, next.is_ok())
    };
    let (pushed, (swept, next_entered)) = tokio::join!(push, sweep);
    pushed.unwrap();
    assert_eq!(swept, None, "the sweep did not run while a push was in flight");
    assert!(next_entered, "pushes enter again once the sweep gave up");
}

#[tokio::test]
async fn pushes_find_sources_and_dependants_recorded_before_the_index_existed() {
    let app = TestApp::spawn_without_builder(|_| {}).await;
    let store = &app.nats.store;
    let url = "https://git.example.com/acme/libfoo.git";
    let app_url = "https://git.example.com/acme/app.git";
    // Written straight into the buckets, as a deployment of the previous version left them.
    let library_record = app.store_component("old-lib", "main", url, &[], false).await;
    let dependant = app.store_component("old-app", "v1", app_url, &[&library_record], false).await;
    let library = library_record.component.clone();
    artifacts_tests::raw_bucket(&app.nats, "trigger_index").await.purge("backfilled").await.unwrap();
    let main = TagName::parse("main").unwrap();
    assert!(store.built_from(url).await.unwrap().is_empty(), "not indexed yet");

    store.backfill_trigger_index().await.unwrap();
    // The same repository under another spelling, as forges send it.
    let found = store.built_from("https://git.example.com/acme/libfoo").await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0].0.component.as_str(), found[0].1.iter().copied().collect::<Vec<_>>()),
        ("old-lib", vec![Architecture::Amd64])
    );
    let dependants = store.dependants_of(&library, &main, Architecture::Amd64).await.unwrap();
    assert_eq!(dependants.iter().map(|d| d.component.as_str()).collect::<Vec<_>>(), vec!["old-app"]);
    assert!(store.dependants_of(&library, &main, Architecture::Arm64).await.unwrap().is_empty());

    // A dependant rebuilt without the dependency leaves its list.
    assert!(!dependant.dependencies.is_empty());
    app.store_component("old-app", "v1", app_url, &[], true).await;
    let dependants = store.dependants_of(&library, &main, Architecture::Amd64).await.unwrap();
    assert!(dependants.is_empty(), "{dependants:?}");
}

/// Issue 16: two builds publishing `latest` at once both replace the same list, and the list that lost
/// the tag was left untagged for good, keeping the blobs of every image it named past their collection.
#[tokio::test]
async fn a_collection_deletes_the_manifest_lists_no_tag_names() {
    artifacts_tests::require_docker().await;
    let registry = Registry::start().await;
    let (address, storage) = (registry.address.clone(), registry.storage_dir());
    let app = TestApp::spawn_with(|settings| {
        settings.registry.address = address;
        settings.registry.storage_dir = Some(storage.clone());
        settings.retention.gc_interval_secs = 0;
    })
    .await;
    let component = format!("orphan-list-{}", std::process::id());
    let body = json!({"dockerfile": "FROM busybox\nRUN echo listed > /x\n", "component": component, "branch": "main", "architecture": "amd64"});
    let (_, accepted) = app.post_image("", &body).await;
    let record = app.wait_for_build(accepted["buildId"].as_str().unwrap()).await;
    assert_eq!(record["status"], "succeeded", "{record}");

    // The list that lost the race: the same members, another digest (its bytes differ), under no tag.
    let repository = format!("{component}-main-image");
    let manifests = format!("http://{}/v2/{repository}/manifests", registry.address);
    let list: Value = app
        .http
        .get(format!("{manifests}/latest"))
        .header("Accept", LIST_TYPE)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let orphan = serde_json::to_vec_pretty(&list).unwrap();
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&orphan)));
    let put = app.http.put(format!("{manifests}/{digest}")).header("Content-Type", LIST_TYPE).body(orphan);
    assert_eq!(put.send().await.unwrap().status(), 201);
    // Old enough to be no push in flight.
    let revision = storage.join(format!("docker/registry/v2/repositories/{repository}/_manifests/revisions/sha256"));
    let link = revision.join(&digest["sha256:".len()..]).join("link");
    let aged = std::process::Command::new("touch").args(["-h", "-d", "1 minute ago"]).arg(&link).status().unwrap();
    assert!(aged.success());

    let collected = app.http.post(app.url("/api/v1/gc")).bearer_auth(ADMIN_KEY).json(&json!({})).send().await.unwrap();
    assert_eq!(collected.status(), 200);
    let head = |reference: String| app.http.head(format!("{manifests}/{reference}")).header("Accept", LIST_TYPE).send();
    assert_eq!(head(digest.clone()).await.unwrap().status(), 404, "the untagged list went");
    assert_eq!(head("latest".into()).await.unwrap().status(), 200, "the tagged one stays");
}

const LIST_TYPE: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
