//! Replies go only to the requester (issue 27, items 1 and 5), on a stack with NATS users as `artifacts
//! up` runs it.
//!
//! A request's reply subject is whatever the requester wrote. With the stack and its clients in one NATS
//! account, a connection without credentials asked `$SRV.PING` with the reply subject
//! `$KV.artifacts_keys.<id>` and the stack's own user overwrote that key's record; a read key did the same
//! through lookups and the archive transfer's chunks, and filled the jobs stream. Here every such path is
//! tried with a raw NATS client, and the streams those subjects belong to must not move.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};

use artifacts_store::access::retry_unanswered;
use artifacts_tests::{connect_as_key, key_header, TestApp, ADMIN_KEY};

/// The last sequence of a stream: it moves with every message written to it.
async fn last_sequence(app: &TestApp, stream: &str) -> u64 {
    // A key made a moment ago reloads nats-server, which leaves JetStream unanswered for a few ms.
    let stream = retry_unanswered(|| app.nats.jetstream.get_stream(stream)).await.expect("the stream exists");
    retry_unanswered(|| {
        let mut stream = stream.clone();
        async move { stream.info().await.map(|info| info.state.last_sequence) }
    })
    .await
    .expect("stream info")
}

#[tokio::test]
async fn no_reply_subject_writes_into_the_stack() {
    let app = TestApp::spawn_with_nats_users(|_| {}).await;
    let address = app.nats_server.address();
    let (victim, victim_id) = app.create_key(json!({"name": "victim", "scopes": ["build"]})).await;
    let (reader, reader_id) = app.create_key(json!({"name": "reader", "scopes": ["read"]})).await;
    let stored = app.store_archive("reflected", "v1", &vec![7u8; 3 * 1024 * 1024]).await;
    let component_key = format!("{}/{}/{}", stored.component, stored.tag, stored.architecture.short());
    let (client, _) = connect_as_key(&address, &reader_id, &reader).await;
    let anonymous = async_nats::ConnectOptions::new().connect(&address).await.expect("anyone may connect");

    let streams = ["KV_artifacts_keys", "KV_artifacts_components", "KV_artifacts_builds", "ARTIFACTS_JOBS"];
    let mut before = Vec::new();
    for stream in streams {
        before.push(last_sequence(&app, stream).await);
    }
    let targets = [
        format!("$KV.artifacts_keys.{victim_id}"),
        format!("$KV.artifacts_components.{component_key}"),
        format!("$KV.artifacts_builds.{}", stored.build_id.as_str()),
        "artifacts.jobs.image.amd64".to_owned(),
    ];
    let lookup = json!({"component": "reflected", "tag": "v1", "architecture": "amd64"}).to_string();
    // A transfer the read key may open, whose chunks it then asks for with hostile reply subjects.
    let opened = app_request(&client, "artifacts.component.archive", &reader, &lookup).await;
    let transfer = opened["transfer"].as_str().expect("a transfer subject").to_owned();
    for target in &targets {
        for discovery in ["$SRV.PING", "$SRV.PING.artifacts-lookup", "$SRV.INFO", "$SRV.STATS.artifacts-gc"] {
            anonymous.publish_with_reply(discovery, target.clone(), "".into()).await.unwrap();
            client.publish_with_reply(discovery, target.clone(), "".into()).await.unwrap();
        }
        for subject in ["artifacts.component.get", "artifacts.build.list", "artifacts.component.archive"] {
            client
                .publish_with_reply_and_headers(subject, target.clone(), key_header(&reader), lookup.clone().into())
                .await
                .unwrap();
        }
        client.publish_with_reply(transfer.clone(), target.clone(), "".into()).await.unwrap();
    }
    anonymous.flush().await.unwrap();
    client.flush().await.unwrap();
    // The answers are small and sent at once; give the services ample time to (not) send them.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut written = 0;
    for (stream, before) in streams.iter().zip(before) {
        let after = last_sequence(&app, stream).await;
        println!("{stream}: {} messages written by reflection", after - before);
        written += after - before;
    }
    assert_eq!(written, 0, "no answer may land on a stream's subject");
    let whoami = app.http.get(app.url("/api/v1/whoami")).bearer_auth(&victim).send().await.unwrap();
    assert_eq!(whoami.status(), 200, "the victim's key still works");
    let found = app.get("/api/v1/components?component=reflected&tag=v1&architecture=amd64").await;
    assert_eq!(found.status(), 200, "the component's record is intact");

    // The honest paths still work across the accounts: discovery, a lookup, a whole transfer.
    let pong = anonymous.request("$SRV.PING.artifacts-lookup", "".into()).await.expect("discovery answers");
    assert!(String::from_utf8_lossy(&pong.payload).contains("artifacts-lookup"));
    // (The chunks asked for above went where the requester pointed, into its own account: a new transfer.)
    let transfer = app_request(&client, "artifacts.component.archive", &reader, &lookup).await["transfer"]
        .as_str()
        .expect("a transfer subject")
        .to_owned();
    let mut received = 0;
    loop {
        let chunk = client.request(transfer.clone(), "".into()).await.expect("a chunk");
        received += chunk.payload.len();
        if chunk.headers.as_ref().is_some_and(|h| h.get("Artifacts-Archive-End").is_some()) {
            break;
        }
    }
    assert_eq!(received as u64, stored.size, "the requester itself gets the whole archive");
    // Last: a key change reloads nats-server, and a chunk's answer on its way during a reload is lost.
    let revoked =
        app.http.delete(app.url(&format!("/api/v1/keys/{victim_id}"))).bearer_auth(ADMIN_KEY).send().await.unwrap();
    assert_eq!(revoked.status(), 200, "the victim's key can still be revoked");
}

/// Sends a request with the key and answers its JSON body.
async fn app_request(client: &async_nats::Client, subject: &str, key: &str, payload: &str) -> Value {
    let answer = client
        .request_with_headers(subject.to_owned(), key_header(key), payload.to_owned().into())
        .await
        .expect("the service answers");
    serde_json::from_slice(&answer.payload).expect("JSON")
}

/// Resident memory of this process (where the test's lookup runs) at its highest so far, in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

#[tokio::test]
async fn one_read_key_cannot_hold_the_lookups_memory() {
    let app = TestApp::spawn_with_nats_users(|_| {}).await;
    let (reader, reader_id) = app.create_key(json!({"name": "reader", "scopes": ["read"]})).await;
    app.store_archive("held", "v1", &vec![1u8; 2 * 1024 * 1024]).await;
    let (client, _) = connect_as_key(&app.nats_server.address(), &reader_id, &reader).await;
    let lookup = json!({"component": "held", "tag": "v1", "architecture": "amd64"}).to_string();
    let before = peak_rss_mib();

    const REQUESTS: usize = 20_000;
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    let started = std::time::Instant::now();
    let answers = futures::stream::iter(0..REQUESTS)
        .map(|_| {
            let (client, reader, lookup) = (client.clone(), reader.clone(), lookup.clone());
            async move {
                let answer = client
                    .request_with_headers("artifacts.component.archive", key_header(&reader), lookup.into())
                    .await;
                match answer {
                    Ok(message) => {
                        let code = message.headers.as_ref().and_then(|h| h.get("Nats-Service-Error-Code"));
                        let body = String::from_utf8_lossy(&message.payload);
                        match code.map(|code| code.to_string()) {
                            None => "opened".to_owned(),
                            Some(code) if body.contains("requests a minute") => format!("{code} rate"),
                            Some(code) if body.contains("transfers open") => format!("{code} transfers"),
                            Some(code) => format!("{code} {body}"),
                        }
                    }
                    Err(err) => format!("no answer: {}", err.kind()),
                }
            }
        })
        .buffer_unordered(256)
        .collect::<Vec<_>>()
        .await;
    for code in answers {
        *codes.entry(code).or_default() += 1;
    }
    let peak = peak_rss_mib();
    println!(
        "{REQUESTS} archive transfer requests from one read key in {:.1}s: {codes:?}; peak RSS {before:.0} -> {peak:.0} MiB",
        started.elapsed().as_secs_f64()
    );
    let opened = codes.get("opened").copied().unwrap_or(0);
    assert!(opened <= 8, "one key holds at most 8 open transfers, not {opened}");
    let (rate, transfers) =
        (codes.get("429 rate").copied().unwrap_or(0), codes.get("429 transfers").copied().unwrap_or(0));
    assert_eq!(opened + rate + transfers, REQUESTS, "every other request is told to slow down: {codes:?}");
    // The key's NATS requests count against the same rate as its HTTP requests (6,000 a minute).
    assert!(rate >= REQUESTS - 6_000 - 2_000, "past its minute's requests, the key is refused: {codes:?}");
    assert!(peak - before < 300.0, "the transfers held {:.0} MiB", peak - before);
}
