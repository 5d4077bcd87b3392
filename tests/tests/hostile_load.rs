//! The gateway under hostile load: slow or silent clients are disconnected, connections are capped,
//! requests that will be refused are refused before their bodies are read, and a revoked key stops
//! working within a second (`metrics.rs` has the bounded labels). Each test speaks raw HTTP/1.1 over TCP where a
//! client library would hide what the server did.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use artifacts_runtime::configuration::Secret;
use artifacts_tests::{TestApp, ADMIN_KEY};

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.address.trim_start_matches("http://")).await.expect("the gateway accepts")
}

/// Reads until the server closes the connection or `limit` passes; true when it closed.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buffer = [0u8; 4096];
    let reading = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, reading).await.is_ok()
}

/// The status line of the answer to what was sent, if one comes within `limit`.
async fn status_within(stream: &mut TcpStream, limit: Duration) -> Option<u16> {
    let mut head = Vec::new();
    let reading = async {
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n") {
            if stream.read(&mut byte).await.ok()? == 0 {
                return None;
            }
            head.push(byte[0]);
        }
        String::from_utf8_lossy(&head).split(' ').nth(1)?.parse().ok()
    };
    tokio::time::timeout(limit, reading).await.ok().flatten()
}

#[tokio::test]
async fn a_request_head_not_sent_in_time_is_disconnected() {
    let app = TestApp::spawn_with(|s| s.gateway.header_timeout_secs = 1).await;

    let mut silent = connect(&app).await;
    let mut half = connect(&app).await;
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await, "a silent connection stays open");
    assert!(closed_within(&mut half, Duration::from_secs(5)).await, "a half-sent request head stays open");
    assert!(started.elapsed() >= Duration::from_millis(900), "closed before the timeout: {:?}", started.elapsed());

    // Kept alive after an answer, a connection that sends nothing more is closed the same way.
    let mut kept = connect(&app).await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert_eq!(status_within(&mut kept, Duration::from_secs(2)).await, Some(200));
    assert!(closed_within(&mut kept, Duration::from_secs(5)).await, "an idle kept-alive connection stays open");
}

#[tokio::test]
async fn connections_past_the_cap_wait_for_a_free_slot() {
    let app = TestApp::spawn_with(|s| s.gateway.max_connections = 2).await;
    let first = connect(&app).await;
    let _second = connect(&app).await;

    let mut third = connect(&app).await;
    third.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert_eq!(status_within(&mut third, Duration::from_millis(700)).await, None, "a third connection was served");
    drop(first);
    assert_eq!(status_within(&mut third, Duration::from_secs(3)).await, Some(200), "a freed slot is not reused");
}

/// Sends a request head announcing a large body, and a first slice of it; answers the status that comes
/// back while the rest is unsent.
async fn refused_before_the_body(app: &TestApp, head: &str) -> Option<u16> {
    let mut stream = connect(app).await;
    let length = 60 * 1024 * 1024;
    stream.write_all(format!("{head}Host: x\r\nContent-Length: {length}\r\n\r\n").as_bytes()).await.unwrap();
    stream.write_all(&[b'{'; 16 * 1024]).await.unwrap();
    status_within(&mut stream, Duration::from_secs(3)).await
}

#[tokio::test]
async fn requests_that_will_be_refused_are_refused_before_their_bodies() {
    let app = TestApp::spawn_with(|s| s.hooks.github.secret = Some(Secret::new("webhook-secret"))).await;
    let (reader, _) = app.create_key(json!({"name": "reader", "scopes": ["read"]})).await;
    let signature = format!("X-Hub-Signature-256: sha256={}\r\n", "0".repeat(64));
    for (why, head, expected) in [
        ("unknown forge", "POST /api/v1/hooks/bitbucket HTTP/1.1\r\n".to_owned(), 404),
        ("unconfigured forge", "POST /api/v1/hooks/gitlab HTTP/1.1\r\n".to_owned(), 404),
        ("no signature", "POST /api/v1/hooks/github HTTP/1.1\r\nX-GitHub-Event: push\r\n".to_owned(), 401),
        ("larger than the webhook cap", format!("POST /api/v1/hooks/github HTTP/1.1\r\n{signature}"), 413),
        ("no key", "POST /api/v1/images HTTP/1.1\r\nContent-Type: application/json\r\n".to_owned(), 401),
        (
            "an invalid key",
            "POST /api/v1/images HTTP/1.1\r\nAuthorization: Bearer ak_0123456789abcdef_nope\r\n".to_owned(),
            401,
        ),
        ("too little scope", format!("POST /api/v1/components HTTP/1.1\r\nAuthorization: Bearer {reader}\r\n"), 403),
        ("too little scope", format!("POST /api/v1/keys HTTP/1.1\r\nAuthorization: Bearer {reader}\r\n"), 403),
    ] {
        assert_eq!(refused_before_the_body(&app, &head).await, Some(expected), "{why}: {head}");
    }
    // Small JSON bodies have a small cap, whatever the key may do.
    let head = format!("POST /api/v1/components HTTP/1.1\r\nAuthorization: Bearer {ADMIN_KEY}\r\n");
    assert_eq!(refused_before_the_body(&app, &head).await, Some(413));
}

#[tokio::test]
async fn a_revoked_key_is_refused_within_a_second() {
    let app = TestApp::spawn().await;
    let (secret, key_id) = app.create_key(json!({"name": "soon revoked", "scopes": ["read"]})).await;
    let lookup =
        || app.http.get(app.url("/api/v1/images?component=libfoo&branch=main&architecture=amd64")).bearer_auth(&secret);
    assert_eq!(lookup().send().await.unwrap().status(), 404, "the key works before it is revoked");
    // Revoked as another gateway or the command line would: in the bucket, not through this gateway.
    artifacts_tests::raw_bucket(&app.nats, "keys").await.purge(&key_id).await.unwrap();
    let revoked = Instant::now();
    loop {
        if lookup().send().await.unwrap().status() == 401 {
            break;
        }
        assert!(revoked.elapsed() < Duration::from_secs(1), "the revoked key still works after a second");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_build_log_is_cut_at_its_byte_cap_with_a_marker() {
    use artifacts_runtime::logs::{BuildLog, CUT_MARKER, MAX_LOG_BYTES_PER_BUILD};
    use artifacts_schemas::{BuildId, BuildStatus};
    use artifacts_store::ResourceNames;

    let app = TestApp::spawn().await;
    let build_id = BuildId::generate();
    let mut log = BuildLog::new(&app.nats, &build_id);
    let line = "x".repeat(16 * 1024);
    for _ in 0..(2 * MAX_LOG_BYTES_PER_BUILD / line.len()) {
        log.write(&line).await;
    }
    log.write("the last words").await;
    assert!(log.tail().ends_with("the last words"), "the tail still follows the build after the cut");
    log.end(BuildStatus::Failed).await;

    let mut stream = app.nats.jetstream.get_stream(ResourceNames::new(&app.nats.subjects).logs_stream()).await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    let kept = (MAX_LOG_BYTES_PER_BUILD / line.len()) as u64;
    assert_eq!(state.messages, kept + 2, "the lines within the cap, the marker and the end");
    assert!(state.bytes < (MAX_LOG_BYTES_PER_BUILD + 1024 * 1024) as u64, "{} bytes kept", state.bytes);
    let marker = stream.get_raw_message(state.last_sequence - 1).await.unwrap();
    assert_eq!(marker.payload, CUT_MARKER.as_bytes());
}

/// What one sender's deliveries hold at once is bounded: bodies are counted as they arrive (memory, then
/// spool), and a sender holds at most one maximal delivery's worth (issue 27, item 6;
/// `webhook_starvation.rs` shows other senders are read meanwhile).
#[tokio::test]
async fn webhook_bodies_held_at_once_are_bounded() {
    let app = TestApp::spawn_with(|s| {
        s.hooks.github.secret = Some(Secret::new("webhook-secret"));
        s.gateway.max_webhook_bytes = 1024 * 1024;
    })
    .await;
    // A made-up signature passes the header checks; the body is needed to find it wrong.
    let head = format!(
        "POST /api/v1/hooks/github HTTP/1.1\r\nHost: x\r\nX-Hub-Signature-256: sha256={}\r\nContent-Length: {}\r\n\r\n",
        "0".repeat(64),
        1024 * 1024
    );
    let mut held = connect(&app).await;
    held.write_all(head.as_bytes()).await.unwrap();
    held.write_all(&vec![b'{'; 1024 * 1024 - 1]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut next = connect(&app).await;
    next.write_all(head.as_bytes()).await.unwrap();
    let _ = next.write_all(&vec![b'{'; 128 * 1024]).await;
    assert_eq!(status_within(&mut next, Duration::from_secs(2)).await, Some(503), "past the sender's share");
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut after = connect(&app).await;
    after.write_all(head.as_bytes()).await.unwrap();
    after.write_all(&vec![b'{'; 1024 * 1024]).await.unwrap();
    assert_eq!(status_within(&mut after, Duration::from_secs(5)).await, Some(401), "the budget is given back");
}
