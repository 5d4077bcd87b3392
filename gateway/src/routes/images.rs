//! `POST /api/v1/images` submits a Dockerfile; `GET /api/v1/images` finds the latest image.

use std::collections::BTreeMap;

use axum::extract::multipart::Field;
use axum::extract::{FromRequest, Multipart, Request, State};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use artifacts_runtime::archive::{self, ArchiveError, Limits};
use artifacts_runtime::uploads;
use artifacts_store::Objects;
use axum::http::header;
use axum::response::Response;

use artifacts_schemas::messages::image::{body_too_large, MAX_DOCKERFILE_BYTES};
use artifacts_schemas::{
    parse_json, Architecture, BranchName, BuildAccepted, BuildRecord, ComponentName, Endpoint, ErrorReply, Failure,
    ImageBuildRequest, ImageLookupReply, ImageQuery, RequestError,
};

use super::{forward, request, submitted, Wait};
use artifacts_schemas::messages::keys::Scope;

use crate::auth::{Caller, Identity};
use crate::error::ApiError;
use crate::input::{body_bytes, declared_length, QueryOrJson};
use crate::state::AppState;

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
        (status = 503, description = "NATS or the lookup function is unavailable", body = ErrorReply),
    ),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn get_image(
    State(state): State<AppState>,
    caller: Caller,
    QueryOrJson(query): QueryOrJson<ImageQuery>,
) -> Result<Response, ApiError> {
    caller.require_for(Scope::Read, &query.component)?;
    Ok(forward(&state, &caller, Endpoint::ImageGet, &query).await)
}

/// The multipart form of `POST /images`, as the API documentation shows it (the handler reads the
/// parts one by one, checking each as it streams).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct ImageUpload {
    /// The Dockerfile.
    #[schema(value_type = String, format = Binary)]
    dockerfile: Vec<u8>,
    /// A tar archive of the build context (optional).
    #[schema(value_type = Option<String>, format = Binary)]
    context: Option<Vec<u8>>,
    component: String,
    branch: String,
    /// amd64, arm64, arm/v7 or 386 (or an alias).
    architecture: String,
    /// A JSON object of build arguments, e.g. `{"VERSION":"1.2"}`.
    build_args: Option<String>,
    /// `true`: build again even if an identical build succeeded.
    #[schema(default = false, example = false)]
    force: Option<bool>,
    /// The stage to build (`docker build --target`); default the last.
    target: Option<String>,
}

/// Build a Dockerfile and push the image to the registry.
#[utoipa::path(
    post, path = "/api/v1/images", tag = "images",
    params(("wait" = Option<u64>, Query, description = "Wait up to this many seconds for the build to end")),
    request_body(
        description = "A Dockerfile upload (multipart, with an optional context tarball), or the same as JSON with the Dockerfile as text",
        content((ImageUpload = "multipart/form-data"), (ImageBuildRequest = "application/json")),
    ),
    responses(
        (status = 202, description = "Queued", body = BuildAccepted),
        (status = 200, description = "With `wait`: the build ended in time", body = BuildRecord),
        (status = 400, description = "Bad input", body = ErrorReply),
        (status = 403, description = "The key lacks the build scope", body = ErrorReply),
        (status = 409, description = "Another (component, branch) owns the image repository this pair's name gives: the message names it", body = ErrorReply),
        (status = 413, description = "Larger than gateway.max_body_bytes (the message names the limit and the size), or a context past build.max_context_bytes", body = ErrorReply),
    ),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn post_image(
    State(state): State<AppState>,
    caller: Caller,
    identity: Identity,
    wait: Wait,
    http_request: Request,
) -> Result<Response, ApiError> {
    caller.require(Scope::Build)?;
    let by = identity.requested_by(&caller)?;
    let (submission, uploaded) = parse_submission(http_request, &state).await?;
    caller.require_for(Scope::Build, &submission.component)?;
    // Only a context this request carried is granted; one merely named must have been granted before.
    if let Some(context) = submission.context.as_deref().and_then(|c| c.strip_prefix("contexts/")).filter(|_| uploaded)
    {
        uploads::grant(&state.nats, context, &caller, &submission.component).await?;
    }
    let reply = request(&state, &caller, &by, Endpoint::ImageBuild, &submission).await;
    submitted(&state, reply, wait).await
}

/// The submission, and whether its context was uploaded with it (multipart) rather than named.
async fn parse_submission(request: Request, state: &AppState) -> Result<(ImageBuildRequest, bool), ApiError> {
    let content_type =
        request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let multipart = content_type.starts_with("multipart/form-data");
    // A body whose length is declared past the limit is refused before any of it is read, naming both.
    let limit = state.settings.gateway.max_body_bytes as u64;
    if let Some(length) = declared_length(request.headers()).filter(|length| *length > limit) {
        return Err(ApiError::new(Failure::TooLarge, body_too_large(Some(length), limit)));
    }
    let submission: ImageBuildRequest = if multipart {
        let multipart = Multipart::from_request(request, state)
            .await
            .map_err(|err| RequestError::invalid(format!("malformed multipart body: {err}")))?;
        from_multipart(multipart, state).await?
    } else if content_type.starts_with("application/json") {
        parse_json(&body_bytes(request, state.settings.gateway.max_body_bytes).await?)?
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
    Ok((submission, multipart))
}

async fn from_multipart(mut multipart: Multipart, state: &AppState) -> Result<ImageBuildRequest, ApiError> {
    let (mut dockerfile, mut component, mut branch, mut architecture, mut context) = (None, None, None, None, None);
    let (mut build_args, mut force, mut target) = (BTreeMap::new(), false, None);
    let malformed = malformed(state);
    while let Some(field) = multipart.next_field().await.map_err(&malformed)? {
        let name = field.name().unwrap_or("").to_owned();
        match name.as_str() {
            "context" => {
                context = Some(upload_context(state, field).await?);
                continue;
            }
            "dockerfile" | "component" | "branch" | "architecture" | "buildArgs" | "force" | "target" => {}
            other => {
                return Err(RequestError::invalid(format!(
                    "unknown part {other:?}: expected dockerfile, component, branch, architecture, context, buildArgs, force or target"
                ))
                .into())
            }
        }
        let bytes = field.bytes().await.map_err(&malformed)?;
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
            "target" => target = Some(text.trim().to_owned()),
            "force" => force = text.trim().parse().map_err(|_| RequestError::invalid("force must be true or false"))?,
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
        context,
        target,
        force,
    })
}

/// A multipart body that cannot be read: past `gateway.max_body_bytes` (a body of undeclared length,
/// since a declared one past it is refused before reading), a 413 naming the limit; else a 400.
fn malformed(state: &AppState) -> impl Fn(axum::extract::multipart::MultipartError) -> ApiError {
    let limit = state.settings.gateway.max_body_bytes as u64;
    move |err| {
        if err.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(Failure::TooLarge, body_too_large(None, limit))
        } else {
            RequestError::invalid(format!("malformed multipart body: {err}")).into()
        }
    }
}

/// Spools a context part to disk (never whole in memory) while hashing it, checks every entry, and
/// stores it in the uploads object store as `contexts/<sha256 hex>` unless it is there already.
async fn upload_context(state: &AppState, mut field: Field<'_>) -> Result<String, ApiError> {
    let unavailable = |err: &dyn std::fmt::Display| {
        ApiError::from(RequestError::unavailable(format!("cannot spool the context: {err}")))
    };
    let spool = tempfile::NamedTempFile::new().map_err(|err| unavailable(&err))?;
    let mut file = tokio::fs::File::create(spool.path()).await.map_err(|err| unavailable(&err))?;
    let mut hasher = Sha256::new();
    while let Some(chunk) = field.chunk().await.map_err(malformed(state))? {
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(|err| unavailable(&err))?;
    }
    file.flush().await.map_err(|err| unavailable(&err))?;
    drop(file);
    let path = spool.path().to_path_buf();
    let limits = Limits::for_contexts(&state.settings.build);
    let checked = tokio::task::spawn_blocking(move || {
        archive::for_each_entry(std::fs::File::open(path)?, limits, 0, |_, _| Ok(()))
    })
    .await
    .map_err(|err| unavailable(&err))?;
    checked.map_err(|err| match err {
        ArchiveError::TooLarge(_) => {
            ApiError::new(Failure::TooLarge, format!("context: {err} (build.max_context_bytes)"))
        }
        _ => RequestError::invalid(format!("context: {err} (send a tar or tar.gz of the build directory)")).into(),
    })?;
    let object = format!("contexts/{}", hex::encode(hasher.finalize()));
    let store = &state.nats.store;
    if store.object_info(Objects::Uploads, &object).await?.is_none() {
        let file = tokio::fs::File::open(spool.path()).await.map_err(|err| unavailable(&err))?;
        let mut reader = tokio::io::BufReader::with_capacity(128 * 1024, file);
        store
            .put_object(Objects::Uploads, &object, &mut reader)
            .await
            .map_err(|err| RequestError::unavailable(format!("the object store cannot take the context: {err}")))?;
    }
    Ok(object)
}
