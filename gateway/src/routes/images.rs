//! `POST /api/v1/images` submits a Dockerfile; `GET /api/v1/images` finds the latest image.

use std::collections::BTreeMap;

use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::header;
use axum::response::Response;

use artifacts_schemas::{
    parse_json, Architecture, BranchName, BuildAccepted, ComponentName, Endpoint, ErrorReply, Failure,
    ImageBuildRequest, ImageLookupReply, ImageQuery, RequestError,
};

use super::{forward, not_available};
use crate::auth::{Caller, Identity, Scope};
use crate::error::ApiError;
use crate::input::{body_bytes, QueryOrJson};
use crate::state::AppState;

/// The largest Dockerfile accepted.
pub const MAX_DOCKERFILE_BYTES: usize = 1024 * 1024;

/// Find the latest successful image of a component's branch for an architecture.
#[utoipa::path(
    get, path = "/api/v1/images", tag = "images",
    params(
        ("component" = String, Query, description = "Component name"),
        ("branch" = String, Query, description = "Git branch"),
        ("architecture" = String, Query, description = "amd64, arm64, arm/v7, 386 (or an alias)"),
    ),
    responses(
        (status = 200, description = "Found", body = ImageLookupReply),
        (status = 404, description = "Never built", body = ImageLookupReply),
        (status = 400, description = "Bad input", body = ErrorReply),
        (status = 401, description = "No or bad API key", body = ErrorReply),
        (status = 503, description = "NATS or the lookup function is unavailable", body = ErrorReply),
    ),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn get_image(
    State(state): State<AppState>,
    caller: Caller,
    QueryOrJson(query): QueryOrJson<ImageQuery>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    Ok(forward(&state, Endpoint::ImageGet, &query).await)
}

/// Build a Dockerfile and push the image to the registry.
#[utoipa::path(
    post, path = "/api/v1/images", tag = "images",
    request_body(content = ImageBuildRequest, description = "multipart/form-data with a `dockerfile` file part and `component`, `branch`, `architecture` text parts (optional `context` tarball and `buildArgs` JSON), or the same as JSON", content_type = "application/json"),
    responses(
        (status = 202, description = "Queued", body = BuildAccepted),
        (status = 400, description = "Bad input", body = ErrorReply),
        (status = 401, description = "No or bad API key", body = ErrorReply),
        (status = 403, description = "The key lacks the build scope", body = ErrorReply),
        (status = 413, description = "Too large", body = ErrorReply),
        (status = 503, description = "Unavailable", body = ErrorReply),
    ),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn post_image(
    State(state): State<AppState>,
    caller: Caller,
    _identity: Identity,
    request: Request,
) -> Result<Response, ApiError> {
    caller.require(Scope::Build)?;
    let _submission = parse_submission(request, &state).await?;
    Err(not_available("image builds"))
}

async fn parse_submission(request: Request, state: &AppState) -> Result<ImageBuildRequest, ApiError> {
    let content_type =
        request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let submission: ImageBuildRequest = if content_type.starts_with("multipart/form-data") {
        let multipart = Multipart::from_request(request, state)
            .await
            .map_err(|err| RequestError::invalid(format!("malformed multipart body: {err}")))?;
        from_multipart(multipart).await?
    } else if content_type.starts_with("application/json") {
        parse_json(&body_bytes(request, state).await?)?
    } else {
        return Err(RequestError::invalid(
            "Content-Type must be multipart/form-data (with a `dockerfile` file part) or application/json",
        )
        .into());
    };
    if submission.dockerfile.len() > MAX_DOCKERFILE_BYTES {
        return Err(ApiError::new(Failure::TooLarge, "the Dockerfile is larger than 1 MiB"));
    }
    if submission.dockerfile.trim().is_empty() {
        return Err(RequestError::invalid("the Dockerfile is empty").into());
    }
    Ok(submission)
}

async fn from_multipart(mut multipart: Multipart) -> Result<ImageBuildRequest, ApiError> {
    let malformed = |err: axum::extract::multipart::MultipartError| {
        if err.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(Failure::TooLarge, "the request body is larger than this gateway accepts")
        } else {
            RequestError::invalid(format!("malformed multipart body: {err}")).into()
        }
    };
    let (mut dockerfile, mut component, mut branch, mut architecture) = (None, None, None, None);
    let mut build_args = BTreeMap::new();
    while let Some(field) = multipart.next_field().await.map_err(malformed)? {
        let name = field.name().unwrap_or("").to_owned();
        match name.as_str() {
            "context" => {
                let mut field = field;
                while field.chunk().await.map_err(malformed)?.is_some() {}
                continue;
            }
            "dockerfile" | "component" | "branch" | "architecture" | "buildArgs" => {}
            other => {
                return Err(RequestError::invalid(format!(
                    "unknown part {other:?}: expected dockerfile, component, branch, architecture, context or buildArgs"
                ))
                .into())
            }
        }
        let bytes = field.bytes().await.map_err(malformed)?;
        if name == "dockerfile" && bytes.len() > MAX_DOCKERFILE_BYTES {
            return Err(ApiError::new(Failure::TooLarge, "the Dockerfile is larger than 1 MiB"));
        }
        let text = String::from_utf8(bytes.to_vec())
            .map_err(|_| RequestError::invalid(format!("part {name:?} must be UTF-8 text")))?;
        match name.as_str() {
            "dockerfile" => dockerfile = Some(text),
            "component" => component = Some(ComponentName::parse(text.trim())?),
            "branch" => branch = Some(BranchName::parse(text.trim())?),
            "architecture" => architecture = Some(Architecture::parse(text.trim())?),
            _ => {
                build_args = serde_json::from_str(&text).map_err(|_| {
                    RequestError::invalid("buildArgs must be a JSON object of strings, e.g. {\"VERSION\": \"1.2\"}")
                })?
            }
        }
    }
    let missing = |part: &str| RequestError::invalid(format!("missing part {part:?}"));
    Ok(ImageBuildRequest {
        dockerfile: dockerfile.ok_or_else(|| missing("dockerfile"))?,
        component: component.ok_or_else(|| missing("component"))?,
        branch: branch.ok_or_else(|| missing("branch"))?,
        architecture: architecture.ok_or_else(|| missing("architecture"))?,
        build_args,
    })
}
