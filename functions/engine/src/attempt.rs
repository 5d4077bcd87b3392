//! One start of a build, the same for every kind of build: mark it running and count the attempt, give
//! up past `build.max_attempts`, run it under `build.timeout_secs`, then record how it ended.
//!
//! Failures are of four kinds. Permanent ones (a bad Dockerfile, a failing command, a missing base
//! image, a refused archive, a timeout) fail the build at once. Passing ones (the Docker engine or the
//! registry unreachable) send the job back to the queue with a delay. Waiting (a dependency is being
//! built first) sends it back without counting the attempt, and so does JetStream unavailable (its
//! object store timing out while a cluster elects a leader): losing a NATS node must not use up a
//! build's attempts, which are for the build's own faults. So does a worker that is stopping: it lets a running build finish within `build.shutdown_grace_secs`, then hands it back
//! for another worker. Attempts count failures and crashes, never restarts.
//!
//! A build's states:
//!
//! ```text
//!            submit            a worker takes it             it ends
//!  (none) ──────────> queued ─────────────────> running ───────────────> succeeded | failed
//!                       │  ^                      │  (attempts += 1)
//!                       │  └──────────────────────┘  a passing failure, a dependency to wait for, or
//!                       │                            a hand-back at shutdown (not counted); a worker
//!                       │                            killed outright: its lease (renewed in the record
//!                       │                            as its job's progress is reported) runs out, and
//!                       │                            JetStream redelivers after ack_wait (counted), up
//!                       │                            to build.max_attempts; a second delivery while the
//!                       │                            lease holds is left alone
//!                       └─> cancelled (a newer push for the same target, or a user)
//! ```
//!
//! The job is published before the record is written, so a record never names a job that does not
//! exist; a job whose record never appeared (its submitter died in between) is dropped after a while.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use artifacts_schemas::{Architecture, BuildId, BuildRecord, BuildResult, BuildStatus, RequestError, Timestamp};
use artifacts_store::StoreError;

use artifacts_runtime::configuration::native_architecture;
use artifacts_runtime::jobs::{Delivery, Outcome};
use artifacts_runtime::logs::BuildLog;
use artifacts_runtime::nats::Nats;
use artifacts_runtime::Settings;

use crate::leftovers;

/// A job whose build record is still missing this long after it was queued was never recorded (its
/// submitter died between queueing and recording it): it is dropped.
const UNRECORDED_JOB_AGE: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub enum BuildFailure {
    Permanent(String),
    Passing(String),
    /// Other builds must end first (their ids); the build is queued again to wait for them.
    Waiting {
        message: String,
        on: Vec<BuildId>,
    },
    /// JetStream did not answer; not the build's fault, so not counted.
    Unavailable(String),
}

/// Copies an object-store object (`what`, for the message) to a local file: a failure to read is
/// JetStream's ([`BuildFailure::Unavailable`], not counted), one to write is this host's disk
/// ([`BuildFailure::Passing`], counted).
pub async fn copy_object<R, W>(what: &str, object: &mut R, file: &mut W) -> Result<(), BuildFailure>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buffer = vec![0; 128 * 1024];
    loop {
        let read = object
            .read(&mut buffer)
            .await
            .map_err(|err| BuildFailure::Unavailable(format!("cannot read {what}: {err}")))?;
        if read == 0 {
            break;
        }
        file.write_all(&buffer[..read])
            .await
            .map_err(|err| BuildFailure::Passing(format!("cannot write {what}: {err}")))?;
    }
    file.flush().await.map_err(|err| BuildFailure::Passing(format!("cannot write {what}: {err}")))
}

/// A kind of build, as the attempt loop sees it.
pub trait Build: Send + Sync {
    type Output: Into<BuildResult> + Send + Sync;

    fn build_id(&self) -> &BuildId;

    /// A line for the log's header, e.g. `component libfoo tag v1 for linux/amd64`.
    fn describe(&self) -> String;

    /// What the build is for: a foreign one runs under emulation, and its log says so.
    fn architecture(&self) -> Architecture;

    /// Runs the build in `work_dir`, a fresh directory that is removed after the attempt.
    fn run(
        &self,
        work_dir: &std::path::Path,
        log: &mut BuildLog,
    ) -> impl Future<Output = Result<Self::Output, BuildFailure>> + Send;

    /// Stores what the build made (the image or component record), before the build record says it
    /// succeeded.
    fn store(&self, output: &Self::Output, log: &mut BuildLog) -> impl Future<Output = Result<(), String>> + Send;
}

pub async fn attempt<B: Build>(
    nats: &Nats,
    settings: &Settings,
    build: &B,
    delivery: Delivery,
    stopping: &CancellationToken,
) -> Outcome {
    let build_id = build.build_id();
    let lease = lease(settings);
    let mut held_elsewhere = false;
    let started = nats
        .store
        .update_build(build_id, |record| {
            held_elsewhere = record.status == BuildStatus::Running
                && record.lease_expires_at.is_some_and(|until| until > Timestamp::now());
            if !record.status.is_finished() && !held_elsewhere {
                record.status = BuildStatus::Running;
                record.attempts += 1;
                record.started_at.get_or_insert_with(Timestamp::now);
                record.lease_expires_at = Some(Timestamp::after(lease));
            }
        })
        .await;
    if held_elsewhere {
        tracing::info!(%build_id, "a second delivery of a build whose worker holds its lease: leaving it");
        return Outcome::HeldElsewhere;
    }
    let record = match started {
        Ok(record) => record,
        Err(StoreError::NotFound(_)) => {
            let age = time::OffsetDateTime::now_utc() - delivery.queued_at;
            if age > UNRECORDED_JOB_AGE {
                tracing::warn!(%build_id, "dropping a job whose build was never recorded (its submitter stopped)");
                return Outcome::Done;
            }
            // Its submitter records it right after queueing it.
            return Outcome::Retry(Duration::from_millis(200));
        }
        Err(err) => {
            tracing::warn!(%err, %build_id, "cannot update the build record; retrying later");
            return Outcome::Retry(Duration::from_secs(5));
        }
    };
    if record.status != BuildStatus::Running {
        return Outcome::Done;
    }
    let mut log = BuildLog::new(nats, build_id);
    let max_attempts = settings.build.max_attempts;
    if record.attempts > max_attempts {
        let last = record.error_message.unwrap_or_else(|| "the worker stopped during the build".into());
        return conclude(nats, build, &mut log, Err(format!("gave up after {max_attempts} attempts: {last}"))).await;
    }
    let emulated = if build.architecture() == native_architecture() { "" } else { " (under QEMU emulation)" };
    log.write(&format!("== attempt {} of {max_attempts}: {}{emulated} ==", record.attempts, build.describe())).await;
    // What an earlier attempt of this build left, if its worker was killed.
    leftovers::remove(settings, build_id).await;
    let stopped = match leftovers::fresh_work_dir(build_id).await {
        Ok(work_dir) => run_until_stopped(nats, settings, build, &work_dir, &mut log, stopping).await,
        Err(message) => Stopped::Ended(Ok(Err(BuildFailure::Passing(message)))),
    };
    leftovers::remove(settings, build_id).await;
    let ended = match stopped {
        Stopped::Ended(ended) => ended,
        Stopped::Cancelled => {
            log.write("cancelled").await;
            log.end(BuildStatus::Cancelled).await;
            return Outcome::Done;
        }
        Stopped::HandedBack => {
            let message = format!(
                "the worker stopped and handed the build back after waiting {}s (build.shutdown_grace_secs)",
                settings.build.shutdown_grace_secs
            );
            log.write(&message).await;
            requeue(nats, build_id, message, true, Vec::new()).await;
            return Outcome::Retry(Duration::ZERO);
        }
    };
    let timeout = Duration::from_secs(settings.build.timeout_secs);
    match ended {
        Err(_) => {
            let message = format!("the build timed out after {}s (build.timeout_secs)", timeout.as_secs());
            conclude(nats, build, &mut log, Err(message)).await
        }
        Ok(Ok(output)) => conclude(nats, build, &mut log, Ok(output)).await,
        Ok(Err(BuildFailure::Permanent(message))) => conclude(nats, build, &mut log, Err(message)).await,
        Ok(Err(BuildFailure::Passing(message))) if record.attempts >= max_attempts => {
            conclude(nats, build, &mut log, Err(format!("{message} (gave up after {max_attempts} attempts)"))).await
        }
        Ok(Err(BuildFailure::Passing(message))) => {
            log.write(&format!("will retry: {message}")).await;
            requeue(nats, build_id, message, false, Vec::new()).await;
            Outcome::Retry(Duration::from_secs(5 * u64::from(record.attempts)))
        }
        Ok(Err(BuildFailure::Waiting { message, on })) => {
            log.write(&message).await;
            requeue(nats, build_id, message, true, on).await;
            Outcome::Retry(Duration::from_secs(2))
        }
        Ok(Err(BuildFailure::Unavailable(message))) => {
            log.write(&format!("will retry (not counted as an attempt): {message}")).await;
            requeue(nats, build_id, message, true, Vec::new()).await;
            Outcome::Retry(Duration::from_secs(3))
        }
    }
}

async fn requeue(nats: &Nats, build_id: &BuildId, message: String, uncount: bool, waiting_on: Vec<BuildId>) {
    let requeued = nats
        .store
        .update_build(build_id, |record| {
            record.status = BuildStatus::Queued;
            record.lease_expires_at = None;
            record.error_message = Some(artifacts_runtime::logs::strip_terminal_codes(&message).into_owned());
            record.waiting_on = waiting_on.clone();
            if uncount {
                record.attempts = record.attempts.saturating_sub(1);
            }
        })
        .await;
    if let Err(err) = requeued {
        tracing::warn!(%err, %build_id, "cannot mark the build queued again");
    }
}

/// How a running build stopped.
enum Stopped<T> {
    /// It ended by itself, or hit its timeout.
    Ended(Result<Result<T, BuildFailure>, tokio::time::error::Elapsed>),
    /// The worker began stopping and the build did not end within the grace period.
    HandedBack,
    /// Someone cancelled it.
    Cancelled,
}

/// Runs the build under its timeout, until it ends, the worker's grace period runs out or it is
/// cancelled.
async fn run_until_stopped<B: Build>(
    nats: &Nats,
    settings: &Settings,
    build: &B,
    work_dir: &std::path::Path,
    log: &mut BuildLog,
    stopping: &CancellationToken,
) -> Stopped<B::Output> {
    let timeout = Duration::from_secs(settings.build.timeout_secs);
    let grace = Duration::from_secs(settings.build.shutdown_grace_secs);
    let grace_over = async {
        stopping.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        ended = tokio::time::timeout(timeout, build.run(work_dir, log)) => Stopped::Ended(ended),
        _ = grace_over => Stopped::HandedBack,
        _ = renew_lease(nats, build.build_id(), lease(settings)) => Stopped::HandedBack,
        _ = cancelled(nats, build.build_id()) => Stopped::Cancelled,
    }
}

/// Resolves when the build's record says it was cancelled (never, if the watch cannot be made: the
/// lease renewal then sees the cancellation instead).
async fn cancelled(nats: &Nats, build_id: &BuildId) {
    use futures::StreamExt as _;
    if let Ok(changes) = nats.store.build_changes(build_id).await {
        let mut changes = std::pin::pin!(changes);
        while let Some(record) = changes.next().await {
            if record.status == BuildStatus::Cancelled {
                return;
            }
        }
    }
    std::future::pending().await
}

/// How long a worker's lease on a build lasts: half of `ack_wait`, renewed at a third of that, so a dead
/// worker's lease has run out before JetStream redelivers its job (`ack_wait` after its last progress
/// report), and a live worker's never does.
fn lease(settings: &Settings) -> Duration {
    Duration::from_secs(settings.build.ack_wait_secs) / 2
}

/// Keeps the build's lease, as the job's progress reports keep JetStream from handing it to another
/// worker. Never ends.
async fn renew_lease(nats: &Nats, build_id: &BuildId, lease: Duration) {
    loop {
        tokio::time::sleep(lease / 3).await;
        let renewed = nats
            .store
            .update_build(build_id, |record| {
                if record.status == BuildStatus::Running {
                    record.lease_expires_at = Some(Timestamp::after(lease));
                }
            })
            .await;
        if let Err(err) = renewed {
            tracing::warn!(%err, %build_id, "could not renew the lease on a build");
        }
    }
}

/// Records the end of a build: what it made on success, the build record and the log's end always.
async fn conclude<B: Build>(nats: &Nats, build: &B, log: &mut BuildLog, result: Result<B::Output, String>) -> Outcome {
    let build_id = build.build_id();
    if let Ok(output) = &result {
        if let Err(err) = build.store(output, log).await {
            tracing::warn!(%err, %build_id, "cannot store what the build made; retrying the job");
            // Built but not stored: JetStream's fault, not the build's, so not counted.
            requeue(nats, build_id, format!("cannot store what the build made: {err}"), true, Vec::new()).await;
            return Outcome::Retry(Duration::from_secs(5));
        }
    }
    let status = if result.is_ok() { BuildStatus::Succeeded } else { BuildStatus::Failed };
    let (output, error): (Option<BuildResult>, _) = match result {
        Ok(output) => (Some(output.into()), None),
        Err(message) => {
            log.write(&format!("failed: {message}")).await;
            (None, Some(message))
        }
    };
    // A build cancelled in the meantime stays cancelled.
    let recorded = nats.store.update_build(build_id, |r| {
        if !r.status.is_finished() {
            finish(r, status, output.clone(), error.clone())
        }
    });
    let finished = match recorded.await {
        Ok(record) => record,
        Err(err) => {
            tracing::warn!(%err, %build_id, "cannot record the end of the build; retrying the job");
            return Outcome::Retry(Duration::from_secs(5));
        }
    };
    artifacts_runtime::metrics::count_build(finished.work.kind(), finished.status);
    log.end(status).await;
    tracing::info!(%build_id, ?status, "build ended");
    Outcome::Done
}

/// Marks a record as ended.
pub fn finish(record: &mut BuildRecord, status: BuildStatus, result: Option<BuildResult>, error: Option<String>) {
    record.status = status;
    record.finished_at = Some(Timestamp::now());
    record.lease_expires_at = None;
    record.work.set_result(result);
    record.error_message = error.map(|message| artifacts_runtime::logs::strip_terminal_codes(&message).into_owned());
    record.waiting_on.clear();
}

/// What the store's failures mean for an attempt: JetStream away is not the build's fault (retried, not
/// counted); something missing or malformed will not come back by itself (fails at once); anything else
/// is counted and retried.
impl From<StoreError> for BuildFailure {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(_) => Self::Unavailable(err.to_string()),
            StoreError::NotFound(_) | StoreError::Invalid(_) => Self::Permanent(err.to_string()),
            StoreError::Conflict(_) | StoreError::Corrupt(_) => Self::Passing(err.to_string()),
        }
    }
}

/// The same for the answer of another function: by its failure, never by its text.
impl From<RequestError> for BuildFailure {
    fn from(err: RequestError) -> Self {
        use artifacts_schemas::Failure;
        match err.failure {
            Failure::Unavailable | Failure::RateLimited => Self::Unavailable(err.message),
            Failure::Invalid
            | Failure::Unauthorized
            | Failure::Forbidden
            | Failure::NotFound
            | Failure::Conflict
            | Failure::TooLarge
            | Failure::MethodNotAllowed => Self::Permanent(err.message),
            Failure::Internal => Self::Passing(err.message),
        }
    }
}
