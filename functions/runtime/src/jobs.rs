//! Build workers: a pull consumer on the durable work queue, one job per free slot.
//!
//! A worker fetches a job only when it has a slot for it (no prefetching: a buffered job would burn its
//! `ack_wait` waiting), reports progress at a third of `ack_wait` while the job runs, and settles it
//! explicitly: ack when done, nak with a delay to retry, term to give up. The unacknowledged job is the
//! worker's lease on it: if the worker dies, its progress reports stop and JetStream hands the job to
//! another worker after `ack_wait`. At shutdown a worker stops fetching and lets each handler finish or
//! hand its job back (builds do so within `build.shutdown_grace_secs`).
//!
//! A job that keeps failing is not retried forever where the spec bounds its deliveries: after the last
//! one it goes to the dead-letter subject, with the reason, and leaves the queue.

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
use tracing::Instrument;

use crate::nats::Nats;
use crate::telemetry::{in_request, RequestId};

/// How a job ended, and so what JetStream does with it.
#[derive(Debug)]
pub enum Outcome {
    /// Done, whether the build succeeded or failed for good: remove it from the queue.
    Done,
    /// A passing failure: deliver it again after the delay.
    Retry(Duration),
    /// A second delivery of a job another handler holds (at-least-once delivery): left alone, so that
    /// the holder's progress reports and its own settling decide.
    HeldElsewhere,
}

pub struct WorkerSpec {
    /// The stream the jobs are in.
    pub stream: String,
    /// The durable consumer's name, shared by every worker that takes these jobs.
    pub consumer: String,
    pub subject: String,
    pub slots: usize,
    pub ack_wait: Duration,
    /// Where a job goes after its last allowed delivery, and how many deliveries it has; `None`: no limit
    /// (the handler counts attempts itself, as builds do in their records).
    pub dead_letter: Option<DeadLetter>,
}

pub struct DeadLetter {
    pub subject: String,
    pub max_deliveries: i64,
}

/// What JetStream says about the job in hand.
#[derive(Debug, Clone, Copy)]
pub struct Delivery {
    /// When the job was queued.
    pub queued_at: time::OffsetDateTime,
    /// 1 for the first delivery.
    pub delivered: i64,
}

/// The header naming why a job was dead-lettered.
pub const DEAD_LETTER_REASON_HEADER: &str = "Artifacts-Dead-Letter-Reason";

/// Runs jobs until `shutdown`. `handle` gets each job; a payload that is not a job is dropped for good.
pub async fn work<J, H, F>(nats: &Nats, spec: WorkerSpec, handle: H, shutdown: CancellationToken) -> anyhow::Result<()>
where
    J: DeserializeOwned + Send + 'static,
    H: Fn(J, Delivery) -> F + Send + Sync + 'static,
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
        let (ack_wait, nats) = (spec.ack_wait, nats.clone());
        let dead_letter = spec.dead_letter.as_ref().map(|d| (d.subject.clone(), d.max_deliveries));
        // The id of the request that queued the job (none on a job queued without one): every line of
        // the job's work carries it, and what the job queues or calls passes it on.
        let request_id = RequestId::from_headers(message.headers.as_ref());
        let span = tracing::error_span!("job", request_id = tracing::field::Empty, subject = %message.subject);
        let work = async move {
            let _slot = slot;
            run_one(&nats, message, handle.as_ref(), ack_wait, dead_letter).await;
        };
        match request_id {
            Some(id) => {
                span.record("request_id", tracing::field::display(&id));
                in_hand.spawn(in_request(id, span, work))
            }
            None => in_hand.spawn(work.instrument(span)),
        };
    }
    in_hand.close();
    in_hand.wait().await;
    Ok(())
}

/// Stores a job that failed at every delivery on the dead-letter subject, where an operator can read and
/// replay it.
async fn bury(nats: &Nats, message: &async_nats::jetstream::Message, subject: &str, deliveries: i64) {
    let reason = format!("failed at each of {deliveries} deliveries");
    tracing::error!(subject = %message.subject, dead_letter = %subject, "{reason}: moved to the dead-letter stream");
    metrics::counter!("artifacts_jobs_dead_lettered_total", "subject" => subject.to_owned()).increment(1);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(DEAD_LETTER_REASON_HEADER, reason.as_str());
    if let Some(id) = RequestId::from_headers(message.headers.as_ref()) {
        headers.insert(crate::telemetry::REQUEST_ID_HEADER, id.as_str());
    }
    let stored = async {
        nats.jetstream.publish_with_headers(subject.to_owned(), headers, message.payload.clone()).await?.await?;
        Ok::<_, async_nats::Error>(())
    };
    if let Err(err) = stored.await {
        tracing::error!(%err, "could not store a dead letter; the job is dropped");
    }
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
                // Builds count attempts in their record, which can say why a build gave up; other jobs
                // are bounded here and dead-lettered after the last delivery.
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
    nats: &Nats,
    message: async_nats::jetstream::Message,
    handle: &H,
    ack_wait: Duration,
    dead_letter: Option<(String, i64)>,
) where
    J: DeserializeOwned,
    H: Fn(J, Delivery) -> F,
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
    let delivery = match message.info() {
        Ok(info) => Delivery { queued_at: info.published, delivered: info.delivered },
        Err(_) => Delivery { queued_at: time::OffsetDateTime::now_utc(), delivered: 1 },
    };
    let outcome = tokio::select! {
        outcome = handle(job, delivery) => outcome,
        _ = heartbeat => unreachable!("the heartbeat never ends"),
    };
    let settled = match (outcome, dead_letter) {
        (Outcome::HeldElsewhere, _) => return,
        (Outcome::Done, _) => message.double_ack().await,
        (Outcome::Retry(_), Some((subject, max))) if delivery.delivered >= max => {
            bury(nats, &message, &subject, max).await;
            message.ack_with(AckKind::Term).await
        }
        (Outcome::Retry(delay), _) => message.ack_with(AckKind::Nak(Some(delay))).await,
    };
    if let Err(err) = settled {
        tracing::warn!(%err, "could not settle a job; JetStream will deliver it again");
    }
}
