//! The NATS connection every process opens, and the JetStream resources they share.
//!
//! Each process ensures the resources at start (creating a stream or bucket whose configuration is
//! unchanged is a no-op), so the stack starts in any order and a fresh server needs no set-up step.
//! `nats/README.md` documents every stream, bucket and subject.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, kv, object_store, stream};

use artifacts_schemas::Subjects;

use crate::configuration::{redact_url, Settings};

/// A connected process: the client, JetStream, the subject names and the shared stores.
#[derive(Clone)]
pub struct Nats {
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
    pub subjects: Subjects,
    pub stores: Stores,
}

/// The key-value buckets and object store behind lookups.
#[derive(Clone)]
pub struct Stores {
    /// Build records by build id.
    pub builds: kv::Store,
    /// The latest successful image per component, branch and architecture.
    pub images: kv::Store,
    /// The latest stored component per component, tag and architecture.
    pub components: kv::Store,
    /// Component tarballs.
    pub archives: object_store::ObjectStore,
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
    pub fn images_bucket(&self) -> String {
        format!("{}_images", self.base)
    }
    pub fn components_bucket(&self) -> String {
        format!("{}_components", self.base)
    }
    pub fn archives_bucket(&self) -> String {
        format!("{}_archives", self.base)
    }
    pub fn jobs_stream(&self) -> String {
        format!("{}_JOBS", self.base.to_uppercase())
    }
    pub fn push_stream(&self) -> String {
        format!("{}_PUSH", self.base.to_uppercase())
    }
}

/// Connects, retrying until `nats.connect_timeout_secs` has passed, then ensures the resources.
pub async fn connect(settings: &Settings, process_name: &str) -> anyhow::Result<Nats> {
    let url = &settings.nats.url;
    let deadline = Instant::now() + Duration::from_secs(settings.nats.connect_timeout_secs);
    let client = loop {
        let attempt = async_nats::ConnectOptions::new()
            .name(process_name)
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(settings.request_timeout()))
            .connect(url.as_str())
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
    let jetstream = jetstream::new(client.clone());
    let subjects = settings.subjects();
    let stores = ensure_resources(&jetstream, &subjects).await.with_context(|| {
        format!("cannot set up JetStream on {}: is the server running with JetStream enabled (-js)?", redact_url(url))
    })?;
    Ok(Nats { client, jetstream, subjects, stores })
}

/// Creates every stream and bucket that is missing.
pub async fn ensure_resources(js: &jetstream::Context, subjects: &Subjects) -> anyhow::Result<Stores> {
    let names = ResourceNames::new(subjects);
    js.get_or_create_stream(stream::Config {
        name: names.jobs_stream(),
        description: Some("Durable build jobs, one consumer per kind and architecture".into()),
        subjects: vec![subjects.jobs_wildcard()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(10 * 60),
        ..Default::default()
    })
    .await
    .context("jobs stream")?;
    js.get_or_create_stream(stream::Config {
        name: names.push_stream(),
        description: Some("Git push events from webhooks and CI systems".into()),
        subjects: vec![subjects.git_push()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_age: Duration::from_secs(7 * 24 * 3600),
        // Forges redeliver a webhook for hours; a delivery id seen within a day collapses into one event.
        duplicate_window: Duration::from_secs(24 * 3600),
        ..Default::default()
    })
    .await
    .context("push stream")?;
    let builds = key_value(js, names.builds_bucket(), "Build records by build id", 1).await?;
    let images = key_value(js, names.images_bucket(), "Latest image per component/branch/architecture", 10).await?;
    let components =
        key_value(js, names.components_bucket(), "Latest component per component/tag/architecture", 10).await?;
    let archives = match js.get_object_store(names.archives_bucket()).await {
        Ok(store) => store,
        Err(_) => js
            .create_object_store(object_store::Config {
                bucket: names.archives_bucket(),
                description: Some("Component tarballs (.tar.gz)".into()),
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .context("archives object store")?,
    };
    Ok(Stores { builds, images, components, archives })
}

/// Creates the bucket's stream directly with the configuration `create_key_value` would use:
/// `create_key_value` first queries the account, and async-nats 0.51 cannot parse nats-server 2.9's
/// account info.
async fn key_value(
    js: &jetstream::Context,
    bucket: String,
    description: &str,
    history: i64,
) -> anyhow::Result<kv::Store> {
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{bucket}"),
        description: Some(description.into()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: history,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: 1,
        ..Default::default()
    })
    .await
    .with_context(|| format!("key-value bucket {bucket}"))?;
    js.get_key_value(&bucket).await.with_context(|| format!("key-value bucket {bucket}"))
}
