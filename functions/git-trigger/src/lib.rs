//! The `git-trigger` function: consumes push events (`<prefix>.git.push`, from the gateway's webhooks or
//! straight from any CI) durably, and rebuilds what the service built from the pushed repository.
//!
//! - A tag push builds each component tracked from that repository at the new tag, for every
//!   architecture it was built for before.
//! - A branch push rebuilds the components whose tag is that branch, and the images registered for that
//!   component and branch (from their last Dockerfile and context).
//! - Components that depend on a rebuilt component are rebuilt after it, transitively, each once: a
//!   push's build that succeeds hands its dependents back here (`<prefix>.git.push.dependents`), so no
//!   handler waits for a build.
//! - A push or hand-over that cannot be handled (a build function or JetStream away) is delivered again,
//!   5 s later, then 10 s, 15 s, ...; one that fails at each of its ten deliveries (about four minutes)
//!   goes to the dead-letter stream
//!   (`<prefix>.dead.git.push.…`), is logged as an error and counted (`artifacts_jobs_dead_lettered_total`).
//! - A deleted ref builds nothing; the same (repository, ref, commit) never builds twice; a newer push
//!   for the same target cancels the older build if it is still queued.
//!
//! Every triggered build records its trigger (forge, delivery id, pusher, commit) in its request, and runs
//! with the component patterns of the key that recorded the component's source. The trigger decides
//! what a push builds; the build functions queue it, as they queue their own submissions: it sends each
//! build to `<prefix>.triggered.<kind>`, a subject only the stack can publish to, and links no function.
//!
//! Push events arrive checked: from the gateway's webhooks (signature verified), or over NATS through the
//! `<prefix>.git.push` endpoint ([`accept`]), which needs a key with the `build` scope.

mod accept;
mod trigger;

pub use trigger::{matching, Matched};

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use artifacts_runtime::auth::Authenticator;
use artifacts_runtime::jobs::{self, DeadLetter, Delivery, WorkerSpec};
use artifacts_runtime::service::{self, ServiceSpec};
use artifacts_runtime::{Nats, Settings};
use artifacts_schemas::{Endpoint, GitPushEvent, RebuiltForPush};

/// Pushes handled at once.
const SLOTS: usize = 4;

/// Deliveries of one push before it goes to the dead-letter stream: with the pauses of
/// [`trigger::retry_after`], about four minutes of a build function or JetStream being away.
const MAX_DELIVERIES: i64 = 10;

/// The process's work (boxed here: see [`artifacts_runtime::Work`]).
pub fn run(settings: Settings, nats: Nats, shutdown: CancellationToken) -> artifacts_runtime::Work {
    Box::pin(serve(settings, nats, shutdown))
}

async fn serve(settings: Settings, nats: Nats, shutdown: CancellationToken) -> anyhow::Result<()> {
    let consumer_of = |consumer: &str, subject: String| WorkerSpec {
        stream: nats.store.streams().push_stream(),
        consumer: consumer.into(),
        dead_letter: Some(DeadLetter { subject: nats.subjects.dead_letter(&subject), max_deliveries: MAX_DELIVERIES }),
        subject,
        slots: SLOTS,
        ack_wait: Duration::from_secs(settings.build.ack_wait_secs),
    };
    let pushes_spec = consumer_of("git-trigger", nats.subjects.git_push_accepted());
    let dependents_spec = consumer_of("git-trigger-dependents", nats.subjects.git_push_dependents());
    // Pushes find what they rebuild in the trigger index; records older than it are indexed first.
    nats.store.backfill_trigger_index().await?;
    let authenticator = Authenticator::start(&settings, &nats, shutdown.clone());
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
    let settings = Arc::new(settings);
    let (push_nats, push_settings) = (nats.clone(), Arc::clone(&settings));
    let handle_push = move |event: GitPushEvent, delivery: Delivery| {
        let (nats, settings) = (push_nats.clone(), Arc::clone(&push_settings));
        async move { trigger::handle(&nats, &settings, event, delivery).await }
    };
    let dependents_nats = nats.clone();
    let handle_dependents = move |built: RebuiltForPush, delivery: Delivery| {
        let (nats, settings) = (dependents_nats.clone(), Arc::clone(&settings));
        async move { trigger::handle_dependents(&nats, &settings, built, delivery).await }
    };
    tokio::try_join!(
        pushes,
        jobs::work(&nats, pushes_spec, handle_push, shutdown.clone()),
        jobs::work(&nats, dependents_spec, handle_dependents, shutdown),
    )?;
    Ok(())
}
