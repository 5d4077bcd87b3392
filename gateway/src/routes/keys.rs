//! `POST /api/v1/keys`, `GET /api/v1/keys`, `DELETE /api/v1/keys/{keyId}`: API key management (admin).

use axum::extract::Path;
use axum::response::Response;

use artifacts_schemas::ErrorReply;

use super::not_available;
use crate::auth::{Caller, Scope};
use crate::error::ApiError;

/// Create an API key (the secret is shown once).
#[utoipa::path(post, path = "/api/v1/keys", tag = "keys",
    responses((status = 201, description = "Created"), (status = 401, body = ErrorReply), (status = 403, body = ErrorReply), (status = 503, body = ErrorReply)),
    security(("bearer" = []), ("apiKey" = [])))]
pub async fn create(caller: Caller) -> Result<Response, ApiError> {
    caller.require(Scope::Admin)?;
    Err(not_available("managed API keys"))
}

/// List API keys (never their secrets).
#[utoipa::path(get, path = "/api/v1/keys", tag = "keys",
    responses((status = 200, description = "Keys"), (status = 401, body = ErrorReply), (status = 403, body = ErrorReply), (status = 503, body = ErrorReply)),
    security(("bearer" = []), ("apiKey" = [])))]
pub async fn list(caller: Caller) -> Result<Response, ApiError> {
    caller.require(Scope::Admin)?;
    Err(not_available("managed API keys"))
}

/// Revoke an API key; it is refused from the next request on.
#[utoipa::path(delete, path = "/api/v1/keys/{key_id}", tag = "keys",
    params(("key_id" = String, Path, description = "Key id")),
    responses((status = 204, description = "Revoked"), (status = 401, body = ErrorReply), (status = 403, body = ErrorReply), (status = 503, body = ErrorReply)),
    security(("bearer" = []), ("apiKey" = [])))]
pub async fn revoke(caller: Caller, Path(_key_id): Path<String>) -> Result<Response, ApiError> {
    caller.require(Scope::Admin)?;
    Err(not_available("managed API keys"))
}
