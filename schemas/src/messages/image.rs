//! Images: `POST /images` / `<prefix>.image.build` submit a Dockerfile; `GET /images` /
//! `<prefix>.image.get` find the latest successful build of a component's branch for an architecture.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::build::{BuildId, Timestamp};
use crate::names::{slug_with_hash, Architecture, BranchName, ComponentName};

/// Which image: `GET /images`, `<prefix>.image.get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageQuery {
    pub component: ComponentName,
    pub branch: BranchName,
    pub architecture: Architecture,
}

impl ImageQuery {
    /// The key of the image record in the `artifacts_images` bucket; slugs keep every key a valid
    /// NATS subject whatever the names hold.
    pub fn record_key(&self) -> String {
        format!(
            "{}/{}/{}",
            slug_with_hash(self.component.as_str()),
            slug_with_hash(self.branch.as_str()),
            self.architecture.short()
        )
    }
}

/// A Dockerfile to build: `POST /images`, `<prefix>.image.build`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageBuildRequest {
    /// The Dockerfile's text.
    pub dockerfile: String,
    pub component: ComponentName,
    pub branch: BranchName,
    pub architecture: Architecture,
    /// `--build-arg` values.
    #[serde(default)]
    pub build_args: BTreeMap<String, String>,
}

/// The latest successful build of an image, kept in the `artifacts_images` bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageRecord {
    pub component: ComponentName,
    pub branch: BranchName,
    pub architecture: Architecture,
    /// `registry/repository:architecture-tag`.
    pub image_name: String,
    /// `sha256:<hex>` of the pushed manifest.
    pub digest: String,
    pub build_id: BuildId,
    pub built_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LookupStatus {
    Found,
    NotFound,
}

/// The answer to an image lookup. When `status` is `not_found`, every field but `errorMessage` is null.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageLookupReply {
    pub status: LookupStatus,
    pub error_message: Option<String>,
    pub image_name: Option<String>,
    /// A command that pulls exactly this build.
    pub pull_command: Option<String>,
    pub digest: Option<String>,
    pub build_id: Option<BuildId>,
    pub built_at: Option<Timestamp>,
}

impl ImageLookupReply {
    pub fn found(record: ImageRecord) -> Self {
        Self {
            status: LookupStatus::Found,
            error_message: None,
            pull_command: Some(format!("docker pull {}", record.image_name)),
            image_name: Some(record.image_name),
            digest: Some(record.digest),
            build_id: Some(record.build_id),
            built_at: Some(record.built_at),
        }
    }

    pub fn not_found(query: &ImageQuery) -> Self {
        Self {
            status: LookupStatus::NotFound,
            error_message: Some(format!(
                "no image has been built for component {} on branch {} for {}",
                query.component, query.branch, query.architecture
            )),
            image_name: None,
            pull_command: None,
            digest: None,
            build_id: None,
            built_at: None,
        }
    }
}
