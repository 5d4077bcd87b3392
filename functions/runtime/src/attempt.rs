//! One start of a build, the same for every kind of build: mark it running and count the attempt, give
//! up past `build.max_attempts`, run it under `build.timeout_secs`, then record how it ended.
//!
//! Failures are of three kinds. Permanent ones (a bad Dockerfile, a failing command, a missing base
//! image, a refused archive, a timeout) fail the build at once. Passing ones (the Docker engine or the
//! registry unreachable, JetStream hiccups) send the job back to the queue with a delay. Waiting (a
//! dependency is being built first) sends it back without counting the attempt.

use std::future::Future;
use std::time::Duration;

use serde::Serialize;

use artifacts_schemas::{BuildId, BuildStatus, Timestamp};

use crate::builds;
use crate::configuration::BuildSettings;
use crate::jobs::Outcome;
use crate::logs::BuildLog;
use crate::nats::Nats;

#[derive(Debug)]
pub enum BuildFailure {
    Permanent(String),
    Passing(String),
    Waiting(String),
}

/// A kind of build, as the attempt loop sees it.
pub trait Build: Send + Sync {
    type Output: Serialize + Send + Sync;

    fn build_id(&self) -> &BuildId;

    /// A line for the log's header, e.g. `component libfoo tag v1 for linux/amd64`.
    fn describe(&self) -> String;

    fn run(&self, log: &mut BuildLog) -> impl Future<Output = Result<Self::Output, BuildFailure>> + Send;

    /// Stores what the build made (the image or component record), before the build record says it
    /// succeeded.
    fn store(&self, output: &Self::Output, log: &mut BuildLog) -> impl Future<Output = Result<(), String>> + Send;
}

pub async fn attempt<B: Build>(nats: &Nats, settings: &BuildSettings, build: &B) -> Outcome {
    let build_id = build.build_id();
    let started = builds::update(nats, build_id, |record| {
        if !record.status.is_finished() {
            record.status = BuildStatus::Running;
            record.attempts += 1;
            record.started_at.get_or_insert_with(Timestamp::now);
        }
    })
    .await;
    let record = match started {
        Ok(record) => record,
        Err(err) => {
            tracing::warn!(%err, %build_id, "cannot update the build record; retrying later");
            return Outcome::Retry(Duration::from_secs(5));
        }
    };
    if record.status != BuildStatus::Running {
        return Outcome::Done;
    }
    let mut log = BuildLog::new(nats, build_id);
    let max_attempts = settings.max_attempts;
    if record.attempts > max_attempts {
        let last = record.error_message.unwrap_or_else(|| "the worker stopped during the build".into());
        return conclude(nats, build, &mut log, Err(format!("gave up after {max_attempts} attempts: {last}"))).await;
    }
    log.write(&format!("== attempt {} of {max_attempts}: {} ==", record.attempts, build.describe())).await;
    let timeout = Duration::from_secs(settings.timeout_secs);
    match tokio::time::timeout(timeout, build.run(&mut log)).await {
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
            requeue(nats, build_id, message, false).await;
            Outcome::Retry(Duration::from_secs(5 * u64::from(record.attempts)))
        }
        Ok(Err(BuildFailure::Waiting(message))) => {
            log.write(&message).await;
            requeue(nats, build_id, message, true).await;
            Outcome::Retry(Duration::from_secs(2))
        }
    }
}

async fn requeue(nats: &Nats, build_id: &BuildId, message: String, uncount: bool) {
    let requeued = builds::update(nats, build_id, |record| {
        record.status = BuildStatus::Queued;
        record.error_message = Some(message.clone());
        if uncount {
            record.attempts = record.attempts.saturating_sub(1);
        }
    })
    .await;
    if let Err(err) = requeued {
        tracing::warn!(%err, %build_id, "cannot mark the build queued again");
    }
}

/// Records the end of a build: what it made on success, the build record and the log's end always.
async fn conclude<B: Build>(nats: &Nats, build: &B, log: &mut BuildLog, result: Result<B::Output, String>) -> Outcome {
    let build_id = build.build_id();
    if let Ok(output) = &result {
        if let Err(err) = build.store(output, log).await {
            tracing::warn!(%err, %build_id, "cannot store what the build made; retrying the job");
            return Outcome::Retry(Duration::from_secs(5));
        }
    }
    let status = if result.is_ok() { BuildStatus::Succeeded } else { BuildStatus::Failed };
    let (output, error) = match result {
        Ok(output) => (Some(serde_json::to_value(output).expect("results serialise")), None),
        Err(message) => {
            log.write(&format!("failed: {message}")).await;
            (None, Some(message))
        }
    };
    let finished =
        match builds::update(nats, build_id, |r| builds::finish(r, status, output.clone(), error.clone())).await {
            Ok(record) => record,
            Err(err) => {
                tracing::warn!(%err, %build_id, "cannot record the end of the build; retrying the job");
                return Outcome::Retry(Duration::from_secs(5));
            }
        };
    crate::metrics::count_build(finished.kind, status);
    log.end(status).await;
    tracing::info!(%build_id, ?status, "build ended");
    Outcome::Done
}
