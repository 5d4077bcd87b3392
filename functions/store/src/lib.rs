//! The one owner of the stack's state.
//!
//! Every JetStream stream, key-value bucket and object store of the stack is made here ([`setup`]) and
//! reached only through [`Store`], whose methods are named for what the service does: submit a build,
//! record its progress, store the latest image or component, list builds, grant an upload, keep API
//! keys and secrets. Each method keeps the invariants of the records it touches together, as
//! mini-redis's `Db` does for its map and meilisearch's index scheduler for its task queue:
//!
//! ```text
//!   submit ──> active claim ──> job (work queue) ──> build index ──> build record
//!                 │ identical content: one build          │ newest first, by pages
//!   finish ─────> build record ──> latest image / component (moves only forward)
//!                                   └─> trigger index (what a push reaches)
//! ```
//!
//! - A submission is answered only once its job and record are stored: nothing answered is lost.
//! - A dedup claim never names a build without a record for longer than a submitter's crash.
//! - "Latest" records move only forward (build ids are UUIDv7 and sort by creation).
//!
//! Failures come back typed ([`StoreError`]); the gateway and the NATS endpoints turn them into answers.
//! Key formats live in [`keys`]; every compare-and-set goes through one bounded, jittered loop
//! ([`access`]).

pub mod access;
mod api_keys;
mod archives;
mod attestations;
mod build_index;
mod builds;
mod error;
pub mod keys;
mod latest;
mod pushes;
mod registry_gate;
mod repositories;
mod secrets;
mod setup;
mod sources;
mod trigger_index;
mod uploads;

use async_nats::jetstream;

use artifacts_schemas::Subjects;

pub use api_keys::{KeyChange, StoredKeyEntry};
pub use archives::{ObjectReader, Objects};
pub use attestations::Attestation;
pub use build_index::{List, Walk, ALL_SHARDS, PAGE_SIZE};
pub use builds::{content_hash, Submission, Submitted};
pub use error::StoreError;
pub use latest::Catalog;
pub use latest::Moved;
pub use registry_gate::{PUSH_STALE, SWEEP_LIMIT};
pub use repositories::RepositoryOwner;
pub use setup::{
    ResourceNames, JOB_MAX_AGE, KEY_VALUE_MESSAGES, MAX_LOG_LINES_PER_BUILD, MAX_PUSH_EVENT_BYTES, MAX_QUEUED_JOBS,
    MAX_RECORD_BYTES,
};

/// The byte caps of the stores, each named by the setting it comes from (`storage.*_bytes`).
#[derive(Debug, Clone)]
pub struct StorageCaps {
    pub archives_bytes: u64,
    pub uploads_bytes: u64,
    pub logs_bytes: u64,
    pub jobs_bytes: u64,
    pub events_bytes: u64,
    pub bucket_bytes: u64,
}

/// The stack's state: cheap to clone, one per process.
#[derive(Clone)]
pub struct Store {
    client: async_nats::Client,
    js: jetstream::Context,
    subjects: Subjects,
    names: ResourceNames,
    buckets: setup::Buckets,
}

impl Store {
    /// Ensures every stream and bucket (made if missing, caps and replicas brought up to date) and opens
    /// them. `server` names the server in messages (without credentials).
    pub async fn open(
        client: async_nats::Client,
        subjects: Subjects,
        replicas: usize,
        caps: &StorageCaps,
        server: &str,
    ) -> anyhow::Result<Self> {
        let js = jetstream::new(client.clone());
        let buckets = setup::ensure_resources(&js, &subjects, replicas, caps)
            .await
            .map_err(|err| setup::explain_setup_failure(err, server, caps))?;
        let names = ResourceNames::new(&subjects);
        Ok(Self { client, js, subjects, names, buckets })
    }

    /// The names of the streams, for the consumers of jobs, pushes and logs.
    pub fn streams(&self) -> &ResourceNames {
        &self.names
    }
}
