//! NATS permissions (`nats/nats-server.auth.conf`, what `artifacts up` runs): the stack connects as
//! `service`; a `client` (which is what a connection without credentials is) may ask the public subjects
//! of the contract and nothing else.

use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use artifacts_tests::{test_settings, NatsServer, NATS_CLIENT_PASSWORD, NATS_SERVICE_PASSWORD};

#[tokio::test]
async fn clients_may_ask_but_not_queue_jobs_or_write_stores() {
    let server = NatsServer::start_with_users().await;
    let address = server.url().trim_start_matches("nats://").to_owned();
    let settings = test_settings(&format!("nats://service:{NATS_SERVICE_PASSWORD}@{address}"));
    let service = artifacts_runtime::nats::connect(&settings, "test-lookup").await.expect("the service user connects");
    let shutdown = CancellationToken::new();
    tokio::spawn(artifacts_lookup::run(settings.clone(), service, shutdown.clone()));

    let wrong =
        async_nats::ConnectOptions::with_user_and_password("service".into(), "wrong".into()).connect(&address).await;
    assert!(wrong.is_err(), "a wrong password is refused");
    let named = async_nats::ConnectOptions::with_user_and_password("client".into(), NATS_CLIENT_PASSWORD.into())
        .connect(&address)
        .await;
    assert!(named.is_ok(), "the client user connects with its password");

    // No credentials: the `client` user.
    let client = async_nats::ConnectOptions::new()
        .request_timeout(Some(Duration::from_secs(2)))
        .connect(&address)
        .await
        .unwrap();
    let mut answer = None;
    for _ in 0..50 {
        let payload = r#"{"component":"libfoo","branch":"main","architecture":"amd64"}"#;
        if let Ok(reply) = client.request("artifacts.image.get", payload.into()).await {
            answer = Some(reply);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body: Value = serde_json::from_slice(&answer.expect("a client may ask the lookup service").payload).unwrap();
    assert_eq!(body["status"], "not_found");

    let jetstream = async_nats::jetstream::new(client.clone());
    let job = jetstream.publish("artifacts.jobs.image.amd64", "{}".into()).await;
    let queued = match job {
        Ok(ack) => tokio::time::timeout(Duration::from_secs(3), ack).await.map(|a| a.is_ok()).unwrap_or(false),
        Err(_) => false,
    };
    assert!(!queued, "a client must not queue build jobs");
    let kv = jetstream.get_key_value("artifacts_builds").await;
    assert!(kv.is_err(), "a client must not reach the key-value buckets");
    let store = jetstream.get_object_store("artifacts_archives").await;
    assert!(store.is_err(), "a client must not reach the object store");
    shutdown.cancel();
}
