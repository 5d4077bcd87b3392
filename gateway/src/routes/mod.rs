//! One module per resource of the HTTP API. Each handler authenticates, parses its input into the
//! validated types of `schemas`, and either relays a NATS endpoint's reply or answers itself.

pub mod builds;
pub mod components;
pub mod health;
pub mod hooks;
pub mod images;
pub mod keys;

use axum::response::Response;
use serde::Serialize;

use artifacts_runtime::service::{call, Reply};
use artifacts_schemas::{Endpoint, RequestError};

use crate::error::ApiError;
use crate::relay::relay;
use crate::state::AppState;

/// Sends a message to an endpoint and answers with its reply as it stands.
pub async fn forward(state: &AppState, endpoint: Endpoint, message: &impl Serialize) -> Response {
    relay(request(state, endpoint, message).await)
}

pub async fn request(state: &AppState, endpoint: Endpoint, message: &impl Serialize) -> Reply {
    let payload = serde_json::to_vec(message).expect("message types always serialise");
    call(&state.nats, endpoint, async_nats::HeaderMap::new(), payload.into()).await
}

/// A capability that a later version of the service brings: the input was valid, but nothing can do the
/// work yet.
pub fn not_available(what: &str) -> ApiError {
    RequestError::unavailable(format!("{what} are not available in this version of the service")).into()
}
