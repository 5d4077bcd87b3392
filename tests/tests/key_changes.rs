//! Key changes are felt by no one (issue 27, items 9 and 10), on a stack with NATS users as `artifacts
//! up` runs it: every key creation or revocation rewrites the NATS users and reloads nats-server.
//!
//! Before, each reload left JetStream unanswered for about a second (nats-server re-checks every open
//! connection's bcrypt password, at cost 10, while it holds the accounts), and the requests of that
//! second answered 503; a key whose record was overwritten kept working from every process's cache, and
//! could not be revoked.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use artifacts_tests::{
    connect_as_key, key_header, request_across_reloads, require_docker, Registry, TestApp, ADMIN_KEY,
};

#[tokio::test]
async fn ten_key_creations_and_ten_revocations_fail_no_other_request() {
    require_docker().await;
    let registry = Registry::start().await;
    let address = registry.address.clone();
    let app = Arc::new(TestApp::spawn_with_nats_users(|settings| settings.registry.address = address).await);
    let (reader, reader_id) = app.create_key(json!({"name": "reader", "scopes": ["read"]})).await;
    let (client, _) = connect_as_key(&app.nats_server.address(), &reader_id, &reader).await;

    let changing = Arc::new(AtomicBool::new(true));
    let mut load = Vec::new();
    for path in
        ["/api/v1/keys", "/api/v1/builds?limit=5", "/api/v1/images?component=quiet&branch=main&architecture=amd64"]
    {
        let (app, changing) = (Arc::clone(&app), Arc::clone(&changing));
        load.push(tokio::spawn(async move {
            let (mut answered, mut failed) = (0, Vec::new());
            while changing.load(Ordering::Relaxed) {
                let response = app.http.get(app.url(path)).bearer_auth(ADMIN_KEY).send().await.unwrap();
                let status = response.status().as_u16();
                answered += 1;
                if !(200..300).contains(&status) && status != 404 {
                    failed.push(format!("{path}: {status} {}", response.text().await.unwrap_or_default()));
                }
            }
            (answered, failed)
        }));
    }
    {
        let (client, reader, changing) = (client.clone(), reader.clone(), Arc::clone(&changing));
        load.push(tokio::spawn(async move {
            let (mut answered, mut failed) = (0, Vec::new());
            let lookup = r#"{"component":"quiet","tag":"v1","architecture":"amd64"}"#;
            let mut resent = 0;
            while changing.load(Ordering::Relaxed) {
                // A client's request sent during a reload's ~15 ms finds no responder and is sent again.
                let (answer, tries) =
                    request_across_reloads(&client, "artifacts.component.get", key_header(&reader), lookup).await;
                resent += tries - 1;
                answered += 1;
                match answer {
                    Ok(message) => {
                        let code = message.headers.as_ref().and_then(|h| h.get("Nats-Service-Error-Code"));
                        if code.is_some_and(|code| code.as_str() != "404") {
                            failed.push(format!("NATS lookup: {}", String::from_utf8_lossy(&message.payload)));
                        }
                    }
                    Err(err) => failed.push(format!("NATS lookup: {err}")),
                }
            }
            println!("NATS lookups sent again after reaching no one or losing their answer during a reload: {resent}");
            (answered, failed)
        }));
    }
    // A build runs through the key changes too.
    let (_, build) = app
        .post_image(
            "",
            &json!({
                "dockerfile": "FROM busybox\nRUN for i in 1 2 3 4 5 6 7 8; do echo step $i; sleep 0.5; done\n",
                "component": artifacts_tests::unique_name("through-key-changes"),
                "branch": "main",
                "architecture": "amd64",
            }),
        )
        .await;
    let build_id = build["buildId"].as_str().expect("a build id").to_owned();

    let mut change_failures = Vec::new();
    let mut made = Vec::new();
    for n in 0..10 {
        match app.create_key_as(ADMIN_KEY, json!({"name": format!("churn-{n}"), "scopes": ["read"]})).await {
            Ok((_, id)) => made.push(id),
            Err(err) => change_failures.push(format!("create: {err:?}")),
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    for id in &made {
        let response =
            app.http.delete(app.url(&format!("/api/v1/keys/{id}"))).bearer_auth(ADMIN_KEY).send().await.unwrap();
        if response.status() != 200 {
            change_failures.push(format!("revoke {id}: {}", response.status()));
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    changing.store(false, Ordering::Relaxed);
    let (mut answered, mut failed) = (0, Vec::new());
    for task in load {
        let (n, mut f) = task.await.unwrap();
        answered += n;
        failed.append(&mut f);
    }
    let record = app.wait_for_build(&build_id).await;
    println!(
        "10 key creations and 10 revocations: {answered} other requests answered, {} not 2xx/404; key changes failed: {}; the build {}",
        failed.len(),
        change_failures.len(),
        record["status"]
    );
    assert!(change_failures.is_empty(), "{change_failures:?}");
    assert!(
        failed.is_empty(),
        "{} requests failed during key changes, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert_eq!(record["status"], "succeeded", "{record}");
}

#[tokio::test]
async fn a_key_whose_record_cannot_be_read_is_refused_and_revocable() {
    let app = TestApp::spawn_with_nats_users(|_| {}).await;
    let (key, key_id) = app.create_key(json!({"name": "overwritten", "scopes": ["build"]})).await;
    let whoami = |key: String| {
        let app = &app;
        async move { app.http.get(app.url("/api/v1/whoami")).bearer_auth(key).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(whoami(key.clone()).await, 200);
    // What a reflected answer once wrote over a key's record: JSON, but no key.
    artifacts_tests::raw_bucket(&app.nats, "keys")
        .await
        .put(&key_id, r#"{"status":"ok","errorMessage":null}"#.into())
        .await
        .unwrap();
    let mut status = 0;
    for _ in 0..40 {
        status = whoami(key.clone()).await;
        if status == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 401, "a key whose record cannot be read is refused, not trusted from a cache");
    let listed = app.get("/api/v1/keys").await;
    assert_eq!(listed.status(), 200, "the list leaves it out rather than failing");
    let revoked =
        app.http.delete(app.url(&format!("/api/v1/keys/{key_id}"))).bearer_auth(ADMIN_KEY).send().await.unwrap();
    assert_eq!(revoked.status(), 200, "{:?}", revoked.text().await);
    assert!(
        artifacts_tests::raw_bucket(&app.nats, "keys").await.get(&key_id).await.unwrap().is_none(),
        "the unreadable record is gone"
    );
    assert_eq!(whoami(key).await, 401);
}
