//! `artifacts up`: the whole stack in the foreground.
//!
//! Starts `nats-server` (JetStream, with `nats/nats-server.conf`) and the registry (Debian's
//! `docker-registry`) unless something already answers at their addresses, then every function and the
//! gateway, each as its own process. Each process's output goes to `<data dir>/logs/<process>.log`
//! (appended; at 16 MiB it moves to `<process>.log.1`, replacing the one before); on screen `up` shows
//! its own lines and the processes' warnings and errors (`--verbose`: every line, prefixed by the
//! process's name). A process that exits is shown with its last lines and started again after a backoff
//! (1 s, doubling to 30 s), and `up` says so; the stack stops only on
//! Ctrl-C or SIGTERM: the gateway and functions first, then the registry and NATS, each with SIGTERM and,
//! after a grace period, SIGKILL. Children get SIGTERM when `up` dies however it dies (parent-death
//! signal). `up` says the stack is up only when the gateway listens and every function answers
//! `$SRV.PING`.
//!
//! The nats-servers it runs get the JetStream storage the disk holds (`storage.jetstream_bytes`, else
//! half the space free in the data directory), and the stack's caps must fit it (docs/storage.md). With
//! `registry.tls`, the registry it runs speaks TLS with a certificate of a CA `up` makes, which the
//! service and the local engine are given (docs/registry.md).

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use artifacts_runtime::configuration::StorageSettings;
use artifacts_runtime::nats_users::{self, SERVICE_USER};
use artifacts_runtime::registry_auth::TlsFiles;
use artifacts_runtime::registry_auth::{self, SigningFiles};
use artifacts_runtime::service::unanswered_services;
use artifacts_runtime::{find_program, Nats, Settings};
use artifacts_schemas::messages::image::human_bytes;
use artifacts_schemas::Subjects;

const NATS_CONFIG: &str = include_str!("../../nats/nats-server.conf");
const NATS_AUTH_CONFIG: &str = include_str!("../../nats/nats-server.auth.conf");
const NATS_CLUSTER_CONFIG: &str = include_str!("../../nats/nats-server.cluster.conf");

/// The process names of a cluster's nodes under `up`.
const NATS_NODES: [&str; 5] = ["nats-1", "nats-2", "nats-3", "nats-4", "nats-5"];

/// A node's route port is its client port plus this (4222 -> 6222, as NATS has it by custom).
const ROUTE_PORT_OFFSET: u16 = 2000;

const REGISTRY_CONFIG: &str = "version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: /var/lib/docker-registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5000
";

/// The function binaries, started in this order, after NATS and before the gateway.
const FUNCTIONS: &[&str] = &[
    "artifacts-lookup",
    "artifacts-build-image",
    "artifacts-build-component",
    "artifacts-git-trigger",
    "artifacts-gc",
];

/// Beyond a process's own time to stop (`Settings::stop_within`), before `up` kills it.
const KILL_MARGIN: Duration = Duration::from_secs(2);

/// How `up` runs the stack.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Every line of every process on screen, not only warnings and errors.
    pub verbose: bool,
    /// `file://` repositories under the temporary directory and the data directory may be built.
    pub dev: bool,
}

/// `nats_nodes`: 1 runs one nats-server, more a local cluster of that many.
pub async fn run(
    config: Option<PathBuf>,
    data_dir: PathBuf,
    nats_nodes: usize,
    options: Options,
) -> anyhow::Result<ExitCode> {
    let mut settings = Settings::load(config.as_deref())?;
    if nats_nodes > 1 {
        settings.nats.replicas = 3;
    }
    std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize()?;
    let config = config.map(|file| file.canonicalize()).transpose().context("--config")?;
    let (admin_key, key_is_new) = admin_key(&data_dir)?;
    let logs = data_dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let dev_git = options.dev.then(|| dev_git_settings(&settings, &data_dir));
    println!(
        "artifacts up: starting the stack; each process's log goes to {}/<process>.log{}",
        logs.display(),
        if options.verbose { "" } else { " (--verbose shows them here)" }
    );

    let mut stack = Stack::new(settings.stop_within() + KILL_MARGIN, logs.clone(), options.verbose);
    let mut missing = Vec::new();

    let nats_addr = nats_address(&settings.nats.url)?;
    // The URL the stack's own processes use: with the `service` user's credentials when `up` runs NATS.
    let mut service_url = None;
    let mut nats_users = None;
    // How much JetStream storage each server `up` runs gets, and the caps that fit in it.
    let mut storage_plan: Option<StoragePlan> = None;
    let nats_up = if answers(&nats_addr).await {
        println!("artifacts up: NATS already answers at {nats_addr}: using it");
        true
    } else if let Some(bin) = find_program("nats-server") {
        let stores: Vec<PathBuf> = match nats_nodes {
            1 => vec![data_dir.join("nats")],
            _ => NATS_NODES[..nats_nodes].iter().map(|node| data_dir.join(node)).collect(),
        };
        let plan = plan_storage(&settings.storage, &data_dir, &stores)?;
        println!("artifacts up: {}", plan.said);
        settings.storage = plan.caps.clone();
        storage_plan = Some(plan.clone());
        std::fs::write(data_dir.join("nats-server.conf"), with_max_file_store(NATS_CONFIG, plan.per_node))?;
        std::fs::write(data_dir.join("nats-server.auth.conf"), NATS_AUTH_CONFIG)?;
        std::fs::write(data_dir.join("nats-server.cluster.conf"), NATS_CLUSTER_CONFIG)?;
        let service_password = secret_file(&data_dir.join("nats-service-password"), "ns")?.0;
        let users = NatsUsers::new(&data_dir, &service_password, &admin_key, settings.subjects())?;
        let (host, port) = nats_addr.rsplit_once(':').unwrap_or((&nats_addr, "4222"));
        let port: u16 = port.parse().with_context(|| format!("the port of nats.url {nats_addr}"))?;
        let nodes: Vec<u16> = (0..nats_nodes as u16).map(|n| port + n).collect();
        let route_password = secret_file(&data_dir.join("nats-route-password"), "nr")?.0;
        let routes: Vec<String> = nodes
            .iter()
            .map(|port| format!("nats://route:{route_password}@{host}:{}", port + ROUTE_PORT_OFFSET))
            .collect();
        let mut pids = Vec::new();
        for (n, &node_port) in nodes.iter().enumerate() {
            let (bin, host, routes, route_password) =
                (bin.clone(), host.to_owned(), routes.join(","), route_password.clone());
            let (conf, store) = match nats_nodes {
                1 => (data_dir.join("nats-server.auth.conf"), data_dir.join("nats")),
                _ => (data_dir.join("nats-server.cluster.conf"), data_dir.join(NATS_NODES[n])),
            };
            if nats_nodes == 1 {
                nats_users::adopt_global_account_store(&store)
                    .with_context(|| format!("cannot move the JetStream store in {}", store.display()))?;
            }
            let name = if nats_nodes == 1 { "nats" } else { NATS_NODES[n] };
            pids.push(stack.spawn(name, move || {
                let mut command = Command::new(&bin);
                command
                    .arg("-c")
                    .arg(&conf)
                    .args(["-a", &host, "-p", &node_port.to_string()])
                    .env("ARTIFACTS_NATS_STORE_DIR", &store);
                if nats_nodes > 1 {
                    command
                        .env("ARTIFACTS_NATS_SERVER_NAME", format!("artifacts-{}", n + 1))
                        .env("ARTIFACTS_NATS_CLUSTER_LISTEN", format!("{host}:{}", node_port + ROUTE_PORT_OFFSET))
                        .env("ARTIFACTS_NATS_ROUTES", &routes)
                        .env("ARTIFACTS_NATS_ROUTE_PASSWORD", &route_password);
                }
                command
            }));
        }
        let urls: Vec<String> =
            nodes.iter().map(|port| format!("nats://{SERVICE_USER}:{service_password}@{host}:{port}")).collect();
        service_url = Some(urls.join(","));
        nats_users = Some((users, pids));
        let mut all_answer = true;
        for port in &nodes {
            all_answer &= wait_until_answers(&format!("{host}:{port}"), Duration::from_secs(15)).await;
        }
        all_answer
    } else {
        missing.push("nats-server is not installed (Debian: apt-get install nats-server); nothing but the registry can run without NATS".to_owned());
        false
    };

    // `up` makes the streams and buckets before any function starts: processes that create the same
    // replicated stream at once make nats-server 2.9 leave all but one create unanswered, and each of
    // those waits out a request timeout (10 s a stream, half a minute in all).
    let mut stack_settings = settings.clone();
    if let Some(url) = &service_url {
        stack_settings.nats.url = url.clone();
    }
    stack_settings.nats.connect_timeout_secs = 15;
    let nats = if nats_up {
        match artifacts_runtime::nats::connect(&stack_settings, "artifacts-up").await {
            Ok(nats) => Some(nats),
            // Caps that do not fit the server's JetStream storage fail every start alike: say which
            // setting to lower and stop, rather than restart processes that cannot work.
            Err(err) if is_storage_refusal(&format!("{err:#}")) => {
                eprintln!("artifacts up: {err:#}");
                stack.stop().await;
                anyhow::bail!(
                    "the stack's storage caps do not fit NATS's JetStream storage: lower the storage.* setting named above"
                );
            }
            Err(err) => {
                eprintln!("artifacts up: {err:#}");
                None
            }
        }
    } else {
        None
    };
    if let (Some(nats), Some((users, pids))) = (&nats, nats_users) {
        users.follow_keys(nats.clone(), pids);
    }

    // The registry trusts tokens that the gateway signs with this key (see registry_auth).
    let signing = match (&settings.registry.token_key_file, &settings.registry.token_certificate_file) {
        (Some(key), Some(certificate)) => SigningFiles { key: key.clone(), certificate: certificate.clone() },
        _ => registry_auth::ensure_signing_files(&data_dir).context("the registry token signing key")?,
    };
    // Build secrets: the processes that store them (gc) and read them (build workers) share one key.
    let secrets_key = match &settings.secrets.key_file {
        Some(_) => None,
        None => {
            let file = data_dir.join("secrets.key");
            artifacts_runtime::secrets::ensure_key_file(&file)
                .map_err(|err| anyhow::anyhow!("the build secrets key: {err}"))?;
            Some(file)
        }
    };
    // Provenance: the build workers sign with one key, which the gateway and lookup serve.
    let provenance_key = match &settings.provenance.key_file {
        Some(_) => None,
        None => {
            let file = artifacts_provenance::default_key_file(&data_dir);
            artifacts_provenance::SigningKey::load_or_create(&file).context("the provenance signing key")?;
            Some(file)
        }
    };
    let registry = &settings.registry.address;
    let registry_answers = answers(registry).await;
    // The registry's certificate, key and CA when `up` runs it and it speaks TLS (`registry.tls`); a
    // registry already running is trusted with `registry.ca_file`, if set.
    let registry_tls = if registry_answers { None } else { registry_tls_files(&settings, &data_dir)? };
    let registry_ca = registry_tls.as_ref().and_then(|files| files.ca.clone()).or(settings.registry.ca_file.clone());
    let engine_trust = match &registry_ca {
        Some(ca) if settings.registry.uses_tls() => engine_trusts(&settings, ca),
        _ => None,
    };
    if let Some(said) = &engine_trust {
        println!("artifacts up: {said}");
    }
    // The storage of the registry `up` runs, where the collector sweeps blobs.
    let mut registry_storage = settings.registry.storage_dir.clone();
    if registry_answers {
        println!(
            "artifacts up: a registry already answers at {registry}: using it (to put it behind API keys, see docs/registry.md)"
        );
    } else if let Some(bin) = find_program("docker-registry").or_else(|| find_program("registry")) {
        let conf = data_dir.join("registry.yml");
        let auth = registry_auth::registry_auth_config(&settings.public_url(), &signing.certificate);
        let tls = match &registry_tls {
            Some(files) => registry_auth::registry_tls_config(files),
            None => String::new(),
        };
        std::fs::write(&conf, format!("{REGISTRY_CONFIG}{tls}{auth}"))?;
        let (address, storage) = (registry.clone(), data_dir.join("registry"));
        // Signs the registry's upload state; without one it makes up its own at each start (and warns).
        let http_secret = secret_file(&data_dir.join("registry-http-secret"), "rs")?.0;
        registry_storage = Some(storage.clone());
        stack.spawn("registry", move || {
            let mut command = Command::new(&bin);
            command
                .arg("serve")
                .arg(&conf)
                .env("REGISTRY_HTTP_ADDR", &address)
                .env("REGISTRY_HTTP_SECRET", &http_secret)
                .env("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", &storage);
            command
        });
    } else {
        missing.push(format!(
            "no registry answers at {registry} and docker-registry is not installed (Debian: apt-get install docker-registry): built images cannot be pushed"
        ));
    }

    if let Some(problem) = docker_problem(&settings) {
        missing.push(problem);
    }

    if nats_up {
        let bin_dir = std::env::current_exe()?.parent().map(Path::to_path_buf).unwrap_or_default();
        for &name in FUNCTIONS.iter().chain(&["artifacts-gateway"]) {
            let bin = bin_dir.join(name);
            if !bin.exists() {
                missing.push(format!(
                    "{name} is not beside this program in {}: build the workspace (cargo build --release)",
                    bin_dir.display()
                ));
                continue;
            }
            let (config, service_url, admin_key) = (config.clone(), service_url.clone(), admin_key.clone());
            let (signing, registry_storage) = (signing.clone(), registry_storage.clone());
            let (secrets_key, dev_git, provenance_key) = (secrets_key.clone(), dev_git.clone(), provenance_key.clone());
            let (tls, registry_ca) = (settings.registry.uses_tls(), registry_ca.clone());
            let storage = storage_plan.as_ref().filter(|plan| plan.scaled).map(|plan| plan.caps.clone());
            stack.spawn(name.trim_start_matches("artifacts-"), move || {
                let mut command = Command::new(&bin);
                command
                    .env("ARTIFACTS__REGISTRY__TOKEN_KEY_FILE", &signing.key)
                    .env("ARTIFACTS__REGISTRY__TOKEN_CERTIFICATE_FILE", &signing.certificate);
                if tls {
                    command.env("ARTIFACTS__REGISTRY__TLS", "true");
                }
                if let Some(ca) = &registry_ca {
                    command.env("ARTIFACTS__REGISTRY__CA_FILE", ca);
                }
                if let Some(caps) = &storage {
                    for (setting, bytes) in caps.caps() {
                        let name = setting.trim_start_matches("storage.").to_ascii_uppercase();
                        command.env(format!("ARTIFACTS__STORAGE__{name}"), bytes.to_string());
                    }
                }
                if let Some(storage) = &registry_storage {
                    command.env("ARTIFACTS__REGISTRY__STORAGE_DIR", storage);
                }
                if let Some(file) = &secrets_key {
                    command.env("ARTIFACTS__SECRETS__KEY_FILE", file);
                }
                if let Some(file) = &provenance_key {
                    command.env("ARTIFACTS__PROVENANCE__KEY_FILE", file);
                }
                if let Some(config) = &config {
                    command.env("ARTIFACTS_CONFIG", config);
                }
                if let Some(url) = &service_url {
                    command.env("ARTIFACTS__NATS__URL", url);
                }
                if nats_nodes > 1 {
                    command.env("ARTIFACTS__NATS__REPLICAS", "3");
                }
                if let Some(git) = &dev_git {
                    command
                        .env("ARTIFACTS__GIT__ALLOWED_SCHEMES", git.allowed_schemes.join(","))
                        .env("ARTIFACTS__GIT__FILE_ROOTS", git.file_roots.join(","));
                }
                if std::env::var_os("ARTIFACTS__LOG__FORMAT").is_none() {
                    command.env("ARTIFACTS__LOG__FORMAT", "text");
                }
                // Every process authenticates the keys it is sent, the bootstrap admin key included.
                command.env("ARTIFACTS_ADMIN_KEY", &admin_key);
                command
            });
        }
    }

    for problem in &missing {
        eprintln!("artifacts up: {problem}");
    }
    let listen = settings.gateway.listen;
    let ready = match &nats {
        Some(nats) => {
            wait_until_answers(&listen.to_string(), Duration::from_secs(30)).await
                && every_function_answers(nats, Duration::from_secs(60)).await
        }
        None => false,
    };
    if ready {
        println!();
        println!("artifact storage is up");
        println!("  gateway:   http://{listen}/api/v1");
        println!("  docs:      http://{listen}/docs");
        let saved = data_dir.join("admin-key");
        if std::env::var_os("ARTIFACTS_ADMIN_KEY").is_some() {
            println!("  admin key: the one in ARTIFACTS_ADMIN_KEY");
        } else if key_is_new {
            println!("  admin key: {admin_key}   (shown once; saved in {})", saved.display());
        } else {
            println!("  admin key: saved in {}", saved.display());
        }
        if service_url.is_some() {
            let servers = match nats_nodes {
                1 => format!("nats://{nats_addr}"),
                _ => format!("a cluster of {nats_nodes} nodes from nats://{nats_addr}, on consecutive ports"),
            };
            println!("  NATS:      {servers} (user: the key id, or `admin`; password: the key)");
        }
        match (&registry_ca, settings.registry.uses_tls()) {
            (_, false) => println!(
                "  registry:  {registry}, plain HTTP (remote engines need it in insecure-registries: docs/registry.md)"
            ),
            (Some(ca), true) => println!("  registry:  {registry}, TLS (clients trust the CA in {})", ca.display()),
            (None, true) => println!("  registry:  {registry}, TLS"),
        }
        if let Some(plan) = &storage_plan {
            println!(
                "  storage:   {} of JetStream storage per NATS server (max_file_store; storage.jetstream_bytes)",
                human_bytes(plan.per_node)
            );
        }
        if let Some(file) = &provenance_key {
            if let Ok(key) = artifacts_provenance::SigningKey::load(file) {
                println!(
                    "  provenance: signed with key {} ({}; public half at /api/v1/provenance/key)",
                    &key.keyid()[..16],
                    file.display()
                );
            }
        }
        println!("  logs:      {}/", logs.display());
        if let Some(git) = &dev_git {
            println!(
                "  dev mode:  components may be built from file:// repositories under {}",
                git.file_roots.join(", ")
            );
        }
        println!("Press Ctrl-C to stop.");
    } else {
        eprintln!("artifacts up: the stack is not up yet; the processes' logs are in {}/", logs.display());
    }
    Ok(stack.supervise().await)
}

/// The JetStream storage each nats-server `up` runs may use (its `max_file_store`), and the caps the
/// stack's streams and buckets get within it.
#[derive(Debug, Clone)]
struct StoragePlan {
    per_node: u64,
    caps: StorageSettings,
    /// The caps were lowered from their defaults to fit.
    scaled: bool,
    /// What `up` says about it.
    said: String,
}

/// Less JetStream storage than this per server is no use.
const LEAST_JETSTREAM_BYTES: u64 = 256 << 20;

/// Sizes the JetStream storage of the servers `up` runs, whose stores are `stores` (under `data_dir`):
/// `storage.jetstream_bytes` each, else half of what the data directory's filesystem has free plus what
/// the stores already hold, shared by the stores. Caps left at their defaults (with
/// `storage.jetstream_bytes` unset) are lowered to fit; caps that were set and do not fit are an error
/// naming the setting to lower.
fn plan_storage(storage: &StorageSettings, data_dir: &Path, stores: &[PathBuf]) -> anyhow::Result<StoragePlan> {
    let nodes = stores.len().max(1) as u64;
    let free = free_bytes(data_dir).with_context(|| format!("cannot tell the free space of {}", data_dir.display()))?;
    let held: u64 = stores.iter().map(|store| bytes_under(store)).sum();
    let (per_node, from) = match storage.jetstream_bytes {
        Some(bytes) if bytes * nodes > free + held => {
            let said = format!(
                "storage.jetstream_bytes; {} in all on this disk, more than the {} free on the filesystem of {} plus the {} its JetStream stores hold, so JetStream may fail to write before it reaches that",
                human_bytes(bytes * nodes),
                human_bytes(free),
                data_dir.display(),
                human_bytes(held)
            );
            (bytes, said)
        }
        Some(bytes) => (bytes, "storage.jetstream_bytes".to_owned()),
        None => {
            let per_node = (free + held) / 2 / nodes / (1 << 20) * (1 << 20);
            let share = if nodes == 1 { String::new() } else { format!(", shared by {nodes} nodes") };
            let said = format!(
                "half of the {} free on the filesystem of {} plus the {} its JetStream stores hold{share}; storage.jetstream_bytes sets it",
                human_bytes(free),
                data_dir.display(),
                human_bytes(held)
            );
            (per_node, said)
        }
    };
    anyhow::ensure!(
        per_node >= LEAST_JETSTREAM_BYTES,
        "NATS would get only {} of JetStream storage ({from}): free space on {}, or set storage.jetstream_bytes (at least {})",
        human_bytes(per_node),
        data_dir.display(),
        human_bytes(LEAST_JETSTREAM_BYTES)
    );
    let reserved = storage.reserved_bytes();
    let each = if nodes == 1 { "NATS gets" } else { "each NATS node gets" };
    if reserved <= per_node {
        let said = format!(
            "{each} {} of JetStream storage (max_file_store: {from}); the storage caps reserve {} of it",
            human_bytes(per_node),
            human_bytes(reserved)
        );
        return Ok(StoragePlan { per_node, caps: storage.clone(), scaled: false, said });
    }
    if storage.jetstream_bytes.is_none() && storage.caps_are_defaults() {
        let caps = caps_within(storage, per_node);
        let listed: Vec<String> =
            caps.caps().iter().map(|(setting, bytes)| format!("{setting} = {}", human_bytes(*bytes))).collect();
        let said = format!(
            "{each} {} of JetStream storage (max_file_store: {from}), less than the default storage caps reserve ({}): they are lowered to fit, {} (set them to choose)",
            human_bytes(per_node),
            human_bytes(reserved),
            listed.join(", ")
        );
        return Ok(StoragePlan { per_node, caps, scaled: true, said });
    }
    let (largest, bytes) = storage.caps()[0];
    let listed: Vec<String> =
        storage.caps().iter().map(|(setting, bytes)| format!("{setting} = {}", human_bytes(*bytes))).collect();
    anyhow::bail!(
        "the storage caps reserve {} on every NATS server, {} too much for the {} of JetStream storage {} gets (max_file_store: {from}): lower {largest} (now {}), or raise storage.jetstream_bytes. The caps: {}",
        human_bytes(reserved),
        human_bytes(reserved - per_node),
        human_bytes(per_node),
        if nodes == 1 { "it" } else { "each node" },
        human_bytes(bytes),
        listed.join(", ")
    )
}

/// The caps lowered to reserve at most `room`: the three large ones (archives, uploads, logs) shrink
/// alike while the small ones fit in half the room, everything alike after that; whole MiB each.
fn caps_within(storage: &StorageSettings, room: u64) -> StorageSettings {
    let small = storage.reserved_bytes() - storage.archives_bytes - storage.uploads_bytes - storage.logs_bytes;
    let large = storage.archives_bytes + storage.uploads_bytes + storage.logs_bytes;
    let (large_share, small_share) = if small * 2 <= room {
        ((room - small) as f64 / large as f64, 1.0)
    } else {
        let share = room as f64 / (small + large) as f64;
        (share, share)
    };
    let scale = |bytes: u64, share: f64| ((bytes as f64 * share) as u64 / (1 << 20)).max(1) << 20;
    StorageSettings {
        archives_bytes: scale(storage.archives_bytes, large_share),
        uploads_bytes: scale(storage.uploads_bytes, large_share),
        logs_bytes: scale(storage.logs_bytes, large_share),
        jobs_bytes: scale(storage.jobs_bytes, small_share),
        events_bytes: scale(storage.events_bytes, small_share),
        bucket_bytes: scale(storage.bucket_bytes, small_share),
        jetstream_bytes: storage.jetstream_bytes,
    }
}

/// Bytes free to an unprivileged user on the filesystem of `path`.
fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: statvfs(3) with a NUL-terminated path and a zeroed struct it fills.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// The bytes of the files under `dir` (none when it is absent).
fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => bytes_under(&entry.path()),
            Ok(kind) if kind.is_file() => entry.metadata().map_or(0, |meta| meta.len()),
            _ => 0,
        })
        .sum()
}

/// The shipped nats-server configuration with `max_file_store` set to `bytes`, in its `jetstream` block
/// after `store_dir` (the shipped file sets none).
fn with_max_file_store(config: &str, bytes: u64) -> String {
    let mut out = String::new();
    for line in config.lines() {
        out.push_str(line);
        out.push('\n');
        if line.trim_start().starts_with("store_dir:") {
            let indent = &line[..line.len() - line.trim_start().len()];
            out.push_str(&format!(
                "{indent}# Written by artifacts up: storage.jetstream_bytes, or a share of the disk.\n"
            ));
            out.push_str(&format!("{indent}max_file_store: {bytes}\n"));
        }
    }
    out
}

/// Whether a JetStream set-up failure is the server refusing the caps for want of storage (or a cap
/// below what a stream holds): starting again cannot help.
fn is_storage_refusal(message: &str) -> bool {
    message.contains("less storage than the stack's caps reserve") || message.contains("already holds")
}

/// The registry's TLS files, when it speaks TLS: the ones given (`registry.tls_certificate_file` and
/// `registry.tls_key_file`, trusted with `registry.ca_file` if set), else a certificate `up` makes for
/// the registry's names, signed by a CA of its own in the data directory.
fn registry_tls_files(settings: &Settings, data_dir: &Path) -> anyhow::Result<Option<TlsFiles>> {
    let registry = &settings.registry;
    if !registry.uses_tls() {
        return Ok(None);
    }
    match (&registry.tls_certificate_file, &registry.tls_key_file) {
        (Some(certificate), Some(key)) => {
            Ok(Some(TlsFiles { certificate: certificate.clone(), key: key.clone(), ca: registry.ca_file.clone() }))
        }
        (Some(_), None) | (None, Some(_)) => {
            anyhow::bail!("registry.tls_certificate_file and registry.tls_key_file go together: set both, or neither for a certificate up makes")
        }
        (None, None) => {
            let names = certificate_names(&registry.address, &registry.tls_names);
            let files = registry_auth::ensure_tls_files(data_dir, &names)
                .with_context(|| format!("cannot make the registry's TLS certificate in {}", data_dir.display()))?;
            Ok(Some(files))
        }
    }
}

/// The names the registry's certificate is made for: the host of its address (every address of this
/// machine when it listens on all of them), `localhost`, `127.0.0.1`, this machine's host name, and
/// `registry.tls_names`.
fn certificate_names(address: &str, extra: &[String]) -> Vec<String> {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host).trim_start_matches('[').trim_end_matches(']');
    let mut names = Vec::new();
    let everywhere = host.is_empty() || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified());
    if everywhere {
        names.extend(local_addresses());
    } else {
        names.push(host.to_owned());
    }
    names.extend(["localhost".to_owned(), "127.0.0.1".to_owned()]);
    if let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        names.push(name.trim().to_owned());
    }
    names.extend(extra.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    names.retain(|name| !name.is_empty() && seen.insert(name.clone()));
    names
}

/// This machine's IP addresses, loopback aside.
fn local_addresses() -> Vec<String> {
    let mut found = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs(3) fills `list`, which is walked read-only and freed once.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return found;
        }
        let mut entry = list;
        while !entry.is_null() {
            let address = (*entry).ifa_addr;
            if !address.is_null() {
                let ip = match i32::from((*address).sa_family) {
                    libc::AF_INET => {
                        let v4 = &*(address as *const libc::sockaddr_in);
                        Some(std::net::IpAddr::from(u32::from_be(v4.sin_addr.s_addr).to_be_bytes()))
                    }
                    libc::AF_INET6 => {
                        let v6 = &*(address as *const libc::sockaddr_in6);
                        Some(std::net::IpAddr::from(v6.sin6_addr.s6_addr))
                    }
                    _ => None,
                };
                if let Some(ip) = ip.filter(|ip| !ip.is_loopback()) {
                    found.push(ip.to_string());
                }
            }
            entry = (*entry).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    found
}

/// Makes the local Docker engine trust the registry's CA, as it must for a registry it does not treat
/// as insecure: a copy in `/etc/docker/certs.d/<address>/ca.crt`, which the engine reads at each pull
/// and push. An engine takes any certificate from a registry on a loopback address (it is insecure by
/// default there), and a remote engine is the operator's to set up; `up` says what it did or what to do.
fn engine_trusts(settings: &Settings, ca: &Path) -> Option<String> {
    let address = &settings.registry.address;
    let host = address.rsplit_once(':').map_or(address.as_str(), |(host, _)| host);
    let loopback = host == "localhost"
        || host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback {
        return None;
    }
    let engine = settings.docker_host();
    let directory = Path::new(DOCKER_CERTS_DIR).join(address);
    let target = directory.join("ca.crt");
    if !engine.starts_with("unix://") {
        return Some(format!(
            "the Docker engine at {engine} must trust the registry's CA: copy {} to {} on its host",
            ca.display(),
            target.display()
        ));
    }
    let copied = std::fs::create_dir_all(&directory).and_then(|()| std::fs::copy(ca, &target));
    Some(match copied {
        Ok(_) => format!("the Docker engine trusts the registry's CA: copied to {}", target.display()),
        Err(err) => format!(
            "cannot copy the registry's CA to {} ({err}): the Docker engine will refuse the registry until it is there (as root: install -D -m 644 {} {})",
            target.display(),
            ca.display(),
            target.display()
        ),
    })
}

/// Where the Docker engine looks for a registry's CA (`<dir>/<host:port>/ca.crt`).
const DOCKER_CERTS_DIR: &str = "/etc/docker/certs.d";

/// What `--dev` gives every process: `file` among the allowed schemes, and the temporary directory
/// (`TMPDIR`, and `/tmp`, where the README's tour keeps its repositories) and the data directory among
/// the roots `file://` URLs may name, besides whatever the configuration allows already.
fn dev_git_settings(settings: &Settings, data_dir: &Path) -> artifacts_runtime::configuration::GitSettings {
    let mut git = settings.git.clone();
    if !git.allowed_schemes.iter().any(|scheme| scheme == "file") {
        git.allowed_schemes.push("file".into());
    }
    let temp = std::env::temp_dir();
    for root in [temp.as_path(), Path::new("/tmp"), data_dir] {
        let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf()).display().to_string();
        if !git.file_roots.contains(&root) {
            git.file_roots.push(root);
        }
    }
    git
}

/// The NATS users of a stack `up` runs: written before nats-server starts, then kept following the API
/// keys (see `artifacts_runtime::nats_users`).
struct NatsUsers {
    file: PathBuf,
    fixed: nats_users::FixedUsers,
    subjects: Subjects,
}

impl NatsUsers {
    fn new(data_dir: &Path, service_password: &str, admin_key: &str, subjects: Subjects) -> anyhow::Result<Self> {
        let fixed = nats_users::FixedUsers {
            service_bcrypt: nats_users::bcrypt(service_password),
            admin_bcrypt: Some(nats_users::bcrypt(admin_key)),
        };
        let file = data_dir.join("nats-users.conf");
        nats_users::write_atomically(&file, &nats_users::render(&subjects, &fixed, &Default::default()))
            .with_context(|| format!("cannot write {}", file.display()))?;
        Ok(Self { file, fixed, subjects })
    }

    /// Rewrites the users file at every change of the keys and reloads each nats-server (SIGHUP to the
    /// pids in `pids`, which change when a server is restarted).
    fn follow_keys(self, nats: Nats, pids: Vec<Arc<AtomicU32>>) {
        // Every node of a cluster reads the same users file.
        let reload =
            move || pids.iter().try_for_each(|pid| nats_users::reload_by_signal(pid.load(Ordering::Relaxed))());
        let never = tokio_util::sync::CancellationToken::new();
        tokio::spawn(nats_users::follow(nats.store, self.subjects, self.fixed, self.file, reload, never));
    }
}

/// The bootstrap admin key: `ARTIFACTS_ADMIN_KEY`, else the one saved in the data directory, else a new
/// one saved there. The flag says whether it was just generated.
fn admin_key(data_dir: &Path) -> anyhow::Result<(String, bool)> {
    match std::env::var("ARTIFACTS_ADMIN_KEY") {
        Ok(key) => Ok((key, false)),
        Err(_) => secret_file(&data_dir.join("admin-key"), "ak"),
    }
}

/// A random secret kept in `file` (readable by its owner only), made on first use. The flag says whether
/// it was just made. Secrets start with a letter: nats-server reads a password from the environment as a
/// configuration value, and one starting with a digit would parse as a number.
fn secret_file(file: &Path, prefix: &str) -> anyhow::Result<(String, bool)> {
    if let Ok(secret) = std::fs::read_to_string(file) {
        return Ok((secret.trim().to_owned(), false));
    }
    let secret = format!("{prefix}{}", hex::encode(rand::random::<[u8; 32]>()));
    use std::os::unix::fs::OpenOptionsExt;
    let mut out = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(file)?;
    std::io::Write::write_all(&mut out, secret.as_bytes())?;
    Ok((secret, true))
}

/// `host:port` of the first server in a NATS URL list, without scheme or credentials.
fn nats_address(url: &str) -> anyhow::Result<String> {
    let first = url.split(',').next().unwrap_or("").trim();
    let without_scheme = first.split_once("://").map_or(first, |(_, rest)| rest);
    let host_port = without_scheme.rsplit('@').next().unwrap_or("").trim_end_matches('/');
    anyhow::ensure!(
        !host_port.is_empty(),
        "nats.url {:?} names no server",
        artifacts_runtime::configuration::redact_url(url)
    );
    Ok(if host_port.contains(':') { host_port.to_owned() } else { format!("{host_port}:4222") })
}

async fn answers(address: &str) -> bool {
    matches!(tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(address)).await, Ok(Ok(_)))
}

async fn wait_until_answers(address: &str, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if answers(address).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("artifacts up: nothing answers at {address} after {}s", limit.as_secs());
    false
}

/// Why builds will not work, if no Docker engine socket is there.
fn docker_problem(settings: &Settings) -> Option<String> {
    let host = settings.docker_host();
    let socket = host.strip_prefix("unix://")?;
    (!Path::new(socket).exists()).then(|| {
        format!("no Docker engine at {host} (Debian: apt-get install docker.io, then start dockerd): builds will fail until one runs")
    })
}

/// The processes of the stack, in start order, each watched by its own supervisor task.
struct Stack {
    processes: Vec<Supervised>,
    /// How long a process may take to stop before it is killed.
    grace: Duration,
    /// Where each process's log is kept.
    logs: PathBuf,
    /// Every line on screen too.
    verbose: bool,
}

struct Supervised {
    name: &'static str,
    stop: CancellationToken,
    stopped: tokio::task::JoinHandle<()>,
}

/// Restarts wait this long at first, doubling up to `MAX_BACKOFF`; a process that ran for `STEADY`
/// starts over at the first delay.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const STEADY: Duration = Duration::from_secs(60);

impl Stack {
    fn new(grace: Duration, logs: PathBuf, verbose: bool) -> Self {
        Self { processes: Vec::new(), grace, logs, verbose }
    }

    /// Starts a process made by `launch` and keeps it running: when it exits, it is started again after
    /// a backoff, and `up` says so. Returns the slot holding its current pid.
    fn spawn(&mut self, name: &'static str, launch: impl Fn() -> Command + Send + 'static) -> Arc<AtomicU32> {
        let (stop, pid) = (CancellationToken::new(), Arc::new(AtomicU32::new(0)));
        let log = Arc::new(ProcessLog::new(name, self.logs.join(format!("{name}.log")), self.verbose));
        let stopped = tokio::spawn(keep_running(name, launch, log, Arc::clone(&pid), stop.clone(), self.grace));
        self.processes.push(Supervised { name, stop, stopped });
        pid
    }

    /// Runs until Ctrl-C or SIGTERM, then stops the processes in reverse start order.
    async fn supervise(self) -> ExitCode {
        if self.processes.is_empty() {
            eprintln!("artifacts up: nothing could be started");
            return ExitCode::FAILURE;
        }
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match terminate.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        println!("stopping...");
        self.stop().await;
        ExitCode::SUCCESS
    }

    /// Stops the processes in reverse start order.
    async fn stop(self) {
        for process in self.processes.into_iter().rev() {
            process.stop.cancel();
            if process.stopped.await.is_err() {
                eprintln!("artifacts up: the supervisor of {} failed", process.name);
            }
        }
    }
}

/// Runs one process until `stop`, starting it again whenever it exits.
async fn keep_running(
    name: &'static str,
    launch: impl Fn() -> Command,
    log: Arc<ProcessLog>,
    pid_slot: Arc<AtomicU32>,
    stop: CancellationToken,
    grace: Duration,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = tokio::time::Instant::now();
        log.mark("starting");
        let (mut child, readers) = match start(name, launch(), &log).await {
            Ok(started) => started,
            Err(err) => {
                eprintln!("artifacts up: cannot start {name}: {err:#}");
                return;
            }
        };
        let pid = child.id().unwrap_or(0);
        pid_slot.store(pid, Ordering::Relaxed);
        let status = tokio::select! {
            status = child.wait() => status,
            _ = stop.cancelled() => {
                stop_child(name, pid, &mut child, grace).await;
                log.mark("stopped");
                return;
            }
        };
        // Its last words (a configuration error, a panic) are read to the end before they are shown.
        let _ = tokio::time::timeout(Duration::from_secs(1), futures::future::join_all(readers)).await;
        let shown = status.map_or_else(|err| err.to_string(), |status| status.to_string());
        if started.elapsed() >= STEADY {
            backoff = FIRST_BACKOFF;
        }
        log.mark(&format!("exited ({shown}); restarting it in {}s", backoff.as_secs()));
        let last = log.take_recent();
        if log.verbose || last.is_empty() {
            eprintln!("artifacts up: {name} exited ({shown}); restarting it in {}s", backoff.as_secs());
        } else {
            eprintln!(
                "artifacts up: {name} exited ({shown}); restarting it in {}s. Its last lines ({}):",
                backoff.as_secs(),
                log.path.display()
            );
            for line in last {
                eprintln!("{name:>9} | {line}");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Spawns `command` in its own process group (Ctrl-C reaches `up` alone, which stops the processes in
/// order), with its output going to its log, and set to receive SIGTERM when `up` dies, however it
/// dies (even SIGKILL), so nothing outlives the stack. Also returns the tasks reading its output, which
/// end with it.
async fn start(
    name: &'static str,
    mut command: Command,
    log: &Arc<ProcessLog>,
) -> anyhow::Result<(tokio::process::Child, Vec<tokio::task::JoinHandle<()>>)> {
    command.process_group(0).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let up = std::process::id();
    // SAFETY: between fork and exec only prctl(2) and getppid(2), which are async-signal-safe, run.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // `up` died between the fork and the prctl: no signal will come, so do not start.
            if u32::try_from(libc::getppid()).ok() != Some(up) {
                return Err(std::io::Error::other("artifacts up is gone"));
            }
            Ok(())
        });
    }
    let mut child = spawner().spawn(command).await.with_context(|| format!("cannot start {name}"))?;
    let readers = vec![
        tokio::spawn(follow_lines(Arc::clone(log), child.stdout.take().expect("piped"))),
        tokio::spawn(follow_lines(Arc::clone(log), child.stderr.take().expect("piped"))),
    ];
    Ok((child, readers))
}

/// The thread every child is forked from. The parent-death signal comes when the *thread* that forked a
/// child exits, not the process; runtime threads come and go, this one lives as long as `up`.
struct Spawner {
    requests: std::sync::mpsc::Sender<(Command, tokio::sync::oneshot::Sender<std::io::Result<tokio::process::Child>>)>,
}

impl Spawner {
    async fn spawn(&self, command: Command) -> std::io::Result<tokio::process::Child> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.requests.send((command, reply)).map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
        answer.await.map_err(|_| std::io::Error::other("the spawner thread is gone"))?
    }
}

fn spawner() -> &'static Spawner {
    static SPAWNER: std::sync::OnceLock<Spawner> = std::sync::OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (requests, incoming) = std::sync::mpsc::channel::<(Command, tokio::sync::oneshot::Sender<_>)>();
        let runtime = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("spawner".into())
            .spawn(move || {
                // Child processes are reaped by the runtime: spawn them inside it.
                let _runtime = runtime.enter();
                for (mut command, reply) in incoming {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("a thread starts");
        Spawner { requests }
    })
}

/// SIGTERM, then SIGKILL after the grace period.
async fn stop_child(name: &str, pid: u32, child: &mut tokio::process::Child, grace: Duration) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) with the pid of a child this process spawned and has not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        eprintln!("artifacts up: {name} did not stop within {}s; killing it", grace.as_secs());
        let _ = child.kill().await;
    }
}

/// Waits until every function answers `$SRV.PING`, saying which do not when `limit` passes.
async fn every_function_answers(nats: &Nats, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let missing = unanswered_services(nats).await;
        if missing.is_empty() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!("artifacts up: no answer to $SRV.PING from {} after {}s", missing.join(", "), limit.as_secs());
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn follow_lines(log: Arc<ProcessLog>, output: impl AsyncRead + Unpin) {
    let mut lines = BufReader::new(output).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        log.line(&line);
    }
}

/// A log file grows to this, then moves to `<name>.log.1` (replacing the one before).
const LOG_CAP: u64 = 16 << 20;

/// Lines of a process kept to show when it exits.
const LAST_LINES: usize = 12;

/// One process's log: its file, what is shown on screen, and its latest lines.
struct ProcessLog {
    name: &'static str,
    path: PathBuf,
    verbose: bool,
    state: std::sync::Mutex<LogState>,
}

#[derive(Default)]
struct LogState {
    file: Option<std::fs::File>,
    size: u64,
    /// The latest lines since the process last started.
    recent: VecDeque<String>,
    /// A write failed, and `up` said so: it is not said again.
    failed: bool,
}

impl ProcessLog {
    fn new(name: &'static str, path: PathBuf, verbose: bool) -> Self {
        Self { name, path, verbose, state: Default::default() }
    }

    /// One line of the process's output: to its file, and on screen when verbose or when it is a warning
    /// or an error.
    fn line(&self, line: &str) {
        {
            let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            self.append(&mut state, line);
            if state.recent.len() == LAST_LINES {
                state.recent.pop_front();
            }
            state.recent.push_back(line.to_owned());
        }
        if self.verbose {
            println!("{:>9} | {line}", self.name);
        } else if is_warning(line) {
            eprintln!("{:>9} | {line}", self.name);
        }
    }

    /// A line of `up`'s own in the file (a start, an exit), and a new run's latest lines start afresh.
    fn mark(&self, what: &str) {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.append(&mut state, &format!("==> artifacts up: {} {what}", self.name));
        if what == "starting" {
            state.recent.clear();
        }
    }

    /// The latest lines of the run that ended.
    fn take_recent(&self) -> Vec<String> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.recent.drain(..).collect()
    }

    fn append(&self, state: &mut LogState, line: &str) {
        if state.size >= LOG_CAP {
            state.file = None;
            let _ = std::fs::rename(&self.path, self.path.with_extension("log.1"));
        }
        if state.file.is_none() {
            let opened = std::fs::OpenOptions::new().create(true).append(true).open(&self.path);
            match opened {
                Ok(file) => {
                    state.size = file.metadata().map_or(0, |meta| meta.len());
                    state.file = Some(file);
                }
                Err(err) => return self.failed(state, err),
            }
        }
        let file = state.file.as_mut().expect("opened above");
        match file.write_all(format!("{line}\n").as_bytes()) {
            Ok(()) => state.size += line.len() as u64 + 1,
            Err(err) => {
                state.file = None;
                self.failed(state, err);
            }
        }
    }

    fn failed(&self, state: &mut LogState, err: std::io::Error) {
        if !std::mem::replace(&mut state.failed, true) {
            eprintln!("artifacts up: cannot write {}: {err}; its lines are lost", self.path.display());
        }
    }
}

/// Whether a line of a process's output is a warning or an error, in the formats the stack's processes
/// write: tracing's text (`<time>  WARN target: ...`) and JSON (`"level":"WARN"`), nats-server
/// (`[WRN]`, `[ERR]`, `[FTL]`) and the registry (`level=warning`). Known harmless warnings are not:
/// nats-server 2.9 calls the `anonymous` user (no password) a plaintext password, and the registry warns
/// of every request without a token, which is how every client starts (then it gets one).
fn is_warning(line: &str) -> bool {
    const HARMLESS: &[&str] = &["Plaintext passwords detected", "authorization token required"];
    if HARMLESS.iter().any(|harmless| line.contains(harmless)) {
        return false;
    }
    let tracing_text = line.split_whitespace().nth(1).is_some_and(|level| matches!(level, "WARN" | "ERROR"));
    let tracing_json = line.contains(r#""level":"WARN""#) || line.contains(r#""level":"ERROR""#);
    let nats = ["[WRN]", "[ERR]", "[FTL]"].iter().any(|tag| line.contains(tag));
    let registry = ["level=warning", "level=error", "level=fatal", "level=panic"].iter().any(|tag| line.contains(tag));
    tracing_text || tracing_json || nats || registry || line.contains("panicked at")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_told_from_other_lines() {
        for line in [
            "2026-12-07T04:54:58.855305Z  WARN artifacts_runtime::jobs: slow",
            "2026-12-07T04:54:58.855305Z ERROR artifacts_gateway: failed",
            r#"{"timestamp":"...","level":"WARN","fields":{"message":"slow"}}"#,
            "[11425] 2026/12/07 04:54:58.445688 [ERR] cannot listen",
            r#"time="2026-12-07T04:54:58Z" level=error msg="storage""#,
            "thread 'main' panicked at src/main.rs:1:1:",
        ] {
            assert!(is_warning(line), "{line}");
        }
        for line in [
            "2026-12-07T04:54:58.855305Z  INFO async_nats: event: connected",
            "[11425] 2026/12/07 04:54:58.445610 [INF] Starting nats-server",
            "[11425] 2026/12/07 04:54:58.445688 [WRN] Plaintext passwords detected, use nkeys or bcrypt",
            r#"time="2026-12-07T04:54:58Z" level=info msg="listening on 127.0.0.1:5000""#,
            r#"time="2026-12-07T05:09:03Z" level=warning msg="error authorizing context: authorization token required""#,
            r#"127.0.0.1 - - [07/Dec/2026:04:55:00 +0000] "GET /v2/ HTTP/1.1" 401 87 "" "curl/7.88""#,
        ] {
            assert!(!is_warning(line), "{line}");
        }
    }

    #[test]
    fn logs_are_appended_and_capped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lookup.log");
        std::fs::write(&path, "from before\n").unwrap();
        let log = ProcessLog::new("lookup", path.clone(), false);
        log.line("before");
        log.mark("starting");
        log.line("one");
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "from before\nbefore\n==> artifacts up: lookup starting\none\n");
        assert_eq!(log.take_recent(), ["one"]);
        log.state.lock().unwrap().size = LOG_CAP;
        log.line("two");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        assert_eq!(std::fs::read_to_string(path.with_extension("log.1")).unwrap(), text);
    }

    #[test]
    fn default_caps_are_lowered_to_fit_and_set_caps_are_refused() {
        let dir = Path::new("/");
        let mut storage = StorageSettings { jetstream_bytes: Some(20 << 30), ..Default::default() };
        let refused = plan_storage(&storage, dir, &[dir.join("nowhere")]).unwrap_err().to_string();
        assert!(refused.contains("lower storage.archives_bytes (now 64.0 GiB)"), "{refused}");
        storage.archives_bytes = 12 << 30;
        storage.uploads_bytes = 2 << 30;
        let over = plan_storage(&storage, dir, &[dir.join("nowhere")]).unwrap_err().to_string();
        assert!(over.contains("2.2 GiB too much"), "{over}");
        storage.logs_bytes = 1 << 30;
        let fits = plan_storage(&storage, dir, &[dir.join("nowhere")]).unwrap();
        assert!(!fits.scaled && fits.per_node == 20 << 30, "{fits:?}");
        for room in [20u64 << 30, 3 << 30, 300 << 20] {
            let caps = caps_within(&StorageSettings::default(), room);
            assert!(caps.reserved_bytes() <= room, "{room}: {caps:?}");
            assert!(caps.reserved_bytes() > room / 10 * 9, "most of the room is used: {room}: {caps:?}");
        }
        assert_eq!(caps_within(&StorageSettings::default(), 20 << 30).bucket_bytes, 256 << 20);
    }

    #[test]
    fn the_server_gets_the_planned_storage() {
        let written = with_max_file_store(NATS_CONFIG, 21474836480);
        assert!(written.contains("\n  max_file_store: 21474836480\n"), "{written}");
        assert_eq!(written.matches("max_file_store:").count(), 1, "{written}");
    }

    #[test]
    fn certificates_name_the_registry_host() {
        let names = certificate_names("registry.example:5000", &["other.example".into()]);
        assert_eq!(names[..3], ["registry.example", "localhost", "127.0.0.1"]);
        assert!(names.contains(&"other.example".to_owned()));
        let everywhere = certificate_names("0.0.0.0:5000", &[]);
        assert!(!everywhere.contains(&"0.0.0.0".to_owned()) && everywhere.contains(&"127.0.0.1".to_owned()));
    }

    #[test]
    fn nats_addresses() {
        assert_eq!(nats_address("nats://127.0.0.1:4222").unwrap(), "127.0.0.1:4222");
        assert_eq!(nats_address("nats://u:p@host:1,nats://other:2").unwrap(), "host:1");
        assert_eq!(nats_address("localhost").unwrap(), "localhost:4222");
        assert!(nats_address("nats://").is_err());
    }
}
