//! `GET /api/v1/info`: what a client needs to know of this stack before it acts (any valid key): the
//! registry's address and whether it takes API keys as `docker login` passwords (what
//! `artifacts registry login` configures the Docker engine for), and the request limits (so the client
//! refuses a context too large before uploading it).

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use artifacts_runtime::registry_auth::TOKEN_PATH;

use crate::auth::Caller;
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Info {
    /// Always `ok`.
    status: &'static str,
    /// This gateway's version.
    version: &'static str,
    registry: RegistryInfo,
    limits: Limits,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryInfo {
    /// `host:port` of the container registry, as image names begin with it.
    address: String,
    /// The registry takes API keys as the password of `docker login` (any user name): it sends clients to
    /// this gateway's token endpoint (`tokenRealm`). `false`: the registry is not guarded by keys.
    token_authentication: bool,
    /// The token endpoint's path on this gateway, when `tokenAuthentication`.
    token_realm: Option<&'static str>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// `gateway.max_body_bytes`: the largest request body (an image build's upload, context included).
    max_body_bytes: u64,
    /// `build.max_context_bytes`: the largest unpacked build context.
    max_context_bytes: u64,
}

/// The registry's address and the request limits.
#[utoipa::path(get, path = "/api/v1/info", tag = "registry",
    responses((status = 200, description = "The registry and the limits", body = Info)),
    security(("bearer" = []), ("apiKey" = [])))]
pub async fn info(State(state): State<AppState>, _caller: Caller) -> Json<Info> {
    let settings = &state.settings;
    let token_authentication = state.registry_tokens.is_some();
    Json(Info {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        registry: RegistryInfo {
            address: settings.registry.address.clone(),
            token_authentication,
            token_realm: token_authentication.then_some(TOKEN_PATH),
        },
        limits: Limits {
            max_body_bytes: settings.gateway.max_body_bytes as u64,
            max_context_bytes: settings.build.max_context_bytes,
        },
    })
}
