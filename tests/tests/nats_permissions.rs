//! NATS users as `artifacts up` runs them (`nats/nats-server.auth.conf`, users generated from the API keys
//! by `artifacts_runtime::nats_users`): the stack connects as `service`; every key is a NATS user that
//! may publish the public subjects of its scopes and read only its own inbox; a connection without
//! credentials may use `$SRV` discovery and nothing else (reproduction 2 of issue 9: an anonymous
//! connection read other connections' replies on `_INBOX.>`).

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};

use artifacts_tests::{connect_as_key, key_header, TestApp};

/// Collects what a subscription receives within `window`.
async fn received(mut subscription: async_nats::Subscriber, window: Duration) -> usize {
    let mut count = 0;
    let _ = tokio::time::timeout(window, async {
        while subscription.next().await.is_some() {
            count += 1;
        }
    })
    .await;
    count
}

#[tokio::test]
async fn no_connection_reads_another_and_keys_are_nats_users() {
    let app = TestApp::spawn_with_nats_users(|_| {}).await;
    let address = app.nats_server.address();

    // Without credentials: discovery only.
    let anonymous = async_nats::ConnectOptions::new()
        .request_timeout(Some(Duration::from_secs(2)))
        .connect(&address)
        .await
        .expect("anyone may connect");
    let ping = anonymous.request("$SRV.PING.artifacts-lookup", "".into()).await;
    assert!(ping.is_ok(), "discovery works without credentials");
    let payload = r#"{"component":"libfoo","branch":"main","architecture":"amd64"}"#;
    let mut with_admin = key_header(artifacts_tests::ADMIN_KEY);
    with_admin.insert("linux_username", "alice");
    let asked = anonymous.request_with_headers("artifacts.image.get", with_admin.clone(), payload.into()).await;
    assert!(asked.is_err(), "an anonymous connection may not ask the services, even with a key in a header");
    let eavesdrop = anonymous.subscribe("_INBOX_service.>").await.unwrap();
    let everything = anonymous.subscribe(">").await.unwrap();

    // A read key connects as its own NATS user.
    let (reader, _) = app.create_key(json!({"name": "reader", "scopes": ["read"]})).await;
    let reader_id = artifacts_runtime::auth::key_id_of(&reader).to_owned();
    let (client, became_user) = connect_as_key(&address, &reader_id, &reader).await;
    println!("a new key could connect to NATS after {became_user:?}");
    let answer = client.request_with_headers("artifacts.image.get", key_header(&reader), payload.into()).await.unwrap();
    let answer: Value = serde_json::from_slice(&answer.payload).unwrap();
    assert_eq!(answer["status"], "not_found");
    let others = client.subscribe("_INBOX.>").await.unwrap();
    let build = r#"{"dockerfile":"FROM busybox","component":"x","branch":"main","architecture":"amd64"}"#;
    let refused = client.request_with_headers("artifacts.image.build", key_header(&reader), build.into()).await;
    assert!(refused.is_err(), "a read key's NATS user may not publish submissions");
    let jetstream = async_nats::jetstream::new(client.clone());
    assert!(jetstream.get_key_value("artifacts_keys").await.is_err(), "keys never reach the JetStream API");

    // Traffic that carries secrets: key records and replies to the stack's own requests.
    for _ in 0..5 {
        app.get("/api/v1/keys").await;
        app.get("/api/v1/builds").await;
    }
    let seen = received(eavesdrop, Duration::from_millis(500)).await
        + received(everything, Duration::from_millis(100)).await
        + received(others, Duration::from_millis(100)).await;
    assert_eq!(seen, 0, "no connection reads the stack's replies or another's inbox");

    // Revoking the key closes its connection.
    let revoked = Instant::now();
    let status = app
        .http
        .delete(app.url(&format!("/api/v1/keys/{reader_id}")))
        .bearer_auth(artifacts_tests::ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if client.connection_state() != async_nats::connection::State::Connected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(closed.is_ok(), "the revoked key's connection is closed");
    println!("a revoked key's NATS connection closed after {:?}", revoked.elapsed());
    let again =
        async_nats::ConnectOptions::with_user_and_password(reader_id.clone(), reader.clone()).connect(&address).await;
    assert!(again.is_err(), "a revoked key cannot connect again");
}
