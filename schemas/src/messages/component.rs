//! Components: `POST /components` / `<prefix>.component.build` submit a git repository to build;
//! `GET /components` / `<prefix>.component.get` find the stored tarball, or start its build when its
//! source is known.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::build::{BuildId, Timestamp};
use crate::names::{slug_with_hash, Architecture, ComponentName, TagName};

/// A repository to build: `POST /components`, `<prefix>.component.build`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentBuildRequest {
    /// The git URL to clone; its scheme must be allowed by `git.allowed_schemes` (default `https`).
    pub url: String,
    pub component: ComponentName,
    pub tag: TagName,
    pub architecture: Architecture,
}

/// Which component: `GET /components`, `<prefix>.component.get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentQuery {
    pub component: ComponentName,
    pub tag: TagName,
    pub architecture: Architecture,
    /// Where to build it from if it was never built.
    pub url: Option<String>,
}

impl ComponentQuery {
    /// The key of the component record in the `artifacts_components` bucket.
    pub fn record_key(&self) -> String {
        format!(
            "{}/{}/{}",
            slug_with_hash(self.component.as_str()),
            slug_with_hash(self.tag.as_str()),
            self.architecture.short()
        )
    }

    /// Where the gateway serves the tarball, below `/api/v1`.
    pub fn archive_path(&self) -> String {
        format!(
            "/components/{}/{}/{}/archive",
            self.component,
            self.tag.as_str().replace('/', "%2F"),
            self.architecture.short()
        )
    }
}

/// A stored component, kept in the `artifacts_components` bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentRecord {
    pub component: ComponentName,
    pub tag: TagName,
    pub architecture: Architecture,
    /// The git URL it was built from.
    pub url: String,
    /// `sha256:<hex>` of the `.tar.gz`.
    pub digest: String,
    /// Size of the `.tar.gz` in bytes.
    pub size: u64,
    /// Object store bucket holding the tarball.
    pub bucket: String,
    /// Object name within the bucket.
    pub object: String,
    pub build_id: BuildId,
    pub built_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ComponentLookupStatus {
    Found,
    Building,
    NotFound,
}

/// The answer to a component lookup. Over NATS, `bucket` and `object` name the tarball in the object
/// store; over HTTP, `component` is the URL to download it from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentLookupReply {
    pub status: ComponentLookupStatus,
    pub error_message: Option<String>,
    /// Download URL of the `.tar.gz` (over NATS: its path below `/api/v1`).
    pub component: Option<String>,
    pub digest: Option<String>,
    pub size: Option<u64>,
    pub build_id: Option<BuildId>,
    pub built_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
}

impl ComponentLookupReply {
    pub fn found(query: &ComponentQuery, record: ComponentRecord) -> Self {
        Self {
            status: ComponentLookupStatus::Found,
            error_message: None,
            component: Some(query.archive_path()),
            digest: Some(record.digest),
            size: Some(record.size),
            build_id: Some(record.build_id),
            built_at: Some(record.built_at),
            bucket: Some(record.bucket),
            object: Some(record.object),
        }
    }

    pub fn not_found(query: &ComponentQuery) -> Self {
        Self {
            status: ComponentLookupStatus::NotFound,
            error_message: Some(format!(
                "component {} at tag {} for {} has not been built and its source is unknown: pass `url` to build it",
                query.component, query.tag, query.architecture
            )),
            component: None,
            digest: None,
            size: None,
            build_id: None,
            built_at: None,
            bucket: None,
            object: None,
        }
    }
}
