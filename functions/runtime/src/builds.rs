//! Build records and submissions, for every kind of build.
//!
//! A submission is answered only after its record is written and its job is stored in the JetStream
//! work queue, so nothing answered 202 is ever lost. Identical submissions (same content hash) share one
//! build while it is queued or running: the `artifacts_active` bucket maps the hash to the build, and a
//! key-value `create` (atomic) decides which of many concurrent submitters starts it.

use std::time::Duration;

use async_nats::jetstream::kv;
use serde::Serialize;
use sha2::{Digest, Sha256};

use artifacts_schemas::{BuildId, BuildKind, BuildRecord, BuildStatus, RequestError, RequestedBy, Timestamp};

use crate::nats::{read_json, unavailable, Nats};

/// A new build, as its submitter describes it.
pub struct Submission<J> {
    pub kind: BuildKind,
    /// What the record shows of the request; hashed with `kind` to find identical builds.
    pub summary: serde_json::Value,
    pub requested_by: RequestedBy,
    /// The work-queue subject of the job.
    pub job_subject: String,
    pub job: J,
    /// Whether an identical build that failed is run again. Lookups say no: a client polling a failing
    /// component would otherwise start a build at every poll.
    pub rerun_failed: bool,
    /// Whether it may join an identical build that is already running. A push says no: the running build
    /// may have cloned an older commit than the one pushed (a queued one will clone the newest).
    pub join_running: bool,
}

/// The answer to a submission.
pub struct Submitted {
    pub build_id: BuildId,
    /// True when an identical build was already queued or running and this is its id.
    pub duplicate: bool,
    /// Set when nothing was queued because the last identical build failed (and `rerun_failed` was
    /// false): that build's error; `build_id` is that build.
    pub failed: Option<String>,
}

/// A claimed key whose build record never appeared (its submitter died) is taken over after this.
const ORPHAN_CLAIM_AGE: Duration = Duration::from_secs(30);

/// Queues a build, or answers with the identical build already queued or running. `job` gets the new
/// build's id.
pub async fn submit<J: Serialize>(
    nats: &Nats,
    submission: Submission<impl Fn(&BuildId) -> J>,
) -> Result<Submitted, RequestError> {
    let key = content_hash(submission.kind, &submission.summary);
    let active = &nats.stores.active;
    loop {
        let build_id = BuildId::generate();
        match active.create(&key, build_id.as_str().to_owned().into()).await {
            Ok(_) => return start(nats, build_id, &submission).await,
            Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(err) => return Err(unavailable(err)),
        }
        let Some(entry) = active.entry(&key).await.map_err(unavailable)? else { continue };
        let claimed_by = std::str::from_utf8(&entry.value).ok().and_then(|id| BuildId::parse(id).ok());
        let existing = match &claimed_by {
            Some(id) => read(nats, id).await?,
            None => None,
        };
        let still_active = match (&claimed_by, &existing) {
            (Some(_), Some(record)) => match record.status {
                BuildStatus::Queued => true,
                BuildStatus::Running => submission.join_running,
                _ => false,
            },
            (Some(_), None) => time::OffsetDateTime::now_utc() - entry.created < ORPHAN_CLAIM_AGE,
            (None, _) => false,
        };
        if let (true, Some(id)) = (still_active, &claimed_by) {
            return Ok(Submitted { build_id: id.clone(), duplicate: true, failed: None });
        }
        if let Some(record) = existing.filter(|r| r.status == BuildStatus::Failed && !submission.rerun_failed) {
            let error = record.error_message.unwrap_or_else(|| "the build failed".into());
            return Ok(Submitted { build_id: record.build_id, duplicate: true, failed: Some(error) });
        }
        // The build it names has ended: claim the key, unless another submitter just did.
        if active.update(&key, build_id.as_str().to_owned().into(), entry.revision).await.is_ok() {
            return start(nats, build_id, &submission).await;
        }
    }
}

async fn start<J: Serialize>(
    nats: &Nats,
    build_id: BuildId,
    submission: &Submission<impl Fn(&BuildId) -> J>,
) -> Result<Submitted, RequestError> {
    let record = BuildRecord {
        build_id: build_id.clone(),
        kind: submission.kind,
        status: BuildStatus::Queued,
        request: submission.summary.clone(),
        requested_by: submission.requested_by.clone(),
        created_at: Timestamp::now(),
        started_at: None,
        finished_at: None,
        result: None,
        error_message: None,
        attempts: 0,
    };
    put(nats, &record).await?;
    let job = serde_json::to_vec(&(submission.job)(&build_id)).expect("jobs serialise");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", build_id.as_str());
    let queued = async {
        nats.jetstream.publish_with_headers(submission.job_subject.clone(), headers, job.into()).await?.await?;
        Ok::<_, async_nats::Error>(())
    }
    .await;
    if let Err(err) = queued {
        let message = format!("the build could not be queued: {err}");
        let _ = update(nats, &build_id, |r| finish(r, BuildStatus::Failed, None, Some(message.clone()))).await;
        return Err(RequestError::unavailable(message));
    }
    Ok(Submitted { build_id, duplicate: false, failed: None })
}

/// SHA-256 of the kind and what is built: the summary without `trigger`, so a lookup, a push and a
/// submission of the same thing share one build whoever asked (serde_json writes object keys in order,
/// so equal summaries hash equal).
fn content_hash(kind: BuildKind, summary: &serde_json::Value) -> String {
    let mut built = summary.clone();
    if let Some(fields) = built.as_object_mut() {
        fields.remove("trigger");
    }
    let canonical = serde_json::to_vec(&(kind, built)).expect("values serialise");
    hex::encode(Sha256::digest(canonical))
}

pub async fn read(nats: &Nats, build_id: &BuildId) -> Result<Option<BuildRecord>, RequestError> {
    read_json(&nats.stores.builds, build_id.as_str()).await
}

async fn put(nats: &Nats, record: &BuildRecord) -> Result<(), RequestError> {
    let bytes = serde_json::to_vec(record).expect("records serialise");
    nats.stores.builds.put(record.build_id.as_str(), bytes.into()).await.map_err(unavailable)?;
    publish_event(nats, record).await;
    Ok(())
}

/// Changes a record with compare-and-set, retrying when another writer got there first, and publishes
/// the new state on `<prefix>.events.build.<id>`.
pub async fn update(
    nats: &Nats,
    build_id: &BuildId,
    change: impl Fn(&mut BuildRecord),
) -> Result<BuildRecord, RequestError> {
    let builds = &nats.stores.builds;
    loop {
        let entry = builds
            .entry(build_id.as_str())
            .await
            .map_err(unavailable)?
            .ok_or_else(|| RequestError::not_found(format!("no build has id {build_id}")))?;
        let mut record: BuildRecord = serde_json::from_slice(&entry.value)
            .map_err(|err| RequestError::internal(format!("build record {build_id} is unreadable: {err}")))?;
        change(&mut record);
        let bytes = serde_json::to_vec(&record).expect("records serialise");
        if builds.update(build_id.as_str(), bytes.into(), entry.revision).await.is_ok() {
            publish_event(nats, &record).await;
            return Ok(record);
        }
    }
}

/// Marks a record as ended.
pub fn finish(record: &mut BuildRecord, status: BuildStatus, result: Option<serde_json::Value>, error: Option<String>) {
    record.status = status;
    record.finished_at = Some(Timestamp::now());
    record.result = result;
    record.error_message = error;
}

async fn publish_event(nats: &Nats, record: &BuildRecord) {
    let event = serde_json::to_vec(record).expect("records serialise");
    if let Err(err) = nats.client.publish(nats.subjects.build_events(&record.build_id), event.into()).await {
        tracing::warn!(%err, build_id = %record.build_id, "could not publish build event");
    }
}

/// Waits until the build ends or `limit` passes; returns the record if it ended in time.
pub async fn wait_until_finished(nats: &Nats, build_id: &BuildId, limit: Duration) -> Option<BuildRecord> {
    let waiting = async {
        let mut changes = nats.stores.builds.watch(build_id.as_str()).await.ok()?;
        if let Ok(Some(record)) = read(nats, build_id).await {
            if record.status.is_finished() {
                return Some(record);
            }
        }
        while let Some(Ok(entry)) = futures::StreamExt::next(&mut changes).await {
            if let Ok(record) = serde_json::from_slice::<BuildRecord>(&entry.value) {
                if record.status.is_finished() {
                    return Some(record);
                }
            }
        }
        None
    };
    tokio::time::timeout(limit, waiting).await.ok().flatten()
}
