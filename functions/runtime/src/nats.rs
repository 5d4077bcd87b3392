//! The NATS connection every process opens, and the JetStream resources they share.
//!
//! Each process ensures the resources at start (creating a stream or bucket whose configuration is
//! unchanged is a no-op), so the stack starts in any order and a fresh server needs no set-up step.
//! `nats/README.md` documents every stream, bucket and subject.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, kv, object_store, stream};

use artifacts_schemas::{RequestError, Subjects};

use crate::configuration::{redact_url, Settings, StorageSettings};

/// A connected process: the client, JetStream, the subject names and the shared stores.
#[derive(Clone)]
pub struct Nats {
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
    pub subjects: Subjects,
    pub stores: Stores,
    /// The key of build secrets (`secrets.key_file`), loaded when first needed ([`crate::secrets`]).
    pub secrets: std::sync::Arc<crate::secrets::Keyring>,
    /// The connection's losses and reconnections, so that a request in flight on a lost connection is
    /// sent again at once ([`crate::service::call`]).
    pub link: crate::service::Link,
}

/// The key-value buckets and object store behind lookups.
#[derive(Clone)]
pub struct Stores {
    /// Build records by build id.
    pub builds: kv::Store,
    /// Build ids newest first, of every build and per component ([`crate::build_index`]).
    pub build_index: kv::Store,
    /// The latest successful image per component, branch and architecture.
    pub images: kv::Store,
    /// The latest stored component per component, tag and architecture.
    pub components: kv::Store,
    /// Component tarballs.
    pub archives: object_store::ObjectStore,
    /// Build sources by content: `dockerfiles/<sha256 hex>`, `contexts/<sha256 hex>`.
    pub uploads: object_store::ObjectStore,
    /// Which build is queued or running for a submission's content hash (identical builds run once).
    pub active: kv::Store,
    /// Where each component's source is known from, by component.
    pub sources: kv::Store,
    /// Pushes the git trigger has handled, and the latest build it started per target.
    pub pushes: kv::Store,
    /// Managed API keys by key id (hashes, never secrets).
    pub keys: kv::Store,
    /// Who may use an uploaded build context: `<sha256 hex>/key/<key id>` (the uploader) and
    /// `<sha256 hex>/component/<component slug>` (the component it was uploaded for).
    pub upload_grants: kv::Store,
    /// The component each registry repository holds images of, so registry tokens follow component
    /// patterns (repository names are not reversible: branches are slugged).
    pub repositories: kv::Store,
    /// What a push reaches: the components built from each repository, the dependants of each component
    /// version ([`crate::trigger_index`]).
    pub trigger_index: kv::Store,
    /// Registry pushes in flight and the registry's blob collection, which never overlap
    /// ([`crate::registry_gate`]).
    pub registry_gate: kv::Store,
    /// Build secrets by the hex of their name, each value encrypted ([`crate::secrets`]).
    pub secrets: kv::Store,
}

/// Names of the JetStream resources under a subject prefix: `artifacts` gives `artifacts_builds`,
/// `ARTIFACTS_JOBS`, and so on, so two deployments with different prefixes can share a server.
pub struct ResourceNames {
    base: String,
}

impl ResourceNames {
    pub fn new(subjects: &Subjects) -> Self {
        Self { base: subjects.prefix().replace('.', "_") }
    }

    pub fn builds_bucket(&self) -> String {
        format!("{}_builds", self.base)
    }
    pub fn build_index_bucket(&self) -> String {
        format!("{}_build_index", self.base)
    }
    pub fn images_bucket(&self) -> String {
        format!("{}_images", self.base)
    }
    pub fn components_bucket(&self) -> String {
        format!("{}_components", self.base)
    }
    pub fn archives_bucket(&self) -> String {
        format!("{}_archives", self.base)
    }
    pub fn uploads_bucket(&self) -> String {
        format!("{}_uploads", self.base)
    }
    pub fn sources_bucket(&self) -> String {
        format!("{}_sources", self.base)
    }
    pub fn keys_bucket(&self) -> String {
        format!("{}_keys", self.base)
    }
    pub fn pushes_bucket(&self) -> String {
        format!("{}_pushes", self.base)
    }
    pub fn active_bucket(&self) -> String {
        format!("{}_active", self.base)
    }
    pub fn repositories_bucket(&self) -> String {
        format!("{}_repositories", self.base)
    }
    pub fn upload_grants_bucket(&self) -> String {
        format!("{}_upload_grants", self.base)
    }
    pub fn trigger_index_bucket(&self) -> String {
        format!("{}_trigger_index", self.base)
    }
    pub fn registry_gate_bucket(&self) -> String {
        format!("{}_registry_gate", self.base)
    }
    pub fn secrets_bucket(&self) -> String {
        format!("{}_secrets", self.base)
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

/// The inbox prefix of the stack's own processes. Clients may subscribe only to `_INBOX_<their key id>.>`
/// (key ids are hex), so no client can read the replies the stack receives: records, key hashes, chunks.
pub const SERVICE_INBOX_PREFIX: &str = "_INBOX_service";

/// Connects, retrying until `nats.connect_timeout_secs` has passed, then ensures the resources.
pub async fn connect(settings: &Settings, process_name: &str) -> anyhow::Result<Nats> {
    let url = &settings.nats.url;
    let deadline = Instant::now() + Duration::from_secs(settings.nats.connect_timeout_secs);
    // async-nats 0.51 ignores credentials in the URL: take them out and pass them as options.
    let (servers, credentials) = split_credentials(url);
    let (link, on_event) = crate::service::Link::new(settings.request_timeout());
    let client = loop {
        let options = match &credentials {
            Some((user, password)) => {
                async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
            }
            None => async_nats::ConnectOptions::new(),
        };
        let attempt = options
            .name(process_name)
            .custom_inbox_prefix(SERVICE_INBOX_PREFIX)
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(settings.request_timeout()))
            // The first node listed that answers, not a random one: the stack's processes on one host
            // then share a node (list the host's own first), and a request does not cross routes twice.
            .retain_servers_order()
            .event_callback(on_event.clone())
            .connect(servers.as_slice())
            .await;
        match attempt {
            Ok(client) => break client,
            Err(err) if Instant::now() < deadline => {
                tracing::warn!(url = %redact_url(url), %err, "NATS is not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(err) => anyhow::bail!(
                "cannot reach NATS at {} after {}s: {err}. Start nats-server with JetStream (`artifacts up` does) or set nats.url / NATS_URL",
                redact_url(url),
                settings.nats.connect_timeout_secs
            ),
        }
    };
    tracing::info!(url = %redact_url(url), "connected to NATS");
    wait_for_jetstream(&client, deadline).await;
    let jetstream = jetstream::new(client.clone());
    let subjects = settings.subjects();
    let stores = ensure_resources(&jetstream, &subjects, settings.nats.replicas, &settings.storage)
        .await
        .map_err(|err| explain_setup_failure(err, &redact_url(url), &settings.storage))?;
    let secrets = std::sync::Arc::new(crate::secrets::Keyring::new(settings.secrets.key_file.clone()));
    Ok(Nats { client, jetstream, subjects, stores, secrets, link })
}

/// Waits, until `deadline` at most, for JetStream to answer: a cluster that has not elected its metadata
/// leader yet leaves API requests unanswered, and each set-up request would wait out the whole request
/// timeout. Any answer but "temporarily unavailable" (10008) ends the wait, "no responders" (a server
/// without JetStream) too: the set-up reports the rest.
async fn wait_for_jetstream(client: &async_nats::Client, deadline: Instant) {
    use async_nats::RequestErrorKind;
    loop {
        let answer = tokio::time::timeout(Duration::from_secs(1), client.request("$JS.API.INFO", "".into())).await;
        let unavailable = match &answer {
            Ok(Ok(reply)) => String::from_utf8_lossy(&reply.payload).contains("\"err_code\":10008"),
            Ok(Err(err)) => err.kind() != RequestErrorKind::NoResponders,
            Err(_) => true,
        };
        if !unavailable || Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `nats://user:password@host:port,...` -> ([`nats://host:port`, ...], (user, password)); the first
/// server's credentials apply to all.
fn split_credentials(url: &str) -> (Vec<String>, Option<(String, String)>) {
    let mut credentials = None;
    let servers: Vec<String> = url
        .split(',')
        .map(|server| {
            let server = server.trim();
            let (scheme, rest) = server.split_once("://").unwrap_or(("nats", server));
            match rest.rsplit_once('@') {
                Some((userinfo, host)) => {
                    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                    credentials.get_or_insert_with(|| (user.to_owned(), password.to_owned()));
                    format!("{scheme}://{host}")
                }
                None => format!("{scheme}://{rest}"),
            }
        })
        .collect();
    (servers, credentials)
}

/// Creates every stream and bucket that is missing. Processes starting together race to create the same
/// streams, and the server refuses the loser's create (e.g. "subjects overlap with an existing stream")
/// while the winner's is not yet in place: every step is idempotent, so a refused round is simply run again.
pub async fn ensure_resources(
    js: &jetstream::Context,
    subjects: &Subjects,
    replicas: usize,
    storage: &StorageSettings,
) -> anyhow::Result<Stores> {
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
    storage: &'a StorageSettings,
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

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut value, mut unit) = (bytes as f64, 0);
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Set-up failures as an operator can act on them: too little JetStream storage names the caps to lower.
fn explain_setup_failure(err: anyhow::Error, url: &str, storage: &StorageSettings) -> anyhow::Error {
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

async fn create_resources(setup: &Setup<'_>, subjects: &Subjects) -> anyhow::Result<Stores> {
    let (js, replicas, storage) = (setup.js, setup.replicas, setup.storage);
    let names = ResourceNames::new(subjects);
    let jobs_cap = Cap { setting: "storage.jobs_bytes", bytes: storage.jobs_bytes };
    let events_cap = Cap { setting: "storage.events_bytes", bytes: storage.events_bytes };
    let logs_cap = Cap { setting: "storage.logs_bytes", bytes: storage.logs_bytes };
    // Created or updated, as the logs and push streams: byte caps reach deployments made before them.
    js.create_or_update_stream(stream::Config {
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
    })
    .await
    .with_context(|| format!("jobs stream ({jobs_cap})"))?;
    // Created or updated: the first round stored pushes on the public subject itself.
    js.create_or_update_stream(stream::Config {
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
    })
    .await
    .with_context(|| format!("push stream ({events_cap})"))?;
    js.create_or_update_stream(stream::Config {
        name: names.dead_letter_stream(),
        description: Some("Jobs that failed at every allowed delivery, kept for an operator to read and replay".into()),
        subjects: vec![subjects.dead_letters_wildcard()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_age: Duration::from_secs(30 * 24 * 3600),
        max_bytes: events_cap.max_bytes(),
        discard: stream::DiscardPolicy::Old,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .with_context(|| format!("dead-letter stream ({events_cap})"))?;
    js.create_or_update_stream(stream::Config {
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
    })
    .await
    .with_context(|| format!("logs stream ({logs_cap})"))?;
    let builds = key_value(setup, names.builds_bucket(), "Build records by build id", 1).await?;
    let build_index =
        key_value(setup, names.build_index_bucket(), "Build ids newest first: every build and per component", 1)
            .await?;
    let active = key_value(setup, names.active_bucket(), "Queued or running build per submission hash", 1).await?;
    let sources = key_value(setup, names.sources_bucket(), "Where each component's source is known from", 1).await?;
    let pushes =
        key_value(setup, names.pushes_bucket(), "Pushes handled by the git trigger, latest triggered builds", 1)
            .await?;
    let keys = key_value(setup, names.keys_bucket(), "Managed API keys by key id: hashes, never secrets", 1).await?;
    let upload_grants =
        key_value(setup, names.upload_grants_bucket(), "Who may use each uploaded build context", 1).await?;
    let images = key_value(setup, names.images_bucket(), "Latest image per component/branch/architecture", 10).await?;
    let components =
        key_value(setup, names.components_bucket(), "Latest component per component/tag/architecture", 10).await?;
    let archives = object_store(
        setup,
        names.archives_bucket(),
        "Component tarballs (.tar.gz)",
        Cap { setting: "storage.archives_bytes", bytes: storage.archives_bytes },
    )
    .await?;
    let uploads = object_store(
        setup,
        names.uploads_bucket(),
        "Build sources: Dockerfiles and contexts",
        Cap { setting: "storage.uploads_bytes", bytes: storage.uploads_bytes },
    )
    .await?;
    let repositories =
        key_value(setup, names.repositories_bucket(), "The component of each registry repository", 1).await?;
    let trigger_index = key_value(
        setup,
        names.trigger_index_bucket(),
        "Components per repository and dependants per component version, for the git trigger",
        1,
    )
    .await?;
    let registry_gate =
        key_value(setup, names.registry_gate_bucket(), "Registry pushes in flight and the blob collection", 1).await?;
    let secrets =
        key_value(setup, names.secrets_bucket(), "Build secrets by name: values encrypted, never plaintext", 1).await?;
    Ok(Stores {
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

/// Runs a JetStream call again while it reached no one ("no responders"), for about a second at most.
///
/// Every API key change rewrites the NATS users and reloads nats-server, and nats-server 2.9 re-registers
/// each account's JetStream API during a reload: for 2 to 15 ms (measured here) a JetStream request finds
/// no responder. Such a request was never delivered, so sending it again is safe, writes included; any
/// other failure is returned at once.
pub async fn retry_unanswered<T, E, F, Fut>(call: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::error::Error + 'static,
{
    retry_while(call, reached_no_one).await
}

/// [`retry_unanswered`] for a read, which is also sent again once its answer did not come in time: an
/// answer on its way while a reload re-registers the accounts' imports is lost (seen once in a loaded
/// CI run, as a 503 `timed out` of `GET /keys`), and reading again changes nothing.
pub async fn retry_read<T, E, F, Fut>(call: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::error::Error + 'static,
{
    let mut timeouts = 0;
    retry_while(call, |err| {
        let timed_out = format!("{err}").contains("timed out");
        timeouts += u32::from(timed_out);
        reached_no_one(err) || (timed_out && timeouts <= 1)
    })
    .await
}

async fn retry_while<T, E, F, Fut>(
    mut call: F,
    mut again: impl FnMut(&(dyn std::error::Error + 'static)) -> bool,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::error::Error + 'static,
{
    const PAUSES_MS: [u64; 6] = [5, 20, 50, 100, 250, 500];
    let mut pauses = PAUSES_MS.into_iter();
    loop {
        match call().await {
            Err(err) if again(&err) => match pauses.next() {
                Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                None => return Err(err),
            },
            done => return done,
        }
    }
}

/// Whether a failure, or one of its causes, is a request that no subscriber received.
fn reached_no_one(err: &(dyn std::error::Error + 'static)) -> bool {
    use async_nats::jetstream::context::RequestErrorKind as JetStreamKind;
    let mut cause = Some(err);
    while let Some(err) = cause {
        if err
            .downcast_ref::<async_nats::RequestError>()
            .is_some_and(|e| e.kind() == async_nats::RequestErrorKind::NoResponders)
            || err
                .downcast_ref::<async_nats::jetstream::context::RequestError>()
                .is_some_and(|e| e.kind() == JetStreamKind::NoResponders)
        {
            return true;
        }
        cause = err.source();
    }
    // Some of async-nats's error kinds keep only the cause's text.
    let text = err.to_string();
    text.contains("no responders") || text.contains("requested JetStream resource does not exist")
}

/// Reads a JSON record from a key-value bucket.
pub async fn read_json<T: serde::de::DeserializeOwned>(
    store: &kv::Store,
    key: &str,
) -> Result<Option<T>, RequestError> {
    let Some(bytes) = retry_read(|| store.get(key)).await.map_err(unavailable)? else { return Ok(None) };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|err| RequestError::internal(format!("stored record {key} is unreadable: {err}")))
}

/// Changes the JSON record at `key` (the default value when there is none) with compare-and-set, again
/// when another writer got there first; `change` says whether it changed anything (nothing is written
/// otherwise). Returns the record as it now stands.
pub async fn update_json<T>(
    store: &kv::Store,
    key: &str,
    mut change: impl FnMut(&mut T) -> bool,
) -> Result<T, RequestError>
where
    T: Default + serde::Serialize + serde::de::DeserializeOwned,
{
    loop {
        let entry = retry_unanswered(|| store.entry(key)).await.map_err(unavailable)?;
        let mut value: T = entry
            .as_ref()
            .filter(|entry| entry.operation == kv::Operation::Put)
            .map(|entry| serde_json::from_slice(&entry.value))
            .transpose()
            .map_err(|err| RequestError::internal(format!("stored record {key} is unreadable: {err}")))?
            .unwrap_or_default();
        if !change(&mut value) {
            return Ok(value);
        }
        let bytes: bytes::Bytes = serde_json::to_vec(&value).expect("records serialise").into();
        let written = match &entry {
            Some(entry) => retry_unanswered(|| store.update(key, bytes.clone(), entry.revision))
                .await
                .map_err(|err| (err.kind() == kv::UpdateErrorKind::WrongLastRevision, err.to_string())),
            None => retry_unanswered(|| store.create(key, bytes.clone()))
                .await
                .map_err(|err| (err.kind() == kv::CreateErrorKind::AlreadyExists, err.to_string())),
        };
        match written {
            Ok(_) => return Ok(value),
            Err((true, _)) => continue,
            Err((false, err)) => return Err(unavailable(err)),
        }
    }
}

/// Deletes object `name` and the marker the object store leaves for a deleted name: with a name per
/// build, markers alone would grow the bucket by one for every build ever collected. An absent object
/// is no error.
pub async fn remove_object(
    js: &jetstream::Context,
    store: &object_store::ObjectStore,
    bucket: &str,
    name: &str,
) -> Result<(), RequestError> {
    use base64::Engine as _;
    match store.delete(name).await {
        Ok(()) => {}
        Err(err) if err.kind() == object_store::DeleteErrorKind::NotFound => {}
        Err(err) => return Err(unavailable(err)),
    }
    let marker = format!("$O.{bucket}.M.{}", base64::engine::general_purpose::URL_SAFE.encode(name));
    let stream = js.get_stream(format!("OBJ_{bucket}")).await.map_err(unavailable)?;
    stream.purge().filter(marker).await.map_err(unavailable)?;
    Ok(())
}

/// A hash of `parts` that is a valid key and subject token (hex SHA-256 of the parts, one per line).
pub fn key_hash(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(parts.join("\n").as_bytes()))
}

/// A JetStream failure as the 503 a client gets.
pub fn unavailable(err: impl std::fmt::Display) -> RequestError {
    RequestError::unavailable(format!("JetStream is unavailable: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_out_of_urls() {
        assert_eq!(
            split_credentials("nats://service:pw@127.0.0.1:4222"),
            (vec!["nats://127.0.0.1:4222".to_owned()], Some(("service".into(), "pw".into())))
        );
        assert_eq!(split_credentials("nats://127.0.0.1:4222"), (vec!["nats://127.0.0.1:4222".to_owned()], None));
        assert_eq!(split_credentials("localhost:4222").0, ["nats://localhost:4222"]);
        // A cluster: every node, the first one's credentials for all.
        assert_eq!(
            split_credentials("nats://service:pw@a:4222, nats://b:4223,c:4224"),
            (
                vec!["nats://a:4222".to_owned(), "nats://b:4223".to_owned(), "nats://c:4224".to_owned()],
                Some(("service".into(), "pw".into()))
            )
        );
    }
}
