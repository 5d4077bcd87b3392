//! Webhooks cannot be starved (issue 27, item 6): four deliveries with a made-up signature, each declaring
//! 5 MiB and sending it slowly, held the whole shared body budget for 30 s, renewably, and correctly
//! signed deliveries answered 503 meanwhile (GitHub does not redeliver them). Real slow TCP uploads
//! against the real gateway, from several loopback addresses (each its own sender).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use artifacts_runtime::configuration::Secret;
use artifacts_tests::{sign_webhook as sign, webhook_fixture as fixture, TestApp, WEBHOOK_SECRET};

const MIB: usize = 1024 * 1024;

async fn app() -> TestApp {
    TestApp::spawn_without_builder(|s| {
        s.hooks.github.secret = Some(Secret::new(WEBHOOK_SECRET));
        s.hooks.gitea.secret = Some(Secret::new(WEBHOOK_SECRET));
    })
    .await
}

fn port(app: &TestApp) -> u16 {
    app.address.rsplit(':').next().unwrap().parse().unwrap()
}

/// A TCP connection to the gateway from the loopback address `127.0.0.<from>`.
async fn connect_from(app: &TestApp, from: u8) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, from)), 0)).unwrap();
    socket.connect(SocketAddr::from(([127, 0, 0, 1], port(app)))).await.unwrap()
}

/// The head of a GitHub push delivery of `length` bytes with a made-up signature.
fn forged_head(length: usize) -> String {
    format!(
        "POST /api/v1/hooks/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\nX-GitHub-Delivery: forged\r\n\
         X-Hub-Signature-256: sha256={}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n",
        "0".repeat(64),
    )
}

/// The status of the answer on `stream`, if one comes before the connection closes.
async fn read_status(stream: &mut TcpStream) -> Option<u16> {
    let mut answer = vec![0; 512];
    let read = stream.read(&mut answer).await.ok()?;
    String::from_utf8_lossy(&answer[..read]).split_whitespace().nth(1)?.parse().ok()
}

/// What one forged delivery got: its status (none if the connection just closed) and how long it lasted.
#[derive(Debug)]
struct Ended {
    status: Option<u16>,
    lasted: Duration,
}

/// A forged delivery declaring 5 MiB that sends `burst` bytes at once, then 64 bytes every 100 ms,
/// until the gateway answers or `stop` is set.
async fn forged_delivery(app: &TestApp, from: u8, burst: usize, stop: &AtomicBool) -> Option<Ended> {
    let started = Instant::now();
    let mut stream = connect_from(app, from).await;
    let (mut reader, mut writer) = stream.split();
    writer.write_all(forged_head(5 * MIB).as_bytes()).await.ok()?;
    let mut answer = [0u8; 512];
    let status_of = |read: std::io::Result<usize>, answer: &[u8]| -> Option<u16> {
        let read = read.ok()?;
        String::from_utf8_lossy(&answer[..read]).split_whitespace().nth(1)?.parse().ok()
    };
    let sending = async {
        if burst > 0 {
            writer.write_all(&vec![b' '; burst]).await?;
        }
        let mut sent = burst;
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok::<_, std::io::Error>(false);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            if burst == 0 && sent + 64 < 5 * MIB {
                writer.write_all(&[b' '; 64]).await?;
                sent += 64;
            }
        }
    };
    tokio::select! {
        read = reader.read(&mut answer) => Some(Ended { status: status_of(read, &answer), lasted: started.elapsed() }),
        sent = sending => match sent {
            Ok(_) => None,
            // The gateway stopped reading: its answer, if it comes.
            Err(_) => {
                let read = tokio::time::timeout(Duration::from_secs(1), reader.read(&mut answer)).await;
                let status = read.ok().and_then(|read| status_of(read, &answer));
                Some(Ended { status, lasted: started.elapsed() })
            }
        },
    }
}

/// Forged deliveries from `127.0.0.<from>`, one after another (renewed as soon as one is cut off), until
/// `stop`.
fn attacker(app: &Arc<TestApp>, from: u8, burst: usize, stop: &Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<Ended>> {
    let (app, stop) = (Arc::clone(app), Arc::clone(stop));
    tokio::spawn(async move {
        let mut ended = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            match forged_delivery(&app, from, burst, &stop).await {
                Some(end) => ended.push(end),
                None => break,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ended
    })
}

/// A correctly signed GitHub push delivery (for a repository nothing is built from); its status.
async fn signed_delivery(app: &TestApp, delivery: &str, padding: usize) -> u16 {
    let mut payload = fixture("github-push.json");
    payload["repository"]["clone_url"] = json!(format!("https://example.com/nobody/{delivery}.git"));
    if padding > 0 {
        payload["padding"] = json!(" ".repeat(padding));
    }
    let body = serde_json::to_vec(&payload).unwrap();
    let response = app
        .http
        .post(app.url("/api/v1/hooks/github"))
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", delivery)
        .header("X-Hub-Signature-256", format!("sha256={}", sign(&body)))
        .header("Content-Type", "application/json")
        .body(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    match response {
        Ok(response) => {
            let status = response.status().as_u16();
            if status != 202 {
                let body: Value = response.json().await.unwrap_or(Value::Null);
                eprintln!("signed delivery {delivery}: {status} {body}");
            }
            status
        }
        Err(err) => {
            eprintln!("signed delivery {delivery}: {err}");
            0
        }
    }
}

#[tokio::test]
async fn signed_deliveries_are_answered_while_forged_slow_ones_hold_connections() {
    let app = Arc::new(app().await);
    let stop = Arc::new(AtomicBool::new(false));
    let mut attackers = Vec::new();
    // Eight trickling 640 bytes a second from the signed deliveries' own address, as in the report ...
    for _ in 0..8 {
        attackers.push(attacker(&app, 1, 0, &stop));
    }
    // ... and four senders each sending 4 MiB at once, then nothing.
    for from in 2..6 {
        attackers.push(attacker(&app, from, 4 * MIB, &stop));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut accepted = 0;
    let started = Instant::now();
    for n in 0..10 {
        if signed_delivery(&app, &format!("signed-{n}"), 0).await == 202 {
            accepted += 1;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A large signed delivery (4 MiB) from a sender of its own is read too.
    let large = signed_delivery(&app, "signed-large", 4 * MIB).await;
    let spent = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut forged = Vec::new();
    for attacker in attackers {
        forged.extend(attacker.await.unwrap());
    }
    let mut by_status = std::collections::BTreeMap::new();
    for end in &forged {
        *by_status.entry(end.status.map_or("closed".to_owned(), |s| s.to_string())).or_insert(0) += 1;
    }
    let longest = forged.iter().map(|e| e.lasted).max().unwrap_or_default();
    println!(
        "signed deliveries answered 202: {accepted}/10 (and a 4 MiB one: {large}) in {:.1} s, while 12 forged \
         deliveries at a time held connections (8 trickling 640 B/s from the signed ones' address, 4 stalled \
         after 4 MiB from 4 others); forged deliveries ended meanwhile, by answer: {by_status:?}, the longest \
         after {:.1} s",
        spent.as_secs_f64(),
        longest.as_secs_f64(),
    );
    assert_eq!(accepted, 10, "every signed delivery is answered 202 while forged ones trickle");
    assert_eq!(large, 202, "a large signed delivery is read while forged ones trickle");
    // Slow and stalled deliveries are cut off well before the 30 s a body may take: 408 (or, for a
    // sender past its share, 503 at once).
    assert!(!forged.is_empty(), "slow deliveries are cut off");
    for end in &forged {
        // The answer may be lost when the gateway closes a connection with bytes still unread.
        assert!(matches!(end.status, Some(408 | 503) | None), "{end:?}");
        assert!(end.lasted < Duration::from_secs(10), "a slow delivery held its connection for {end:?}");
    }
    assert!(forged.iter().any(|e| e.status == Some(408)), "{forged:?}");
}

#[tokio::test]
async fn one_sender_holds_only_its_share() {
    let app = Arc::new(app().await);
    // One sender opens three deliveries, each sending 4 MiB and then stalling.
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..3 {
        let mut stream = connect_from(&app, 7).await;
        stream.write_all(forged_head(5 * MIB).as_bytes()).await.unwrap();
        let written = tokio::time::timeout(Duration::from_secs(2), stream.write_all(&vec![b' '; 4 * MIB])).await;
        let status = tokio::time::timeout(Duration::from_millis(500), read_status(&mut stream)).await;
        match (written, status) {
            // Still reading, no answer: the delivery holds its bytes.
            (Ok(Ok(())), Err(_)) => held.push(stream),
            // Answered 503 (or cut off) before its 4 MiB were taken.
            (_, Ok(Some(503) | None)) | (Err(_) | Ok(Err(_)), _) => refused += 1,
            other => panic!("unexpected: {other:?}"),
        }
    }
    assert_eq!(held.len(), 1, "a sender holds at most one maximal delivery's share; {refused} refused");
    // Another sender's large, correctly signed delivery is read meanwhile.
    let mut payload = fixture("github-push.json");
    payload["padding"] = json!(" ".repeat(4 * MIB));
    let body = serde_json::to_vec(&payload).unwrap();
    let head = format!(
        "POST /api/v1/hooks/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\nX-GitHub-Delivery: big\r\n\
         X-Hub-Signature-256: sha256={}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        sign(&body),
        body.len()
    );
    let mut stream = connect_from(&app, 8).await;
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(5), read_status(&mut stream)).await.unwrap();
    assert_eq!(status, Some(202));
    drop(held);
}
