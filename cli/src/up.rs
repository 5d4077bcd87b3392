//! `artifacts up`: the whole stack in the foreground.
//!
//! Starts `nats-server` (JetStream, with `nats/nats-server.conf`) and the registry (Debian's
//! `docker-registry`) unless something already answers at their addresses, then every function and the
//! gateway, each as its own process with its output prefixed by its name. Nothing is restarted behind
//! the user's back: when a process exits, `up` says so and stops the rest. Ctrl-C (or SIGTERM) stops
//! the gateway and functions first, then the registry and NATS, each with SIGTERM and, after a grace
//! period, SIGKILL.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio::sync::{mpsc, watch};

use artifacts_runtime::nats_users::{self, SERVICE_USER};
use artifacts_runtime::Settings;
use artifacts_schemas::Subjects;

const NATS_CONFIG: &str = include_str!("../../nats/nats-server.conf");
const NATS_AUTH_CONFIG: &str = include_str!("../../nats/nats-server.auth.conf");

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
const FUNCTIONS: &[&str] =
    &["artifacts-lookup", "artifacts-build-image", "artifacts-build-component", "artifacts-git-trigger"];

const GRACE: Duration = Duration::from_secs(10);

pub async fn run(config: Option<PathBuf>, data_dir: PathBuf) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(config.as_deref())?;
    std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize()?;
    let config = config.map(|file| file.canonicalize()).transpose().context("--config")?;
    let (admin_key, key_is_new) = admin_key(&data_dir)?;

    let mut stack = Stack::new();
    let mut missing = Vec::new();

    let nats_addr = nats_address(&settings.nats.url)?;
    // The URL the stack's own processes use: with the `service` user's credentials when `up` runs NATS.
    let mut service_url = None;
    let nats_up = if answers(&nats_addr).await {
        println!("NATS already answers at {nats_addr}: using it");
        true
    } else if let Some(bin) = find_program("nats-server") {
        std::fs::write(data_dir.join("nats-server.conf"), NATS_CONFIG)?;
        let conf = data_dir.join("nats-server.auth.conf");
        std::fs::write(&conf, NATS_AUTH_CONFIG)?;
        let service_password = secret_file(&data_dir.join("nats-service-password"), "ns")?.0;
        let users = NatsUsers::new(&data_dir, &service_password, &admin_key, settings.subjects())?;
        let (host, port) = nats_addr.rsplit_once(':').unwrap_or((&nats_addr, "4222"));
        let mut command = Command::new(bin);
        command
            .arg("-c")
            .arg(&conf)
            .args(["-a", host, "-p", port])
            .env("ARTIFACTS_NATS_STORE_DIR", data_dir.join("nats"));
        let pid = stack.spawn("nats", command)?;
        let url = format!("nats://{SERVICE_USER}:{service_password}@{nats_addr}");
        service_url = Some(url.clone());
        let up = wait_until_answers(&nats_addr, Duration::from_secs(15)).await;
        if up {
            users.follow_keys(&settings, url, pid);
        }
        up
    } else {
        missing.push("nats-server is not installed (Debian: apt-get install nats-server); nothing but the registry can run without NATS".to_owned());
        false
    };

    let registry = &settings.registry.address;
    if answers(registry).await {
        println!("a registry already answers at {registry}: using it");
    } else if let Some(bin) = find_program("docker-registry").or_else(|| find_program("registry")) {
        let conf = data_dir.join("registry.yml");
        std::fs::write(&conf, REGISTRY_CONFIG)?;
        let mut command = Command::new(bin);
        command
            .arg("serve")
            .arg(&conf)
            .env("REGISTRY_HTTP_ADDR", registry)
            .env("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", data_dir.join("registry"));
        stack.spawn("registry", command)?;
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
            let mut command = Command::new(bin);
            if let Some(config) = &config {
                command.env("ARTIFACTS_CONFIG", config);
            }
            if let Some(url) = &service_url {
                command.env("ARTIFACTS__NATS__URL", url);
            }
            if std::env::var_os("ARTIFACTS__LOG__FORMAT").is_none() {
                command.env("ARTIFACTS__LOG__FORMAT", "text");
            }
            // Every process authenticates the keys it is sent, the bootstrap admin key included.
            command.env("ARTIFACTS_ADMIN_KEY", &admin_key);
            stack.spawn(name.trim_start_matches("artifacts-"), command)?;
        }
    }

    for problem in &missing {
        eprintln!("artifacts up: {problem}");
    }
    let listen = settings.gateway.listen;
    if nats_up && wait_until_answers(&listen.to_string(), Duration::from_secs(30)).await {
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
            println!("  NATS:      nats://{nats_addr} (user: the key id, or `admin`; password: the key)");
        }
        println!("Press Ctrl-C to stop.");
    }
    Ok(stack.supervise().await)
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

    /// Rewrites the users file at every change of the keys and reloads nats-server (SIGHUP to `pid`).
    fn follow_keys(self, settings: &Settings, service_url: String, pid: i32) {
        let mut settings = settings.clone();
        settings.nats.url = service_url;
        tokio::spawn(async move {
            let nats = match artifacts_runtime::nats::connect(&settings, "artifacts-up").await {
                Ok(nats) => nats,
                Err(err) => return eprintln!("artifacts up: API keys cannot become NATS users: {err:#}"),
            };
            let reload = nats_users::reload_by_signal(pid as u32);
            let never = tokio_util::sync::CancellationToken::new();
            nats_users::follow(nats.stores.keys, self.subjects, self.fixed, self.file, reload, never).await;
        });
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

/// Looks in `PATH` and in the system directories Debian installs daemons to.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Why builds will not work, if no Docker engine socket is there.
fn docker_problem(settings: &Settings) -> Option<String> {
    let host = settings.docker_host();
    let socket = host.strip_prefix("unix://")?;
    (!Path::new(socket).exists()).then(|| {
        format!("no Docker engine at {host} (Debian: apt-get install docker.io, then start dockerd): builds will fail until one runs")
    })
}

struct Running {
    name: &'static str,
    pid: i32,
    exited: watch::Receiver<Option<ExitStatus>>,
}

/// The child processes, in start order.
struct Stack {
    children: Vec<Running>,
    exits: mpsc::UnboundedSender<(&'static str, ExitStatus)>,
    exit_events: mpsc::UnboundedReceiver<(&'static str, ExitStatus)>,
}

impl Stack {
    fn new() -> Self {
        let (exits, exit_events) = mpsc::unbounded_channel();
        Self { children: Vec::new(), exits, exit_events }
    }

    /// Starts a process and returns its pid.
    fn spawn(&mut self, name: &'static str, mut command: Command) -> anyhow::Result<i32> {
        // Their own process group: Ctrl-C reaches `up` alone, which stops them in order.
        command.process_group(0).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let mut child = command.spawn().with_context(|| format!("cannot start {name}"))?;
        let pid = child.id().context("child has no pid")? as i32;
        tokio::spawn(prefix_lines(name, child.stdout.take().expect("piped")));
        tokio::spawn(prefix_lines(name, child.stderr.take().expect("piped")));
        let (done, exited) = watch::channel(None);
        let exits = self.exits.clone();
        tokio::spawn(async move {
            if let Ok(status) = child.wait().await {
                let _ = done.send(Some(status));
                let _ = exits.send((name, status));
            }
        });
        self.children.push(Running { name, pid, exited });
        Ok(pid)
    }

    /// Runs until Ctrl-C, SIGTERM or the exit of any process; then stops the rest.
    async fn supervise(mut self) -> ExitCode {
        if self.children.is_empty() {
            eprintln!("artifacts up: nothing could be started");
            return ExitCode::FAILURE;
        }
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let code = tokio::select! {
            _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
            _ = async { match terminate.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => ExitCode::SUCCESS,
            Some((name, status)) = self.exit_events.recv() => {
                eprintln!("artifacts up: {name} exited ({status}); stopping everything");
                ExitCode::FAILURE
            }
        };
        println!("stopping...");
        for child in self.children.iter_mut().rev() {
            stop(child).await;
        }
        code
    }
}

async fn stop(child: &mut Running) {
    if child.exited.borrow().is_some() {
        return;
    }
    // SAFETY: kill(2) with a pid this process spawned and has not yet reaped.
    unsafe { libc::kill(child.pid, libc::SIGTERM) };
    let in_time = tokio::time::timeout(GRACE, child.exited.wait_for(Option::is_some)).await.is_ok();
    if !in_time {
        eprintln!("artifacts up: {} did not stop within {}s; killing it", child.name, GRACE.as_secs());
        // SAFETY: as above.
        unsafe { libc::kill(child.pid, libc::SIGKILL) };
        let _ = child.exited.wait_for(Option::is_some).await;
    }
}

async fn prefix_lines(name: &'static str, output: impl AsyncRead + Unpin) {
    let mut lines = BufReader::new(output).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        println!("{name:>9} | {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_addresses() {
        assert_eq!(nats_address("nats://127.0.0.1:4222").unwrap(), "127.0.0.1:4222");
        assert_eq!(nats_address("nats://u:p@host:1,nats://other:2").unwrap(), "host:1");
        assert_eq!(nats_address("localhost").unwrap(), "localhost:4222");
        assert!(nats_address("nats://").is_err());
    }
}
