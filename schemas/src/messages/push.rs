//! `<prefix>.git.push`: a push to a git repository, published to JetStream by the gateway's webhooks or
//! straight by any CI system.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A push event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitPushEvent {
    /// The repository's clone URL (any of `https://host/o/r`, `https://host/o/r.git`, `git@host:o/r.git`).
    pub repository: String,
    /// The full ref pushed, e.g. `refs/heads/main` or `refs/tags/v1.2.0`.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// The commit the ref points at after the push (40 zeros when deleted).
    pub after: String,
    /// Whether the push deleted the ref.
    #[serde(default)]
    pub deleted: bool,
}
