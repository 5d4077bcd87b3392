//! `POST /api/v1/components` submits a repository to build; `GET /api/v1/components` finds a stored
//! component; `GET /api/v1/components/{component}/{tag}/{architecture}/archive` streams its tarball.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use tokio_util::io::ReaderStream;

use artifacts_schemas::{
    parse_json, Architecture, BuildAccepted, BuildRecord, ComponentBuildRequest, ComponentLookupReply,
    ComponentLookupStatus, ComponentName, ComponentQuery, Endpoint, ErrorReply, GitUrl, RequestError, TagName,
};

use super::{request, submitted, Wait};
use artifacts_schemas::messages::keys::Scope;

use crate::auth::{Caller, Identity};
use crate::error::ApiError;
use crate::input::{body_bytes, PathParams, QueryOrJson, SMALL_JSON_BODY_BYTES};
use crate::relay::relay;
use crate::state::AppState;

/// Find a stored component (or start building it when its source is known).
#[utoipa::path(
    get, path = "/api/v1/components", tag = "components",
    params(
        ("component" = String, Query, description = "Component name"),
        ("tag" = String, Query, description = "Git tag or branch"),
        ("architecture" = String, Query, description = "amd64, arm64, arm/v7, 386 (or an alias)"),
        ("url" = Option<String>, Query, description = "Where to build it from if it was never built"),
    ),
    responses(
        (status = 200, description = "Found: `component` is the download URL", body = ComponentLookupReply),
        (status = 202, description = "Building", body = ComponentLookupReply),
        (status = 404, description = "Not stored: never built and its source unknown (`not_found`), or its last identical build failed and a lookup does not run it again (`failed`, with `buildId`)", body = ComponentLookupReply),
        (status = 400, description = "Bad input", body = ErrorReply),
    ),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn get_component(
    State(state): State<AppState>,
    caller: Caller,
    identity: Identity,
    headers: HeaderMap,
    QueryOrJson(query): QueryOrJson<ComponentQuery>,
) -> Result<Response, ApiError> {
    caller.require_for(Scope::Read, &query.component)?;
    if let Some(url) = &query.url {
        GitUrl::parse(url, &state.settings.git.allowed_schemes)?;
    }
    let reply = request(&state, &caller, &identity.requested_by(&caller)?, Endpoint::ComponentGet, &query).await;
    if reply.is_failure() {
        return Ok(relay(reply));
    }
    let mut answer: ComponentLookupReply = parse_json(&reply.body)?;
    if answer.status == ComponentLookupStatus::Found {
        // The address this client reached the gateway by, rather than the configured one.
        let url = query.download_url(&base_url(&state, &headers));
        answer.component = Some(url.clone());
        answer.download_url = Some(url);
    }
    // Bucket and object are for NATS clients, which read the object store themselves.
    answer.bucket = None;
    answer.object = None;
    let status = if answer.status == ComponentLookupStatus::Building { StatusCode::ACCEPTED } else { StatusCode::OK };
    Ok((status, axum::Json(answer)).into_response())
}

/// The URL clients reached this gateway by.
fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| h.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')))
        .map(str::to_owned)
        .unwrap_or_else(|| state.settings.gateway.listen.to_string());
    format!("http://{host}")
}

/// Clone a repository at a tag, build it in a container and store the result.
#[utoipa::path(
    post, path = "/api/v1/components", tag = "components",
    params(("wait" = Option<u64>, Query, description = "Wait up to this many seconds for the build to end")),
    request_body = ComponentBuildRequest,
    responses(
        (status = 202, description = "Queued", body = BuildAccepted),
        (status = 200, description = "With `wait`: the build ended in time", body = BuildRecord),
        (status = 400, description = "Bad input", body = ErrorReply),
        (status = 403, description = "The key lacks the build scope", body = ErrorReply),
    ),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn post_component(
    State(state): State<AppState>,
    caller: Caller,
    identity: Identity,
    wait: Wait,
    http_request: axum::extract::Request,
) -> Result<Response, ApiError> {
    caller.require(Scope::Build)?;
    let submission: ComponentBuildRequest = parse_json(&body_bytes(http_request, SMALL_JSON_BODY_BYTES).await?)?;
    caller.require_for(Scope::Build, &submission.component)?;
    GitUrl::parse(&submission.url, &state.settings.git.allowed_schemes)?;
    let by = identity.requested_by(&caller)?;
    let reply = request(&state, &caller, &by, Endpoint::ComponentBuild, &submission).await;
    submitted(&state, reply, wait).await
}

/// Download a component's `.tar.gz`.
#[utoipa::path(
    get, path = "/api/v1/components/{component}/{tag}/{architecture}/archive", tag = "components",
    params(
        ("component" = String, Path, description = "Component name"),
        ("tag" = String, Path, description = "Git tag (URL-encoded)"),
        ("architecture" = String, Path, description = "amd64, arm64, arm-v7 or 386"),
    ),
    responses(
        (status = 200, description = "The tarball", content_type = "application/gzip", body = Vec<u8>),
        (status = 202, description = "Not stored, but its source is known: its build started", body = ComponentLookupReply),
        (status = 304, description = "Unchanged (If-None-Match)"),
        (status = 400, description = "Bad input", body = ErrorReply),
        (status = 404, description = "Not stored", body = ComponentLookupReply),
    ),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn get_archive(
    State(state): State<AppState>,
    caller: Caller,
    identity: Identity,
    headers: HeaderMap,
    PathParams((component, tag, architecture)): PathParams<(String, String, String)>,
) -> Result<Response, ApiError> {
    let query = ComponentQuery {
        component: ComponentName::parse(&component)?,
        tag: TagName::parse(&tag)?,
        architecture: Architecture::parse(&architecture)?,
        url: None,
    };
    caller.require_for(Scope::Read, &query.component)?;
    let reply = request(&state, &caller, &identity.requested_by(&caller)?, Endpoint::ComponentGet, &query).await;
    // Not stored but its source known: the lookup started its build and says so (202 building).
    if reply.is_failure() || reply.code == 202 {
        return Ok(relay(reply));
    }
    let found: ComponentLookupReply = parse_json(&reply.body)?;
    let (Some(object), Some(digest), Some(size)) = (found.object, found.digest, found.size) else {
        return Err(RequestError::not_found(format!("component {component} at tag {tag} is not stored yet")).into());
    };
    let etag = format!("\"{digest}\"");
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    let reader = state
        .nats
        .stores
        .archives
        .get(&object)
        .await
        .map_err(|err| RequestError::unavailable(format!("the object store cannot serve {object}: {err}")))?;
    let mut response = Body::from_stream(ReaderStream::with_capacity(reader, 128 * 1024)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/gzip"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    headers.insert(header::ETAG, header_value(&etag)?);
    if let Some(hex_digest) = digest.strip_prefix("sha256:") {
        let raw = hex::decode(hex_digest).map_err(|_| RequestError::internal("stored digest is not hex"))?;
        let rfc3230 = format!("sha-256={}", base64::engine::general_purpose::STANDARD.encode(raw));
        headers.insert("digest", header_value(&rfc3230)?);
    }
    // A tag may hold any character git allows; the suggested file name keeps to plain ASCII.
    let plain = |text: &str| {
        text.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect::<String>()
    };
    let filename = format!(
        "attachment; filename=\"{}-{}-{}.tar.gz\"",
        query.component,
        plain(query.tag.as_str()),
        query.architecture.short()
    );
    headers.insert(header::CONTENT_DISPOSITION, header_value(&filename)?);
    Ok(response)
}

fn header_value(value: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(value).map_err(|_| RequestError::internal("header value is not ASCII").into())
}
