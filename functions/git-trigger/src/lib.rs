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
//! Every triggered build records its trigger (forge, delivery id, pusher, commit) in its request, and runs
//! with the component patterns of the key that recorded the component's source.
//!
//! Push events arrive checked: from the gateway's webhooks (signature verified), or over NATS through the
//! `<prefix>.git.push` endpoint ([`accept`]), which needs a key with the `build` scope.

mod accept;
mod trigger;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use artifacts_runtime::auth::Authenticator;
use artifacts_runtime::jobs::{self, WorkerSpec};
use artifacts_runtime::nats::ResourceNames;
use artifacts_runtime::service::{self, ServiceSpec};
use artifacts_runtime::{Nats, Settings};
use artifacts_schemas::{Endpoint, GitPushEvent};

/// Pushes handled at once.
const SLOTS: usize = 4;

pub async fn run(settings: Settings, nats: Nats, shutdown: CancellationToken) -> anyhow::Result<()> {
    let spec = WorkerSpec {
        stream: ResourceNames::new(&nats.subjects).push_stream(),
        consumer: "git-trigger".into(),
        subject: nats.subjects.git_push_accepted(),
        slots: SLOTS,
        ack_wait: Duration::from_secs(settings.build.ack_wait_secs),
    };
    let authenticator = Authenticator::start(settings.admin_key(), &nats, shutdown.clone());
    let accept_nats = nats.clone();
    let pushes = service::serve(
        &nats,
        ServiceSpec {
            name: service::GIT_TRIGGER_SERVICE,
            description: "Accepts push events and rebuilds what was built from the pushed repository",
            endpoints: vec![Endpoint::GitPush],
            metadata: Default::default(),
        },
        authenticator,
        move |request| {
            let nats = accept_nats.clone();
            async move { accept::answer(&nats, &request).await }
        },
        shutdown.clone(),
    );
    let (handler_nats, settings) = (nats.clone(), Arc::new(settings));
    let handle = move |event: GitPushEvent| {
        let (nats, settings) = (handler_nats.clone(), Arc::clone(&settings));
        async move { trigger::handle(&nats, &settings, event).await }
    };
    tokio::try_join!(pushes, jobs::work(&nats, spec, handle, shutdown))?;
    Ok(())
}
