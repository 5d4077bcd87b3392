//! Build records: one per submitted build, kept in the `artifacts_builds` key-value bucket, answered by
//! `<prefix>.build.get` / `GET /api/v1/builds/{buildId}` and listed by `<prefix>.build.list` /
//! `GET /api/v1/builds`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::component::{ComponentBuildSummary, ComponentRecord};
use super::image::{ImageBuildResult, ImageBuildSummary};
use crate::names::{ComponentName, InvalidName};
use crate::schema::string_schema;

/// A build's id: a UUIDv7, so ids sort by creation time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BuildId(String);

impl BuildId {
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().hyphenated().to_string())
    }

    pub fn parse(value: &str) -> Result<Self, InvalidName> {
        uuid::Uuid::try_parse(value).map(|id| Self(id.hyphenated().to_string())).map_err(|_| {
            InvalidName(format!(
                "buildId {value:?} is not a build id: expected a UUID such as 0193a5b2-7c1e-7f00-8a3b-2f5e9d4c1a20"
            ))
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for BuildId {
    type Error = InvalidName;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<BuildId> for String {
    fn from(value: BuildId) -> Self {
        value.0
    }
}

impl std::fmt::Display for BuildId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

string_schema!(BuildId, "Build id (a UUID).", example = "0193a5b2-7c1e-7f00-8a3b-2f5e9d4c1a20");

/// An instant, written as RFC 3339 (`2026-11-24T09:30:00Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timestamp(#[serde(with = "time::serde::rfc3339")] pub time::OffsetDateTime);

impl Timestamp {
    pub fn now() -> Self {
        Self(time::OffsetDateTime::now_utc())
    }

    /// `duration` from now.
    pub fn after(duration: std::time::Duration) -> Self {
        Self(time::OffsetDateTime::now_utc() + duration)
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.0.format(&time::format_description::well_known::Rfc3339).map_err(|_| std::fmt::Error)?;
        f.write_str(&text)
    }
}

string_schema!(Timestamp, "An instant in RFC 3339 form.", example = "2026-11-24T09:30:00Z");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BuildKind {
    Image,
    Component,
}

impl BuildKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Component => "component",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BuildStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl BuildStatus {
    /// Whether the build has ended (succeeded, failed or cancelled).
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// The name JSON gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Who asked for a build: the identity headers and the API key that carried the request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestedBy {
    pub linux_username: Option<String>,
    pub github_username: Option<String>,
    pub api_key_id: Option<String>,
}

/// `GET /builds/{buildId}`, `<prefix>.build.get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuildQuery {
    pub build_id: BuildId,
}

/// What a build builds (`request`: its submission, as accepted) and what it made once it succeeded
/// (`result`), typed by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BuildWork {
    Image {
        request: ImageBuildSummary,
        /// The image name, immutable name, digest and pull command.
        result: Option<ImageBuildResult>,
    },
    Component {
        request: ComponentBuildSummary,
        /// The stored component.
        result: Option<ComponentRecord>,
    },
}

/// What a build made, of either kind.
#[derive(Debug, Clone, PartialEq)]
pub enum BuildResult {
    Image(ImageBuildResult),
    Component(Box<ComponentRecord>),
}

impl From<ImageBuildResult> for BuildResult {
    fn from(result: ImageBuildResult) -> Self {
        Self::Image(result)
    }
}

impl From<ComponentRecord> for BuildResult {
    fn from(record: ComponentRecord) -> Self {
        Self::Component(Box::new(record))
    }
}

impl BuildWork {
    pub fn kind(&self) -> BuildKind {
        match self {
            Self::Image { .. } => BuildKind::Image,
            Self::Component { .. } => BuildKind::Component,
        }
    }

    /// The component the build is for.
    pub fn component(&self) -> &ComponentName {
        match self {
            Self::Image { request, .. } => &request.component,
            Self::Component { request, .. } => &request.component,
        }
    }

    /// Records what the build made (a result of the other kind cannot happen and is dropped).
    pub fn set_result(&mut self, made: Option<BuildResult>) {
        match (self, made) {
            (Self::Image { result, .. }, Some(BuildResult::Image(made))) => *result = Some(made),
            (Self::Component { result, .. }, Some(BuildResult::Component(made))) => *result = Some(*made),
            (Self::Image { result, .. }, _) => *result = None,
            (Self::Component { result, .. }, _) => *result = None,
        }
    }
}

/// A build, from submission to its end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuildRecord {
    pub build_id: BuildId,
    /// `kind`, `request` and `result`.
    #[serde(flatten)]
    pub work: BuildWork,
    /// The build's state.
    pub status: BuildStatus,
    pub requested_by: RequestedBy,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    /// Why the build failed, with the last lines of its log.
    pub error_message: Option<String>,
    /// How many times a worker has started this build (a hand-back at shutdown is not counted).
    pub attempts: u32,
    /// While running: until when the worker's lease on the build holds. The worker renews it; a build
    /// whose lease ran out (its worker died) is taken by another worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<Timestamp>,
    /// A pinned build's artifact is never collected.
    #[serde(default)]
    pub pinned: bool,
    /// While queued again to wait for other builds (a component's absent dependencies): their ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_on: Vec<BuildId>,
}

impl BuildRecord {
    /// The record of a build just submitted: queued, never started.
    pub fn queued(build_id: BuildId, work: BuildWork, requested_by: RequestedBy) -> Self {
        Self {
            build_id,
            work,
            status: BuildStatus::Queued,
            requested_by,
            created_at: Timestamp::now(),
            started_at: None,
            finished_at: None,
            error_message: None,
            attempts: 0,
            lease_expires_at: None,
            pinned: false,
            waiting_on: Vec::new(),
        }
    }
}

pub const DEFAULT_BUILD_LIST_LIMIT: u32 = 50;
pub const MAX_BUILD_LIST_LIMIT: u32 = 500;

/// `GET /builds`, `<prefix>.build.list`: filters, all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuildListQuery {
    pub component: Option<ComponentName>,
    pub kind: Option<BuildKind>,
    pub status: Option<BuildStatus>,
    /// At most this many records (default 50, at most 500).
    pub limit: Option<u32>,
    /// Where to go on: the `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

impl BuildListQuery {
    pub fn limit(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_BUILD_LIST_LIMIT).clamp(1, MAX_BUILD_LIST_LIMIT) as usize
    }
}

/// Always `ok` for a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ListStatus {
    Ok,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuildList {
    pub status: ListStatus,
    pub error_message: Option<String>,
    /// Newest first.
    pub builds: Vec<BuildRecord>,
    /// Pass as `cursor` for the next (older) page; null when there is none.
    pub next_cursor: Option<String>,
}
