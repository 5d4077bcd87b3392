//! What every build function is: a NATS micro service that accepts submissions, and workers that take
//! the queued jobs of its kind for each architecture its Docker engine builds.
//!
//! Submissions and builds are separate on purpose: a submission is answered as soon as its job is in the
//! JetStream work queue, and any worker for that architecture, on any host, builds it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use async_nats::Message;
use futures::StreamExt;

use artifacts_schemas::{Architecture, BuildKind, Endpoint, RequestError};

use artifacts_runtime::auth::Authenticator;
use artifacts_runtime::configuration::native_architecture;
use artifacts_runtime::jobs::{self, Delivery, WorkerSpec};
use artifacts_runtime::nats::unavailable;
use artifacts_runtime::service::{self, Reply, Request, ServiceSpec};
use artifacts_runtime::{Nats, Settings};

use crate::attempt::{attempt, Build};
use crate::leftovers;

/// `$SRV.INFO` metadata key listing the platforms a build function builds, comma-separated.
pub const ARCHITECTURES_METADATA: &str = "architectures";

/// `$SRV.INFO` metadata key listing those of them it builds under QEMU emulation.
pub const EMULATED_METADATA: &str = "emulated";

pub struct BuilderSpec {
    pub service: &'static str,
    pub description: &'static str,
    pub kind: BuildKind,
    pub endpoint: Endpoint,
}

/// Runs the submission endpoint, the stack-only subject of the builds pushes ask for
/// ([`Subjects::triggered_builds`](artifacts_schemas::Subjects::triggered_builds)), and one worker per
/// architecture, until `shutdown`.
#[allow(clippy::too_many_arguments)]
pub async fn run<J, B, S, SF, T, TF, M>(
    settings: Settings,
    nats: Nats,
    shutdown: CancellationToken,
    spec: BuilderSpec,
    submit: S,
    submit_triggered: T,
    make_build: M,
) -> anyhow::Result<()>
where
    J: DeserializeOwned + Send + 'static,
    B: Build + 'static,
    S: Fn(Nats, Arc<Settings>, Request) -> SF + Send + Sync + 'static,
    SF: Future<Output = Reply> + Send + 'static,
    T: Fn(Nats, Arc<Settings>, Message) -> TF + Send + Sync + 'static,
    TF: Future<Output = Reply> + Send + 'static,
    M: Fn(Nats, Arc<Settings>, J) -> B + Clone + Send + Sync + 'static,
{
    let settings = Arc::new(settings);
    let architectures = settings.build_architectures();
    let platforms: Vec<&str> = architectures.iter().map(|a| a.platform()).collect();
    let emulated: Vec<&str> =
        architectures.iter().filter(|a| **a != native_architecture()).map(|a| a.platform()).collect();
    tracing::info!(
        native = native_architecture().platform(),
        emulated = %emulated.join(","),
        "building {}",
        platforms.join(", ")
    );
    let service_spec = ServiceSpec {
        name: spec.service,
        description: spec.description,
        endpoints: vec![spec.endpoint],
        metadata: HashMap::from([
            (ARCHITECTURES_METADATA.to_owned(), platforms.join(",")),
            (EMULATED_METADATA.to_owned(), emulated.join(",")),
        ]),
    };
    let (submit_nats, submit_settings) = (nats.clone(), Arc::clone(&settings));
    let authenticator = Authenticator::start(&settings, &nats, shutdown.clone());
    let submissions = service::serve(
        &nats,
        service_spec,
        authenticator,
        move |request| submit(submit_nats.clone(), Arc::clone(&submit_settings), request),
        shutdown.clone(),
    );
    let (triggered_nats, triggered_settings) = (nats.clone(), Arc::clone(&settings));
    let triggered = service::serve_stack_only(
        &nats,
        nats.subjects.triggered_builds(spec.kind),
        move |message| submit_triggered(triggered_nats.clone(), Arc::clone(&triggered_settings), message),
        shutdown.clone(),
    );
    leftovers::sweep(&nats, &settings).await;
    let workers = architectures.into_iter().map(|architecture| {
        let worker = WorkerSpec {
            stream: nats.store.streams().jobs_stream(),
            consumer: format!("{}-{}", spec.kind.as_str(), architecture.short()),
            subject: nats.subjects.jobs(spec.kind, architecture),
            slots: settings.build.slots,
            ack_wait: Duration::from_secs(settings.build.ack_wait_secs),
            dead_letter: None,
        };
        let (nats, settings, make_build, shutdown) =
            (nats.clone(), Arc::clone(&settings), make_build.clone(), shutdown.clone());
        async move {
            let (handler_nats, stopping) = (nats.clone(), shutdown.clone());
            let handle = move |job: J, delivery: Delivery| {
                let build = make_build(handler_nats.clone(), Arc::clone(&settings), job);
                let (nats, settings, stopping) = (handler_nats.clone(), Arc::clone(&settings), stopping.clone());
                async move { attempt(&nats, &settings, &build, delivery, &stopping).await }
            };
            jobs::work(&nats, worker, handle, shutdown).await
        }
    });
    tokio::try_join!(submissions, triggered, futures::future::try_join_all(workers))?;
    Ok(())
}

/// Refuses an architecture that no running worker builds, rather than queueing a build nobody takes.
pub async fn ensure_buildable(
    nats: &Nats,
    settings: &Settings,
    service: &str,
    architecture: Architecture,
) -> Result<(), RequestError> {
    if settings.build_architectures().contains(&architecture) {
        return Ok(());
    }
    let mut offered: Vec<String> = settings.build_architectures().iter().map(|a| a.platform().to_owned()).collect();
    let inbox = nats.client.new_inbox();
    let mut answers = nats.client.subscribe(inbox.clone()).await.map_err(unavailable)?;
    nats.client.publish_with_reply(format!("$SRV.INFO.{service}"), inbox, "".into()).await.map_err(unavailable)?;
    let deadline = tokio::time::sleep(Duration::from_millis(300));
    tokio::pin!(deadline);
    loop {
        let answer = tokio::select! {
            _ = &mut deadline => break,
            answer = answers.next() => match answer { Some(answer) => answer, None => break },
        };
        let info: serde_json::Value = serde_json::from_slice(&answer.payload).unwrap_or_default();
        let platforms = info["metadata"][ARCHITECTURES_METADATA].as_str().unwrap_or("");
        if platforms.split(',').any(|p| p == architecture.platform()) {
            return Ok(());
        }
        offered.extend(platforms.split(',').filter(|p| !p.is_empty()).map(str::to_owned));
    }
    offered.sort();
    offered.dedup();
    Err(RequestError::invalid(format!(
        "no build worker builds {architecture}: the workers running build {}",
        offered.join(", ")
    )))
}
