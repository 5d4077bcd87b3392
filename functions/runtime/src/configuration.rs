//! Settings of every artifacts process, layered with the `config` crate:
//! built-in defaults < a TOML file (`--config FILE` or `ARTIFACTS_CONFIG`) < `NATS_URL` and
//! `ARTIFACTS_ADMIN_KEY` < environment variables `ARTIFACTS__SECTION__KEY` (lists comma-separated).
//!
//! No file is needed: the defaults run the whole stack on one machine.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use artifacts_schemas::{Architecture, Subjects};

/// A value that must never reach a log: its `Debug` prints `[redacted]`.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub gateway: GatewaySettings,
    pub nats: NatsSettings,
    pub registry: RegistrySettings,
    pub docker: DockerSettings,
    pub git: GitSettings,
    pub hooks: HookSettings,
    pub log: LogSettings,
    pub build: BuildSettings,
    pub retention: RetentionSettings,
    pub secrets: SecretsSettings,
    pub provenance: ProvenanceSettings,
    pub storage: StorageSettings,
    /// The bootstrap admin API key (env `ARTIFACTS_ADMIN_KEY`).
    pub admin_key: Option<Secret>,
}

/// What JetStream keeps at most, per resource (env `ARTIFACTS__STORAGE__ARCHIVES_BYTES=20GiB`, ...; a
/// number of bytes, or one with `KiB`, `MiB`, `GiB`, `TiB`, `KB`, `MB`, `GB`, `TB`). JetStream reserves
/// every cap in full on each replica's node, so together they must fit each node's JetStream storage
/// (`max_file_store`); the stack refuses to start otherwise, naming the setting to lower. A cap below
/// what a resource already holds is refused too (nothing stored is dropped to fit).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSettings {
    /// Component tarballs (object store `artifacts_archives`).
    #[serde(deserialize_with = "byte_size")]
    pub archives_bytes: u64,
    /// Uploaded Dockerfiles and build contexts (object store `artifacts_uploads`).
    #[serde(deserialize_with = "byte_size")]
    pub uploads_bytes: u64,
    /// Build logs (the oldest lines go first).
    #[serde(deserialize_with = "byte_size")]
    pub logs_bytes: u64,
    /// Queued build jobs (a full queue refuses new builds).
    #[serde(deserialize_with = "byte_size")]
    pub jobs_bytes: u64,
    /// Push events, and the dead letters, each.
    #[serde(deserialize_with = "byte_size")]
    pub events_bytes: u64,
    /// Each key-value bucket (records, indexes, keys, ...).
    #[serde(deserialize_with = "byte_size")]
    pub bucket_bytes: u64,
    /// The JetStream storage (`max_file_store`) of each nats-server `artifacts up` runs. Unset: half of
    /// the space free on the data directory's filesystem plus what the JetStream store there already
    /// holds, shared by the nodes `up` runs on it; with the caps at their defaults, `up` then lowers the
    /// caps to fit it. Set: the caps must fit it, or `up` refuses to start, naming the cap to lower.
    /// A server `up` does not run has its own `max_file_store`.
    #[serde(deserialize_with = "optional_byte_size")]
    pub jetstream_bytes: Option<u64>,
}

impl StorageSettings {
    /// Key-value buckets the stack makes, each capped at `bucket_bytes` (see `nats::create_resources`).
    pub const KEY_VALUE_BUCKETS: u64 = 14;

    /// What the caps reserve on each replica's node: JetStream reserves every cap in full.
    pub fn reserved_bytes(&self) -> u64 {
        self.archives_bytes
            + self.uploads_bytes
            + self.logs_bytes
            + self.jobs_bytes
            + 2 * self.events_bytes
            + Self::KEY_VALUE_BUCKETS * self.bucket_bytes
    }

    /// The caps, each with its setting's name, largest first.
    pub fn caps(&self) -> Vec<(&'static str, u64)> {
        let mut caps = vec![
            ("storage.archives_bytes", self.archives_bytes),
            ("storage.uploads_bytes", self.uploads_bytes),
            ("storage.logs_bytes", self.logs_bytes),
            ("storage.jobs_bytes", self.jobs_bytes),
            ("storage.events_bytes", self.events_bytes),
            ("storage.bucket_bytes", self.bucket_bytes),
        ];
        caps.sort_by_key(|&(_, bytes)| std::cmp::Reverse(bytes));
        caps
    }

    /// Whether every cap has its default value.
    pub fn caps_are_defaults(&self) -> bool {
        let defaults = Self::default();
        self.caps() == defaults.caps()
    }
}

impl Default for StorageSettings {
    fn default() -> Self {
        const MIB: u64 = 1024 * 1024;
        const GIB: u64 = 1024 * MIB;
        Self {
            archives_bytes: 64 * GIB,
            uploads_bytes: 8 * GIB,
            logs_bytes: 4 * GIB,
            jobs_bytes: 256 * MIB,
            events_bytes: 256 * MIB,
            bucket_bytes: 256 * MIB,
            jetstream_bytes: None,
        }
    }
}

fn optional_byte_size<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    byte_size(deserializer).map(Some)
}

/// A size in bytes: a number, or a number with a unit (`20GiB`, `512 MiB`, `10GB`).
fn byte_size<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        Number(u64),
        Text(String),
    }
    match Given::deserialize(deserializer)? {
        Given::Number(bytes) => Ok(bytes),
        Given::Text(text) => parse_byte_size(&text).map_err(serde::de::Error::custom),
    }
}

pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = (text[..split].trim(), text[split..].trim());
    let unit_bytes: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1000 * 1000,
        "mib" => 1 << 20,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gib" => 1 << 30,
        "t" | "tb" => 1000 * 1000 * 1000 * 1000,
        "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "{text:?} is not a size: write bytes, or a number with KiB, MiB, GiB or TiB (or KB, MB, GB, TB)"
            ))
        }
    };
    let number: f64 = number.parse().map_err(|_| format!("{text:?} is not a size: it must start with a number"))?;
    Ok((number * unit_bytes as f64) as u64)
}

/// Build secrets (`artifacts_runtime::secrets`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecretsSettings {
    /// The key that encrypts build secrets at rest (32 random bytes, hex), env
    /// `ARTIFACTS__SECRETS__KEY_FILE`. Every process that stores or reads secrets (the gc function and the
    /// build workers) must be given the same file. `artifacts up` uses `<data dir>/secrets.key`; unset,
    /// `$XDG_DATA_HOME/artifacts/secrets.key` (else `~/.local/share/artifacts/secrets.key`). Made (mode
    /// 0600) on first use when missing.
    pub key_file: Option<PathBuf>,
}

/// Signed provenance (`artifacts_runtime::provenance`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProvenanceSettings {
    /// The Ed25519 key (PKCS#8 PEM) that signs every build's provenance, env
    /// `ARTIFACTS__PROVENANCE__KEY_FILE`. The build workers sign with it and the lookup function serves its
    /// public half, so every one of them must be given the same file. `artifacts up` uses
    /// `<data dir>/provenance-key.pem`; unset, `$XDG_DATA_HOME/artifacts/provenance-key.pem` (else
    /// `~/.local/share/artifacts/provenance-key.pem`). Made (mode 0600) on first use when missing.
    pub key_file: Option<PathBuf>,
}

/// What the collector keeps (`artifacts-gc`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSettings {
    /// Successful builds kept per target (image: component/branch/architecture; component:
    /// component/tag/architecture), the latest always among them.
    pub keep_successful: usize,
    /// Failed and cancelled builds, and their logs, are kept this many days.
    pub failed_days: u64,
    /// How often the collector runs by itself (0: only on demand).
    pub gc_interval_secs: u64,
    /// Policies for some components, the first whose pattern matches winning over the defaults above.
    pub policies: Vec<RetentionPolicy>,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self { keep_successful: 10, failed_days: 14, gc_interval_secs: 3600, policies: Vec::new() }
    }
}

/// `[[retention.policies]]`: what is kept of the components a glob pattern names (`team-a*`); a field
/// left out is the default's.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    pub components: String,
    pub keep_successful: Option<usize>,
    pub failed_days: Option<u64>,
}

impl RetentionSettings {
    /// (successful builds kept per target, days failed builds are kept) for `component`.
    pub fn for_component(&self, component: &str) -> (usize, u64) {
        let policy =
            self.policies.iter().find(|p| artifacts_schemas::messages::keys::glob_matches(&p.components, component));
        (
            policy.and_then(|p| p.keep_successful).unwrap_or(self.keep_successful),
            policy.and_then(|p| p.failed_days).unwrap_or(self.failed_days),
        )
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewaySettings {
    pub listen: SocketAddr,
    /// The largest request body accepted, in bytes (uploads: Dockerfiles with their build context).
    pub max_body_bytes: usize,
    /// The largest webhook delivery accepted, in bytes.
    pub max_webhook_bytes: usize,
    /// The slowest a webhook delivery's body may arrive, in bytes a second, after a 2 s grace (measured
    /// over each 2 s); a slower one is cut off with 408. 0: no minimum (the 30 s limit still holds).
    pub webhook_min_bytes_per_sec: u64,
    /// A client that has not sent a request head this long after connecting (or after its previous
    /// answer, on a kept-alive connection) is disconnected.
    pub header_timeout_secs: u64,
    /// Connections served at once; further ones wait until one closes.
    pub max_connections: usize,
    /// Requests one API key may make per minute on one gateway (0: no limit).
    pub rate_limit_per_minute: u32,
    /// The gateway's address as clients reach it, for download URLs given over NATS (default
    /// `http://<listen>`).
    pub public_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsSettings {
    /// One server, or several comma-separated (`nats://a:4222,nats://b:4222`): the nodes of a cluster,
    /// tried in turn at start and failed over to when the connected one goes.
    pub url: String,
    pub prefix: String,
    /// How long a process keeps trying to reach NATS at start.
    pub connect_timeout_secs: u64,
    /// How long a request/reply may take.
    pub request_timeout_secs: u64,
    /// Replicas of every stream, bucket and object store: 1 on one server, 3 on a cluster (at most 5,
    /// and no more than the cluster's nodes).
    pub replicas: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrySettings {
    /// `host:port` of the container registry.
    pub address: String,
    /// The PEM private key (P-256) that signs registry tokens (`GET /api/v1/registry/token`); unset: the
    /// token endpoint is off and the registry must be open (or guarded otherwise). `artifacts up` makes one
    /// in its data directory.
    pub token_key_file: Option<PathBuf>,
    /// The PEM certificate of that key, which the registry trusts (`auth.token.rootcertbundle`).
    pub token_certificate_file: Option<PathBuf>,
    /// The registry's filesystem storage (its `storage.filesystem.rootdirectory`), where the collector
    /// runs. Set, the collector reclaims the blobs of deleted manifests there with the registry's own
    /// `garbage-collect`, while pushes wait; unset, blob space is reclaimed by hand (README, "Registry").
    /// `artifacts up` sets it for the registry it starts.
    pub storage_dir: Option<PathBuf>,
    /// The registry speaks HTTPS (env `ARTIFACTS__REGISTRY__TLS=true`): the service reaches it with
    /// `https://`, and `artifacts up` serves the registry it starts over TLS with the certificate below, or
    /// with one it makes, signed by a CA of its own (`<data dir>/registry-ca.crt`). Off (the default):
    /// plain HTTP, which remote Docker engines accept only as an `insecure-registries` entry.
    pub tls: bool,
    /// The registry's certificate (PEM, the chain after it) for `artifacts up` to serve; implies `tls`.
    pub tls_certificate_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub tls_key_file: Option<PathBuf>,
    /// More names (DNS names or IP addresses) for the certificate `up` makes, beside the host of
    /// `address`, `localhost`, `127.0.0.1` and this machine's host name: the names remote clients use.
    #[serde(deserialize_with = "list")]
    pub tls_names: Vec<String>,
    /// A CA certificate (PEM) the service trusts for the registry beside the system's roots; `up` sets it
    /// to the CA it made.
    pub ca_file: Option<PathBuf>,
}

impl RegistrySettings {
    /// Whether the registry speaks HTTPS.
    pub fn uses_tls(&self) -> bool {
        self.tls || self.tls_certificate_file.is_some()
    }

    /// `https://<address>` or `http://<address>`.
    pub fn base_url(&self) -> String {
        format!("{}://{}", if self.uses_tls() { "https" } else { "http" }, self.address)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DockerSettings {
    /// The Docker engine; unset means `DOCKER_HOST`, else `unix:///var/run/docker.sock`.
    pub host: Option<String>,
}

/// How build workers run builds.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BuildSettings {
    /// Architectures this worker's engine builds. Empty (the default): the host's own, and those the
    /// kernel runs under QEMU user emulation (`qemu-user-static` registered with binfmt_misc, with the
    /// `F` flag that containers need) when the engine is on this host.
    #[serde(deserialize_with = "list")]
    pub architectures: Vec<String>,
    /// Builds one worker runs at once.
    pub slots: usize,
    /// A build running longer fails.
    pub timeout_secs: u64,
    /// Memory limit of a build container, in bytes (at most 2 GiB - 1 with Docker's classic builder API).
    pub memory_bytes: u64,
    /// CPUs a build container may use.
    pub cpus: f64,
    /// Network of build containers: `none` (default) or `default`/`bridge`/`host`.
    pub network: String,
    /// Image builds take as BuildKit cache sources the latest image of their (component, branch) and of
    /// the component's `main` branch from the registry, and push inline cache metadata, so every worker
    /// reuses the layers any worker pushed. `false`: each engine's own cache only.
    pub registry_cache: bool,
    /// Starts of one build before it is failed for good.
    pub max_attempts: u32,
    /// How long the Docker engine may be away (restarting, its socket missing) before the failures it
    /// causes count as build attempts; until then builds wait for it without using up their attempts.
    pub engine_outage_secs: u64,
    /// How long a job may go without a sign of life before JetStream hands it to another worker; workers
    /// report progress at a third of it.
    pub ack_wait_secs: u64,
    /// On SIGTERM, how long a worker lets running builds go on before handing them back to the queue
    /// (without counting the attempt).
    pub shutdown_grace_secs: u64,
    /// The largest build context accepted, in bytes (uncompressed).
    pub max_context_bytes: u64,
    /// The image component build commands run in when `artifact.toml` names none.
    pub builder_image: String,
    /// Per-architecture builder images (keys `amd64`, `arm64`, `arm-v7`, `386`), before `builder_image`.
    pub builder_images: std::collections::BTreeMap<String, String>,
    /// Most processes a component build container may run.
    pub pids_limit: i64,
    /// `uid:gid` component build commands run as (the source, dependencies and output directory are
    /// owned by it); empty: the builder image's own user.
    pub user: String,
    /// The largest component artifact, in bytes (uncompressed).
    pub max_artifact_bytes: u64,
    /// What the dependencies of one component build may hold together once unpacked, in bytes: every
    /// file at its declared size (a sparse file's holes included), as it is written to the worker's disk.
    pub max_dependency_bytes: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GitSettings {
    /// URL schemes a component may be cloned from.
    #[serde(deserialize_with = "list")]
    pub allowed_schemes: Vec<String>,
    /// A clone taking longer fails.
    pub clone_timeout_secs: u64,
    /// With `file` in `allowed_schemes`, the only directories `file://` URLs may name (empty: none).
    #[serde(deserialize_with = "list")]
    pub file_roots: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HookSettings {
    pub github: HmacHook,
    pub gitea: HmacHook,
    pub gitlab: TokenHook,
}

/// A forge that signs its webhooks with HMAC-SHA256; unset, its hook answers 404.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HmacHook {
    pub secret: Option<Secret>,
}

/// GitLab sends a shared token in `X-Gitlab-Token`; unset, its hook answers 404.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenHook {
    pub token: Option<Secret>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    #[default]
    Auto,
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `artifacts_gateway=debug,info`; `RUST_LOG` wins when set.
    pub filter: String,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 64 * 1024 * 1024,
            max_webhook_bytes: 5 * 1024 * 1024,
            webhook_min_bytes_per_sec: 16 * 1024,
            header_timeout_secs: 10,
            max_connections: 10_000,
            rate_limit_per_minute: 6000,
            public_url: None,
        }
    }
}

impl Default for NatsSettings {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            prefix: "artifacts".into(),
            connect_timeout_secs: 30,
            request_timeout_secs: 10,
            replicas: 1,
        }
    }
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            address: "127.0.0.1:5000".into(),
            token_key_file: None,
            token_certificate_file: None,
            storage_dir: None,
            tls: false,
            tls_certificate_file: None,
            tls_key_file: None,
            tls_names: Vec::new(),
            ca_file: None,
        }
    }
}

impl Default for BuildSettings {
    fn default() -> Self {
        Self {
            architectures: Vec::new(),
            slots: 2,
            timeout_secs: 30 * 60,
            memory_bytes: 2 * 1024 * 1024 * 1024 - 1,
            cpus: 2.0,
            network: "none".into(),
            registry_cache: true,
            max_attempts: 3,
            engine_outage_secs: 300,
            ack_wait_secs: 60,
            shutdown_grace_secs: 30,
            max_context_bytes: 1024 * 1024 * 1024,
            builder_image: "busybox:latest".into(),
            builder_images: Default::default(),
            pids_limit: 512,
            user: "65534:65534".into(),
            max_artifact_bytes: 10 * 1024 * 1024 * 1024,
            // One dependency of the largest size stored still fits.
            max_dependency_bytes: 10 * 1024 * 1024 * 1024,
        }
    }
}

impl Default for GitSettings {
    fn default() -> Self {
        Self { allowed_schemes: vec!["https".into()], clone_timeout_secs: 300, file_roots: Vec::new() }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self { format: LogFormat::Auto, filter: "info".into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Settings {
    /// How long a process may take to stop after SIGTERM: the builds' grace period, then settling with
    /// NATS.
    pub fn stop_within(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.build.shutdown_grace_secs) + crate::shutdown::GRACE
    }

    /// Loads the layers. `file` is `--config FILE`; without it, `ARTIFACTS_CONFIG` names the file, and
    /// without that there is none.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        let file = file.map(Path::to_path_buf).or_else(|| std::env::var_os("ARTIFACTS_CONFIG").map(PathBuf::from));
        let mut builder = config::Config::builder();
        if let Some(file) = &file {
            builder = builder.add_source(config::File::from(file.as_path()).format(config::FileFormat::Toml));
        }
        let plain_env = config::Config::builder()
            .set_override_option("nats.url", std::env::var("NATS_URL").ok())?
            .set_override_option("admin_key", std::env::var("ARTIFACTS_ADMIN_KEY").ok().filter(|key| !key.is_empty()))?
            .build()?;
        let settings: Settings = builder
            .add_source(plain_env)
            .add_source(
                config::Environment::with_prefix("ARTIFACTS").prefix_separator("__").separator("__"), // No `try_parsing`: it would turn a secret such as `00042` into `42`. Lists are
                                                                                                      // comma-separated strings, read by `list`.
            )
            .build()?
            .try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let prefix_ok = self.nats.prefix.split('.').all(|token| {
            !token.is_empty() && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
        if !prefix_ok {
            return Err(SettingsError::Invalid(format!(
                "nats.prefix {:?} must be dot-separated tokens of letters, digits, '_' and '-'",
                self.nats.prefix
            )));
        }
        if !(1..=5).contains(&self.nats.replicas) {
            return Err(SettingsError::Invalid(format!(
                "nats.replicas is {}: JetStream keeps 1 to 5 replicas (3 on a 3-node cluster)",
                self.nats.replicas
            )));
        }
        if self.git.allowed_schemes.is_empty() {
            return Err(SettingsError::Invalid("git.allowed_schemes must name at least one scheme".into()));
        }
        for architecture in &self.build.architectures {
            Architecture::parse(architecture)
                .map_err(|err| SettingsError::Invalid(format!("build.architectures: {err}")))?;
        }
        if parse_user(&self.build.user).is_err() {
            return Err(SettingsError::Invalid(format!(
                "build.user {:?} must be numeric `uid:gid` (e.g. 65534:65534) or empty",
                self.build.user
            )));
        }
        if self.gateway.header_timeout_secs == 0 || self.gateway.max_connections == 0 {
            return Err(SettingsError::Invalid(
                "gateway.header_timeout_secs and gateway.max_connections must be at least 1".into(),
            ));
        }
        if self.build.slots == 0 || self.build.max_attempts == 0 || self.build.ack_wait_secs < 3 {
            return Err(SettingsError::Invalid(
                "build.slots and build.max_attempts must be at least 1, build.ack_wait_secs at least 3".into(),
            ));
        }
        Ok(())
    }

    /// The bootstrap admin key, if one is set.
    pub fn admin_key(&self) -> Option<&str> {
        self.admin_key.as_ref().map(Secret::expose)
    }

    /// `gateway.public_url`, else `http://<gateway.listen>`.
    pub fn public_url(&self) -> String {
        self.gateway.public_url.clone().unwrap_or_else(|| format!("http://{}", self.gateway.listen))
    }

    /// The Docker engine: `docker.host`, else `DOCKER_HOST`, else the local socket.
    pub fn docker_host(&self) -> String {
        self.docker
            .host
            .clone()
            .or_else(|| std::env::var("DOCKER_HOST").ok())
            .unwrap_or_else(|| "unix:///var/run/docker.sock".into())
    }

    /// `build.user` as numbers; None for the image's own user. Checked at load, so workers may rely on it.
    pub fn build_user(&self) -> Option<(u64, u64)> {
        parse_user(&self.build.user).ok().flatten()
    }

    /// The builder image for component builds on `architecture` when the repository names none.
    pub fn builder_image(&self, architecture: Architecture) -> &str {
        self.build.builder_images.get(architecture.short()).unwrap_or(&self.build.builder_image)
    }

    /// The architectures of `build.architectures`, parsed (validated at load).
    /// What this worker builds (see `build.architectures`), the host's own first.
    pub fn build_architectures(&self) -> Vec<Architecture> {
        if !self.build.architectures.is_empty() {
            return self.build.architectures.iter().filter_map(|a| Architecture::parse(a).ok()).collect();
        }
        let mut architectures = vec![native_architecture()];
        // binfmt_misc is the kernel's: what it says holds for an engine on this host only.
        let local_engine = self.docker_host().starts_with("unix://");
        if local_engine {
            architectures
                .extend(Architecture::ALL.into_iter().filter(|a| *a != native_architecture() && emulated_here(*a)));
        }
        architectures
    }

    pub fn subjects(&self) -> Subjects {
        Subjects::new(self.nats.prefix.clone())
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.nats.request_timeout_secs.max(1))
    }
}

/// The architecture this program runs on.
pub fn native_architecture() -> Architecture {
    match std::env::consts::ARCH {
        "aarch64" => Architecture::Arm64,
        "arm" => Architecture::ArmV7,
        "x86" => Architecture::I386,
        _ => Architecture::Amd64,
    }
}

/// Whether the kernel runs `architecture`'s binaries under QEMU, in containers too: a binfmt_misc entry
/// that is enabled and has the `F` flag (the interpreter opened at registration, so it works in another
/// mount namespace).
pub fn emulated_here(architecture: Architecture) -> bool {
    let qemu = match architecture {
        Architecture::Amd64 => "x86_64",
        Architecture::Arm64 => "aarch64",
        Architecture::ArmV7 => "arm",
        Architecture::I386 => "i386",
    };
    let Ok(entry) = std::fs::read_to_string(format!("/proc/sys/fs/binfmt_misc/qemu-{qemu}")) else { return false };
    let enabled = entry.lines().next() == Some("enabled");
    let fixed = entry.lines().any(|line| line.strip_prefix("flags: ").is_some_and(|flags| flags.contains('F')));
    enabled && fixed
}

/// `uid:gid`, or empty for none.
fn parse_user(user: &str) -> Result<Option<(u64, u64)>, std::num::ParseIntError> {
    if user.is_empty() {
        return Ok(None);
    }
    let (uid, gid) = user.split_once(':').unwrap_or((user, ""));
    Ok(Some((uid.parse()?, gid.parse()?)))
}

/// A list from a TOML array, or from a comma-separated string (as environment variables give it).
fn list<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        List(Vec<String>),
        Text(String),
    }
    Ok(match Given::deserialize(deserializer)? {
        Given::List(items) => items,
        Given::Text(text) => {
            text.split(',').map(str::trim).filter(|item| !item.is_empty()).map(str::to_owned).collect()
        }
    })
}

/// The URL with any user and password replaced, for logs and error messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://[redacted]@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let s = Settings::default();
        assert_eq!(s.gateway.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.nats.url, "nats://127.0.0.1:4222");
        assert_eq!(s.nats.prefix, "artifacts");
        assert_eq!(s.registry.address, "127.0.0.1:5000");
        assert_eq!(s.git.allowed_schemes, vec!["https"]);
        assert!(s.hooks.github.secret.is_none());
        assert_eq!(s.gateway.header_timeout_secs, 10);
        assert_eq!(s.gateway.max_connections, 10_000);
    }

    #[test]
    fn sizes_are_bytes_or_numbers_with_units() {
        assert_eq!(parse_byte_size("512"), Ok(512));
        assert_eq!(parse_byte_size("20GiB"), Ok(20 << 30));
        assert_eq!(parse_byte_size("1.5 MiB"), Ok(3 << 19));
        assert_eq!(parse_byte_size("10GB"), Ok(10_000_000_000));
        assert!(parse_byte_size("20 parsecs").unwrap_err().contains("KiB, MiB, GiB or TiB"));
        assert!(parse_byte_size("GiB").is_err());
        let text = "[storage]\narchives_bytes = \"8GiB\"\nlogs_bytes = 1024\n";
        let s: Settings = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .and_then(config::Config::try_deserialize)
            .unwrap();
        assert_eq!((s.storage.archives_bytes, s.storage.logs_bytes), (8 << 30, 1024));
        assert_eq!(Settings::default().storage.archives_bytes, 64 << 30);
        assert_eq!(s.storage.jetstream_bytes, None);
        assert!(!s.storage.caps_are_defaults());
        assert!(Settings::default().storage.caps_are_defaults());
        // 64 + 8 + 4 GiB, and 17 streams of 256 MiB.
        assert_eq!(StorageSettings::default().reserved_bytes(), (76 << 30) + 17 * (256 << 20));
        let text =
            "[storage]\njetstream_bytes = \"20GiB\"\n[registry]\ntls = true\ntls_names = [\"registry.example\"]\n";
        let s: Settings = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .and_then(config::Config::try_deserialize)
            .unwrap();
        assert_eq!(s.storage.jetstream_bytes, Some(20 << 30));
        assert_eq!(s.registry.base_url(), "https://127.0.0.1:5000");
        assert_eq!(s.registry.tls_names, ["registry.example"]);
        assert_eq!(Settings::default().registry.base_url(), "http://127.0.0.1:5000");
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Settings { admin_key: Some(Secret::new("hunter2")), ..Settings::default() };
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(redact_url("nats://user:pw@host:4222"), "nats://[redacted]@host:4222");
        assert_eq!(redact_url("nats://host:4222"), "nats://host:4222");
    }
}

#[cfg(test)]
mod layering_tests {
    use super::*;

    /// The only test in this crate that touches the process environment.
    #[test]
    fn file_then_plain_env_then_prefixed_env() {
        let dir = std::env::temp_dir().join(format!("artifacts-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("artifacts.toml");
        std::fs::write(
            &file,
            "[gateway]\nlisten = \"127.0.0.1:9999\"\n[nats]\nprefix = \"fromfile\"\nurl = \"nats://file:1\"\n",
        )
        .unwrap();
        std::env::set_var("NATS_URL", "nats://plain:2");
        std::env::set_var("ARTIFACTS__NATS__PREFIX", "fromenv");
        std::env::set_var("ARTIFACTS__GIT__ALLOWED_SCHEMES", "https,file");
        // Values are strings as written: a secret that looks like a number keeps its zeros.
        std::env::set_var("ARTIFACTS__HOOKS__GITHUB__SECRET", "00042");
        std::env::set_var("ARTIFACTS__BUILD__ARCHITECTURES", "386");
        std::env::set_var("ARTIFACTS__BUILD__SLOTS", "3");
        std::env::set_var("ARTIFACTS__SECRETS__KEY_FILE", "/srv/artifacts/secrets.key");
        std::env::set_var("ARTIFACTS__STORAGE__ARCHIVES_BYTES", "12GiB");
        std::env::set_var("ARTIFACTS__STORAGE__BUCKET_BYTES", "1048576");
        let s = Settings::load(Some(&file)).unwrap();
        assert_eq!(s.storage.archives_bytes, 12 << 30);
        assert_eq!(s.storage.bucket_bytes, 1 << 20);
        assert_eq!(s.secrets.key_file.as_deref(), Some(Path::new("/srv/artifacts/secrets.key")));
        assert_eq!(s.gateway.listen.port(), 9999);
        assert_eq!(s.nats.url, "nats://plain:2");
        assert_eq!(s.nats.prefix, "fromenv");
        assert_eq!(s.git.allowed_schemes, vec!["https", "file"]);
        assert_eq!(s.hooks.github.secret.as_ref().map(Secret::expose), Some("00042"));
        assert_eq!(s.build.architectures, vec!["386"]);
        assert_eq!(s.build.slots, 3);

        std::env::set_var("ARTIFACTS__NATS__URL", "nats://prefixed:3");
        assert_eq!(Settings::load(Some(&file)).unwrap().nats.url, "nats://prefixed:3");
        std::env::set_var("ARTIFACTS__NATS__PREFIX", "bad prefix");
        assert!(Settings::load(None).unwrap_err().to_string().contains("nats.prefix"));
        for var in [
            "NATS_URL",
            "ARTIFACTS__NATS__URL",
            "ARTIFACTS__NATS__PREFIX",
            "ARTIFACTS__GIT__ALLOWED_SCHEMES",
            "ARTIFACTS__HOOKS__GITHUB__SECRET",
            "ARTIFACTS__SECRETS__KEY_FILE",
            "ARTIFACTS__STORAGE__ARCHIVES_BYTES",
            "ARTIFACTS__STORAGE__BUCKET_BYTES",
        ] {
            std::env::remove_var(var);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
