//! `GET /healthz` (the process answers), `GET /readyz` (NATS is reachable), `GET /metrics`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// `ok`, `ready` or `unavailable`.
    status: &'static str,
    error_message: Option<String>,
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok", error_message: None })
}

/// Readiness: whether NATS is reachable.
#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.nats.client.connection_state() {
        async_nats::connection::State::Connected => {
            Json(Health { status: "ready", error_message: None }).into_response()
        }
        other => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health { status: "unavailable", error_message: Some(format!("NATS connection is {other}")) }),
        )
            .into_response(),
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}
