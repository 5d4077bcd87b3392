//! The `gc` function: what users delete and what the retention policy lets go.
//!
//! - `<prefix>.build.cancel`: a queued or running build becomes `cancelled` (its worker stops it and
//!   removes its container; its job is acknowledged when taken). A build that already ended is a 409.
//! - `<prefix>.build.pin`: a pinned build's artifact is never collected.
//! - `<prefix>.image.delete`, `<prefix>.component.delete`: the target answers 404 at once; registry
//!   manifests and archives go at once (components) or at the next collection (images). A component that a
//!   stored component depends on is a 409 naming it.
//! - `<prefix>.gc.run` (admin) and every `retention.gc_interval_secs`: [`collect`].
//! - `<prefix>.secret.put`, `.list`, `.delete` (admin): build secrets, encrypted at rest with the key in
//!   `secrets.key_file` (`artifacts_runtime::secrets`).
//!
//! Each answers with the same authorization as builds: the `build` scope and the component's patterns.

mod collect;
mod manage;
mod secrets;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use artifacts_runtime::auth::Authenticator;
use artifacts_runtime::service::{self, Reply, Request, ServiceSpec};
use artifacts_runtime::{Nats, Settings};
use artifacts_schemas::messages::manage::GcRequest;
use artifacts_schemas::{parse_json, Endpoint};

pub use collect::collect;

/// The process's work (boxed here: see [`artifacts_runtime::Work`]).
pub fn run(settings: Settings, nats: Nats, shutdown: CancellationToken) -> artifacts_runtime::Work {
    Box::pin(serve(settings, nats, shutdown))
}

async fn serve(settings: Settings, nats: Nats, shutdown: CancellationToken) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    let authenticator = Authenticator::start(&settings, &nats, shutdown.clone());
    let (handler_nats, handler_settings) = (nats.clone(), Arc::clone(&settings));
    let serving = service::serve(
        &nats,
        ServiceSpec {
            name: service::GC_SERVICE,
            description:
                "Cancels, pins and deletes builds and artifacts; collects what retention lets go; keeps build secrets",
            endpoints: vec![
                Endpoint::BuildCancel,
                Endpoint::BuildPin,
                Endpoint::ImageDelete,
                Endpoint::ComponentDelete,
                Endpoint::GcRun,
                Endpoint::SecretPut,
                Endpoint::SecretList,
                Endpoint::SecretDelete,
            ],
            metadata: Default::default(),
        },
        authenticator,
        move |request| {
            let (nats, settings) = (handler_nats.clone(), Arc::clone(&handler_settings));
            async move { answer(&nats, &settings, &request).await }
        },
        shutdown.clone(),
    );
    tokio::try_join!(serving, periodically(&nats, &settings, shutdown))?;
    Ok(())
}

async fn answer(nats: &Nats, settings: &Settings, request: &Request) -> Reply {
    let payload = &request.message.payload;
    let answered = match request.endpoint {
        Endpoint::BuildCancel => manage::cancel(nats, &request.caller, payload).await,
        Endpoint::BuildPin => manage::pin(nats, &request.caller, payload).await,
        Endpoint::ImageDelete => manage::delete_image(nats, settings, &request.caller, payload).await,
        Endpoint::ComponentDelete => manage::delete_component(nats, &request.caller, payload).await,
        Endpoint::GcRun => match parse_json::<GcRequest>(if payload.is_empty() { b"{}" } else { payload }) {
            // Boxed: the collection's state is large, the service's handler future stays small.
            Ok(asked) => Box::pin(collect(nats, settings, asked.dry_run)).await.map(|report| Reply::ok(&report)),
            Err(err) => Err(err),
        },
        Endpoint::SecretPut => secrets::put(nats, &request.caller, payload).await,
        Endpoint::SecretList => secrets::list(nats, &request.caller).await,
        Endpoint::SecretDelete => secrets::delete(nats, &request.caller, payload).await,
        other => Err(artifacts_schemas::RequestError::internal(format!("{other:?} is not served here"))),
    };
    answered.unwrap_or_else(Reply::from)
}

/// Collects every `retention.gc_interval_secs` until `shutdown` (never when it is 0).
async fn periodically(nats: &Nats, settings: &Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let interval = settings.retention.gc_interval_secs;
    if interval == 0 {
        shutdown.cancelled().await;
        return Ok(());
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(interval)) => {}
        }
        match Box::pin(collect(nats, settings, false)).await {
            Ok(report) => tracing::info!(removed = ?report.removed, "collected"),
            Err(err) => tracing::warn!(%err, "the collection stopped; the next one finishes it"),
        }
    }
}
