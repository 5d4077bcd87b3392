//! Images: `POST /images` / `<prefix>.image.build` submit a Dockerfile; `GET /images` /
//! `<prefix>.image.get` find the latest successful build of a component's branch for an architecture.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::build::{BuildId, Timestamp};
use super::push::Trigger;
use super::secrets::SecretInput;
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

/// The largest Dockerfile accepted.
pub const MAX_DOCKERFILE_BYTES: usize = 1024 * 1024;

/// A Dockerfile to build: `POST /images`, `<prefix>.image.build`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "dockerfile": "FROM busybox\nRUN echo built > /built\nCMD [\"cat\", \"/built\"]\n",
    "component": "hello",
    "branch": "main",
    "architecture": "amd64"
}))]
pub struct ImageBuildRequest {
    /// The Dockerfile's text.
    pub dockerfile: String,
    pub component: ComponentName,
    pub branch: BranchName,
    pub architecture: Architecture,
    /// `--build-arg` values.
    #[serde(default)]
    pub build_args: BTreeMap<String, String>,
    /// A build context (tar or tar.gz) already uploaded to the `artifacts_uploads` object store: its
    /// object name. The gateway uploads the multipart `context` part there; a context may be used only by
    /// the key that uploaded it or by keys building the component it was uploaded for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// The stage to build (`docker build --target`): a stage name of the Dockerfile (`[a-z][a-z0-9._-]*`,
    /// at most 128 characters); stages it does not need are not built. Default: the last stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Build again even when the same Dockerfile, context and arguments were built successfully before
    /// (default: answer with that build).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[schema(default = false, example = false)]
    pub force: bool,
}

/// What a build-image worker needs to build (JetStream, `<prefix>.jobs.image.<arch>`): sources are
/// referenced by content-addressed object names in `artifacts_uploads`, so a job stays a few hundred bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageJob {
    pub build_id: BuildId,
    pub component: ComponentName,
    pub branch: BranchName,
    pub architecture: Architecture,
    /// Object name of the Dockerfile, `dockerfiles/<sha256 hex>`.
    pub dockerfile: String,
    /// Object name of the build context, `contexts/<sha256 hex>`.
    pub context: Option<String>,
    pub build_args: BTreeMap<String, String>,
    /// The stage to build, if not the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// What an image build's record shows of its submission: enough to tell exactly what was built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageBuildSummary {
    pub component: ComponentName,
    pub branch: BranchName,
    pub architecture: Architecture,
    /// `sha256:<hex>` of the Dockerfile.
    pub dockerfile_digest: String,
    /// `sha256:<hex>` of the uploaded context, if any.
    pub context_digest: Option<String>,
    pub build_args: BTreeMap<String, String>,
    /// The stage built, if not the last (part of what makes builds identical).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The build secrets the Dockerfile mounts (`RUN --mount=type=secret`) that the component may use,
    /// by name, with a keyed fingerprint of each value at submission (part of what makes builds
    /// identical; never the value). Every secret the component may use when the Dockerfile names its
    /// mounts with variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
}

/// The `result` of a successful image build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageBuildResult {
    /// `registry/repository:architecture`.
    pub image_name: String,
    /// The tag unique to this build, `registry/repository:architecture-buildId`.
    pub immutable_name: String,
    /// `sha256:<hex>` of the pushed manifest.
    pub digest: String,
    pub pull_command: String,
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

/// `docker pull registry/repository@sha256:...`: pulls exactly that build even after the tag moves.
pub fn pull_command(image_name: &str, digest: &str) -> String {
    let repository = image_name.rsplit_once(':').filter(|(_, tag)| !tag.contains('/')).map_or(image_name, |(r, _)| r);
    format!("docker pull {repository}@{digest}")
}

/// What a 413 for a body over `gateway.max_body_bytes` says, from the gateway and from the client that
/// refuses before uploading: the limit, and the size when it is known (`None`: a body sent without a
/// length, cut off at the limit).
pub fn body_too_large(size: Option<u64>, limit: u64) -> String {
    let size = match size {
        Some(size) => format!("is {size} bytes ({}), larger than", human_bytes(size)),
        None => "is larger than".to_owned(),
    };
    format!(
        "the request body {size} the {limit} bytes ({}) this gateway accepts (gateway.max_body_bytes): \
         leave files out of the context with .dockerignore, or raise the setting",
        human_bytes(limit)
    )
}

/// `bytes` in binary units, e.g. `100.0 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `echo "$ARTIFACTS_KEY" | docker login <registry> --username artifacts --password-stdin`.
pub fn login_command(image_name: &str) -> String {
    let registry = image_name.split('/').next().unwrap_or(image_name);
    format!("echo \"$ARTIFACTS_KEY\" | docker login {registry} --username artifacts --password-stdin")
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
    /// A command that pulls exactly this build, by digest.
    pub pull_command: Option<String>,
    /// What to run once before pulling from a registry behind API keys: the key goes on standard input,
    /// as the password (any user name).
    pub login_command: Option<String>,
    pub digest: Option<String>,
    pub build_id: Option<BuildId>,
    pub built_at: Option<Timestamp>,
}

impl ImageLookupReply {
    pub fn found(record: ImageRecord) -> Self {
        Self {
            status: LookupStatus::Found,
            error_message: None,
            pull_command: Some(pull_command(&record.image_name, &record.digest)),
            login_command: Some(login_command(&record.image_name)),
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
            login_command: None,
            digest: None,
            build_id: None,
            built_at: None,
        }
    }
}
