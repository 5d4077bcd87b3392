//! The `build-image` function: accepts `<prefix>.image.build` submissions ([`submit`]) and builds the
//! queued jobs for the architectures its Docker engine can build ([`build`]).
//!
//! Submissions and builds are separate on purpose: a submission is answered as soon as its job is in the
//! JetStream work queue, and any worker for that architecture, on any host, builds it.

pub mod build;
pub mod submit;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use artifacts_runtime::attempt::attempt;
use artifacts_runtime::jobs::{self, WorkerSpec};
use artifacts_runtime::service::{self, ServiceSpec};
use artifacts_runtime::{Nats, Settings};
use artifacts_schemas::{Endpoint, ImageJob};

use crate::build::ImageBuild;

pub const SERVICE_NAME: &str = "artifacts-build-image";

/// `$SRV.INFO` metadata key listing the platforms a worker builds, comma-separated.
pub const ARCHITECTURES_METADATA: &str = "architectures";

pub async fn run(settings: Settings, nats: Nats, shutdown: CancellationToken) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    let architectures = settings.build_architectures();
    let platforms: Vec<&str> = architectures.iter().map(|a| a.platform()).collect();
    let spec = ServiceSpec {
        name: SERVICE_NAME,
        description: "Accepts image builds and builds them with the Docker engine",
        endpoints: &[Endpoint::ImageBuild],
        metadata: HashMap::from([(ARCHITECTURES_METADATA.to_owned(), platforms.join(","))]),
    };
    let (submit_nats, submit_settings) = (nats.clone(), Arc::clone(&settings));
    let submissions = service::serve(
        &nats,
        spec,
        move |_, message| {
            let (nats, settings) = (submit_nats.clone(), Arc::clone(&submit_settings));
            async move { submit::answer(&nats, &settings, &message).await }
        },
        shutdown.clone(),
    );
    let workers = architectures.into_iter().map(|architecture| {
        let (nats, settings) = (nats.clone(), Arc::clone(&settings));
        let spec = WorkerSpec {
            consumer: format!("image-{}", architecture.short()),
            subject: nats.subjects.image_jobs(architecture),
            slots: settings.build.slots,
            ack_wait: Duration::from_secs(settings.build.ack_wait_secs),
        };
        let handler_nats = nats.clone();
        let shutdown = shutdown.clone();
        async move {
            jobs::work(
                &nats,
                spec,
                move |job: ImageJob| {
                    let build = ImageBuild { nats: handler_nats.clone(), settings: Arc::clone(&settings), job };
                    async move { attempt(&build.nats, &build.settings.build, &build).await }
                },
                shutdown,
            )
            .await
        }
    });
    tokio::try_join!(submissions, futures::future::try_join_all(workers))?;
    Ok(())
}
