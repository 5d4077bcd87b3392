//! `GET /healthz` (the process answers), `GET /readyz` (NATS, every function and the registry answer),
//! `GET /metrics` (every process's metrics, gathered over NATS).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use std::time::Duration;

use artifacts_runtime::service::unanswered_services;

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

/// Readiness: NATS is connected, every function answers `$SRV.PING`, and the registry answers; 503
/// naming what is missing otherwise.
#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let mut missing = Vec::new();
    match state.nats.client.connection_state() {
        async_nats::connection::State::Connected => {
            for service in unanswered_services(&state.nats).await {
                missing.push(format!("{service} does not answer $SRV.PING"));
            }
        }
        other => missing.push(format!("the NATS connection is {other}")),
    }
    let registry = &state.settings.registry.address;
    let connect = tokio::net::TcpStream::connect(registry.as_str());
    if !matches!(tokio::time::timeout(Duration::from_secs(1), connect).await, Ok(Ok(_))) {
        missing.push(format!("the registry at {registry} does not answer"));
    }
    if missing.is_empty() {
        return Json(Health { status: "ready", error_message: None }).into_response();
    }
    let message = format!("not ready: {}", missing.join("; "));
    (StatusCode::SERVICE_UNAVAILABLE, Json(Health { status: "unavailable", error_message: Some(message) }))
        .into_response()
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::metrics::render(&state.nats).await)
}
