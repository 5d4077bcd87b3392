//! Cancelling, pinning and deleting (answered by the `gc` function), the catalogs (by the lookup) and
//! collections on demand: `POST /builds/{buildId}/cancel`, `POST`/`DELETE /builds/{buildId}/pin`,
//! `DELETE /images/{component}/{branch}/{architecture}`, `DELETE /components/{component}/{tag}/{architecture}`,
//! `GET /catalog/images`, `GET /catalog/components`, `POST /gc`.

use axum::extract::State;
use axum::response::Response;

use artifacts_schemas::messages::keys::Scope;
use artifacts_schemas::messages::manage::{
    BuildPinRequest, CatalogQuery, ComponentCatalog, Deleted, GcReport, GcRequest, ImageCatalog,
};
use artifacts_schemas::{
    Architecture, BranchName, BuildId, BuildQuery, BuildRecord, ComponentName, ComponentQuery, Endpoint, ErrorReply,
    ImageQuery, TagName,
};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::input::{PathParams, QueryOrJson};
use crate::routes::forward;
use crate::state::AppState;

/// Cancel a queued or running build: its worker stops it and removes its container.
#[utoipa::path(
    post, path = "/api/v1/builds/{build_id}/cancel", tag = "builds",
    params(("build_id" = String, Path, description = "Build id")),
    responses(
        (status = 200, description = "The record, now cancelled", body = BuildRecord),
        (status = 404, description = "No such build", body = ErrorReply),
        (status = 409, description = "The build already ended", body = ErrorReply),
    ),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(build_id): PathParams<String>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Build)?;
    let query = BuildQuery { build_id: BuildId::parse(&build_id)? };
    Ok(forward(&state, &caller, Endpoint::BuildCancel, &query).await)
}

/// Pin a build: its artifact is never collected.
#[utoipa::path(
    post, path = "/api/v1/builds/{build_id}/pin", tag = "builds",
    params(("build_id" = String, Path, description = "Build id")),
    responses(
        (status = 200, description = "The record, pinned", body = BuildRecord),
        (status = 404, description = "No such build", body = ErrorReply),
    ),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn pin(state: State<AppState>, caller: Caller, build_id: PathParams<String>) -> Result<Response, ApiError> {
    set_pin(state, caller, build_id, true).await
}

/// Unpin a build.
#[utoipa::path(
    delete, path = "/api/v1/builds/{build_id}/pin", tag = "builds",
    params(("build_id" = String, Path, description = "Build id")),
    responses(
        (status = 200, description = "The record, unpinned", body = BuildRecord),
        (status = 404, description = "No such build", body = ErrorReply),
    ),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn unpin(state: State<AppState>, caller: Caller, build_id: PathParams<String>) -> Result<Response, ApiError> {
    set_pin(state, caller, build_id, false).await
}

async fn set_pin(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(build_id): PathParams<String>,
    pinned: bool,
) -> Result<Response, ApiError> {
    caller.require(Scope::Build)?;
    let asked = BuildPinRequest { build_id: BuildId::parse(&build_id)?, pinned };
    Ok(forward(&state, &caller, Endpoint::BuildPin, &asked).await)
}

/// Delete an image target: it answers 404 at once; its registry manifests go at the next collection.
#[utoipa::path(
    delete, path = "/api/v1/images/{component}/{branch}/{architecture}", tag = "images",
    params(
        ("component" = String, Path, description = "Component name"),
        ("branch" = String, Path, description = "Branch (URL-encoded)"),
        ("architecture" = String, Path, description = "amd64, arm64, arm-v7 or 386"),
    ),
    responses(
        (status = 200, description = "Deleted", body = Deleted),
        (status = 404, description = "No such image", body = ErrorReply),
    ),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn delete_image(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((component, branch, architecture)): PathParams<(String, String, String)>,
) -> Result<Response, ApiError> {
    let query = ImageQuery {
        component: ComponentName::parse(&component)?,
        branch: BranchName::parse(&branch)?,
        architecture: Architecture::parse(&architecture)?,
    };
    Ok(forward(&state, &caller, Endpoint::ImageDelete, &query).await)
}

/// Delete a component version: it answers 404 at once and its archive goes; 409 when a stored
/// component depends on it.
#[utoipa::path(
    delete, path = "/api/v1/components/{component}/{tag}/{architecture}", tag = "components",
    params(
        ("component" = String, Path, description = "Component name"),
        ("tag" = String, Path, description = "Git tag (URL-encoded)"),
        ("architecture" = String, Path, description = "amd64, arm64, arm-v7 or 386"),
    ),
    responses(
        (status = 200, description = "Deleted", body = Deleted),
        (status = 404, description = "No such component version", body = ErrorReply),
        (status = 409, description = "A stored component depends on it (named)", body = ErrorReply),
    ),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn delete_component(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((component, tag, architecture)): PathParams<(String, String, String)>,
) -> Result<Response, ApiError> {
    let query = ComponentQuery {
        component: ComponentName::parse(&component)?,
        tag: TagName::parse(&tag)?,
        architecture: Architecture::parse(&architecture)?,
        url: None,
    };
    Ok(forward(&state, &caller, Endpoint::ComponentDelete, &query).await)
}

/// The latest image of each target the key may read, a page at a time.
#[utoipa::path(
    get, path = "/api/v1/catalog/images", tag = "catalog",
    params(
        ("component" = Option<String>, Query, description = "Only this component"),
        ("cursor" = Option<String>, Query, description = "The previous page's nextCursor"),
        ("limit" = Option<u32>, Query, description = "At most this many (default 50, at most 500)"),
    ),
    responses((status = 200, description = "A page", body = ImageCatalog)),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn images(
    State(state): State<AppState>,
    caller: Caller,
    QueryOrJson(query): QueryOrJson<CatalogQuery>,
) -> Result<Response, ApiError> {
    Ok(forward(&state, &caller, Endpoint::CatalogImages, &query).await)
}

/// The stored component versions the key may read, a page at a time.
#[utoipa::path(
    get, path = "/api/v1/catalog/components", tag = "catalog",
    params(
        ("component" = Option<String>, Query, description = "Only this component"),
        ("cursor" = Option<String>, Query, description = "The previous page's nextCursor"),
        ("limit" = Option<u32>, Query, description = "At most this many (default 50, at most 500)"),
    ),
    responses((status = 200, description = "A page", body = ComponentCatalog)),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn components(
    State(state): State<AppState>,
    caller: Caller,
    QueryOrJson(query): QueryOrJson<CatalogQuery>,
) -> Result<Response, ApiError> {
    Ok(forward(&state, &caller, Endpoint::CatalogComponents, &query).await)
}

/// Collect now what the retention policy lets go (admin).
#[utoipa::path(
    post, path = "/api/v1/gc", tag = "gc",
    request_body(content = GcRequest, description = "`{\"dryRun\": true}` only reports"),
    responses((status = 200, description = "What was (or would be) removed", body = GcReport)),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn gc(
    State(state): State<AppState>,
    caller: Caller,
    QueryOrJson(asked): QueryOrJson<GcRequest>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Admin)?;
    Ok(forward(&state, &caller, Endpoint::GcRun, &asked).await)
}
