//! One module per resource of the HTTP API. Each handler authenticates, parses its input into the
//! validated types of `schemas`, and either relays a NATS endpoint's reply or answers itself.

pub mod builds;
pub mod components;
pub mod dashboard;
pub mod health;
pub mod hooks;
pub mod images;
pub mod info;
pub mod keys;
pub mod manage;
pub mod provenance;
pub mod registry;
pub mod secrets;

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use artifacts_runtime::service::{call, caller_headers, Reply};
use artifacts_schemas::{BuildAccepted, Endpoint, RequestError, RequestedBy};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::input::parse_query;
use crate::relay::relay;
use crate::state::AppState;

/// Sends a message to an endpoint on the caller's behalf and answers with its reply as it stands.
pub async fn forward(state: &AppState, caller: &Caller, endpoint: Endpoint, message: &impl Serialize) -> Response {
    relay(request(state, caller, &RequestedBy::default(), endpoint, message).await)
}

/// A request that carries the caller's key and claimed identity; the function checks both again.
pub async fn request(
    state: &AppState,
    caller: &Caller,
    by: &RequestedBy,
    endpoint: Endpoint,
    message: &impl Serialize,
) -> Reply {
    let payload = serde_json::to_vec(message).expect("message types always serialise");
    call(&state.nats, endpoint, caller_headers(caller.key(), by), payload.into()).await
}

/// Answers a build submission: 202 with where to follow the build, or with `?wait=SECONDS`, the final
/// build record (200) if the build ends in time.
pub async fn submitted(state: &AppState, reply: Reply, wait: Wait) -> Result<Response, ApiError> {
    if reply.is_failure() {
        return Ok(relay(reply));
    }
    let accepted: BuildAccepted = artifacts_schemas::parse_json(&reply.body)?;
    if let Some(limit) = wait.limit {
        if let Some(record) = state.nats.store.wait_until_finished(&accepted.build_id, limit).await {
            return Ok((StatusCode::OK, Json(record)).into_response());
        }
    }
    Ok((StatusCode::ACCEPTED, Json(accepted)).into_response())
}

/// `?wait=SECONDS` on build submissions, checked before anything is submitted.
#[derive(Debug, Default)]
pub struct Wait {
    limit: Option<Duration>,
}

#[derive(Deserialize)]
struct WaitQuery {
    wait: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Wait {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query: WaitQuery = parse_query(parts.uri.query().unwrap_or(""))?;
        let Some(text) = query.wait else { return Ok(Self::default()) };
        let seconds: u64 = text.parse().map_err(|_| {
            RequestError::invalid(format!("wait must be a whole number of seconds from 0 to {MAX_WAIT_SECS}"))
        })?;
        if seconds > MAX_WAIT_SECS {
            return Err(RequestError::invalid(format!("wait must be at most {MAX_WAIT_SECS} seconds")).into());
        }
        Ok(Self { limit: (seconds > 0).then(|| Duration::from_secs(seconds)) })
    }
}

/// The longest `?wait=` honoured.
const MAX_WAIT_SECS: u64 = 3600;
