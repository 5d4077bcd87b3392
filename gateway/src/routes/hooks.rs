//! `POST /api/v1/hooks/{github,gitlab,gitea}`: push webhooks. The delivery is verified, normalised into a
//! push event and stored in JetStream with `<forge>:<delivery id>` as `Nats-Msg-Id`, so a redelivered
//! webhook collapses into one event; the answer comes within milliseconds, and the git trigger does the
//! rest. A forge whose secret is not configured has no hook (404). Everything that can be refused from the
//! headers is refused before the body is read (GitLab's token included), and the body is capped
//! (`gateway.max_webhook_bytes`). A body is read as it streams in, its signature computed on the way, and
//! what deliveries being read hold is shared out per sender, with a minimum pace (`webhook_body`), so a
//! slow or forged delivery holds only its own share.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use artifacts_schemas::{ErrorReply, Failure, RequestError};

use crate::error::ApiError;
use crate::input::{declared_length, PathParams};
use crate::state::AppState;
use crate::webhook::{Delivery, Forge};
use crate::webhook_body::{self, Pace};

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HookReply {
    /// `pong` for a ping, `accepted` for a push, `ignored` for other events.
    status: &'static str,
    error_message: Option<String>,
    /// For a push: whether this delivery was seen before (and so changes nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    duplicate: Option<bool>,
}

/// Receive a forge's push webhook.
#[utoipa::path(
    post, path = "/api/v1/hooks/{forge}", tag = "hooks",
    params(("forge" = String, Path, description = "github, gitlab or gitea")),
    responses(
        (status = 202, description = "Push accepted (or another event ignored)", body = HookReply),
        (status = 200, description = "Ping answered", body = HookReply),
        (status = 400, description = "Malformed body", body = ErrorReply),
        (status = 401, description = "Bad or missing signature", body = ErrorReply),
        (status = 408, description = "The body arrived slower than gateway.webhook_min_bytes_per_sec, or not within 30 s", body = ErrorReply),
        (status = 404, description = "No secret is configured for this forge", body = ErrorReply),
        (status = 413, description = "Larger than gateway.max_webhook_bytes", body = ErrorReply),
        (status = 503, description = "NATS is unavailable, or too many deliveries are arriving at once, from this sender or in all (Retry-After)", body = ErrorReply),
    )
)]
pub async fn receive(
    State(state): State<AppState>,
    PathParams(forge): PathParams<String>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let forge = Forge::parse(&forge)?;
    let signature = forge.check_headers(&state.settings.hooks, &headers)?;
    let cap = state.settings.gateway.max_webhook_bytes;
    if declared_length(&headers).is_some_and(|length| length > cap as u64) {
        return Err(ApiError::new(
            Failure::TooLarge,
            format!("the delivery is larger than gateway.max_webhook_bytes ({cap} bytes)"),
        ));
    }
    let sender = webhook_body::sender(request.extensions().get::<ConnectInfo<SocketAddr>>().map(|peer| peer.0.ip()));
    let pace = Pace { max_bytes: cap, min_bytes_per_sec: state.settings.gateway.webhook_min_bytes_per_sec };
    let body = webhook_body::read(request.into_body(), sender, &state.webhook_bodies, pace, signature).await?;
    let body = body.into_bytes().await?;
    let reply = |code: StatusCode, status, duplicate| {
        (code, Json(HookReply { status, error_message: None, duplicate })).into_response()
    };
    let event = match forge.read(&headers, &body)? {
        Delivery::Ping => return Ok(reply(StatusCode::OK, "pong", None)),
        Delivery::Ignored(event) => {
            tracing::debug!(forge = forge.name(), %event, "ignoring a webhook event");
            return Ok(reply(StatusCode::ACCEPTED, "ignored", None));
        }
        Delivery::Push(event) => event,
    };
    let delivery = event.delivery_id.clone().unwrap_or_else(|| hex::encode(Sha256::digest(&body)));
    let mut nats_headers = async_nats::HeaderMap::new();
    nats_headers.insert("Nats-Msg-Id", format!("{}:{delivery}", forge.name()).as_str());
    artifacts_runtime::telemetry::add_request_id(&mut nats_headers);
    let payload = serde_json::to_vec(&event).expect("events serialise");
    let stored = async {
        state
            .nats
            .jetstream
            .publish_with_headers(state.nats.subjects.git_push_accepted(), nats_headers, payload.into())
            .await?
            .await
    }
    .await
    .map_err(|err| RequestError::unavailable(format!("the push could not be stored: {err}")))?;
    tracing::info!(forge = forge.name(), %delivery, repository = %event.repository, git_ref = %event.git_ref, duplicate = stored.duplicate, "push received");
    Ok(reply(StatusCode::ACCEPTED, "accepted", Some(stored.duplicate)))
}
