//! The contract between every part of artifact storage, in one place.
//!
//! - [`names`]: component, branch, tag and architecture types that can only hold valid values, and the
//!   image repository naming rule.
//! - [`subjects`]: the NATS subjects under the configurable prefix.
//! - [`messages`]: every request, reply, record and event, serialised as camelCase JSON.
//!
//! Clients in other languages use the JSON Schema files in `schemas/json/`, written by
//! `cargo run -p artifacts-schemas --bin export-json-schemas` from these types; a test fails when they drift.

pub mod json_schema;
pub mod messages;
pub mod names;
pub mod schema;
pub mod subjects;

pub use messages::build::{
    BuildId, BuildKind, BuildList, BuildListQuery, BuildQuery, BuildRecord, BuildResult, BuildStatus, BuildWork,
    RequestedBy, Timestamp,
};
pub use messages::component::{
    ArchiveTransfer, ComponentBuildRequest, ComponentBuildSummary, ComponentJob, ComponentLookupReply,
    ComponentLookupStatus, ComponentQuery, ComponentRecord, ComponentSource, DependencyUsed, RebuiltForPush,
};
pub use messages::image::{
    ImageBuildRequest, ImageBuildResult, ImageBuildSummary, ImageJob, ImageLookupReply, ImageQuery, ImageRecord,
    LookupStatus,
};
pub use messages::push::{normalize_repository, GitPushEvent, Trigger};
pub use messages::reply::{parse_json, ErrorReply, Failure, RequestError};
pub use messages::submission::{AcceptedStatus, BuildAccepted, TriggeredComponentBuild, TriggeredImageBuild};
pub use names::{Architecture, BranchName, ComponentName, GitUrl, ImageRepository, InvalidName, TagName, Username};
pub use subjects::{Endpoint, Subjects};
