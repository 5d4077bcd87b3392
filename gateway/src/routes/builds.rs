//! `GET /api/v1/builds/{buildId}`, `GET /api/v1/builds`, `GET /api/v1/builds/{buildId}/logs`.

use axum::extract::{Path, State};
use axum::response::Response;

use artifacts_schemas::{BuildId, BuildList, BuildListQuery, BuildQuery, BuildRecord, Endpoint, ErrorReply};

use super::{forward, not_available, request};
use crate::auth::{Caller, Scope};
use crate::error::ApiError;
use crate::input::QueryOrJson;
use crate::relay::relay;
use crate::state::AppState;

/// A build's record.
#[utoipa::path(
    get, path = "/api/v1/builds/{build_id}", tag = "builds",
    params(("build_id" = String, Path, description = "Build id")),
    responses(
        (status = 200, description = "The build", body = BuildRecord),
        (status = 400, description = "Not a build id", body = ErrorReply),
        (status = 401, description = "No or bad API key", body = ErrorReply),
        (status = 404, description = "No such build", body = ErrorReply),
        (status = 503, description = "Unavailable", body = ErrorReply),
    ),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn get_build(
    State(state): State<AppState>,
    caller: Caller,
    Path(build_id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let query = BuildQuery { build_id: BuildId::parse(&build_id)? };
    Ok(forward(&state, Endpoint::BuildGet, &query).await)
}

/// Build history, newest first.
#[utoipa::path(
    get, path = "/api/v1/builds", tag = "builds",
    params(
        ("component" = Option<String>, Query, description = "Only this component"),
        ("kind" = Option<String>, Query, description = "image or component"),
        ("status" = Option<String>, Query, description = "queued, running, succeeded, failed or cancelled"),
        ("limit" = Option<u32>, Query, description = "At most this many (default 50, at most 500)"),
    ),
    responses(
        (status = 200, description = "Builds", body = BuildList),
        (status = 400, description = "Bad input", body = ErrorReply),
        (status = 401, description = "No or bad API key", body = ErrorReply),
        (status = 503, description = "Unavailable", body = ErrorReply),
    ),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn list_builds(
    State(state): State<AppState>,
    caller: Caller,
    QueryOrJson(query): QueryOrJson<BuildListQuery>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    Ok(forward(&state, Endpoint::BuildList, &query).await)
}

/// A build's log as server-sent events: every line from the start, then live lines until it ends.
#[utoipa::path(
    get, path = "/api/v1/builds/{build_id}/logs", tag = "builds",
    params(("build_id" = String, Path, description = "Build id")),
    responses(
        (status = 200, description = "Log lines", content_type = "text/event-stream", body = String),
        (status = 400, description = "Not a build id", body = ErrorReply),
        (status = 401, description = "No or bad API key", body = ErrorReply),
        (status = 404, description = "No such build", body = ErrorReply),
        (status = 503, description = "Unavailable", body = ErrorReply),
    ),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn build_logs(
    State(state): State<AppState>,
    caller: Caller,
    Path(build_id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let query = BuildQuery { build_id: BuildId::parse(&build_id)? };
    let reply = request(&state, Endpoint::BuildGet, &query).await;
    if reply.is_failure() {
        return Ok(relay(reply));
    }
    Err(not_available("build logs"))
}
