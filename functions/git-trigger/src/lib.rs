//! The `git-trigger` function: consumes push events (`<prefix>.git.push`, from the gateway's webhooks or
//! straight from any CI) durably, and rebuilds what the service built from the pushed repository.
//!
//! - A tag push builds each component tracked from that repository at the new tag, for every
//!   architecture it was built for before.
//! - A branch push rebuilds the components whose tag is that branch, and the images registered for that
//!   component and branch (from their last Dockerfile and context).
//! - Components that depend on a rebuilt component are rebuilt after it, transitively, each once.
//! - A deleted ref builds nothing; the same (repository, ref, commit) never builds twice; a newer push
//!   for the same target cancels the older build if it is still queued.
//!
//! Every triggered build records its trigger (forge, delivery id, pusher, commit) in its request.

mod trigger;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use artifacts_runtime::jobs::{self, WorkerSpec};
use artifacts_runtime::nats::ResourceNames;
use artifacts_runtime::{Nats, Settings};
use artifacts_schemas::GitPushEvent;

/// Pushes handled at once.
const SLOTS: usize = 4;

pub async fn run(settings: Settings, nats: Nats, shutdown: CancellationToken) -> anyhow::Result<()> {
    let spec = WorkerSpec {
        stream: ResourceNames::new(&nats.subjects).push_stream(),
        consumer: "git-trigger".into(),
        subject: nats.subjects.git_push(),
        slots: SLOTS,
        ack_wait: Duration::from_secs(settings.build.ack_wait_secs),
    };
    let (handler_nats, settings) = (nats.clone(), Arc::new(settings));
    let handle = move |event: GitPushEvent| {
        let (nats, settings) = (handler_nats.clone(), Arc::clone(&settings));
        async move { trigger::handle(&nats, &settings, event).await }
    };
    jobs::work(&nats, spec, handle, shutdown).await
}
