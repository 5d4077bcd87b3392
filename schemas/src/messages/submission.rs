//! The answer to an accepted build submission (`POST /images`, `POST /components`, and their NATS
//! subjects): 202 with where to follow the build; and the builds a push asks for, which the git trigger
//! submits to the build functions on a subject only the stack can publish to.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::build::BuildId;
use super::component::ComponentBuildRequest;
use super::image::ImageBuildRequest;
use super::push::Trigger;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AcceptedStatus {
    /// Queued now, or joined an identical build that is queued or running.
    Queued,
    /// An identical build already succeeded: this is it (say `force` to build again).
    Succeeded,
    /// Only for a lookup's build: the last identical build failed, and a lookup does not run it again.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuildAccepted {
    pub status: AcceptedStatus,
    pub error_message: Option<String>,
    pub build_id: BuildId,
    /// For image builds: the name the image will have, `registry/repository:architecture`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_name: Option<String>,
    /// `/api/v1/builds/{buildId}`.
    pub status_url: String,
    /// `/api/v1/builds/{buildId}/logs`.
    pub logs_url: String,
}

impl BuildAccepted {
    pub fn new(
        status: AcceptedStatus,
        build_id: BuildId,
        error_message: Option<String>,
        image_name: Option<String>,
    ) -> Self {
        Self {
            status,
            error_message,
            image_name,
            status_url: format!("/api/v1/builds/{build_id}"),
            logs_url: format!("/api/v1/builds/{build_id}/logs"),
            build_id,
        }
    }
}

/// A component build a push asks for (`<prefix>.triggered.component`, request/reply, stack only): the
/// git trigger has checked the sender; the build function queues it as it queues its own submissions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggeredComponentBuild {
    pub request: ComponentBuildRequest,
    /// The component patterns of the key that recorded the component's source: a push builds with its
    /// rights, never more (`None`: every component).
    pub component_patterns: Option<Vec<String>>,
    pub trigger: Trigger,
    /// What the push has rebuilt so far (`component@tag`), when this is a dependent's rebuild.
    #[serde(default)]
    pub rebuilt_for_push: Vec<String>,
}

/// An image rebuild a push asks for (`<prefix>.triggered.image`, request/reply, stack only): the last
/// build's Dockerfile and context again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggeredImageBuild {
    pub request: ImageBuildRequest,
    pub trigger: Trigger,
}
