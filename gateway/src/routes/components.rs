//! `POST /api/v1/components` submits a repository to build; `GET /api/v1/components` finds a stored
//! component; `GET /api/v1/components/{component}/{tag}/{architecture}/archive` streams its tarball.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use tokio::io::AsyncReadExt as _;
use tokio_util::io::ReaderStream;

use artifacts_schemas::{
    parse_json, Architecture, BuildAccepted, BuildRecord, ComponentBuildRequest, ComponentLookupReply,
    ComponentLookupStatus, ComponentName, ComponentQuery, Endpoint, ErrorReply, Failure, GitUrl, RequestError, TagName,
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
        (status = 206, description = "The range asked for (`Range: bytes=N-`, honoured unless `If-Range` names another version)", content_type = "application/gzip", body = Vec<u8>),
        (status = 304, description = "Unchanged (If-None-Match)"),
        (status = 416, description = "The range lies outside the archive", body = ErrorReply),
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
    // A Range (one range of bytes, as resuming downloaders send) is honoured unless `If-Range` names
    // another version of the archive.
    let same_version = headers.get(header::IF_RANGE).is_none_or(|v| v.to_str().ok() == Some(etag.as_str()));
    let range = match headers.get(header::RANGE).filter(|_| same_version) {
        None => None,
        Some(value) => match byte_range(value.to_str().unwrap_or_default(), size) {
            Some(range) => Some(range),
            None => return Ok(unsatisfiable(size)),
        },
    };
    let mut reader = state
        .nats
        .store
        .object(artifacts_store::Objects::Archives, &object)
        .await
        .map_err(|err| RequestError::unavailable(format!("the object store cannot serve {object}: {err}")))?;
    let (start, end) = range.unwrap_or((0, size.saturating_sub(1)));
    if start > 0 {
        // The object store reads from the start: the bytes before the range are read and dropped.
        tokio::io::copy(&mut (&mut reader).take(start), &mut tokio::io::sink())
            .await
            .map_err(|err| RequestError::unavailable(format!("the object store cannot serve {object}: {err}")))?;
    }
    let length = if size == 0 { 0 } else { end - start + 1 };
    let body = ReaderStream::with_capacity(reader.take(length), 128 * 1024);
    let mut response = Body::from_stream(body).into_response();
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        response.headers_mut().insert(header::CONTENT_RANGE, header_value(&format!("bytes {start}-{end}/{size}"))?);
    }
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/gzip"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
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

/// The one range `bytes=START-[END]` or `bytes=-SUFFIX` of a `size`-byte body, as inclusive offsets;
/// `None` when it is malformed, holds several ranges or lies past the end.
fn byte_range(value: &str, size: u64) -> Option<(u64, u64)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let (start, end) = if first.is_empty() {
        let suffix: u64 = last.parse().ok()?;
        (size.checked_sub(suffix.min(size))?, size.checked_sub(1)?)
    } else {
        let start: u64 = first.parse().ok()?;
        let end =
            if last.is_empty() { size.checked_sub(1)? } else { last.parse::<u64>().ok()?.min(size.checked_sub(1)?) };
        (start, end)
    };
    (start <= end && start < size).then_some((start, end))
}

/// 416, for a range the archive does not hold.
fn unsatisfiable(size: u64) -> Response {
    let body = ErrorReply {
        status: Failure::Invalid,
        error_message: format!(
            "the range asked for lies outside the archive's {size} bytes: ask for bytes=N- with N below {size}"
        ),
    };
    let mut response = (StatusCode::RANGE_NOT_SATISFIABLE, axum::Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
        response.headers_mut().insert(header::CONTENT_RANGE, value);
    }
    response
}

fn header_value(value: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(value).map_err(|_| RequestError::internal("header value is not ASCII").into())
}

#[cfg(test)]
mod tests {
    use super::byte_range;

    #[test]
    fn ranges_resume_and_bad_ones_are_refused() {
        assert_eq!(byte_range("bytes=100-", 1000), Some((100, 999)));
        assert_eq!(byte_range("bytes=0-99", 1000), Some((0, 99)));
        assert_eq!(byte_range("bytes=900-5000", 1000), Some((900, 999)));
        assert_eq!(byte_range("bytes=-10", 1000), Some((990, 999)));
        for bad in ["bytes=1000-", "bytes=5-1", "items=0-1", "bytes=0-1,5-6", "bytes=x-", ""] {
            assert_eq!(byte_range(bad, 1000), None, "{bad}");
        }
        assert_eq!(byte_range("bytes=0-", 0), None);
    }
}
