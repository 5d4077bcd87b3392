//! Build workers: a pull consumer on the durable work queue, one job per free slot.
//!
//! A worker fetches a job only when it has a slot for it (no prefetching: a buffered job would burn its
//! `ack_wait` waiting), reports progress at a third of `ack_wait` while the job runs, and settles it
//! explicitly: ack when done, nak with a delay to retry, term to give up. If the worker dies, JetStream
//! hands the unacknowledged job to another worker after `ack_wait`. At shutdown a worker stops fetching
//! and hands the jobs in hand back at once.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::AckKind;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::nats::Nats;

/// How a job ended, and so what JetStream does with it.
#[derive(Debug)]
pub enum Outcome {
    /// Done, whether the build succeeded or failed for good: remove it from the queue.
    Done,
    /// A passing failure: deliver it again after the delay.
    Retry(Duration),
}

pub struct WorkerSpec {
    /// The stream the jobs are in.
    pub stream: String,
    /// The durable consumer's name, shared by every worker that takes these jobs.
    pub consumer: String,
    pub subject: String,
    pub slots: usize,
    pub ack_wait: Duration,
}

/// Runs jobs until `shutdown`. `handle` gets each job; a payload that is not a job is dropped for good.
pub async fn work<J, H, F>(nats: &Nats, spec: WorkerSpec, handle: H, shutdown: CancellationToken) -> anyhow::Result<()>
where
    J: DeserializeOwned + Send + 'static,
    H: Fn(J) -> F + Send + Sync + 'static,
    F: Future<Output = Outcome> + Send + 'static,
{
    let consumer = consumer(nats, &spec).await?;
    tracing::info!(consumer = %spec.consumer, subject = %spec.subject, slots = spec.slots, "taking jobs");
    let slots = Arc::new(Semaphore::new(spec.slots));
    let handle = Arc::new(handle);
    let in_hand = TaskTracker::new();
    loop {
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let fetched = tokio::select! {
            _ = shutdown.cancelled() => break,
            fetched = fetch_one(&consumer) => fetched,
        };
        let message = match fetched {
            Ok(Some(message)) => message,
            Ok(None) => continue,
            Err(err) => {
                tracing::warn!(%err, "cannot fetch jobs; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let handle = Arc::clone(&handle);
        let shutdown = shutdown.clone();
        let ack_wait = spec.ack_wait;
        in_hand.spawn(async move {
            let _slot = slot;
            run_one(message, handle.as_ref(), ack_wait, shutdown).await;
        });
    }
    in_hand.close();
    in_hand.wait().await;
    Ok(())
}

async fn consumer(nats: &Nats, spec: &WorkerSpec) -> anyhow::Result<PullConsumer> {
    let stream = nats.jetstream.get_stream(&spec.stream).await?;
    // A consumer from before its subject moved (nats-server 2.9 cannot change a filter): make it anew.
    if let Ok(mut existing) = stream.get_consumer::<pull::Config>(&spec.consumer).await {
        if existing.info().await.map(|info| info.config.filter_subject != spec.subject).unwrap_or(false) {
            tracing::info!(consumer = %spec.consumer, subject = %spec.subject, "its subject changed: making it anew");
            stream.delete_consumer(&spec.consumer).await.map_err(|err| anyhow::anyhow!("{err}"))?;
        }
    }
    let consumer = stream
        .get_or_create_consumer(
            &spec.consumer,
            pull::Config {
                durable_name: Some(spec.consumer.clone()),
                description: Some(format!("workers for {}", spec.subject)),
                filter_subject: spec.subject.clone(),
                ack_policy: AckPolicy::Explicit,
                ack_wait: spec.ack_wait,
                // Attempts are counted in the build record, which can say why a build gave up.
                max_deliver: -1,
                max_ack_pending: 10_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|err| anyhow::anyhow!("cannot create consumer {}: {err}", spec.consumer))?;
    Ok(consumer)
}

async fn fetch_one(consumer: &PullConsumer) -> Result<Option<async_nats::jetstream::Message>, async_nats::Error> {
    let mut batch = consumer.fetch().max_messages(1).expires(Duration::from_secs(5)).messages().await?;
    batch.next().await.transpose()
}

async fn run_one<J, H, F>(
    message: async_nats::jetstream::Message,
    handle: &H,
    ack_wait: Duration,
    shutdown: CancellationToken,
) where
    J: DeserializeOwned,
    H: Fn(J) -> F,
    F: Future<Output = Outcome>,
{
    let job: J = match serde_json::from_slice(&message.payload) {
        Ok(job) => job,
        Err(err) => {
            tracing::error!(%err, subject = %message.subject, "dropping a malformed job");
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
    };
    let heartbeat = async {
        loop {
            tokio::time::sleep(ack_wait / 3).await;
            if let Err(err) = message.ack_with(AckKind::Progress).await {
                tracing::warn!(%err, "could not report progress on a job");
            }
        }
    };
    let outcome = tokio::select! {
        outcome = handle(job) => Some(outcome),
        _ = heartbeat => None,
        _ = shutdown.cancelled() => None,
    };
    let settled = match outcome {
        Some(Outcome::Done) => message.double_ack().await,
        Some(Outcome::Retry(delay)) => message.ack_with(AckKind::Nak(Some(delay))).await,
        // Shutting down: hand the job back for another worker now rather than after ack_wait.
        None => message.ack_with(AckKind::Nak(None)).await,
    };
    if let Err(err) = settled {
        tracing::warn!(%err, "could not settle a job; JetStream will deliver it again");
    }
}
