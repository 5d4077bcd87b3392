//! The `build-image` function: accepts `<prefix>.image.build` submissions ([`submit`]) and builds the
//! queued jobs for the architectures its Docker engine can build ([`build`]), on the shared
//! `artifacts_engine::builder` frame.

pub mod attest;
pub mod build;
pub mod buildkit;
pub mod dockerfile;
pub mod submit;

use tokio_util::sync::CancellationToken;

use artifacts_engine::builder::{self, BuilderSpec};
use artifacts_runtime::{Nats, Settings};
use artifacts_schemas::{BuildKind, Endpoint, ImageJob};

use crate::build::ImageBuild;

pub use artifacts_runtime::service::BUILD_IMAGE_SERVICE as SERVICE_NAME;

/// The process's work (boxed here: see [`artifacts_runtime::Work`]).
pub fn run(settings: Settings, nats: Nats, shutdown: CancellationToken) -> artifacts_runtime::Work {
    Box::pin(serve(settings, nats, shutdown))
}

async fn serve(settings: Settings, nats: Nats, shutdown: CancellationToken) -> anyhow::Result<()> {
    let spec = BuilderSpec {
        service: SERVICE_NAME,
        description: "Accepts image builds and builds them with the Docker engine",
        kind: BuildKind::Image,
        endpoint: Endpoint::ImageBuild,
    };
    builder::run(
        settings,
        nats,
        shutdown,
        spec,
        |nats, settings, request| async move { submit::answer(&nats, &settings, &request).await },
        |nats, settings, message| async move { submit::answer_triggered(&nats, &settings, &message).await },
        |nats, settings, job: ImageJob| ImageBuild { nats, settings, job },
    )
    .await
}
