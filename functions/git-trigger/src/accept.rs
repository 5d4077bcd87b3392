//! `<prefix>.git.push` over NATS: a push event from a CI system, with a key that has the `build` scope.
//!
//! The event is checked (size, shape) and stored on the push stream's own subject, which only the stack
//! may publish on, so nothing reaches the stream without its sender's key being checked. Who sent it
//! (`forge: nats`, the key id, the caller's identity) is set here, never taken from the payload. The
//! answer is a JetStream publish acknowledgement (`stream`, `seq`, `duplicate`) beside `status`, so a
//! client's `js.publish` works as before; a `Nats-Msg-Id` collapses redeliveries of one key's event.

use artifacts_runtime::service::{Reply, Request};
use artifacts_runtime::Nats;
use artifacts_schemas::{parse_json, Failure, GitPushEvent, RequestError};
use artifacts_store::MAX_PUSH_EVENT_BYTES;
use serde::Serialize;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PushAccepted {
    status: &'static str,
    error_message: Option<String>,
    stream: String,
    seq: u64,
    duplicate: bool,
}

pub async fn answer(nats: &Nats, request: &Request) -> Reply {
    accept(nats, request).await.into()
}

async fn accept(nats: &Nats, request: &Request) -> Result<PushAccepted, RequestError> {
    let payload = &request.message.payload;
    if payload.len() > MAX_PUSH_EVENT_BYTES {
        return Err(RequestError::new(
            Failure::TooLarge,
            format!(
                "the push event is {} bytes; at most {MAX_PUSH_EVENT_BYTES} are accepted (send repository, ref, after, deleted)",
                payload.len()
            ),
        ));
    }
    let event: GitPushEvent = parse_json(payload)?;
    event.check()?;
    let by = &request.requested_by;
    let event = GitPushEvent {
        forge: Some("nats".into()),
        delivery_id: None,
        pusher: by.github_username.clone().or_else(|| by.linux_username.clone()),
        api_key_id: Some(request.caller.key_id.clone()),
        ..event
    };
    let mut headers = async_nats::HeaderMap::new();
    if let Some(id) = request.message.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")) {
        // Scoped by key, so one key's ids can never suppress another's events.
        headers.insert("Nats-Msg-Id", format!("nats:{}:{}", request.caller.key_id, id.as_str()).as_str());
    }
    artifacts_runtime::telemetry::add_request_id(&mut headers);
    let body = serde_json::to_vec(&event).expect("events serialise");
    let stored = async {
        nats.jetstream.publish_with_headers(nats.subjects.git_push_accepted(), headers, body.into()).await?.await
    }
    .await
    .map_err(|err| RequestError::unavailable(format!("the push could not be stored: {err}")))?;
    tracing::info!(repository = %event.repository, git_ref = %event.git_ref, key_id = %request.caller.key_id, "push received over NATS");
    Ok(PushAccepted {
        status: "accepted",
        error_message: None,
        stream: nats.store.streams().push_stream(),
        seq: stored.sequence,
        duplicate: stored.duplicate,
    })
}
