//! `POST /api/v1/hooks/{github,gitlab,gitea}`: push webhooks. A forge whose secret is not configured has
//! no hook (404), so an unconfigured service cannot be fed forged pushes.

use axum::extract::{Path, State};
use axum::response::Response;

use artifacts_schemas::{ErrorReply, RequestError};

use super::not_available;
use crate::error::ApiError;
use crate::state::AppState;

/// Receive a forge's push webhook.
#[utoipa::path(
    post, path = "/api/v1/hooks/{forge}", tag = "hooks",
    params(("forge" = String, Path, description = "github, gitlab or gitea")),
    responses(
        (status = 202, description = "Accepted"),
        (status = 200, description = "Ping answered"),
        (status = 400, description = "Malformed body", body = ErrorReply),
        (status = 401, description = "Bad or missing signature", body = ErrorReply),
        (status = 404, description = "No secret is configured for this forge", body = ErrorReply),
        (status = 503, description = "Unavailable", body = ErrorReply),
    )
)]
pub async fn receive(State(state): State<AppState>, Path(forge): Path<String>) -> Result<Response, ApiError> {
    let hooks = &state.settings.hooks;
    let (configured, setting) = match forge.as_str() {
        "github" => (hooks.github.secret.is_some(), "hooks.github.secret"),
        "gitea" => (hooks.gitea.secret.is_some(), "hooks.gitea.secret"),
        "gitlab" => (hooks.gitlab.token.is_some(), "hooks.gitlab.token"),
        _ => {
            return Err(RequestError::not_found(format!("no webhook for {forge:?}: use github, gitlab or gitea")).into())
        }
    };
    if !configured {
        return Err(RequestError::not_found(format!("the {forge} webhook is not configured: set {setting}")).into());
    }
    Err(not_available("push webhooks"))
}
