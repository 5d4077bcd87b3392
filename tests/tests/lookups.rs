//! The lookup path end to end: HTTP -> gateway -> NATS -> lookup function -> JetStream KV -> reply.

use std::time::Duration;

use serde_json::{json, Value};

use artifacts_schemas::{
    Architecture, BranchName, BuildId, BuildKind, BuildStatus, ComponentName, ComponentQuery, ComponentRecord,
    ImageQuery, ImageRecord, TagName, Timestamp,
};
use artifacts_tests::{repo_root, TestApp, ADMIN_KEY};

const IMAGE_QUERY: &str = "/api/v1/images?component=libfoo&branch=main&architecture=amd64";

#[tokio::test]
async fn unknown_image_is_not_found_after_a_trip_through_nats() {
    let app = TestApp::spawn().await;
    let response = app.get(IMAGE_QUERY).await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "not_found");
    assert_eq!(body["imageName"], Value::Null);
    assert!(body["errorMessage"].as_str().unwrap().contains("libfoo"), "{body}");
}

#[tokio::test]
async fn stored_image_is_found_by_http_and_json_body_and_every_architecture_alias() {
    let app = TestApp::spawn().await;
    let query = ImageQuery {
        component: ComponentName::parse("libfoo").unwrap(),
        branch: BranchName::parse("feature/x").unwrap(),
        architecture: Architecture::Amd64,
    };
    let record = ImageRecord {
        component: query.component.clone(),
        branch: query.branch.clone(),
        architecture: query.architecture,
        image_name: "127.0.0.1:5000/libfoo-feature-x-1a2b3c4d-image:amd64".into(),
        digest: format!("sha256:{}", "a".repeat(64)),
        build_id: BuildId::generate(),
        built_at: Timestamp::now(),
    };
    artifacts_tests::raw_bucket(&app.nats, "images")
        .await
        .put(query.record_key(), serde_json::to_vec(&record).unwrap().into())
        .await
        .unwrap();

    for architecture in ["amd64", "x86_64", "linux/amd64"] {
        let response = app
            .http
            .get(app.url("/api/v1/images"))
            .query(&[("component", "libfoo"), ("branch", "feature/x"), ("architecture", architecture)])
            .header("X-API-Key", ADMIN_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{architecture}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "found");
        assert_eq!(body["errorMessage"], Value::Null);
        assert_eq!(body["imageName"], record.image_name.as_str());
        let repository = record.image_name.trim_end_matches(":amd64");
        assert_eq!(body["pullCommand"], format!("docker pull {repository}@{}", record.digest));
        assert_eq!(body["digest"], record.digest.as_str());
        assert_eq!(body["buildId"], record.build_id.as_str());
    }

    // The design page's form: the same fields as a JSON body.
    let response = app
        .http
        .get(app.url("/api/v1/images"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"component": "libfoo", "branch": "feature/x", "architecture": "x86_64"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Another branch is another repository.
    let other = app.get("/api/v1/images?component=libfoo&branch=feature-x&architecture=amd64").await;
    assert_eq!(other.status(), 404);
}

#[tokio::test]
async fn nats_clients_get_the_same_json_as_http() {
    let app = TestApp::spawn().await;
    let http: Value = app.get(IMAGE_QUERY).await.json().await.unwrap();

    let reply = app
        .nats_request("artifacts.image.get", r#"{"component":"libfoo","branch":"main","architecture":"amd64"}"#)
        .await;
    let headers = reply.headers.as_ref().expect("a failed lookup carries service error headers");
    assert_eq!(headers.get("Nats-Service-Error-Code").unwrap().as_str(), "404");
    assert!(headers.get("Nats-Service-Error").unwrap().as_str().contains("libfoo"));
    let over_nats: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(over_nats, http);

    let bad =
        app.nats_request("artifacts.image.get", r#"{"component":"Bad!","branch":"main","architecture":"amd64"}"#).await;
    assert_eq!(bad.headers.as_ref().unwrap().get("Nats-Service-Error-Code").unwrap().as_str(), "400");
    let body: Value = serde_json::from_slice(&bad.payload).unwrap();
    assert_eq!(body["status"], "invalid");
    assert!(body["errorMessage"].as_str().unwrap().contains("^[a-z0-9][a-z0-9._-]{0,63}$"), "{body}");

    let garbage = app.nats_request("artifacts.build.get", "not json").await;
    assert_eq!(garbage.headers.as_ref().unwrap().get("Nats-Service-Error-Code").unwrap().as_str(), "400");
}

#[tokio::test]
async fn a_python_client_gets_the_same_json() {
    let app = TestApp::spawn().await;
    let http: Value = app.get(IMAGE_QUERY).await.json().await.unwrap();
    let output = tokio::process::Command::new("python3")
        .arg(repo_root().join("examples/nats_request.py"))
        .args(["--server", &app.nats_server.url(), "--key", ADMIN_KEY, "artifacts.image.get"])
        .arg(r#"{"component":"libfoo","branch":"main","architecture":"amd64"}"#)
        .output()
        .await
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("No module named"), "nats-py is missing: scripts/test installs it: {stderr}");
    assert_eq!(output.status.code(), Some(1), "a 404 is a failed request, as the client's exit status says: {stderr}");
    assert!(stderr.contains("Nats-Service-Error-Code: 404"), "{stderr}");
    let from_python: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(from_python, http);
}

#[tokio::test]
async fn lookups_are_a_discoverable_micro_service() {
    let app = TestApp::spawn().await;
    let ping = app.nats_request("$SRV.PING.artifacts-lookup", "").await;
    let ping: Value = serde_json::from_slice(&ping.payload).unwrap();
    assert_eq!(ping["name"], "artifacts-lookup");

    let info = app.nats_request("$SRV.INFO.artifacts-lookup", "").await;
    let info: Value = serde_json::from_slice(&info.payload).unwrap();
    let subjects: Vec<&str> =
        info["endpoints"].as_array().unwrap().iter().map(|e| e["subject"].as_str().unwrap()).collect();
    for subject in ["artifacts.image.get", "artifacts.component.get", "artifacts.build.get", "artifacts.build.list"] {
        assert!(subjects.contains(&subject), "{subjects:?}");
    }

    app.get(IMAGE_QUERY).await;
    let stats = app.nats_request("$SRV.STATS.artifacts-lookup", "").await;
    let stats: Value = serde_json::from_slice(&stats.payload).unwrap();
    let image_get = stats["endpoints"].as_array().unwrap().iter().find(|e| e["name"] == "image-get").unwrap();
    assert_eq!(image_get["num_requests"], 1);
}

#[tokio::test]
async fn build_records_and_history() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for (kind, status, component) in [
        (BuildKind::Image, BuildStatus::Succeeded, "one"),
        (BuildKind::Component, BuildStatus::Failed, "two"),
        (BuildKind::Image, BuildStatus::Queued, "two"),
    ] {
        ids.push(app.store_build(kind, status, component).await);
    }

    let one: Value = app.get(&format!("/api/v1/builds/{}", ids[0])).await.json().await.unwrap();
    assert_eq!(one["buildId"], ids[0].as_str());
    assert_eq!(one["kind"], "image");
    assert_eq!(one["status"], "succeeded");
    assert_eq!(one["requestedBy"]["linuxUsername"], "alice");
    for field in ["createdAt", "startedAt", "finishedAt", "result", "errorMessage", "attempts", "request"] {
        assert!(one.get(field).is_some(), "missing {field}");
    }

    let all: Value = app.get("/api/v1/builds").await.json().await.unwrap();
    assert_eq!(all["status"], "ok");
    let listed: Vec<&str> = all["builds"].as_array().unwrap().iter().map(|b| b["buildId"].as_str().unwrap()).collect();
    assert_eq!(listed, vec![ids[2].as_str(), ids[1].as_str(), ids[0].as_str()], "newest first");

    let filtered: Value = app.get("/api/v1/builds?component=two&kind=image").await.json().await.unwrap();
    assert_eq!(filtered["builds"].as_array().unwrap().len(), 1);
    let limited: Value = app.get("/api/v1/builds?limit=1&status=failed").await.json().await.unwrap();
    assert_eq!(limited["builds"][0]["buildId"], ids[1].as_str());

    let missing = app.get(&format!("/api/v1/builds/{}", BuildId::generate())).await;
    assert_eq!(missing.status(), 404);
    let bad = app.get("/api/v1/builds/not-an-id").await;
    assert_eq!(bad.status(), 400);
    let bad_kind = app.get("/api/v1/builds?kind=banana").await;
    assert_eq!(bad_kind.status(), 400);
}

/// Listings come from the build index a page at a time, newest first, however long the history: more
/// builds than one index page holds, two components interleaved, walked with the cursor.
#[tokio::test]
async fn build_listings_page_through_long_histories_with_a_cursor() {
    let app = TestApp::spawn().await;
    let (mut paged, mut every) = (Vec::new(), Vec::new());
    for n in 0..230 {
        let component = if n % 3 == 0 { "other" } else { "paged" };
        let id = app.store_build(BuildKind::Component, BuildStatus::Succeeded, component).await.as_str().to_owned();
        if component == "paged" {
            paged.push(id.clone());
        }
        every.push(id);
    }
    paged.reverse();
    every.reverse();

    let mut walked = Vec::new();
    let mut path = "/api/v1/builds?component=paged&limit=40".to_owned();
    for _ in 0..10 {
        let page: Value = app.get(&path).await.json().await.unwrap();
        walked.extend(page["builds"].as_array().unwrap().iter().map(|b| b["buildId"].as_str().unwrap().to_owned()));
        match page["nextCursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/builds?component=paged&limit=40&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(walked, paged, "every build of the component once, newest first");

    let all: Value = app.get("/api/v1/builds?limit=500").await.json().await.unwrap();
    let listed: Vec<&str> = all["builds"].as_array().unwrap().iter().map(|b| b["buildId"].as_str().unwrap()).collect();
    assert_eq!(listed, every);
    assert!(all["nextCursor"].is_null(), "{}", all["nextCursor"]);

    let bad = app.get("/api/v1/builds?cursor=somewhere").await;
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert!(body["errorMessage"].as_str().unwrap().contains("nextCursor"), "{body}");
}

/// A cursor is the client's to write: one naming a page far past a list's head used to walk down to it a
/// page read at a time (2^64 reads for the largest), holding the lookup; it is refused at once.
#[tokio::test]
async fn a_cursor_past_the_lists_end_is_refused_at_once() {
    let app = TestApp::spawn_without_builder(|_| {}).await;
    app.store_build(BuildKind::Image, BuildStatus::Queued, "paged").await;
    let far = format!("{}.0", u64::MAX);
    let every_shard = vec![far.as_str(); artifacts_store::ALL_SHARDS].join("_");
    for path in [format!("/api/v1/builds?cursor={every_shard}"), format!("/api/v1/builds?component=paged&cursor={far}")]
    {
        let started = std::time::Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(5), app.get(&path)).await;
        let answer = answer.unwrap_or_else(|_| panic!("{path} was not answered within 5 s"));
        assert_eq!(answer.status(), 400, "{path}");
        let body: Value = answer.json().await.unwrap();
        assert!(body["errorMessage"].as_str().unwrap().contains("nextCursor"), "{body}");
        assert!(started.elapsed() < Duration::from_secs(2), "{path}: {:?}", started.elapsed());
    }
}

#[tokio::test]
async fn stored_component_is_found_and_streamed_with_its_digest() {
    use sha2::Digest;
    let app = TestApp::spawn().await;
    let tarball: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&tarball)));
    let query = ComponentQuery {
        component: ComponentName::parse("libfoo").unwrap(),
        tag: TagName::parse("v1.2.0").unwrap(),
        architecture: Architecture::ArmV7,
        url: None,
    };
    let object = format!("{}.tar.gz", query.record_key());
    artifacts_tests::raw_objects(&app.nats, "archives")
        .await
        .put(object.as_str(), &mut tarball.as_slice())
        .await
        .unwrap();
    let record = ComponentRecord {
        component: query.component.clone(),
        tag: query.tag.clone(),
        architecture: query.architecture,
        url: "https://example.com/libfoo.git".into(),
        commit: "0".repeat(40),
        builder_image: "busybox:latest".into(),
        dependencies: Vec::new(),
        digest: digest.clone(),
        size: tarball.len() as u64,
        bucket: "artifacts_archives".into(),
        object: object.clone(),
        build_id: BuildId::generate(),
        built_at: Timestamp::now(),
        secrets: Vec::new(),
    };
    artifacts_tests::raw_bucket(&app.nats, "components")
        .await
        .put(query.record_key(), serde_json::to_vec(&record).unwrap().into())
        .await
        .unwrap();

    let found: Value =
        app.get("/api/v1/components?component=libfoo&tag=v1.2.0&architecture=armv7l").await.json().await.unwrap();
    assert_eq!(found["status"], "found");
    assert_eq!(found["digest"], digest.as_str());
    assert_eq!(found["size"], tarball.len());
    let url = found["component"].as_str().unwrap();
    assert!(url.ends_with("/api/v1/components/libfoo/v1.2.0/arm-v7/archive"), "{url}");
    assert!(found.get("bucket").is_none(), "bucket and object are for NATS clients");

    let over_nats = app
        .nats_request("artifacts.component.get", r#"{"component":"libfoo","tag":"v1.2.0","architecture":"arm/v7"}"#)
        .await;
    let over_nats: Value = serde_json::from_slice(&over_nats.payload).unwrap();
    assert_eq!(over_nats["bucket"], "artifacts_archives");
    assert_eq!(over_nats["object"], object.as_str());

    let download = app.http.get(url).bearer_auth(ADMIN_KEY).send().await.unwrap();
    assert_eq!(download.status(), 200);
    assert_eq!(download.headers()["content-type"], "application/gzip");
    assert_eq!(download.headers()["content-length"], tarball.len().to_string().as_str());
    assert_eq!(download.headers()["etag"], format!("\"{digest}\"").as_str());
    let body = download.bytes().await.unwrap();
    assert_eq!(format!("sha256:{}", hex::encode(sha2::Sha256::digest(&body))), digest);

    let unchanged =
        app.http.get(url).bearer_auth(ADMIN_KEY).header("If-None-Match", format!("\"{digest}\"")).send().await.unwrap();
    assert_eq!(unchanged.status(), 304);

    let absent = app.get("/api/v1/components/libfoo/v9/amd64/archive").await;
    assert_eq!(absent.status(), 404);
    let absent: Value =
        app.get("/api/v1/components?component=libfoo&tag=v9&architecture=amd64").await.json().await.unwrap();
    assert_eq!(absent["status"], "not_found");
}

/// Issue 10: "latest" records were read, then put, so an older build finishing after a newer one took
/// the target back. They move only forward now, with compare-and-set.
#[tokio::test]
async fn latest_records_move_only_forward() {
    use artifacts_schemas::{Architecture, BranchName, BuildId, ComponentName, ImageQuery, ImageRecord, Timestamp};
    use artifacts_store::Moved;

    let server = artifacts_tests::NatsServer::start().await;
    let nats = artifacts_runtime::nats::connect(&artifacts_tests::test_settings(&server.url()), "test").await.unwrap();
    let record = |build_id: BuildId| ImageRecord {
        component: ComponentName::parse("libfoo").unwrap(),
        branch: BranchName::parse("main").unwrap(),
        architecture: Architecture::Amd64,
        image_name: format!("r/libfoo-main-image:amd64-{build_id}"),
        digest: "sha256:0".into(),
        build_id,
        built_at: Timestamp::now(),
    };
    // UUIDv7 ids sort by creation; generated in order, each is newer than the one before.
    let ids: Vec<BuildId> = (0..21).map(|_| BuildId::generate()).collect();
    let query = ImageQuery {
        component: ComponentName::parse("libfoo").unwrap(),
        branch: BranchName::parse("main").unwrap(),
        architecture: Architecture::Amd64,
    };
    let store = &nats.store;
    assert!(matches!(store.store_image(&query, &record(ids[1].clone())).await.unwrap(), Moved::Forward { .. }));
    let older = store.store_image(&query, &record(ids[0].clone())).await.unwrap();
    assert!(matches!(&older, Moved::Behind { newer } if *newer == ids[1]), "{older:?}");

    let writers = ids[2..].iter().rev().map(|id| {
        let (store, query, record) = (store.clone(), query.clone(), record(id.clone()));
        tokio::spawn(async move { store.store_image(&query, &record).await.unwrap() })
    });
    futures::future::join_all(writers).await;
    let latest = store.image(&query).await.unwrap().unwrap();
    assert_eq!(latest.build_id, ids[20], "20 concurrent writers: the newest build is the latest");
}

/// Issue 30: a lookup of an absent component started its build through a handler that ran `git
/// ls-remote` first, under two stacked 10 s timeouts: a git host that never answers held the client for
/// the whole timeout and gave it a 503, while the build still got queued. The build is queued at once
/// now, and the worker resolves the tag when it clones.
#[tokio::test]
async fn a_lookup_whose_git_host_hangs_is_answered_at_once() {
    // A git host that takes connections and never says a word.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = listener.accept().await {
            held.push(connection);
        }
    });
    let app = TestApp::spawn_with(|settings| settings.git.clone_timeout_secs = 5).await;
    let component = artifacts_tests::unique_name("hanging-host");
    let path = format!(
        "/api/v1/components?component={component}&tag=main&architecture=amd64&url=https://127.0.0.1:{port}/team/repo.git"
    );
    let started = std::time::Instant::now();
    let response = app.get(&path).await;
    let took = started.elapsed();
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(status, 202, "{answer}");
    assert!(took < Duration::from_secs(1), "answered after {took:?}");
    // The build is durable: its record is there; the worker's clone is what meets the silent host.
    let build_id = answer["buildId"].as_str().expect("a build id");
    let record: Value = app.get(&format!("/api/v1/builds/{build_id}")).await.json().await.unwrap();
    assert_eq!(record["buildId"], build_id, "{record}");
}
