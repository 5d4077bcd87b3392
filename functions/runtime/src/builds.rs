//! Build records and submissions, for every kind of build.
//!
//! A submission is answered only after its record is written and its job is stored in the JetStream
//! work queue, so nothing answered 202 is ever lost. Identical submissions (same content hash) share one
//! build while it is queued or running, and one that succeeded answers later ones unless they say
//! `force`: the `artifacts_active` bucket maps the hash to the last such build, and a key-value `create`
//! or compare-and-set `update` (atomic) decides which of many concurrent submitters starts a new one.

use std::time::Duration;

use async_nats::jetstream::kv;
use serde::Serialize;
use sha2::{Digest, Sha256};

use artifacts_schemas::{
    AcceptedStatus, BuildAccepted, BuildId, BuildRecord, BuildResult, BuildStatus, BuildWork, RequestError,
    RequestedBy, Timestamp,
};

use crate::build_index::{self, List};
use crate::nats::{read_json, retry_unanswered, unavailable, Nats};

/// A new build, as its submitter describes it.
pub struct Submission<J> {
    /// What is built (the record's `kind` and `request`; its result is empty); hashed to find identical
    /// builds.
    pub work: BuildWork,
    pub requested_by: RequestedBy,
    /// The work-queue subject of the job.
    pub job_subject: String,
    pub job: J,
    /// Whether an identical build that failed is run again. Lookups say no: a client polling a failing
    /// component would otherwise start a build at every poll.
    pub rerun_failed: bool,
    /// Whether an identical build that succeeded is run again (otherwise the answer is that build).
    pub force: bool,
}

/// The answer to a submission: the new build, or the identical one that answers it.
pub struct Submitted {
    pub build_id: BuildId,
    /// `queued` (new, or an identical build queued or running), `succeeded` (an identical build did and
    /// `force` was not asked), `failed` (the last identical build failed and `rerun_failed` was false).
    pub status: AcceptedStatus,
    /// Why the identical build failed.
    pub error: Option<String>,
}

impl Submitted {
    pub fn accepted(self, image_name: Option<String>) -> BuildAccepted {
        BuildAccepted::new(self.status, self.build_id, self.error, image_name)
    }
}

/// A claimed key whose build record never appeared (its submitter died) is taken over after this.
const ORPHAN_CLAIM_AGE: Duration = Duration::from_secs(30);

/// Queues a build, or answers with the identical build already queued or running. `job` gets the new
/// build's id.
pub async fn submit<J: Serialize>(
    nats: &Nats,
    submission: Submission<impl Fn(&BuildId) -> J>,
) -> Result<Submitted, RequestError> {
    let key = content_hash(&submission.work);
    let active = &nats.stores.active;
    loop {
        let build_id = BuildId::generate();
        match retry_unanswered(|| active.create(&key, build_id.as_str().to_owned().into())).await {
            Ok(claim) => return start(nats, build_id, &submission, &key, claim).await,
            Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(err) => return Err(unavailable(err)),
        }
        let Some(entry) = retry_unanswered(|| active.entry(&key)).await.map_err(unavailable)? else { continue };
        let claimed_by = std::str::from_utf8(&entry.value).ok().and_then(|id| BuildId::parse(id).ok());
        let young = time::OffsetDateTime::now_utc() - entry.created < ORPHAN_CLAIM_AGE;
        let existing = match &claimed_by {
            Some(id) if young => recorded_soon(nats, id).await?,
            Some(id) => read(nats, id).await?,
            None => None,
        };
        let still_active = match (&claimed_by, &existing) {
            (Some(_), Some(record)) => match record.status {
                BuildStatus::Queued | BuildStatus::Running => true,
                BuildStatus::Succeeded => !submission.force,
                BuildStatus::Failed | BuildStatus::Cancelled => false,
            },
            // Claimed a moment ago, and still without a record: its submitter is failing (JetStream
            // electing a leader) or died. Never answer with a build that may never be recorded.
            (Some(_), None) if young => return Err(RequestError::unavailable(
                "an identical build is being queued by another request and is not recorded yet: retry in a few seconds",
            )),
            (Some(_), None) | (None, _) => false,
        };
        if let (true, Some(id)) = (still_active, &claimed_by) {
            let status = match existing.map(|r| r.status) {
                Some(BuildStatus::Succeeded) => AcceptedStatus::Succeeded,
                _ => AcceptedStatus::Queued,
            };
            return Ok(Submitted { build_id: id.clone(), status, error: None });
        }
        if let Some(record) = existing.filter(|r| r.status == BuildStatus::Failed && !submission.rerun_failed) {
            let error = record.error_message.unwrap_or_else(|| "the build failed".into());
            return Ok(Submitted { build_id: record.build_id, status: AcceptedStatus::Failed, error: Some(error) });
        }
        // The build it names has ended: claim the key, unless another submitter just did.
        if let Ok(claim) =
            retry_unanswered(|| active.update(&key, build_id.as_str().to_owned().into(), entry.revision)).await
        {
            return start(nats, build_id, &submission, &key, claim).await;
        }
    }
}

/// A claimed build's record, waiting a little for it: its submitter writes it right after claiming.
async fn recorded_soon(nats: &Nats, build_id: &BuildId) -> Result<Option<BuildRecord>, RequestError> {
    for _ in 0..20 {
        if let Some(record) = read(nats, build_id).await? {
            return Ok(Some(record));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(None)
}

/// Queues the job and records the build claimed at revision `claim` of `key`; on failure, gives the claim
/// back so that the client's retry starts the build anew rather than finding a claim with no record.
async fn start<J: Serialize>(
    nats: &Nats,
    build_id: BuildId,
    submission: &Submission<impl Fn(&BuildId) -> J>,
    key: &str,
    claim: u64,
) -> Result<Submitted, RequestError> {
    let started = queue_and_record(nats, &build_id, submission).await;
    if started.is_err() {
        if let Err(err) = nats.stores.active.delete_expect_revision(key, Some(claim)).await {
            tracing::warn!(%err, %build_id, "cannot give back the claim of a build that could not start");
        }
    }
    started.map(|()| Submitted { build_id, status: AcceptedStatus::Queued, error: None })
}

async fn queue_and_record<J: Serialize>(
    nats: &Nats,
    build_id: &BuildId,
    submission: &Submission<impl Fn(&BuildId) -> J>,
) -> Result<(), RequestError> {
    // The job first, then its record: a crash in between leaves a job whose record is missing (workers
    // drop it after a while) and a dedup claim without a record (taken over after ORPHAN_CLAIM_AGE),
    // never a record of a build that no job will run.
    let job = serde_json::to_vec(&(submission.job)(build_id)).expect("jobs serialise");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", build_id.as_str());
    crate::telemetry::add_request_id(&mut headers);
    let queued = async {
        nats.jetstream.publish_with_headers(submission.job_subject.clone(), headers, job.into()).await?.await?;
        Ok::<_, async_nats::Error>(())
    }
    .await;
    if let Err(err) = queued {
        return Err(RequestError::unavailable(format!("the build could not be queued: {err}")));
    }
    let record = BuildRecord {
        build_id: build_id.clone(),
        work: submission.work.clone(),
        status: BuildStatus::Queued,
        requested_by: submission.requested_by.clone(),
        created_at: Timestamp::now(),
        started_at: None,
        finished_at: None,
        error_message: None,
        attempts: 0,
        lease_expires_at: None,
        pinned: false,
    };
    create(nats, &record).await
}

/// SHA-256 of the kind and what is built (for components the commit, for images the Dockerfile and
/// context digests, with the target and build arguments): the request without `trigger`, so a lookup, a
/// push and a submission of the same thing share one build whoever asked (serde_json writes object keys
/// in order, so equal requests hash equal).
pub fn content_hash(work: &BuildWork) -> String {
    let mut identity = serde_json::to_value(work).expect("requests serialise");
    if let Some(fields) = identity.as_object_mut() {
        fields.remove("result");
        if let Some(request) = fields.get_mut("request").and_then(serde_json::Value::as_object_mut) {
            request.remove("trigger");
        }
    }
    hex::encode(Sha256::digest(serde_json::to_vec(&identity).expect("values serialise")))
}

pub async fn read(nats: &Nats, build_id: &BuildId) -> Result<Option<BuildRecord>, RequestError> {
    read_json(&nats.stores.builds, build_id.as_str()).await
}

/// Stores a new build's record, listed first: a crash in between leaves an index entry without a record,
/// which listings skip, never a record that no listing finds.
pub async fn create(nats: &Nats, record: &BuildRecord) -> Result<(), RequestError> {
    let index = &nats.stores.build_index;
    // The two lists are independent: one round of round trips, not two, on every submission.
    tokio::try_join!(
        build_index::append(index, List::All, &record.build_id),
        build_index::append(index, List::Component(record.work.component()), &record.build_id),
    )?;
    put(nats, record).await
}

async fn put(nats: &Nats, record: &BuildRecord) -> Result<(), RequestError> {
    let bytes = serde_json::to_vec(record).expect("records serialise");
    let bytes = bytes::Bytes::from(bytes);
    retry_unanswered(|| nats.stores.builds.put(record.build_id.as_str(), bytes.clone())).await.map_err(unavailable)?;
    publish_event(nats, record).await;
    Ok(())
}

/// Changes a record with compare-and-set, again when another writer got there first, and publishes
/// the new state on `<prefix>.events.build.<id>`.
pub async fn update(
    nats: &Nats,
    build_id: &BuildId,
    mut change: impl FnMut(&mut BuildRecord),
) -> Result<BuildRecord, RequestError> {
    let builds = &nats.stores.builds;
    loop {
        let entry = retry_unanswered(|| builds.entry(build_id.as_str()))
            .await
            .map_err(unavailable)?
            .ok_or_else(|| RequestError::not_found(format!("no build has id {build_id}")))?;
        let mut record: BuildRecord = serde_json::from_slice(&entry.value)
            .map_err(|err| RequestError::internal(format!("build record {build_id} is unreadable: {err}")))?;
        change(&mut record);
        let bytes = bytes::Bytes::from(serde_json::to_vec(&record).expect("records serialise"));
        match retry_unanswered(|| builds.update(build_id.as_str(), bytes.clone(), entry.revision)).await {
            Ok(_) => {
                publish_event(nats, &record).await;
                return Ok(record);
            }
            Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
            Err(err) => return Err(unavailable(err)),
        }
    }
}

/// Marks a record as ended.
pub fn finish(record: &mut BuildRecord, status: BuildStatus, result: Option<BuildResult>, error: Option<String>) {
    record.status = status;
    record.finished_at = Some(Timestamp::now());
    record.lease_expires_at = None;
    record.work.set_result(result);
    record.error_message = error.map(|message| crate::logs::strip_terminal_codes(&message).into_owned());
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
