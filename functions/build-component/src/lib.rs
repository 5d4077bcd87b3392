//! The `build-component` function: accepts `<prefix>.component.build` submissions ([`submit`]) and builds
//! the queued jobs ([`build`]): a safe shallow clone ([`git`]), the repository's own instructions
//! ([`recipe`]), its dependencies, the builder image the key may use ([`builder_image`]), a locked-down
//! container ([`container`]), the output streamed as a reproducible `.tar.gz` into the object store
//! ([`output`]), and its signed provenance and SBOM ([`attest`]).

pub mod attest;
pub mod build;
pub mod builder_image;
pub mod container;
pub mod output;
pub mod recipe;
pub mod submit;

use tokio_util::sync::CancellationToken;

use artifacts_engine::builder::{self, BuilderSpec};
use artifacts_runtime::{Nats, Settings};
use artifacts_schemas::{BuildKind, ComponentJob, Endpoint};

use crate::build::ComponentBuild;

pub use artifacts_runtime::service::BUILD_COMPONENT_SERVICE as SERVICE_NAME;

/// The process's work (boxed here: see [`artifacts_runtime::Work`]).
pub fn run(settings: Settings, nats: Nats, shutdown: CancellationToken) -> artifacts_runtime::Work {
    Box::pin(serve(settings, nats, shutdown))
}

async fn serve(settings: Settings, nats: Nats, shutdown: CancellationToken) -> anyhow::Result<()> {
    let spec = BuilderSpec {
        service: SERVICE_NAME,
        description: "Accepts component builds, clones and builds them in containers, stores the artifacts",
        kind: BuildKind::Component,
        endpoint: Endpoint::ComponentBuild,
    };
    builder::run(
        settings,
        nats,
        shutdown,
        spec,
        |nats, settings, request| async move { submit::answer(&nats, &settings, &request).await },
        |nats, settings, message| async move { submit::answer_triggered(&nats, &settings, &message).await },
        |nats, settings, job: ComponentJob| ComponentBuild { nats, settings, job },
    )
    .await
}
