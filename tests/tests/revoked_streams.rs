//! Streams that outlive the request that opened them end when their key is revoked or expires (issue 27,
//! item 7): a live build log read with a key, as `/builds/events` already did.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;

use artifacts_runtime::logs::BuildLog;
use artifacts_schemas::{BuildKind, BuildStatus, Timestamp};
use artifacts_tests::{TestApp, ADMIN_KEY};

/// How soon after a revocation an open stream must have ended.
const PROMPTLY: Duration = Duration::from_secs(4);

/// A running build's log that keeps growing, one line every 50 ms, until `stop` is set: what a worker
/// writes while its build command prints.
fn keep_writing(app: &TestApp, build_id: &artifacts_schemas::BuildId, stop: Arc<AtomicBool>) {
    let mut log = BuildLog::new(&app.nats, build_id);
    tokio::spawn(async move {
        let mut line = 0u64;
        while !stop.load(Ordering::Relaxed) {
            line += 1;
            log.write(&format!("line {line}")).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

/// Opens `/builds/{id}/logs?format=text` with `key`.
async fn open_log(app: &TestApp, key: &str, build_id: &artifacts_schemas::BuildId) -> reqwest::Response {
    let response = app
        .http
        .get(app.url(&format!("/api/v1/builds/{build_id}/logs?format=text")))
        .bearer_auth(key)
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(response.status(), 200);
    response
}

/// Reads `body` until it ends or `within` passes; returns the lines read and whether it ended.
async fn read_until_end<B: AsRef<[u8]>>(
    body: &mut (impl futures::Stream<Item = reqwest::Result<B>> + Unpin),
    within: Duration,
) -> (Vec<String>, bool) {
    let mut text = String::new();
    let ended = tokio::time::timeout(within, async {
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => text.push_str(&String::from_utf8_lossy(chunk.as_ref())),
                Err(_) => break,
            }
        }
    })
    .await
    .is_ok();
    (text.lines().map(str::to_owned).collect(), ended)
}

/// Reads `body` until it holds at least `count` lines.
async fn read_lines<B: AsRef<[u8]>>(
    body: &mut (impl futures::Stream<Item = reqwest::Result<B>> + Unpin),
    count: usize,
) -> Vec<String> {
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while text.lines().count() < count {
            let chunk = body.next().await.expect("the log goes on").expect("the log reads");
            text.push_str(&String::from_utf8_lossy(chunk.as_ref()));
        }
    })
    .await
    .expect("the first lines come within 20 s");
    text.lines().map(str::to_owned).collect()
}

async fn revoke(app: &TestApp, key_id: &str) {
    let response = app
        .http
        .delete(app.url(&format!("/api/v1/keys/{key_id}")))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("the gateway answers");
    assert!(response.status().is_success(), "revocation answered {}", response.status());
}

#[tokio::test]
async fn a_live_log_stops_when_its_key_is_revoked() {
    let app = TestApp::spawn().await;
    let build_id = app.store_build(BuildKind::Component, BuildStatus::Running, "revoked-log").await;
    let stop = Arc::new(AtomicBool::new(false));
    keep_writing(&app, &build_id, stop.clone());
    let (secret, key_id) = app.create_key(json!({"name": "log reader", "scopes": ["read"]})).await;

    let mut body = open_log(&app, &secret, &build_id).await.bytes_stream();
    let before = read_lines(&mut body, 10).await;
    assert!(before.iter().all(|line| line.starts_with("line ")), "{before:?}");

    revoke(&app, &key_id).await;
    let revoked = Instant::now();
    let (after, ended) = read_until_end(&mut body, PROMPTLY).await;
    stop.store(true, Ordering::Relaxed);
    let read = after.iter().filter(|line| line.starts_with("line ")).count();
    assert!(
        ended,
        "the log stream still ran {PROMPTLY:?} after its key was revoked ({read} more lines read meanwhile)"
    );
    println!(
        "revoked key's log stream ended {:?} after the revocation, {read} lines read meanwhile",
        revoked.elapsed()
    );
    assert!(read <= 3, "{read} lines were read after the revocation: {after:?}");
    assert!(after.last().is_some_and(|line| line.contains("revoked")), "the stream says why it stopped: {after:?}");
    // The admin key still reads the whole log.
    let response = open_log(&app, ADMIN_KEY, &build_id).await;
    let mut body = response.bytes_stream();
    assert!(read_lines(&mut body, 3).await.iter().all(|line| line.starts_with("line ")));
}

/// A build that prints nothing for a while: the stream still ends, at the next periodic check.
#[tokio::test]
async fn a_silent_log_stops_when_its_key_is_revoked() {
    let app = TestApp::spawn().await;
    let build_id = app.store_build(BuildKind::Component, BuildStatus::Running, "revoked-silent").await;
    BuildLog::new(&app.nats, &build_id).write("the only line").await;
    let (secret, key_id) = app.create_key(json!({"name": "log reader", "scopes": ["read"]})).await;

    let mut body = open_log(&app, &secret, &build_id).await.bytes_stream();
    assert_eq!(read_lines(&mut body, 1).await, vec!["the only line"]);
    revoke(&app, &key_id).await;
    let (_, ended) = read_until_end(&mut body, PROMPTLY).await;
    assert!(ended, "a silent log stream still ran {PROMPTLY:?} after its key was revoked");
}

/// An expiry is a revocation decided in advance.
#[tokio::test]
async fn a_live_log_stops_when_its_key_expires() {
    let app = TestApp::spawn().await;
    let build_id = app.store_build(BuildKind::Component, BuildStatus::Running, "expired-log").await;
    let stop = Arc::new(AtomicBool::new(false));
    keep_writing(&app, &build_id, stop.clone());
    let expires = Timestamp(time::OffsetDateTime::now_utc() + Duration::from_secs(3));
    let (secret, _) = app.create_key(json!({"name": "short-lived", "scopes": ["read"], "expiresAt": expires})).await;

    let mut body = open_log(&app, &secret, &build_id).await.bytes_stream();
    read_lines(&mut body, 3).await;
    let (_, ended) = read_until_end(&mut body, Duration::from_secs(3) + PROMPTLY).await;
    stop.store(true, Ordering::Relaxed);
    assert!(ended, "the log stream still ran {PROMPTLY:?} after its key expired");
}

/// `/builds/events` ends too when no build changes after the revocation.
#[tokio::test]
async fn a_quiet_event_stream_stops_when_its_key_is_revoked() {
    let app = TestApp::spawn().await;
    let (secret, key_id) = app.create_key(json!({"name": "dashboard", "scopes": ["read"]})).await;
    let response =
        app.http.get(app.url("/api/v1/builds/events")).bearer_auth(&secret).send().await.expect("the gateway answers");
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    revoke(&app, &key_id).await;
    let (_, ended) = read_until_end(&mut body, PROMPTLY).await;
    assert!(ended, "the event stream still ran {PROMPTLY:?} after its key was revoked");
}
