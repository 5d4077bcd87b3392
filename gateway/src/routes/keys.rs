//! `POST /api/v1/keys`, `GET /api/v1/keys`, `DELETE /api/v1/keys/{keyId}`: API key management (admin
//! scope). The secret is shown once, in the answer to its creation; the bucket holds its SHA-256 (and a
//! bcrypt of it, the password of the key's NATS user).
//!
//! A key manages only keys within its own limits: no wider scope or component patterns, the same pinned
//! identities, no later expiry. What a new key leaves out it inherits from its creator.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use artifacts_schemas::messages::keys::{
    check_pattern, ApiKeyInfo, KeyCreateRequest, KeyCreated, KeyList, KeyRevoked, KeyStatus, Scope, StoredKey, WhoAmI,
};
use artifacts_schemas::{parse_json, ErrorReply, RequestError, Timestamp, Username};

use artifacts_runtime::auth::{is_key_id, sha256};
use artifacts_runtime::nats_users;
use artifacts_store::StoredKeyEntry;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::input::{body_bytes, PathParams, SMALL_JSON_BODY_BYTES};
use crate::state::AppState;

/// The key this request presents: its id, scope and limits (any scope; never the secret).
#[utoipa::path(get, path = "/api/v1/whoami", tag = "keys",
    responses((status = 200, description = "The presented key", body = WhoAmI)),
    security(("bearer" = []), ("apiKey" = [])))]
pub async fn whoami(caller: Caller) -> Json<WhoAmI> {
    Json(WhoAmI {
        status: KeyStatus::Ok,
        error_message: None,
        key_id: caller.key_id.clone(),
        scope: caller.scope(),
        key: caller.key_info().cloned(),
    })
}

/// Create an API key (the secret is shown once).
#[utoipa::path(post, path = "/api/v1/keys", tag = "keys",
    request_body = KeyCreateRequest,
    responses(
        (status = 201, description = "Created: the secret is in this answer only", body = KeyCreated),
        (status = 400, description = "Bad input", body = ErrorReply),
        (status = 403, description = "The key lacks the admin scope, or the new key would exceed its limits", body = ErrorReply),
    ),
    security(("bearer" = []), ("apiKey" = [])))]
pub async fn create(State(state): State<AppState>, caller: Caller, request: Request) -> Result<Response, ApiError> {
    caller.require(Scope::Admin)?;
    let request: KeyCreateRequest = parse_json(&body_bytes(request, SMALL_JSON_BODY_BYTES).await?)?;
    let name = request.name.trim();
    if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        return Err(RequestError::invalid("name must be 1 to 100 printable characters").into());
    }
    if request.scopes.is_empty() {
        return Err(RequestError::invalid("scopes must name at least one of read, build, admin").into());
    }
    for pattern in request.components.iter().flatten() {
        check_pattern(pattern)?;
    }
    for (header, value) in [("linux_username", &request.linux_username), ("github_username", &request.github_username)]
    {
        if let Some(value) = value {
            Username::parse(header, value)?;
        }
    }
    if request.expires_at.is_some_and(|at| at <= Timestamp::now()) {
        return Err(RequestError::invalid("expiresAt must be in the future").into());
    }
    let key_id = hex::encode(rand::random::<[u8; 8]>());
    let secret = format!("ak_{key_id}_{}", hex::encode(rand::random::<[u8; 32]>()));
    let mut info = ApiKeyInfo {
        key_id: key_id.clone(),
        name: name.to_owned(),
        scopes: request.scopes,
        components: request.components,
        expires_at: request.expires_at,
        linux_username: request.linux_username,
        github_username: request.github_username,
        created_at: Timestamp::now(),
    };
    caller.inherit_limits(&mut info);
    caller.require_within(&info)?;
    let for_bcrypt = secret.clone();
    let nats_password = tokio::task::spawn_blocking(move || nats_users::bcrypt(&for_bcrypt))
        .await
        .map_err(|err| RequestError::internal(format!("hashing the key stopped: {err}")))?;
    let stored = StoredKey {
        info: info.clone(),
        secret_sha256: hex::encode(sha256(&secret)),
        nats_password_bcrypt: Some(nats_password),
    };
    state.nats.store.put_key(&stored).await?;
    tracing::info!(%key_id, by = %caller.key_id, "API key created");
    let created = KeyCreated { status: KeyStatus::Created, error_message: None, key_id, secret, key: info };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// List API keys (never their secrets).
#[utoipa::path(get, path = "/api/v1/keys", tag = "keys",
    responses(
        (status = 200, description = "Keys, oldest first", body = KeyList),
        (status = 403, description = "The key lacks the admin scope", body = ErrorReply),
    ),
    security(("bearer" = []), ("apiKey" = [])))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<KeyList>, ApiError> {
    caller.require(Scope::Admin)?;
    let mut keys = Vec::new();
    for stored in state.nats.store.all_api_keys().await? {
        if caller.require_within(&stored.info).is_ok() {
            keys.push(stored.info);
        }
    }
    keys.sort_by_key(|k| k.created_at);
    Ok(Json(KeyList { status: KeyStatus::Ok, error_message: None, keys }))
}

/// Revoke an API key; it is refused from the next request on.
#[utoipa::path(delete, path = "/api/v1/keys/{key_id}", tag = "keys",
    params(("key_id" = String, Path, description = "Key id")),
    responses(
        (status = 200, description = "Revoked", body = KeyRevoked),
        (status = 400, description = "Not a key id", body = ErrorReply),
        (status = 403, description = "The key lacks the admin scope", body = ErrorReply),
        (status = 404, description = "No such key", body = ErrorReply),
    ),
    security(("bearer" = []), ("apiKey" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(key_id): PathParams<String>,
) -> Result<Json<KeyRevoked>, ApiError> {
    caller.require(Scope::Admin)?;
    if !is_key_id(&key_id) {
        return Err(RequestError::invalid("keyId must be the 16 hex digits of a managed key").into());
    }
    let store = &state.nats.store;
    match store.stored_key(&key_id).await? {
        StoredKeyEntry::Absent => return Err(RequestError::not_found(format!("no API key has id {key_id}")).into()),
        StoredKeyEntry::Key(stored) => caller.require_within(&stored.info)?,
        // Refused by every process already; any admin may clear it away.
        StoredKeyEntry::Unreadable(err) => tracing::warn!(%key_id, %err, "removing an unreadable key record"),
    }
    store.remove_key(&key_id).await?;
    state.keys.forget(&key_id);
    tracing::info!(%key_id, by = %caller.key_id, "API key revoked");
    Ok(Json(KeyRevoked { status: KeyStatus::Revoked, error_message: None, key_id }))
}
