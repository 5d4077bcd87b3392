//! Every stream, key-value bucket and object store of the stack, made in one place.
//!
//! Each process ensures the resources at start (creating a stream or bucket whose configuration is
//! unchanged is a no-op), so the stack starts in any order and a fresh server needs no set-up step.
//! `nats/README.md` documents every stream, bucket and subject.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, kv, object_store, stream};

use artifacts_schemas::messages::image::human_bytes;
use artifacts_schemas::Subjects;

use crate::StorageCaps;

/// The key-value buckets and object store behind lookups.
#[derive(Clone)]
pub(crate) struct Buckets {
    /// Build records by build id.
    pub(crate) builds: kv::Store,
    /// Build ids newest first, of every build and per component ([`crate::build_index`]).
    pub(crate) build_index: kv::Store,
    /// The latest successful image per component, branch and architecture.
    pub(crate) images: kv::Store,
    /// The latest stored component per component, tag and architecture.
    pub(crate) components: kv::Store,
    /// Component tarballs.
    pub(crate) archives: object_store::ObjectStore,
    /// Build sources by content: `dockerfiles/<sha256 hex>`, `contexts/<sha256 hex>`.
    pub(crate) uploads: object_store::ObjectStore,
    /// Which build is queued or running for a submission's content hash (identical builds run once).
    pub(crate) active: kv::Store,
    /// Where each component's source is known from, by component.
    pub(crate) sources: kv::Store,
    /// Pushes the git trigger has handled, and the latest build it started per target.
    pub(crate) pushes: kv::Store,
    /// Managed API keys by key id (hashes, never secrets).
    pub(crate) keys: kv::Store,
    /// Who may use an uploaded build context: `<sha256 hex>/key/<key id>` (the uploader) and
    /// `<sha256 hex>/component/<component slug>` (the component it was uploaded for).
    pub(crate) upload_grants: kv::Store,
    /// The component each registry repository holds images of, so registry tokens follow component
    /// patterns (repository names are not reversible: branches are slugged).
    pub(crate) repositories: kv::Store,
    /// What a push reaches: the components built from each repository, the dependants of each component
    /// version ([`crate::trigger_index`]).
    pub(crate) trigger_index: kv::Store,
    /// Registry pushes in flight and the registry's blob collection, which never overlap
    /// ([`crate::registry_gate`]).
    pub(crate) registry_gate: kv::Store,
    /// Build secrets by the hex of their name, each value encrypted ([`crate::secrets`]).
    pub(crate) secrets: kv::Store,
}

/// Names of the JetStream resources under a subject prefix: `artifacts` gives `artifacts_builds`,
/// `ARTIFACTS_JOBS`, and so on, so two deployments with different prefixes can share a server. Bucket
/// names stay in this crate; stream names are public, for the consumers of jobs, pushes and logs.
#[derive(Debug, Clone)]
pub struct ResourceNames {
    base: String,
}

impl ResourceNames {
    pub fn new(subjects: &Subjects) -> Self {
        Self { base: subjects.prefix().replace('.', "_") }
    }

    pub fn bucket(&self, name: &str) -> String {
        format!("{}_{name}", self.base)
    }

    pub fn logs_stream(&self) -> String {
        format!("{}_LOGS", self.base.to_uppercase())
    }
    pub fn jobs_stream(&self) -> String {
        format!("{}_JOBS", self.base.to_uppercase())
    }
    pub fn push_stream(&self) -> String {
        format!("{}_PUSH", self.base.to_uppercase())
    }
    pub fn dead_letter_stream(&self) -> String {
        format!("{}_DEAD_LETTERS", self.base.to_uppercase())
    }
}

/// Creates every stream and bucket that is missing. Processes starting together race to create the same
/// streams, and the server refuses the loser's create (e.g. "subjects overlap with an existing stream")
/// while the winner's is not yet in place: every step is idempotent, so a refused round is simply run again.
pub(crate) async fn ensure_resources(
    js: &jetstream::Context,
    subjects: &Subjects,
    replicas: usize,
    storage: &StorageCaps,
) -> anyhow::Result<Buckets> {
    const ROUNDS: u32 = 10;
    let mut round = 1;
    loop {
        // Boxed: the set-up future is large, and callers (tests especially) hold many at once.
        match Box::pin(create_resources(&Setup { js, replicas, storage }, subjects)).await {
            Ok(stores) => return Ok(stores),
            Err(err) if round < ROUNDS => {
                tracing::debug!(error = %format!("{err:#}"), round, "JetStream set-up raced another process; again");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(round))).await;
                round += 1;
            }
            Err(err) => return Err(err),
        }
    }
}

/// What every resource is made with: the context, the replicas, the caps.
struct Setup<'a> {
    js: &'a jetstream::Context,
    replicas: usize,
    storage: &'a StorageCaps,
}

/// A byte cap and the setting it comes from, for messages that name what to change.
#[derive(Clone, Copy)]
struct Cap {
    setting: &'static str,
    bytes: u64,
}

impl Cap {
    fn max_bytes(self) -> i64 {
        i64::try_from(self.bytes).unwrap_or(i64::MAX)
    }
}

impl std::fmt::Display for Cap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} = {}", self.setting, human_bytes(self.bytes))
    }
}

/// Set-up failures as an operator can act on them: too little JetStream storage names the caps to lower.
pub(crate) fn explain_setup_failure(err: anyhow::Error, url: &str, storage: &StorageCaps) -> anyhow::Error {
    let text = format!("{err:#}");
    if text.contains("insufficient storage") || text.contains("insufficient resources") {
        let reserved = storage.archives_bytes
            + storage.uploads_bytes
            + storage.logs_bytes
            + storage.jobs_bytes
            + 2 * storage.events_bytes
            + KEY_VALUE_BUCKETS * storage.bucket_bytes;
        return anyhow::anyhow!(
            "JetStream on {url} has less storage than the stack's caps reserve ({} in all, on every replica's node): \
             lower the setting named here, or give nats-server more JetStream storage (max_file_store). {text}",
            human_bytes(reserved)
        );
    }
    err.context(format!("cannot set up JetStream on {url}: is the server running with JetStream enabled (-js)?"))
}

/// The key-value buckets `create_resources` makes, each capped at `storage.bucket_bytes`.
const KEY_VALUE_BUCKETS: u64 = 14;

async fn create_resources(setup: &Setup<'_>, subjects: &Subjects) -> anyhow::Result<Buckets> {
    let (js, replicas, storage) = (setup.js, setup.replicas, setup.storage);
    let names = ResourceNames::new(subjects);
    let jobs_cap = Cap { setting: "storage.jobs_bytes", bytes: storage.jobs_bytes };
    let events_cap = Cap { setting: "storage.events_bytes", bytes: storage.events_bytes };
    let logs_cap = Cap { setting: "storage.logs_bytes", bytes: storage.logs_bytes };
    // Created, or updated where it differs, as the logs and push streams: byte caps reach deployments made
    // before them.
    ensure_stream(
        js,
        stream::Config {
            name: names.jobs_stream(),
            description: Some("Durable build jobs, one consumer per kind and architecture".into()),
            subjects: vec![subjects.jobs_wildcard()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(10 * 60),
            max_bytes: jobs_cap.max_bytes(),
            max_messages: MAX_QUEUED_JOBS,
            // A job no worker took in this long names an architecture no worker serves any more.
            max_age: JOB_MAX_AGE,
            max_message_size: MAX_RECORD_BYTES,
            // A full queue refuses new builds rather than dropping queued ones.
            discard: stream::DiscardPolicy::New,
            num_replicas: replicas,
            ..Default::default()
        },
    )
    .await
    .with_context(|| format!("jobs stream ({jobs_cap})"))?;
    // Created or updated: the first round stored pushes on the public subject itself.
    ensure_stream(
        js,
        stream::Config {
            name: names.push_stream(),
            description: Some("Git push events from webhooks and CI systems, checked before they are stored".into()),
            subjects: vec![subjects.git_push_accepted(), subjects.git_push_dependents()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: events_cap.max_bytes(),
            max_message_size: MAX_PUSH_EVENT_BYTES as i32,
            // Forges redeliver a webhook for hours; a delivery id seen within a day collapses into one event.
            duplicate_window: Duration::from_secs(24 * 3600),
            num_replicas: replicas,
            ..Default::default()
        },
    )
    .await
    .with_context(|| format!("push stream ({events_cap})"))?;
    ensure_stream(
        js,
        stream::Config {
            name: names.dead_letter_stream(),
            description: Some(
                "Jobs that failed at every allowed delivery, kept for an operator to read and replay".into(),
            ),
            subjects: vec![subjects.dead_letters_wildcard()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_bytes: events_cap.max_bytes(),
            discard: stream::DiscardPolicy::Old,
            num_replicas: replicas,
            ..Default::default()
        },
    )
    .await
    .with_context(|| format!("dead-letter stream ({events_cap})"))?;
    ensure_stream(
        js,
        stream::Config {
            name: names.logs_stream(),
            description: Some("Build log lines, one subject per build".into()),
            subjects: vec![subjects.logs_wildcard()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_messages_per_subject: MAX_LOG_LINES_PER_BUILD,
            max_bytes: logs_cap.max_bytes(),
            max_message_size: MAX_RECORD_BYTES,
            max_age: Duration::from_secs(30 * 24 * 3600),
            discard: stream::DiscardPolicy::Old,
            num_replicas: replicas,
            ..Default::default()
        },
    )
    .await
    .with_context(|| format!("logs stream ({logs_cap})"))?;
    let builds = key_value(setup, names.bucket("builds"), "Build records by build id", 1).await?;
    let build_index =
        key_value(setup, names.bucket("build_index"), "Build ids newest first: every build and per component", 1)
            .await?;
    let active = key_value(setup, names.bucket("active"), "Queued or running build per submission hash", 1).await?;
    let sources = key_value(setup, names.bucket("sources"), "Where each component's source is known from", 1).await?;
    let pushes =
        key_value(setup, names.bucket("pushes"), "Pushes handled by the git trigger, latest triggered builds", 1)
            .await?;
    let keys = key_value(setup, names.bucket("keys"), "Managed API keys by key id: hashes, never secrets", 1).await?;
    let upload_grants =
        key_value(setup, names.bucket("upload_grants"), "Who may use each uploaded build context", 1).await?;
    let images = key_value(setup, names.bucket("images"), "Latest image per component/branch/architecture", 10).await?;
    let components =
        key_value(setup, names.bucket("components"), "Latest component per component/tag/architecture", 10).await?;
    let archives = object_store(
        setup,
        names.bucket("archives"),
        "Component tarballs (.tar.gz)",
        Cap { setting: "storage.archives_bytes", bytes: storage.archives_bytes },
    )
    .await?;
    let uploads = object_store(
        setup,
        names.bucket("uploads"),
        "Build sources: Dockerfiles and contexts",
        Cap { setting: "storage.uploads_bytes", bytes: storage.uploads_bytes },
    )
    .await?;
    let repositories =
        key_value(setup, names.bucket("repositories"), "The component of each registry repository", 1).await?;
    let trigger_index = key_value(
        setup,
        names.bucket("trigger_index"),
        "Components per repository and dependants per component version, for the git trigger",
        1,
    )
    .await?;
    let registry_gate =
        key_value(setup, names.bucket("registry_gate"), "Registry pushes in flight and the blob collection", 1).await?;
    let secrets =
        key_value(setup, names.bucket("secrets"), "Build secrets by name: values encrypted, never plaintext", 1)
            .await?;
    Ok(Buckets {
        builds,
        build_index,
        images,
        components,
        archives,
        uploads,
        active,
        sources,
        pushes,
        keys,
        upload_grants,
        repositories,
        trigger_index,
        registry_gate,
        secrets,
    })
}

/// The largest push event accepted: a push is a few hundred bytes of JSON.
pub const MAX_PUSH_EVENT_BYTES: usize = 64 * 1024;

/// Each build keeps at most this many log lines (the oldest go first); its bytes are capped by the
/// writer (`logs::MAX_LOG_BYTES_PER_BUILD`).
pub const MAX_LOG_LINES_PER_BUILD: i64 = 20_000;

/// The largest message of the jobs and logs streams and of a key-value record: the server's own
/// `max_payload`.
pub const MAX_RECORD_BYTES: i32 = 1024 * 1024;

/// Every stream has a byte cap (`storage.*_bytes`), so no client can fill the server's disk. Jobs and
/// records are a few KiB each; logs and events go oldest first; the object stores refuse what does not
/// fit (the build or upload fails). The server reserves every cap in full against its JetStream storage.
/// Every stream that takes messages has a count cap beside its byte cap: a key-value bucket's entries
/// (history included), and the queued jobs.
pub const KEY_VALUE_MESSAGES: i64 = 1_000_000;
pub const MAX_QUEUED_JOBS: i64 = 100_000;
/// A queued job is dropped after this long: only a deployment that lost every worker of an architecture
/// keeps one waiting that long (its record stays `queued` until cancelled).
pub const JOB_MAX_AGE: Duration = Duration::from_secs(14 * 24 * 3600);

async fn object_store(
    setup: &Setup<'_>,
    bucket: String,
    description: &str,
    cap: Cap,
) -> anyhow::Result<object_store::ObjectStore> {
    let js = setup.js;
    if let Ok(store) = js.get_object_store(&bucket).await {
        ensure_limits(setup, &format!("OBJ_{bucket}"), None, cap).await?;
        return Ok(store);
    }
    js.create_object_store(object_store::Config {
        bucket: bucket.clone(),
        description: Some(description.into()),
        storage: stream::StorageType::File,
        max_bytes: cap.max_bytes(),
        num_replicas: setup.replicas,
        ..Default::default()
    })
    .await
    .with_context(|| format!("object store {bucket} ({cap})"))
}

/// Creates the stream, or brings one an earlier version made to `wanted`: never an update that changes
/// nothing. nats-server 2.9.10 crashes (a nil pointer in `updateWithAdvisory`) when an update reaches a
/// stream another process is creating at that moment, which is what every process starting at once on a
/// fresh server did with async-nats's `create_or_update_stream` (it sends the update first): 2 of 144
/// fresh servers died under eight processes starting together, 0 of 120 since (`tests/tests/startup.rs`).
async fn ensure_stream(js: &jetstream::Context, wanted: stream::Config) -> anyhow::Result<()> {
    let found = js.get_or_create_stream(wanted.clone()).await?;
    if needs_update(&found.cached_info().config, &wanted) {
        tracing::info!(stream = %wanted.name, "bringing the stream's settings up to date");
        js.update_stream(wanted).await?;
    }
    Ok(())
}

/// Whether a stream's settings differ from what is wanted. A setting left at its default is the server's
/// to choose (it stores 0 as -1, a duplicate window of 0 as 2 minutes), so only the ones set are compared.
fn needs_update(current: &stream::Config, wanted: &stream::Config) -> bool {
    fn differs<T: PartialEq + Default>(current: &T, wanted: &T) -> bool {
        *wanted != T::default() && current != wanted
    }
    current.subjects != wanted.subjects
        || current.num_replicas != wanted.num_replicas
        || current.description != wanted.description
        || current.discard != wanted.discard
        || differs(&current.max_bytes, &wanted.max_bytes)
        || differs(&current.max_messages, &wanted.max_messages)
        || differs(&current.max_messages_per_subject, &wanted.max_messages_per_subject)
        || differs(&current.max_age, &wanted.max_age)
        || differs(&current.max_message_size, &wanted.max_message_size)
        || differs(&current.duplicate_window, &wanted.duplicate_window)
}

/// A bucket made before its settings changed follows them: the replicas (the server copies the data to
/// new replicas, or drops the extra ones, in the background), the message cap, and the byte cap, which
/// may not go below what the bucket already holds.
async fn ensure_limits(setup: &Setup<'_>, stream: &str, max_messages: Option<i64>, cap: Cap) -> anyhow::Result<()> {
    let mut found = setup.js.get_stream(stream).await.with_context(|| format!("stream {stream}"))?;
    let info = found.info().await.with_context(|| format!("stream {stream}"))?;
    let mut config = info.config.clone();
    if cap.bytes < info.state.bytes {
        anyhow::bail!(
            "{cap} is less than {stream} already holds ({}): raise it, or collect first (artifacts gc)",
            human_bytes(info.state.bytes)
        );
    }
    let changed = config.num_replicas != setup.replicas
        || max_messages.is_some_and(|max| config.max_messages != max)
        || config.max_bytes != cap.max_bytes();
    if changed {
        if config.num_replicas != setup.replicas {
            tracing::info!(stream, from = config.num_replicas, to = setup.replicas, "changing the replicas");
        }
        config.num_replicas = setup.replicas;
        config.max_messages = max_messages.unwrap_or(config.max_messages);
        config.max_bytes = cap.max_bytes();
        setup.js.update_stream(config).await.with_context(|| format!("updating {stream} ({cap})"))?;
    }
    Ok(())
}

/// Creates the bucket's stream directly with the configuration `create_key_value` would use:
/// `create_key_value` first queries the account, and async-nats 0.51 cannot parse nats-server 2.9's
/// account info.
async fn key_value(setup: &Setup<'_>, bucket: String, description: &str, history: i64) -> anyhow::Result<kv::Store> {
    let cap = Cap { setting: "storage.bucket_bytes", bytes: setup.storage.bucket_bytes };
    setup
        .js
        .get_or_create_stream(stream::Config {
            name: format!("KV_{bucket}"),
            description: Some(description.into()),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: history,
            max_messages: KEY_VALUE_MESSAGES,
            max_bytes: cap.max_bytes(),
            max_message_size: MAX_RECORD_BYTES,
            storage: stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            num_replicas: setup.replicas,
            ..Default::default()
        })
        .await
        .with_context(|| format!("key-value bucket {bucket} ({cap})"))?;
    ensure_limits(setup, &format!("KV_{bucket}"), Some(KEY_VALUE_MESSAGES), cap).await?;
    setup.js.get_key_value(&bucket).await.with_context(|| format!("key-value bucket {bucket}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_as_the_server_stores_it_needs_no_update() {
        let wanted = stream::Config {
            name: "S".into(),
            subjects: vec!["s.>".into()],
            description: Some("d".into()),
            max_bytes: 1 << 20,
            num_replicas: 1,
            ..Default::default()
        };
        // What nats-server answers for it: its defaults filled in.
        let stored = stream::Config {
            max_messages: -1,
            max_messages_per_subject: -1,
            max_message_size: -1,
            max_consumers: -1,
            duplicate_window: Duration::from_secs(120),
            ..wanted.clone()
        };
        assert!(!needs_update(&stored, &wanted));
        let smaller = stream::Config { max_bytes: 1 << 10, ..stored.clone() };
        assert!(needs_update(&smaller, &wanted), "a cap changed");
        let first_round = stream::Config { subjects: vec!["s".into()], ..stored.clone() };
        assert!(needs_update(&first_round, &wanted), "subjects changed");
        let single = stream::Config { num_replicas: 3, ..stored };
        assert!(needs_update(&single, &wanted), "replicas changed");
    }
}
