//! `POST /api/v1/secrets`, `GET /api/v1/secrets`, `DELETE /api/v1/secrets/{name}`: build secrets (admin
//! scope), answered by the `gc` function (`<prefix>.secret.put|list|delete`), which stores each value
//! encrypted. A value goes in with a put and is never answered; the gateway checks the input first, so a
//! bad name or a value over 64 KiB is a 400 before anything is sent on.

use axum::extract::{Request, State};
use axum::response::Response;

use artifacts_schemas::messages::keys::Scope;
use artifacts_schemas::messages::secrets::{
    check_secret_name, SecretDeleteRequest, SecretDeleted, SecretList, SecretPutRequest, SecretStatus, SecretStored,
};
use artifacts_schemas::{parse_json, Endpoint, ErrorReply, RequestedBy};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::input::{body_bytes, PathParams};
use crate::relay::relay;
use crate::routes::{forward, request};
use crate::state::AppState;

/// A put's body: a 64 KiB value, JSON-escaped at worst six bytes a byte, with room to spare; past it
/// 413. A value over 64 KiB in a body under this is a 400 that says so.
const SECRET_BODY_BYTES: usize = 512 * 1024;

/// Create or replace a build secret (the value is never answered).
#[utoipa::path(post, path = "/api/v1/secrets", tag = "secrets",
    request_body = SecretPutRequest,
    responses(
        (status = 201, description = "Created (no value in the answer)", body = SecretStored),
        (status = 200, description = "Replaced: a secret of that name existed (status `updated`)", body = SecretStored),
        (status = 400, description = "A bad name, a value over 64 KiB, no or bad component patterns", body = ErrorReply),
        (status = 403, description = "Not an admin key, or the secret's patterns go beyond the key's", body = ErrorReply),
        (status = 413, description = "The body is over 512 KiB", body = ErrorReply),
    ),
    security(("bearer" = []), ("apiKey" = [])))]
pub async fn put(State(state): State<AppState>, caller: Caller, body: Request) -> Result<Response, ApiError> {
    caller.require(Scope::Admin)?;
    let asked: SecretPutRequest = parse_json(&body_bytes(body, SECRET_BODY_BYTES).await?)?;
    asked.check()?;
    let mut reply = request(&state, &caller, &RequestedBy::default(), Endpoint::SecretPut, &asked).await;
    // NATS replies carry a code only when they fail: a new secret's 201 is read from its `status`.
    if !reply.is_failure()
        && serde_json::from_slice::<SecretStored>(&reply.body).is_ok_and(|s| s.status == SecretStatus::Created)
    {
        reply.code = 201;
    }
    Ok(relay(reply))
}

/// List build secrets: names, component patterns and dates, never values.
#[utoipa::path(get, path = "/api/v1/secrets", tag = "secrets",
    responses(
        (status = 200, description = "The secrets this key may manage, by name", body = SecretList),
        (status = 403, description = "Not an admin key", body = ErrorReply),
    ),
    security(("bearer" = []), ("apiKey" = [])))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(Scope::Admin)?;
    Ok(forward(&state, &caller, Endpoint::SecretList, &serde_json::json!({})).await)
}

/// Delete a build secret: builds no longer get it.
#[utoipa::path(delete, path = "/api/v1/secrets/{name}", tag = "secrets",
    params(("name" = String, Path, description = "The secret's name")),
    responses(
        (status = 200, description = "Deleted", body = SecretDeleted),
        (status = 400, description = "Not a secret name", body = ErrorReply),
        (status = 403, description = "Not an admin key, or the secret's patterns go beyond the key's", body = ErrorReply),
        (status = 404, description = "No secret of that name", body = ErrorReply),
    ),
    security(("bearer" = []), ("apiKey" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(name): PathParams<String>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Admin)?;
    check_secret_name(&name)?;
    Ok(forward(&state, &caller, Endpoint::SecretDelete, &SecretDeleteRequest { name }).await)
}
