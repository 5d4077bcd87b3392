//! NATS users as `artifacts up` runs them (`nats/nats-server.auth.conf`, users generated from the API keys
//! by `artifacts_runtime::nats_users`): the stack connects as `service`; every key is a NATS user that
//! may publish the public subjects of its scopes and read only its own inbox; a connection without
//! credentials may use `$SRV` discovery and nothing else (reproduction 2 of issue 9: an anonymous
//! connection read other connections' replies on `_INBOX.>`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};

use artifacts_tests::{key_header, TestApp};

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

/// What nats-server said to one connection with `-ERR`: a refused publish or subscription is told to the
/// connection this way, never as the request's own error (which is only a timeout, as a slow service's).
#[derive(Clone, Default)]
struct Refusals(Arc<Mutex<Vec<String>>>);

impl Refusals {
    fn options(&self, options: async_nats::ConnectOptions) -> async_nats::ConnectOptions {
        let seen = Arc::clone(&self.0);
        options.event_callback(move |event| {
            let seen = Arc::clone(&seen);
            async move {
                if let async_nats::Event::ServerError(err) = event {
                    seen.lock().unwrap().push(err.to_string());
                }
            }
        })
    }

    /// Waits (5 s at most) for the server's refusal of `operation` (`Publish`, `Subscription`) on
    /// exactly `subject`.
    async fn wait_for(&self, operation: &str, subject: &str) {
        let expected = format!("permissions violation for {operation} to \"{subject}\"").to_lowercase();
        for _ in 0..100 {
            if self.0.lock().unwrap().iter().any(|said| said.to_lowercase().ends_with(&expected)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("nats-server did not refuse {operation} to {subject}; it said: {:?}", self.0.lock().unwrap());
    }
}

/// Asserts that a request failed because nats-server refused to publish it on `subject` (no service ever
/// saw it), not for any other reason.
async fn assert_refused<T: std::fmt::Debug>(
    asked: Result<T, async_nats::RequestError>,
    refusals: &Refusals,
    subject: &str,
    what: &str,
) {
    let err = asked.expect_err(what);
    // The server drops a refused message, so the requester hears nothing back until its timeout.
    assert_eq!(err.kind(), async_nats::RequestErrorKind::TimedOut, "{what}: {err}");
    refusals.wait_for("Publish", subject).await;
}

/// Connects as a key's NATS user (retrying while the users file catches up with the key), hearing what the
/// server refuses.
async fn connect_as_key(address: &str, key_id: &str, key: &str, refusals: &Refusals) -> async_nats::Client {
    let started = Instant::now();
    loop {
        let options = async_nats::ConnectOptions::with_user_and_password(key_id.into(), key.into())
            .custom_inbox_prefix(format!("_INBOX_{key_id}"))
            .request_timeout(Some(Duration::from_secs(2)));
        match refusals.options(options).connect(address).await {
            Ok(client) => {
                println!("a new key could connect to NATS after {:?}", started.elapsed());
                return client;
            }
            Err(_) if started.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(err) => panic!("key {key_id} cannot connect to NATS: {err}"),
        }
    }
}

#[tokio::test]
async fn no_connection_reads_another_and_keys_are_nats_users() {
    let app = TestApp::spawn_with_nats_users(|_| {}).await;
    let address = app.nats_server.address();

    // Without credentials: discovery only.
    let anonymous_refusals = Refusals::default();
    let anonymous = anonymous_refusals
        .options(async_nats::ConnectOptions::new().request_timeout(Some(Duration::from_secs(2))))
        .connect(&address)
        .await
        .expect("anyone may connect");
    let ping = anonymous.request("$SRV.PING.artifacts-lookup", "".into()).await;
    assert!(ping.is_ok(), "discovery works without credentials");
    let payload = r#"{"component":"libfoo","branch":"main","architecture":"amd64"}"#;
    let mut with_admin = key_header(artifacts_tests::ADMIN_KEY);
    with_admin.insert("linux_username", "alice");
    let asked = anonymous.request_with_headers("artifacts.image.get", with_admin.clone(), payload.into()).await;
    let what = "an anonymous connection may not ask the services, even with a key in a header";
    assert_refused(asked, &anonymous_refusals, "artifacts.image.get", what).await;
    let eavesdrop = anonymous.subscribe("_INBOX_service.>").await.unwrap();
    let everything = anonymous.subscribe(">").await.unwrap();
    anonymous_refusals.wait_for("Subscription", "_INBOX_service.>").await;
    anonymous_refusals.wait_for("Subscription", ">").await;

    // A read key connects as its own NATS user.
    let (reader, _) = app.create_key(json!({"name": "reader", "scopes": ["read"]})).await;
    let reader_id = artifacts_runtime::auth::key_id_of(&reader).to_owned();
    let reader_refusals = Refusals::default();
    let client = connect_as_key(&address, &reader_id, &reader, &reader_refusals).await;
    let answer = client.request_with_headers("artifacts.image.get", key_header(&reader), payload.into()).await.unwrap();
    let answer: Value = serde_json::from_slice(&answer.payload).unwrap();
    assert_eq!(answer["status"], "not_found");
    let others = client.subscribe("_INBOX.>").await.unwrap();
    reader_refusals.wait_for("Subscription", "_INBOX.>").await;
    let build = r#"{"dockerfile":"FROM busybox","component":"x","branch":"main","architecture":"amd64"}"#;
    let refused = client.request_with_headers("artifacts.image.build", key_header(&reader), build.into()).await;
    let what = "a read key's NATS user may not publish submissions";
    assert_refused(refused, &reader_refusals, "artifacts.image.build", what).await;
    let jetstream = async_nats::jetstream::new(client.clone());
    let asked = jetstream.get_key_value("artifacts_keys").await;
    assert!(asked.is_err(), "keys never reach the JetStream API");
    reader_refusals.wait_for("Publish", "$JS.API.STREAM.INFO.KV_artifacts_keys").await;

    // The builds a push asks for go from the git trigger to the build functions on a subject of the
    // stack's own account: no key's NATS user may send one, not even the admin key's.
    let admin_refusals = Refusals::default();
    let admin = connect_as_key(&address, "admin", artifacts_tests::ADMIN_KEY, &admin_refusals).await;
    for subject in ["artifacts.triggered.component", "artifacts.triggered.image"] {
        let refused = admin.request_with_headers(subject, key_header(artifacts_tests::ADMIN_KEY), "{}".into()).await;
        assert_refused(refused, &admin_refusals, subject, "no key may submit a build as a push").await;
    }

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
    let err = again.expect_err("a revoked key cannot connect again");
    assert_eq!(err.kind(), async_nats::ConnectErrorKind::AuthorizationViolation, "{err}");
}
