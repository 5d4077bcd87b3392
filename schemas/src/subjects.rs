//! NATS subjects of the contract, all under a configurable prefix (default `artifacts`).
//!
//! Request/reply subjects are served by NATS micro services (`$SRV.PING`, `$SRV.INFO`, `$SRV.STATS`), so
//! `nats micro ls` lists who answers them. Work itself travels on JetStream subjects (`<prefix>.jobs.>`,
//! `<prefix>.git.push`), where it survives a crashed worker or a restarted server.

use crate::messages::build::{BuildId, BuildKind};
use crate::messages::keys::Scope;
use crate::names::Architecture;

/// The request/reply endpoints of the contract. Each is answered by exactly one function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ImageBuild,
    ImageGet,
    ComponentBuild,
    ComponentGet,
    /// `<prefix>.component.archive`: a component's tarball, in chunks, for NATS clients.
    ComponentArchive,
    BuildGet,
    /// `<prefix>.build.list`: the history behind `GET /builds` (not in the contract's table, but public).
    BuildList,
    /// `<prefix>.git.push`: a push event, checked and stored in JetStream.
    GitPush,
    BuildCancel,
    BuildPin,
    ImageDelete,
    ComponentDelete,
    CatalogImages,
    CatalogComponents,
    /// `<prefix>.gc.run`: a collection now (admin).
    GcRun,
    /// `<prefix>.secret.put`, `.list`, `.delete`: build secrets (admin; values go in, never out).
    SecretPut,
    SecretList,
    SecretDelete,
    /// `<prefix>.provenance.key`: the public key that verifies provenance (any key).
    ProvenanceKey,
    /// `<prefix>.build.provenance`, `.sbom`: a successful build's signed provenance and SBOM.
    BuildProvenance,
    BuildSbom,
}

impl Endpoint {
    /// The subject below the prefix, e.g. `image.get`.
    pub fn suffix(self) -> &'static str {
        match self {
            Self::ImageBuild => "image.build",
            Self::ImageGet => "image.get",
            Self::ComponentBuild => "component.build",
            Self::ComponentGet => "component.get",
            Self::ComponentArchive => "component.archive",
            Self::BuildGet => "build.get",
            Self::BuildList => "build.list",
            Self::GitPush => "git.push",
            Self::BuildCancel => "build.cancel",
            Self::BuildPin => "build.pin",
            Self::ImageDelete => "image.delete",
            Self::ComponentDelete => "component.delete",
            Self::CatalogImages => "catalog.images",
            Self::CatalogComponents => "catalog.components",
            Self::GcRun => "gc.run",
            Self::SecretPut => "secret.put",
            Self::SecretList => "secret.list",
            Self::SecretDelete => "secret.delete",
            Self::ProvenanceKey => "provenance.key",
            Self::BuildProvenance => "build.provenance",
            Self::BuildSbom => "build.sbom",
        }
    }

    /// The endpoint's name in the micro service's `$SRV.INFO` and `$SRV.STATS`.
    pub fn name(self) -> &'static str {
        match self {
            Self::ImageBuild => "image-build",
            Self::ImageGet => "image-get",
            Self::ComponentBuild => "component-build",
            Self::ComponentGet => "component-get",
            Self::ComponentArchive => "component-archive",
            Self::BuildGet => "build-get",
            Self::BuildList => "build-list",
            Self::GitPush => "git-push",
            Self::BuildCancel => "build-cancel",
            Self::BuildPin => "build-pin",
            Self::ImageDelete => "image-delete",
            Self::ComponentDelete => "component-delete",
            Self::CatalogImages => "catalog-images",
            Self::CatalogComponents => "catalog-components",
            Self::GcRun => "gc-run",
            Self::SecretPut => "secret-put",
            Self::SecretList => "secret-list",
            Self::SecretDelete => "secret-delete",
            Self::ProvenanceKey => "provenance-key",
            Self::BuildProvenance => "build-provenance",
            Self::BuildSbom => "build-sbom",
        }
    }

    /// The scope a key needs to use the endpoint at all (component patterns are checked by each handler).
    pub fn scope(self) -> Scope {
        match self {
            Self::ImageGet
            | Self::ComponentGet
            | Self::ComponentArchive
            | Self::BuildGet
            | Self::BuildList
            | Self::CatalogImages
            | Self::CatalogComponents
            | Self::ProvenanceKey
            | Self::BuildProvenance
            | Self::BuildSbom => Scope::Read,
            Self::ImageBuild
            | Self::ComponentBuild
            | Self::GitPush
            | Self::BuildCancel
            | Self::BuildPin
            | Self::ImageDelete
            | Self::ComponentDelete => Scope::Build,
            Self::GcRun | Self::SecretPut | Self::SecretList | Self::SecretDelete => Scope::Admin,
        }
    }

    /// Every endpoint, for permission lists.
    pub const ALL: [Endpoint; 21] = [
        Self::ImageBuild,
        Self::ImageGet,
        Self::ComponentBuild,
        Self::ComponentGet,
        Self::ComponentArchive,
        Self::BuildGet,
        Self::BuildList,
        Self::GitPush,
        Self::BuildCancel,
        Self::BuildPin,
        Self::ImageDelete,
        Self::ComponentDelete,
        Self::CatalogImages,
        Self::CatalogComponents,
        Self::GcRun,
        Self::SecretPut,
        Self::SecretList,
        Self::SecretDelete,
        Self::ProvenanceKey,
        Self::BuildProvenance,
        Self::BuildSbom,
    ];
}

/// Subject names under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn endpoint(&self, endpoint: Endpoint) -> String {
        format!("{}.{}", self.prefix, endpoint.suffix())
    }

    /// Push events as clients send them (request/reply: the git trigger checks them first).
    pub fn git_push(&self) -> String {
        self.endpoint(Endpoint::GitPush)
    }

    /// Push events once checked: the JetStream subject the git trigger consumes. Only the stack publishes
    /// here, so nothing reaches the stream without its sender's key being checked.
    pub fn git_push_accepted(&self) -> String {
        format!("{}.git.push.accepted", self.prefix)
    }

    /// A component a push rebuilt has been built; its dependents are next (JetStream, stack only).
    pub fn git_push_dependents(&self) -> String {
        format!("{}.git.push.dependents", self.prefix)
    }

    /// Builds a push asks for, from the git trigger to the build function of `kind` (request/reply,
    /// stack only: no client account imports it, so no key can submit a build as a push).
    pub fn triggered_builds(&self, kind: BuildKind) -> String {
        format!("{}.triggered.{}", self.prefix, kind.as_str())
    }

    /// Where jobs go that failed at every allowed delivery (JetStream, stack only), by the job's subject.
    pub fn dead_letter(&self, job_subject: &str) -> String {
        format!(
            "{}.dead.{}",
            self.prefix,
            job_subject.strip_prefix(&format!("{}.", self.prefix)).unwrap_or(job_subject)
        )
    }

    pub fn dead_letters_wildcard(&self) -> String {
        format!("{}.dead.>", self.prefix)
    }

    /// One archive download over NATS: the requester asks this subject for each next chunk. The id is
    /// random and travels only in the reply to an authorized request, so it is the download's capability.
    pub fn archive_transfer(&self, transfer_id: &str) -> String {
        format!("{}.archive.transfer.{transfer_id}", self.prefix)
    }

    pub fn archive_transfers_wildcard(&self) -> String {
        format!("{}.archive.transfer.>", self.prefix)
    }

    /// Build jobs of one kind for one architecture (JetStream work queue), e.g.
    /// `artifacts.jobs.image.amd64`.
    pub fn jobs(&self, kind: BuildKind, architecture: Architecture) -> String {
        format!("{}.jobs.{}.{}", self.prefix, kind.as_str(), architecture.short())
    }

    /// A build's log lines (JetStream, retained per build).
    pub fn build_log(&self, build_id: &BuildId) -> String {
        format!("{}.logs.{}", self.prefix, build_id)
    }

    pub fn logs_wildcard(&self) -> String {
        format!("{}.logs.>", self.prefix)
    }

    /// Scrapes of every process's metrics (plain NATS request, one reply per process; stack only).
    pub fn metrics(&self) -> String {
        format!("{}.metrics", self.prefix)
    }

    /// The build record, published at each change of state (plain NATS, for watchers).
    pub fn build_events(&self, build_id: &BuildId) -> String {
        format!("{}.events.build.{}", self.prefix, build_id)
    }

    pub fn build_events_wildcard(&self) -> String {
        format!("{}.events.build.*", self.prefix)
    }

    /// Everything the durable build work queue holds.
    pub fn jobs_wildcard(&self) -> String {
        format!("{}.jobs.>", self.prefix)
    }
}

impl Default for Subjects {
    fn default() -> Self {
        Self::new("artifacts")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_follow_the_contract() {
        let s = Subjects::default();
        assert_eq!(s.endpoint(Endpoint::ImageBuild), "artifacts.image.build");
        assert_eq!(s.endpoint(Endpoint::ImageGet), "artifacts.image.get");
        assert_eq!(s.endpoint(Endpoint::ComponentBuild), "artifacts.component.build");
        assert_eq!(s.endpoint(Endpoint::ComponentGet), "artifacts.component.get");
        assert_eq!(s.endpoint(Endpoint::BuildGet), "artifacts.build.get");
        assert_eq!(s.git_push(), "artifacts.git.push");
        assert_eq!(s.endpoint(Endpoint::SecretPut), "artifacts.secret.put");
        assert_eq!(s.endpoint(Endpoint::SecretList), "artifacts.secret.list");
        assert_eq!(s.endpoint(Endpoint::SecretDelete), "artifacts.secret.delete");
        assert_eq!(s.endpoint(Endpoint::ProvenanceKey), "artifacts.provenance.key");
        assert_eq!(s.endpoint(Endpoint::BuildProvenance), "artifacts.build.provenance");
        assert_eq!(s.endpoint(Endpoint::BuildSbom), "artifacts.build.sbom");
        assert_eq!(Subjects::new("acme").endpoint(Endpoint::ImageGet), "acme.image.get");
    }
}
