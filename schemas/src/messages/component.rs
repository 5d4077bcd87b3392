//! Components: `POST /components` / `<prefix>.component.build` submit a git repository to build;
//! `GET /components` / `<prefix>.component.get` find the stored tarball, or start its build when its
//! source is known.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::build::{BuildId, Timestamp};
use super::push::Trigger;
use super::secrets::SecretInput;
use super::submission::BuildAccepted;
use crate::names::{slug_with_hash, Architecture, ComponentName, TagName};

/// A repository to build: `POST /components`, `<prefix>.component.build`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "url": "https://github.com/acme/hello-component.git",
    "component": "hello-component",
    "tag": "v1.0.0",
    "architecture": "amd64"
}))]
pub struct ComponentBuildRequest {
    /// The git URL to clone; its scheme must be allowed by `git.allowed_schemes` (default `https`).
    pub url: String,
    pub component: ComponentName,
    pub tag: TagName,
    pub architecture: Architecture,
    /// Build again even when this commit was built successfully before (default: answer with that build).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[schema(default = false, example = false)]
    pub force: bool,
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

    /// Where the gateway serves the tarball.
    pub fn download_url(&self, base_url: &str) -> String {
        format!(
            "{}/api/v1/components/{}/{}/{}/archive",
            base_url.trim_end_matches('/'),
            self.component,
            percent_encode(self.tag.as_str()),
            self.architecture.short()
        )
    }
}

/// What a build-component worker needs (JetStream, `<prefix>.jobs.component.<arch>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentJob {
    pub build_id: BuildId,
    /// The URL to clone, as submitted (it may carry credentials: it is shown nowhere else).
    pub url: String,
    pub component: ComponentName,
    pub tag: TagName,
    pub architecture: Architecture,
    /// The components waiting for this one, nearest last (`component@tag`), to refuse dependency cycles.
    #[serde(default)]
    pub dependents: Vec<String>,
    /// The component patterns of the key the build runs for: its dependencies must match them, so a key
    /// cannot read another team's component by depending on it. Absent: every component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component_patterns: Option<Vec<String>>,
    /// The push this build answers: when it succeeds, the git trigger rebuilds its dependents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
    /// What this push has rebuilt so far (`component@tag`), so that each target is rebuilt once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rebuilt_for_push: Vec<String>,
    /// An admin's `force`: the version may be built from another commit than the one it was first built
    /// from (a moved git tag). Otherwise a worker that finds the tag moved fails the build.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replaces_version: bool,
}

/// A component a push rebuilt has been built (`<prefix>.git.push.dependents`, JetStream): the git
/// trigger rebuilds the components that depend on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebuiltForPush {
    pub component: ComponentName,
    pub tag: TagName,
    pub architecture: Architecture,
    pub trigger: Trigger,
    /// What this push has rebuilt so far (`component@tag`), this one included.
    pub rebuilt: Vec<String>,
}

/// What a component build's record shows of its submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentBuildSummary {
    /// The git URL, credentials removed.
    pub url: String,
    pub component: ComponentName,
    pub tag: TagName,
    pub architecture: Architecture,
    /// The commit the tag named when the build was submitted: with the rest, what identifies identical
    /// builds (empty in records from before it was recorded).
    #[serde(default)]
    pub commit: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
}

/// Where a component's source is known from: its latest submission (`artifacts_sources` bucket, keyed by
/// component). Lets an absent component be built on request, and a push rebuild what came from a
/// repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentSource {
    pub component: ComponentName,
    /// As submitted (it may carry credentials: never shown).
    pub url: String,
    /// The key that recorded this source, and its component patterns: builds that nobody asked for
    /// directly (a push, a lookup's dependency) run with these rights.
    #[serde(default)]
    pub api_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component_patterns: Option<Vec<String>>,
}

/// The answer to `<prefix>.component.archive`: the tarball is fetched in chunks by requesting `transfer`
/// (with an empty payload) again and again; each reply is the next chunk, and the last one carries the
/// header `Artifacts-Archive-End: <digest>` (its payload may be empty). A transfer idle for 30 seconds
/// ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveTransfer {
    pub status: ComponentLookupStatus,
    pub error_message: Option<String>,
    /// `sha256:<hex>` of the whole `.tar.gz`: check it when the transfer ends.
    pub digest: String,
    pub size: u64,
    pub build_id: BuildId,
    pub built_at: Timestamp,
    /// The subject to request each next chunk on.
    pub transfer: String,
}

/// A dependency as it went into a build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DependencyUsed {
    pub component: ComponentName,
    pub tag: TagName,
    /// `sha256:<hex>` of the tarball unpacked under `/deps/<component>/`.
    pub digest: String,
    pub build_id: BuildId,
}

/// Encodes everything but RFC 3986's unreserved characters, for a path segment.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A stored component, kept in the `artifacts_components` bucket: enough to say exactly what went into
/// the artifact. It is also the `result` of a successful component build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentRecord {
    pub component: ComponentName,
    pub tag: TagName,
    pub architecture: Architecture,
    /// The git URL it was built from, credentials removed.
    pub url: String,
    /// The commit the tag pointed at.
    pub commit: String,
    /// The image the build command ran in.
    pub builder_image: String,
    pub dependencies: Vec<DependencyUsed>,
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
    /// The build secrets its `artifact.toml` listed, with a keyed fingerprint of each value the build
    /// read (never the value): a later submission of the same commit builds anew when one has changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretInput>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ComponentLookupStatus {
    Found,
    Building,
    NotFound,
    /// Absent, and its last build failed: a lookup does not build it again (a `POST` does).
    Failed,
}

/// The answer to a component lookup. Over NATS, `bucket` and `object` name the tarball in the object
/// store; over HTTP, `component` is the URL to download it from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentLookupReply {
    pub status: ComponentLookupStatus,
    pub error_message: Option<String>,
    /// Download URL of the `.tar.gz` (over NATS: at `gateway.public_url`); the same as `downloadUrl`,
    /// under the name the design page gives it.
    pub component: Option<String>,
    /// Download URL of the `.tar.gz`.
    #[serde(default)]
    pub download_url: Option<String>,
    pub digest: Option<String>,
    pub size: Option<u64>,
    pub build_id: Option<BuildId>,
    pub built_at: Option<Timestamp>,
    /// The source commit the stored archive was built from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// While building: `/api/v1/builds/{buildId}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_url: Option<String>,
    /// While building: `/api/v1/builds/{buildId}/logs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs_url: Option<String>,
}

impl ComponentLookupReply {
    /// `base_url` is where the gateway is reached, e.g. `http://127.0.0.1:8080`.
    pub fn found(query: &ComponentQuery, record: ComponentRecord, base_url: &str) -> Self {
        Self {
            status: ComponentLookupStatus::Found,
            error_message: None,
            component: Some(query.download_url(base_url)),
            download_url: Some(query.download_url(base_url)),
            digest: Some(record.digest),
            size: Some(record.size),
            build_id: Some(record.build_id),
            built_at: Some(record.built_at),
            commit: Some(record.commit),
            bucket: Some(record.bucket),
            object: Some(record.object),
            status_url: None,
            logs_url: None,
        }
    }

    /// The answer for an absent component whose last build failed.
    pub fn failed(accepted: BuildAccepted) -> Self {
        Self {
            status: ComponentLookupStatus::Failed,
            error_message: accepted.error_message.clone(),
            ..Self::building(accepted)
        }
    }

    pub fn building(accepted: BuildAccepted) -> Self {
        Self {
            status: ComponentLookupStatus::Building,
            error_message: None,
            component: None,
            download_url: None,
            digest: None,
            size: None,
            build_id: Some(accepted.build_id),
            built_at: None,
            commit: None,
            bucket: None,
            object: None,
            status_url: Some(accepted.status_url),
            logs_url: Some(accepted.logs_url),
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
            download_url: None,
            digest: None,
            size: None,
            build_id: None,
            built_at: None,
            commit: None,
            bucket: None,
            object: None,
            status_url: None,
            logs_url: None,
        }
    }
}
