//! Build records and submissions, for every kind of build.
//!
//! A submission is answered only after its record is written and its job is stored in the JetStream
//! work queue, so nothing answered 202 is ever lost. Identical submissions (same content hash) share one
//! build while it is queued or running, and one that succeeded answers later ones unless they say
//! `force`: the `artifacts_active` bucket maps the hash to the last such build, and a key-value `create`
//! or compare-and-set `update` (atomic) decides which of many concurrent submitters starts a new one.

use std::time::Duration;

use futures::{Stream, StreamExt};
use serde::Serialize;
use sha2::{Digest, Sha256};

use artifacts_schemas::{
    AcceptedStatus, Architecture, BuildAccepted, BuildId, BuildRecord, BuildStatus, BuildWork, ComponentName,
    RequestedBy, TagName,
};

use crate::access::{live_entry, read_json, retry_unanswered, to_bytes, until_won, write_if_unchanged, Round};
use crate::build_index::{List, PAGE_SIZE};
use crate::{Store, StoreError};

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
    /// component would otherwise start a build at every poll (past [`FAILED_ANSWERS_FOR`], they do).
    pub rerun_failed: bool,
    /// Whether an identical build that succeeded is run again (otherwise the answer is that build).
    pub force: bool,
    /// Headers the job carries to its worker (the request id).
    pub headers: async_nats::HeaderMap,
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

/// How long an identical build that failed answers submissions that do not rerun failed builds
/// (lookups); past it, the next one builds again.
const FAILED_ANSWERS_FOR: Duration = Duration::from_secs(10 * 60);

/// Whether a failed build ended within [`FAILED_ANSWERS_FOR`].
fn failed_lately(record: &BuildRecord) -> bool {
    record.finished_at.is_none_or(|at| at.0 > time::OffsetDateTime::now_utc() - FAILED_ANSWERS_FOR)
}

/// Build records [`Store::pending_component_build`] reads at once.
const PENDING_BATCH: usize = 20;

/// A claimed key whose build record never appeared (its submitter died) is taken over after this.
const ORPHAN_CLAIM_AGE: Duration = Duration::from_secs(30);

impl Store {
    /// Queues a build, or answers with the identical build already queued or running. `job` gets the new
    /// build's id.
    pub async fn submit<J: Serialize>(
        &self,
        submission: Submission<impl Fn(&BuildId) -> J>,
    ) -> Result<Submitted, StoreError> {
        let key = content_hash(&submission.work);
        let active = &self.buckets.active;
        let claimed = until_won(&key, || async {
            let build_id = BuildId::generate();
            let claim = |revision| write_if_unchanged(active, &key, revision, build_id.as_str().to_owned().into());
            let Some(entry) = live_entry(active, &key).await? else {
                return Ok(match claim(None).await? {
                    Round::Done(revision) => Round::Done(Ok((build_id, revision))),
                    Round::Lost => Round::Lost,
                });
            };
            let claimed_by = std::str::from_utf8(&entry.value).ok().and_then(|id| BuildId::parse(id).ok());
            let young = time::OffsetDateTime::now_utc() - entry.created < ORPHAN_CLAIM_AGE;
            let existing = match &claimed_by {
                Some(id) if young => self.recorded_soon(id).await?,
                Some(id) => self.build(id).await?,
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
                (Some(_), None) if young => return Err(StoreError::Unavailable(
                    "an identical build is being queued by another request and is not recorded yet: retry in a few seconds".into(),
                )),
                (Some(_), None) | (None, _) => false,
            };
            if let (true, Some(id)) = (still_active, &claimed_by) {
                let status = match existing.map(|r| r.status) {
                    Some(BuildStatus::Succeeded) => AcceptedStatus::Succeeded,
                    _ => AcceptedStatus::Queued,
                };
                return Ok(Round::Done(Err(Submitted { build_id: id.clone(), status, error: None })));
            }
            if let Some(record) =
                existing.filter(|r| r.status == BuildStatus::Failed && failed_lately(r) && !submission.rerun_failed)
            {
                let error = record.error_message.unwrap_or_else(|| "the build failed".into());
                let answer = Submitted { build_id: record.build_id, status: AcceptedStatus::Failed, error: Some(error) };
                return Ok(Round::Done(Err(answer)));
            }
            // The build it names has ended: claim the key, unless another submitter just did.
            Ok(match claim(Some(entry.revision)).await? {
                Round::Done(revision) => Round::Done(Ok((build_id, revision))),
                Round::Lost => Round::Lost,
            })
        })
        .await?;
        match claimed {
            Ok((build_id, revision)) => self.start(build_id, &submission, &key, revision).await,
            // An identical build answers.
            Err(answer) => Ok(answer),
        }
    }

    /// A claimed build's record, waiting a little for it: its submitter writes it right after claiming.
    async fn recorded_soon(&self, build_id: &BuildId) -> Result<Option<BuildRecord>, StoreError> {
        for _ in 0..20 {
            if let Some(record) = self.build(build_id).await? {
                return Ok(Some(record));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(None)
    }

    /// Queues the job and records the build claimed at revision `claim` of `key`; on failure, gives the
    /// claim back so that the client's retry starts the build anew rather than finding a claim with no
    /// record.
    async fn start<J: Serialize>(
        &self,
        build_id: BuildId,
        submission: &Submission<impl Fn(&BuildId) -> J>,
        key: &str,
        claim: u64,
    ) -> Result<Submitted, StoreError> {
        let started = self.queue_and_record(&build_id, submission).await;
        if started.is_err() {
            if let Err(err) = self.buckets.active.delete_expect_revision(key, Some(claim)).await {
                tracing::warn!(%err, %build_id, "cannot give back the claim of a build that could not start");
            }
        }
        started.map(|()| Submitted { build_id, status: AcceptedStatus::Queued, error: None })
    }

    async fn queue_and_record<J: Serialize>(
        &self,
        build_id: &BuildId,
        submission: &Submission<impl Fn(&BuildId) -> J>,
    ) -> Result<(), StoreError> {
        // The job first, then its record: a crash in between leaves a job whose record is missing (workers
        // drop it after a while) and a dedup claim without a record (taken over after ORPHAN_CLAIM_AGE),
        // never a record of a build that no job will run.
        let job = serde_json::to_vec(&(submission.job)(build_id)).expect("jobs serialise");
        let mut headers = submission.headers.clone();
        headers.insert("Nats-Msg-Id", build_id.as_str());
        let queued = async {
            self.js.publish_with_headers(submission.job_subject.clone(), headers, job.into()).await?.await?;
            Ok::<_, async_nats::Error>(())
        }
        .await;
        if let Err(err) = queued {
            return Err(StoreError::Unavailable(format!("the build could not be queued: {err}")));
        }
        let record = BuildRecord::queued(build_id.clone(), submission.work.clone(), submission.requested_by.clone());
        self.create_build(&record).await
    }

    /// The record of build `build_id`.
    pub async fn build(&self, build_id: &BuildId) -> Result<Option<BuildRecord>, StoreError> {
        read_json(&self.buckets.builds, build_id.as_str()).await
    }

    /// The build that the identical-work claim of `work` names (queued, running or ended), if it has a
    /// record.
    pub async fn identical_build(&self, work: &BuildWork) -> Result<Option<BuildRecord>, StoreError> {
        let Some(entry) = live_entry(&self.buckets.active, &content_hash(work)).await? else { return Ok(None) };
        match std::str::from_utf8(&entry.value).ok().and_then(|id| BuildId::parse(id).ok()) {
            Some(build_id) => self.build(&build_id).await,
            None => Ok(None),
        }
    }

    /// The newest build of `component` at `tag` for `architecture` among its last [`PAGE_SIZE`] builds,
    /// if it is queued, running, or failed lately: what a lookup of the absent version answers instead
    /// of queueing a build of its own (a lookup's build names no commit, so no identical-work key finds
    /// it).
    pub async fn pending_component_build(
        &self,
        component: &ComponentName,
        tag: &TagName,
        architecture: Architecture,
    ) -> Result<Option<BuildRecord>, StoreError> {
        let mut walk = self.walk_builds(List::Component(component), None).await?;
        let mut walked = 0;
        // Records are read a batch at a time, newest first, rather than one round trip each.
        while walked < PAGE_SIZE {
            let mut ids = Vec::new();
            while ids.len() < PENDING_BATCH && walked < PAGE_SIZE {
                let Some(id) = walk.next().await? else { break };
                walked += 1;
                ids.extend(BuildId::parse(&id).ok());
            }
            if ids.is_empty() {
                break;
            }
            let records = futures::future::try_join_all(ids.iter().map(|id| self.build(id))).await?;
            let same_version = records.into_iter().flatten().find(|record| {
                matches!(&record.work, BuildWork::Component { request, .. }
                    if request.tag == *tag && request.architecture == architecture)
            });
            if let Some(record) = same_version {
                let pending = match record.status {
                    BuildStatus::Queued | BuildStatus::Running => true,
                    BuildStatus::Failed => failed_lately(&record),
                    BuildStatus::Succeeded | BuildStatus::Cancelled => false,
                };
                return Ok(pending.then_some(record));
            }
        }
        Ok(None)
    }

    /// Stores a new build's record, listed first: a crash in between leaves an index entry without a
    /// record, which listings skip, never a record that no listing finds.
    pub async fn create_build(&self, record: &BuildRecord) -> Result<(), StoreError> {
        // The two lists are independent: one round of round trips, not two, on every submission.
        tokio::try_join!(
            self.append_to_index(List::All, &record.build_id),
            self.append_to_index(List::Component(record.work.component()), &record.build_id),
        )?;
        let bytes = to_bytes(record);
        retry_unanswered(|| self.buckets.builds.put(record.build_id.as_str(), bytes.clone()))
            .await
            .map_err(StoreError::unavailable)?;
        self.publish_event(record).await;
        Ok(())
    }

    /// Changes a build's record with compare-and-set and publishes the new state on
    /// `<prefix>.events.build.<id>`.
    pub async fn update_build(
        &self,
        build_id: &BuildId,
        change: impl FnMut(&mut BuildRecord),
    ) -> Result<BuildRecord, StoreError> {
        let builds = &self.buckets.builds;
        // Shared by the rounds, each of which calls it once, between two awaits.
        let change = std::sync::Mutex::new(change);
        let record = until_won(build_id.as_str(), || {
            let change = &change;
            async move {
                let entry = live_entry(builds, build_id.as_str())
                    .await?
                    .ok_or_else(|| StoreError::NotFound(format!("no build has id {build_id}")))?;
                let mut record: BuildRecord =
                    serde_json::from_slice(&entry.value).map_err(|err| StoreError::corrupt(build_id.as_str(), err))?;
                (change.lock().unwrap_or_else(|p| p.into_inner()))(&mut record);
                Ok(
                    match write_if_unchanged(builds, build_id.as_str(), Some(entry.revision), to_bytes(&record)).await?
                    {
                        Round::Done(_) => Round::Done(record),
                        Round::Lost => Round::Lost,
                    },
                )
            }
        })
        .await?;
        self.publish_event(&record).await;
        Ok(record)
    }

    /// Removes a build's record (the collector's, once nothing needs it).
    pub async fn remove_build(&self, build_id: &BuildId) -> Result<(), StoreError> {
        retry_unanswered(|| self.buckets.builds.purge(build_id.as_str())).await.map_err(StoreError::unavailable)
    }

    /// Every build record.
    pub async fn all_builds(&self) -> Result<Vec<BuildRecord>, StoreError> {
        crate::access::all_values(&self.buckets.builds).await
    }

    async fn publish_event(&self, record: &BuildRecord) {
        let event = to_bytes(record);
        if let Err(err) = self.client.publish(self.subjects.build_events(&record.build_id), event).await {
            tracing::warn!(%err, build_id = %record.build_id, "could not publish build event");
        }
    }

    /// The build's record each time it changes, from now on (the current one first).
    pub async fn build_changes(
        &self,
        build_id: &BuildId,
    ) -> Result<impl Stream<Item = BuildRecord> + Send + 'static, StoreError> {
        let changes = self.buckets.builds.watch(build_id.as_str()).await.map_err(StoreError::unavailable)?;
        let current = self.build(build_id).await?;
        let later = changes.filter_map(|entry| async move {
            entry.ok().and_then(|entry| serde_json::from_slice::<BuildRecord>(&entry.value).ok())
        });
        Ok(futures::stream::iter(current).chain(later))
    }

    /// Waits until the build ends or `limit` passes; returns the record if it ended in time.
    pub async fn wait_until_finished(&self, build_id: &BuildId, limit: Duration) -> Option<BuildRecord> {
        let waiting = async {
            let changes = self.build_changes(build_id).await.ok()?;
            let mut changes = std::pin::pin!(changes);
            while let Some(record) = changes.next().await {
                if record.status.is_finished() {
                    return Some(record);
                }
            }
            None
        };
        tokio::time::timeout(limit, waiting).await.ok().flatten()
    }

    /// Gives up the dedup claim of `work` if it still names `build_id` (the collector's, for builds
    /// that ended long ago).
    pub async fn release_claim(&self, work: &BuildWork, build_id: &BuildId) -> Result<(), StoreError> {
        let key = content_hash(work);
        let Some(entry) = live_entry(&self.buckets.active, &key).await? else { return Ok(()) };
        if entry.value.as_ref() == build_id.as_str().as_bytes() {
            if let Err(err) = self.buckets.active.purge_expect_revision(&key, Some(entry.revision)).await {
                tracing::debug!(%err, %key, "the claim changed meanwhile; it stays");
            }
        }
        Ok(())
    }
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
