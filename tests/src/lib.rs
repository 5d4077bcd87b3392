//! Helpers for the integration tests: every test gets its own real `nats-server` (JetStream, a temporary
//! store, a random port) and its own gateway and functions, run in-process on port 0 and driven over real
//! HTTP and real NATS. Nothing is shared between tests and nothing is mocked.

pub mod browser;
pub mod cluster;
pub mod engines;
pub mod up;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use artifacts_gateway::startup::Application;
use artifacts_runtime::configuration::Secret;
use artifacts_runtime::nats_users;
use artifacts_runtime::{Nats, Settings};
use artifacts_schemas::Subjects;
use artifacts_store::Objects;

pub const ADMIN_KEY: &str = "test-admin-key";

/// The repository's root, for its files (`nats/nats-server.conf`, `examples/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the repository").to_path_buf()
}

/// Finds a program the tests need, or fails naming it and how to get it.
pub fn require_program(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is required by this test and is not installed: run scripts/test (Debian package {package})")
        })
}

/// A real nats-server with JetStream on a random port and a temporary store, stopped on drop.
pub struct NatsServer {
    child: Child,
    /// The server's last lines of output, kept so a test can say why it died.
    output: ServerOutput,
    port: u16,
    store: tempfile::TempDir,
    config: PathBuf,
    /// The cluster's environment for this node (nats/nats-server.cluster.conf); empty for one server.
    cluster_env: Vec<(&'static str, String)>,
}

/// A server's last lines of output.
type ServerOutput = Arc<Mutex<VecDeque<String>>>;

/// The password of the `service` NATS user in tests.
pub const NATS_SERVICE_PASSWORD: &str = "test-service-password";

impl NatsServer {
    /// Without users: any connection may do anything (the services still check keys).
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// With `nats/nats-server.auth.conf` and the users `artifacts up` generates (no API keys yet): the
    /// `service` user, `admin` for [`ADMIN_KEY`], and anonymous discovery.
    pub async fn start_with_users() -> Self {
        Self::start_with(Some(())).await
    }

    async fn start_with(users: Option<()>) -> Self {
        let store = tempfile::tempdir().expect("temporary directory");
        let config = match users {
            None => Self::config_dir(store.path()).join("nats-server.conf"),
            Some(()) => Self::users_config(store.path()).join("nats-server.auth.conf"),
        };
        let (child, output, port) = Self::spawn(&config, store.path(), "-1", &[]).await;
        Self { child, output, port, store, config, cluster_env: Vec::new() }
    }

    /// The shipped configuration files in `conf/` under `store`, the server given 100 GB of JetStream
    /// storage (the shipped file leaves it to the disk's free space): the stack's default caps fit whatever
    /// the disk of the machine running the tests, and tests of sizing set their own.
    fn config_dir(store: &Path) -> PathBuf {
        let dir = store.join("conf");
        std::fs::create_dir(&dir).unwrap();
        for file in ["nats-server.conf", "nats-server.auth.conf", "nats-server.cluster.conf"] {
            std::fs::copy(repo_root().join("nats").join(file), dir.join(file)).unwrap();
        }
        let shipped = std::fs::read_to_string(dir.join("nats-server.conf")).unwrap();
        let store_line = "  store_dir: $ARTIFACTS_NATS_STORE_DIR\n";
        assert!(shipped.contains(store_line), "nats/nats-server.conf sets the store as the harness expects");
        let sized = shipped.replace(store_line, &format!("{store_line}  max_file_store: 100GB\n"));
        std::fs::write(dir.join("nats-server.conf"), sized).unwrap();
        dir
    }

    /// The configuration files with users, in `conf/` under `store`.
    fn users_config(store: &Path) -> PathBuf {
        let dir = Self::config_dir(store);
        let text = nats_users::render(&Subjects::default(), &Self::fixed_users(), &Default::default());
        nats_users::write_atomically(&dir.join("nats-users.conf"), &text).unwrap();
        dir
    }

    /// A cluster of `size` nodes with users, as `nats/nats-server.cluster.conf` makes one: node `n` is
    /// named `artifacts-<n+1>`. Returned once JetStream has a meta leader.
    pub async fn start_cluster(size: usize) -> Vec<Self> {
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let routes: Vec<String> =
            ports.iter().map(|(_, route)| format!("nats://route:test-route@127.0.0.1:{route}")).collect();
        let mut nodes = Vec::new();
        for (n, (port, route)) in ports.iter().enumerate() {
            let store = tempfile::tempdir().expect("temporary directory");
            let config = Self::users_config(store.path()).join("nats-server.cluster.conf");
            let cluster_env = vec![
                ("ARTIFACTS_NATS_SERVER_NAME", format!("artifacts-{}", n + 1)),
                ("ARTIFACTS_NATS_CLUSTER_LISTEN", format!("127.0.0.1:{route}")),
                ("ARTIFACTS_NATS_ROUTES", routes.join(",")),
                ("ARTIFACTS_NATS_ROUTE_PASSWORD", "test-route".to_owned()),
            ];
            let (child, output, port) = Self::spawn(&config, store.path(), &port.to_string(), &cluster_env).await;
            nodes.push(Self { child, output, port, store, config, cluster_env });
        }
        let client = async_nats::ConnectOptions::with_user_and_password("service".into(), NATS_SERVICE_PASSWORD.into())
            .connect(nodes[0].address())
            .await
            .expect("the cluster answers");
        let jetstream = async_nats::jetstream::new(client);
        for _ in 0..200 {
            // Answers once the nodes have elected a meta leader.
            if jetstream.get_stream("none-yet").await.is_err_and(|err| err.to_string().contains("not found")) {
                return nodes;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the NATS cluster elected no leader within 20 s");
    }

    /// This node's `server_name`.
    pub fn name(&self) -> String {
        self.cluster_env
            .iter()
            .find(|(name, _)| *name == "ARTIFACTS_NATS_SERVER_NAME")
            .map_or_else(|| "artifacts".to_owned(), |(_, value)| value.clone())
    }

    /// The users every test deployment with users has.
    pub fn fixed_users() -> nats_users::FixedUsers {
        nats_users::FixedUsers {
            service_bcrypt: nats_users::bcrypt(NATS_SERVICE_PASSWORD),
            admin_bcrypt: Some(nats_users::bcrypt(ADMIN_KEY)),
        }
    }

    /// The generated users file (with `start_with_users`).
    pub fn users_file(&self) -> PathBuf {
        self.config.with_file_name("nats-users.conf")
    }

    /// Stops the server and starts it again on the same port with the same store, as an operator's
    /// restart would.
    pub async fn restart(&mut self) {
        self.stop().await;
        let (child, output, _) =
            Self::spawn(&self.config, self.store.path(), &self.port.to_string(), &self.cluster_env).await;
        self.child = child;
        self.output = output;
    }

    /// If the server has exited: its status and last lines of output.
    pub fn exited(&mut self) -> Option<String> {
        let status = self.child.try_wait().ok().flatten()?;
        let output = self.output.lock().unwrap().iter().cloned().collect::<Vec<_>>().join("\n");
        Some(format!("nats-server exited ({status}); its last output:\n{output}"))
    }

    async fn spawn(
        config: &Path,
        store: &Path,
        port: &str,
        env: &[(&'static str, String)],
    ) -> (Child, ServerOutput, u16) {
        let bin = require_program("nats-server", "nats-server");
        let mut child = Command::new(bin)
            .arg("-c")
            .arg(config)
            .args(["-a", "127.0.0.1", "-p", port])
            .env("ARTIFACTS_NATS_STORE_DIR", store)
            .envs(env.iter().map(|(name, value)| (name, value)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server starts");
        let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
        let port = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(line) = lines.next_line().await.expect("nats-server output") {
                if let Some(address) = line.split("Listening for client connections on ").nth(1) {
                    return address.trim().rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port");
                }
            }
            panic!("nats-server exited before listening");
        })
        .await
        .expect("nats-server listens within 10s");
        // Keep draining its output to the end, whatever its bytes: a server whose standard error closes dies
        // of SIGPIPE at its next log line, and one whose pipe fills blocks.
        let output = ServerOutput::default();
        let kept = output.clone();
        let mut rest = lines.into_inner();
        tokio::spawn(async move {
            let mut line = Vec::new();
            while rest.read_until(b'\n', &mut line).await.is_ok_and(|read| read > 0) {
                let mut kept = kept.lock().unwrap();
                if kept.len() == 40 {
                    kept.pop_front();
                }
                kept.push_back(String::from_utf8_lossy(&line).trim_end().to_owned());
                line.clear();
            }
        });
        (child, output, port)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The URL the stack's processes use with `start_with_users`.
    pub fn service_url(&self) -> String {
        format!("nats://service:{NATS_SERVICE_PASSWORD}@127.0.0.1:{}", self.port)
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// A real registry (Debian's `docker-registry`) on a free port with temporary storage, stopped on drop.
pub struct Registry {
    _child: Child,
    pub address: String,
    _storage: tempfile::TempDir,
}

impl Registry {
    /// Its filesystem storage (`storage.filesystem.rootdirectory`).
    pub fn storage_dir(&self) -> PathBuf {
        self._storage.path().join("data")
    }

    /// An open registry on a free port.
    pub async fn start() -> Self {
        Self::start_at(&format!("127.0.0.1:{}", free_port()), "").await
    }

    /// A registry at `address` (from [`free_port`]) with `extra` appended to its configuration (an
    /// `auth:` section, say).
    pub async fn start_at(address: &str, extra: &str) -> Self {
        let bin = require_program("docker-registry", "docker-registry");
        let storage = tempfile::tempdir().expect("temporary directory");
        let address = address.to_owned();
        let config = storage.path().join("config.yml");
        let base = "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /unused\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:5000\n";
        std::fs::write(&config, format!("{base}{extra}")).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config)
            .env("REGISTRY_HTTP_ADDR", &address)
            .env("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", storage.path().join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("docker-registry starts");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(&address).await.is_ok() {
                return Self { _child: child, address, _storage: storage };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("docker-registry did not listen on {address}");
    }
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("an address").port()
}

/// Fails, naming the fix, unless a Docker engine answers.
pub async fn require_docker() {
    let output = Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]).output().await;
    match output {
        Ok(output) if output.status.success() => {}
        _ => panic!("this test needs a Docker engine and none answers: run scripts/test, which starts dockerd"),
    }
}

/// Runs the docker CLI, failing the test with its output when it fails.
pub async fn docker(args: &[&str]) -> String {
    let output = Command::new("docker").args(args).output().await.expect("the docker CLI runs");
    assert!(output.status.success(), "docker {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A workspace binary (built by `cargo build --workspace --bins`, which scripts/test runs).
pub fn workspace_binary(name: &str) -> PathBuf {
    // Tests run from target/<profile>/deps/, benchmarks from target/<profile>/.
    let exe = std::env::current_exe().expect("the running binary's path");
    let dir = exe.parent().expect("a directory");
    let dir = if dir.ends_with("deps") { dir.parent().expect("target/<profile>") } else { dir };
    let binary = dir.join(name);
    assert!(
        binary.exists(),
        "{} is not built: run `cargo build --workspace --bins` (scripts/test does)",
        binary.display()
    );
    binary
}

/// An `artifacts-gateway` process of its own on the app's NATS server, for benchmarks that read its memory
/// from `/proc`; killed on drop.
pub struct GatewayProcess {
    child: Child,
    pub port: u16,
}

impl GatewayProcess {
    /// Starts the release (or debug, as the caller was built) binary with `env` on top of the app's
    /// settings, and waits until it accepts connections.
    pub async fn start(app: &TestApp, env: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(workspace_binary("artifacts-gateway"))
            .env("ARTIFACTS__NATS__URL", app.nats_server.url())
            .env("ARTIFACTS__GATEWAY__LISTEN", format!("127.0.0.1:{port}"))
            .env("ARTIFACTS_ADMIN_KEY", ADMIN_KEY)
            .env("ARTIFACTS__LOG__FILTER", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the gateway starts");
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Self { child, port };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the gateway did not listen on port {port}");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Resident memory now (`VmRSS`), in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.status_mib("VmRSS:")
    }

    /// The most resident memory so far (`VmHWM`), in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.status_mib("VmHWM:")
    }

    /// Starts `VmHWM` over from the current resident memory (Linux's `clear_refs` 5).
    pub fn reset_peak_rss(&self) {
        let pid = self.child.id().expect("the gateway runs");
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("/proc/<pid>/clear_refs is writable");
    }

    fn status_mib(&self, field: &str) -> f64 {
        let pid = self.child.id().expect("the gateway runs");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kib: f64 = status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        kib / 1024.0
    }
}

/// Settings for a test: everything on loopback, the gateway on port 0.
pub fn test_settings(nats_url: &str) -> Settings {
    let mut settings = Settings::default();
    settings.nats.url = nats_url.to_owned();
    settings.nats.connect_timeout_secs = 5;
    settings.nats.request_timeout_secs = 3;
    settings.gateway.listen = "127.0.0.1:0".parse().expect("an address");
    settings.admin_key = Some(Secret::new(ADMIN_KEY));
    // Whatever emulation this machine has: tests that build other architectures say so.
    settings.build.architectures = vec!["amd64".into()];
    settings
}

/// A whole stack for one test: nats-server, every function and the gateway.
pub struct TestApp {
    pub address: String,
    pub nats: Nats,
    pub settings: Settings,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    pub nats_server: NatsServer,
    /// The cluster's other nodes (`spawn_on_cluster`); empty on one server.
    pub peers: Vec<NatsServer>,
}

/// A key-value bucket as JetStream holds it (`builds`, `images`, ...), for tests that read or damage the
/// stored bytes themselves, or store them as an earlier version did; the service reaches them only
/// through `artifacts_store::Store`.
pub async fn raw_bucket(nats: &Nats, name: &str) -> async_nats::jetstream::kv::Store {
    // Sent again when it reached no one or its answer was lost: after a key change, nats-server reloads.
    let name = format!("artifacts_{name}");
    artifacts_store::access::retry_read(|| nats.jetstream.get_key_value(&name)).await.expect("the bucket exists")
}

/// An object store as JetStream holds it (`archives`, `uploads`), as [`raw_bucket`].
pub async fn raw_objects(nats: &Nats, name: &str) -> async_nats::jetstream::object_store::ObjectStore {
    let name = format!("artifacts_{name}");
    artifacts_store::access::retry_read(|| nats.jetstream.get_object_store(&name))
        .await
        .expect("the object store exists")
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(configure: impl FnOnce(&mut Settings)) -> Self {
        Self::spawn_functions(true, configure).await
    }

    /// Like `spawn_with`, but without an in-process build-image function (tests run their own, as a
    /// process they can kill).
    pub async fn spawn_without_builder(configure: impl FnOnce(&mut Settings)) -> Self {
        Self::spawn_functions(false, configure).await
    }

    /// Like `spawn_with`, with NATS users as `artifacts up` runs them: the stack connects as `service`, and
    /// each API key becomes a NATS user (the users file follows the keys bucket, then the server reloads).
    pub async fn spawn_with_nats_users(configure: impl FnOnce(&mut Settings)) -> Self {
        Box::pin(Self::start(NatsServer::start_with_users().await, Vec::new(), true, configure)).await
    }

    async fn spawn_functions(with_builder: bool, configure: impl FnOnce(&mut Settings)) -> Self {
        // Boxed: the whole stack's start-up future is larger than a test thread's stack.
        Box::pin(Self::start(NatsServer::start().await, Vec::new(), with_builder, configure)).await
    }

    /// Like `spawn_without_builder`, on a 3-node cluster with users and `nats.replicas = 3`: every process
    /// is given all three URLs. The users are the fixed ones (API keys made here get no NATS user).
    pub async fn spawn_on_cluster(configure: impl FnOnce(&mut Settings)) -> Self {
        let mut nodes = NatsServer::start_cluster(3).await;
        let first = nodes.remove(0);
        let configure = |settings: &mut Settings| {
            settings.nats.replicas = 3;
            configure(settings);
        };
        Box::pin(Self::start(first, nodes, false, configure)).await
    }

    /// Every node, this test's server first.
    pub fn nodes_mut(&mut self) -> impl Iterator<Item = &mut NatsServer> {
        std::iter::once(&mut self.nats_server).chain(self.peers.iter_mut())
    }

    async fn start(
        nats_server: NatsServer,
        peers: Vec<NatsServer>,
        with_builder: bool,
        configure: impl FnOnce(&mut Settings),
    ) -> Self {
        let with_users = !nats_server.config.ends_with("nats-server.conf");
        let url = match with_users {
            true => {
                std::iter::once(&nats_server).chain(&peers).map(NatsServer::service_url).collect::<Vec<_>>().join(",")
            }
            false => nats_server.url(),
        };
        let mut settings = test_settings(&url);
        configure(&mut settings);
        let nats = artifacts_runtime::nats::connect(&settings, "test").await.expect("NATS connects");
        let shutdown = CancellationToken::new();
        if with_users && peers.is_empty() {
            let reload = nats_users::reload_by_signal(nats_server.child.id().expect("nats-server runs"));
            tokio::spawn(nats_users::follow(
                nats.store.clone(),
                Subjects::default(),
                NatsServer::fixed_users(),
                nats_server.users_file(),
                reload,
                shutdown.clone(),
            ));
        }

        let lookup_nats = artifacts_runtime::nats::connect(&settings, "test-lookup").await.expect("NATS connects");
        spawn_function(artifacts_lookup::run(settings.clone(), lookup_nats, shutdown.clone()));
        let gc_nats = artifacts_runtime::nats::connect(&settings, "test-gc").await.expect("NATS connects");
        spawn_function(artifacts_gc::run(settings.clone(), gc_nats, shutdown.clone()));
        if with_builder {
            let builder_nats =
                artifacts_runtime::nats::connect(&settings, "test-build-image").await.expect("NATS connects");
            spawn_function(artifacts_build_image::run(settings.clone(), builder_nats, shutdown.clone()));
            let component_nats =
                artifacts_runtime::nats::connect(&settings, "test-build-component").await.expect("NATS connects");
            spawn_function(artifacts_build_component::run(settings.clone(), component_nats, shutdown.clone()));
            let trigger_nats =
                artifacts_runtime::nats::connect(&settings, "test-git-trigger").await.expect("NATS connects");
            spawn_function(artifacts_git_trigger::run(settings.clone(), trigger_nats, shutdown.clone()));
        }

        let gateway_nats = artifacts_runtime::nats::connect(&settings, "test-gateway").await.expect("NATS connects");
        let app = Application::build(settings.clone(), gateway_nats).await.expect("gateway builds");
        let address = format!("http://127.0.0.1:{}", app.port());
        tokio::spawn(app.run_until_stopped(shutdown.clone()));

        let test_app = Self {
            address,
            nats,
            settings,
            http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("HTTP client"),
            shutdown,
            nats_server,
            peers,
        };
        test_app.wait_for_service("artifacts-lookup").await;
        test_app.wait_for_service("artifacts-gc").await;
        if with_builder {
            test_app.wait_for_service("artifacts-build-image").await;
            test_app.wait_for_service("artifacts-build-component").await;
            test_app.wait_for_service("artifacts-git-trigger").await;
        }
        test_app
    }

    /// The build-image function as a process of its own (so a test can kill it), on this stack's NATS
    /// and registry and with its settings: the command, for the test to add to and spawn.
    pub fn build_image_command(&self) -> Command {
        let mut command = Command::new(workspace_binary("artifacts-build-image"));
        command
            .env("ARTIFACTS__NATS__URL", &self.settings.nats.url)
            .env("ARTIFACTS__NATS__REPLICAS", self.settings.nats.replicas.to_string())
            .env("ARTIFACTS_ADMIN_KEY", ADMIN_KEY)
            .env("ARTIFACTS__REGISTRY__ADDRESS", &self.settings.registry.address)
            .env("ARTIFACTS__BUILD__ACK_WAIT_SECS", self.settings.build.ack_wait_secs.to_string())
            .env("ARTIFACTS__BUILD__ARCHITECTURES", self.settings.build.architectures.join(","))
            .env("ARTIFACTS__LOG__FORMAT", "json")
            .env_remove("ARTIFACTS_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        command
    }

    /// Waits until a micro service answers `$SRV.PING.<name>`.
    pub async fn wait_for_service(&self, name: &str) {
        for _ in 0..100 {
            if self.nats.client.request(format!("$SRV.PING.{name}"), "".into()).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("service {name} did not register");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// A GET with the admin key.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).bearer_auth(ADMIN_KEY).send().await.expect("gateway answers")
    }

    /// Polls the build record until the build ends (at most two minutes).
    pub async fn wait_for_build(&self, build_id: &str) -> serde_json::Value {
        for _ in 0..1200 {
            let record: serde_json::Value =
                self.get(&format!("/api/v1/builds/{build_id}")).await.json().await.expect("JSON");
            if matches!(record["status"].as_str(), Some("succeeded" | "failed" | "cancelled")) {
                return record;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("build {build_id} did not end within two minutes");
    }

    /// Reads a build's server-sent log events to the end: the lines, and the `end` event's status.
    pub async fn follow_logs(&self, build_id: &str) -> (Vec<String>, String) {
        use futures::StreamExt;
        let response = self.get(&format!("/api/v1/builds/{build_id}/logs")).await;
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        let mut body = response.bytes_stream();
        let (mut buffer, mut lines) = (String::new(), Vec::new());
        let reading = async {
            while let Some(chunk) = body.next().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk.expect("stream")));
                while let Some(at) = buffer.find("\n\n") {
                    let event: String = buffer.drain(..at + 2).collect();
                    let kind = event.lines().find_map(|l| l.strip_prefix("event: ")).unwrap_or("message").to_owned();
                    let data: Vec<&str> =
                        event.lines().filter_map(|l| l.strip_prefix("data: ").or(l.strip_prefix("data:"))).collect();
                    match kind.as_str() {
                        "end" => return data.join("\n"),
                        "message" if !data.is_empty() => lines.push(data.join("\n")),
                        _ => {}
                    }
                }
            }
            panic!("the log stream closed without an end event");
        };
        let status =
            tokio::time::timeout(Duration::from_secs(120), reading).await.expect("the log ends within two minutes");
        (lines, status)
    }

    /// Stores a build record as a worker would (for tests of lookups and access), requested by alice.
    pub async fn store_build(
        &self,
        kind: artifacts_schemas::BuildKind,
        status: artifacts_schemas::BuildStatus,
        component: &str,
    ) -> artifacts_schemas::BuildId {
        use artifacts_schemas::{
            Architecture, BranchName, BuildId, BuildKind, BuildRecord, BuildWork, ComponentBuildSummary, ComponentName,
            ImageBuildSummary, RequestedBy, TagName,
        };
        let component = ComponentName::parse(component).expect("a valid component name");
        let architecture = Architecture::parse("amd64").expect("an architecture");
        let work = match kind {
            BuildKind::Image => BuildWork::Image {
                request: ImageBuildSummary {
                    component,
                    branch: BranchName::parse("main").expect("a branch"),
                    architecture,
                    dockerfile_digest: format!("sha256:{}", "0".repeat(64)),
                    context_digest: None,
                    build_args: Default::default(),
                    target: None,
                    secrets: Vec::new(),
                    trigger: None,
                },
                result: None,
            },
            BuildKind::Component => BuildWork::Component {
                request: ComponentBuildSummary {
                    url: "https://example.com/component.git".into(),
                    component,
                    tag: TagName::parse("v1").expect("a tag"),
                    architecture,
                    commit: "0".repeat(40),
                    trigger: None,
                },
                result: None,
            },
        };
        let requested_by =
            RequestedBy { linux_username: Some("alice".into()), github_username: None, api_key_id: Some("k".into()) };
        let record = BuildRecord { status, ..BuildRecord::queued(BuildId::generate(), work, requested_by) };
        self.nats.store.create_build(&record).await.expect("JetStream stores the record");
        record.build_id
    }

    /// Stores a component as its builder does when a build succeeds, without building it: the source
    /// (from `url`), the component record on `dependencies` (each at tag `main`), and the trigger index.
    /// `indexed: false` leaves the index out, as a deployment of the previous version did.
    pub async fn store_component(
        &self,
        component: &str,
        tag: &str,
        url: &str,
        dependencies: &[&artifacts_schemas::ComponentRecord],
        indexed: bool,
    ) -> artifacts_schemas::ComponentRecord {
        use artifacts_schemas::{
            Architecture, BuildId, ComponentName, ComponentQuery, ComponentRecord, ComponentSource, DependencyUsed,
            TagName, Timestamp,
        };
        let component = ComponentName::parse(component).expect("a valid component name");
        let digest = format!("sha256:{}", "0".repeat(64));
        let record = ComponentRecord {
            component: component.clone(),
            tag: TagName::parse(tag).expect("a tag"),
            architecture: Architecture::Amd64,
            url: url.into(),
            commit: "0".repeat(40),
            builder_image: "busybox".into(),
            dependencies: dependencies
                .iter()
                .map(|d| DependencyUsed {
                    component: d.component.clone(),
                    tag: d.tag.clone(),
                    digest: d.digest.clone(),
                    build_id: d.build_id.clone(),
                })
                .collect(),
            digest,
            size: 1,
            bucket: "none".into(),
            object: "none".into(),
            build_id: BuildId::generate(),
            built_at: Timestamp::now(),
            secrets: Vec::new(),
        };
        let source = ComponentSource {
            component: component.clone(),
            url: url.into(),
            api_key_id: None,
            component_patterns: None,
        };
        let query = ComponentQuery { component, tag: record.tag.clone(), architecture: record.architecture, url: None };
        if indexed {
            let store = &self.nats.store;
            store.record_source(&source, true).await.expect("stored");
            store.store_component(&query, &record).await.expect("stored");
        } else {
            // As the previous version stored them: records alone, straight into the buckets.
            let sources = raw_bucket(&self.nats, "sources").await;
            let key = artifacts_store::keys::source(&source.component);
            sources.put(key, serde_json::to_vec(&source).expect("serialises").into()).await.expect("stored");
            let components = raw_bucket(&self.nats, "components").await;
            let bytes = serde_json::to_vec(&record).expect("serialises");
            components.put(artifacts_store::keys::component(&query), bytes.into()).await.expect("stored");
        }
        record
    }

    /// Stores `data` as the archive of `component@tag` for amd64, with its record (size, digest), as a
    /// build would leave it; answers the record.
    pub async fn store_archive(&self, component: &str, tag: &str, data: &[u8]) -> artifacts_schemas::ComponentRecord {
        use sha2::Digest as _;
        let mut record =
            self.store_component(component, tag, &format!("https://example.com/{component}.git"), &[], true).await;
        let query = artifacts_schemas::ComponentQuery {
            component: record.component.clone(),
            tag: record.tag.clone(),
            architecture: record.architecture,
            url: None,
        };
        record.object = format!("{}/{}.tar.gz", query.record_key(), record.build_id.as_str());
        record.bucket = self.nats.store.archives_bucket();
        record.size = data.len() as u64;
        record.digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)));
        let mut reader = tokio::io::BufReader::with_capacity(128 * 1024, data);
        let store = &self.nats.store;
        store.put_object(Objects::Archives, &record.object, &mut reader).await.expect("the object store takes it");
        store.store_component(&query, &record).await.expect("stored");
        record
    }

    /// Publishes a push event as a CI system would, with a JetStream publish on `artifacts.git.push` and
    /// the admin key.
    pub async fn publish_push(&self, event: &serde_json::Value) -> async_nats::jetstream::publish::PublishAck {
        let payload = serde_json::to_vec(event).expect("events serialise");
        self.nats
            .jetstream
            .publish_with_headers("artifacts.git.push", key_header(ADMIN_KEY), payload.into())
            .await
            .unwrap()
            .await
            .expect("the push is stored")
    }

    /// A NATS request with a raw JSON payload and the admin key, as any client would send it.
    pub async fn nats_request(&self, subject: &str, payload: &str) -> async_nats::Message {
        self.nats_request_with(subject, key_header(ADMIN_KEY), payload).await
    }

    /// A NATS request with the given headers.
    pub async fn nats_request_with(
        &self,
        subject: &str,
        headers: async_nats::HeaderMap,
        payload: &str,
    ) -> async_nats::Message {
        self.nats
            .client
            .request_with_headers(subject.to_owned(), headers, payload.to_owned().into())
            .await
            .expect("NATS answers")
    }

    /// Like `spawn_with`, with a real registry of its own (`registry.address` set to it).
    pub async fn spawn_with_registry(configure: impl FnOnce(&mut Settings)) -> (Self, Registry) {
        require_docker().await;
        let registry = Registry::start().await;
        let address = registry.address.clone();
        let app = Self::spawn_with(|settings| {
            settings.registry.address = address;
            configure(settings);
        })
        .await;
        (app, registry)
    }

    /// Like `spawn_with`, with a registry that trusts only this gateway's tokens, as `artifacts up` runs
    /// it; the temporary directory holds the signing key and certificate.
    pub async fn spawn_with_token_registry() -> (Self, Registry, tempfile::TempDir) {
        use artifacts_runtime::registry_auth::{self, ensure_signing_files};
        require_docker().await;
        let signing_dir = tempfile::tempdir().expect("temporary directory");
        let signing = ensure_signing_files(signing_dir.path()).expect("signing files");
        let registry_address = format!("127.0.0.1:{}", free_port());
        let app = Self::spawn_with(|settings| {
            settings.registry.address = registry_address.clone();
            settings.registry.token_key_file = Some(signing.key.clone());
            settings.registry.token_certificate_file = Some(signing.certificate.clone());
        })
        .await;
        let auth = registry_auth::registry_auth_config(&app.url(""), &signing.certificate);
        let registry = Registry::start_at(&registry_address, &auth).await;
        (app, registry, signing_dir)
    }

    /// `POST /api/v1/images` (with `query`, e.g. `?wait=120`) of a JSON body with the admin key: the
    /// status and the answer.
    /// A stored component's archive for amd64, downloaded through the gateway with the admin key, and the
    /// lookup's answer.
    pub async fn stored_archive(&self, component: &str, tag: &str) -> (Vec<u8>, serde_json::Value) {
        let found: serde_json::Value = self
            .get(&format!("/api/v1/components?component={component}&tag={tag}&architecture=amd64"))
            .await
            .json()
            .await
            .expect("JSON");
        assert_eq!(found["status"], "found", "{found}");
        let url = found["component"].as_str().expect("a download URL");
        let response = self.http.get(url).bearer_auth(ADMIN_KEY).send().await.expect("answers");
        assert_eq!(response.status(), 200);
        (response.bytes().await.expect("the archive").to_vec(), found)
    }

    pub async fn post_image(&self, query: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let response = self
            .http
            .post(self.url(&format!("/api/v1/images{query}")))
            .bearer_auth(ADMIN_KEY)
            .json(body)
            .send()
            .await
            .expect("the gateway answers");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON"))
    }

    /// Submits a component build with the admin key and waits (two minutes at most) for its success.
    pub async fn build_component(&self, url: &str, component: &str, tag: &str) -> serde_json::Value {
        let body = serde_json::json!({"url": url, "component": component, "tag": tag, "architecture": "amd64"});
        let response = self
            .http
            .post(self.url("/api/v1/components?wait=120"))
            .bearer_auth(ADMIN_KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        let record: serde_json::Value = response.json().await.unwrap();
        assert_eq!(record["status"], "succeeded", "{record}");
        record
    }

    /// Builds of a component that a push triggered, oldest first.
    pub async fn triggered_builds(&self, component: &str) -> Vec<serde_json::Value> {
        // A busy moment may answer 503 (a lookup timing out): that poll sees nothing, the next one retries.
        let list: serde_json::Value =
            self.get(&format!("/api/v1/builds?component={component}&limit=500")).await.json().await.unwrap_or_default();
        let all = list["builds"].as_array().cloned().unwrap_or_default();
        let mut builds: Vec<serde_json::Value> =
            all.into_iter().filter(|b| b["request"]["trigger"].is_object()).collect();
        builds.reverse();
        builds
    }

    /// Creates an API key through the gateway with the admin key; returns its secret and id.
    pub async fn create_key(&self, request: serde_json::Value) -> (String, String) {
        self.create_key_as(ADMIN_KEY, request).await.expect("the key is created")
    }

    /// Creates an API key with another key; the error is the answer's status and body.
    pub async fn create_key_as(
        &self,
        creator: &str,
        request: serde_json::Value,
    ) -> Result<(String, String), (u16, serde_json::Value)> {
        let response =
            self.http.post(self.url("/api/v1/keys")).bearer_auth(creator).json(&request).send().await.expect("answers");
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.expect("JSON");
        if status != 201 {
            return Err((status, body));
        }
        Ok((body["secret"].as_str().unwrap().to_owned(), body["keyId"].as_str().unwrap().to_owned()))
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The webhook secret tests configure for GitHub and Gitea.
pub const WEBHOOK_SECRET: &str = "test-webhook-secret";

/// A real webhook payload from `../shared/fixtures/webhooks`.
pub fn webhook_fixture(name: &str) -> serde_json::Value {
    let path = repo_root().parent().expect("a parent").join("shared/fixtures/webhooks").join(name);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("fixture {} is missing: {err}", path.display()));
    serde_json::from_str(&text).expect("fixtures are JSON")
}

/// The hex HMAC-SHA256 of `body` with [`WEBHOOK_SECRET`], as GitHub and Gitea sign.
pub fn sign_webhook(body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).expect("any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Runs a function in the test's runtime. Its future is moved to the heap before it is first polled,
/// so the first poll's stack frame (large in a debug build) is not on the test thread's stack on top of
/// the test's own.
fn spawn_function(function: impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static) {
    tokio::spawn(Box::pin(function));
}

/// A name unique to this test process, so tests sharing a Docker engine never share a component.
pub fn unique_name(base: &str) -> String {
    format!("{base}-{}", std::process::id())
}

/// An `artifact.toml` running `command` in `sh -c`, output `/out`, with dependencies (component, tag).
pub fn manifest(command: &str, depends: &[(&str, &str)]) -> String {
    let mut text = format!("[build]\ncommand = [\"sh\", \"-c\", {command:?}]\noutput = \"/out\"\n");
    for (component, tag) in depends {
        text.push_str(&format!("\n[[depends]]\ncomponent = {component:?}\ntag = {tag:?}\n"));
    }
    text
}

/// Lets a test's settings clone the `file://` repositories [`GitRepo`] makes (in the temporary directory).
pub fn allow_local_repositories(settings: &mut Settings) {
    settings.git.allowed_schemes = vec!["https".into(), "file".into()];
    settings.git.file_roots = vec![std::env::temp_dir().display().to_string()];
}

/// A tar build context of `(path, content)` files.
pub fn context_tar(files: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        builder.append_data(&mut header, path, content.as_bytes()).expect("a tar entry");
    }
    builder.into_inner().expect("a tar")
}

/// A request from a client, sent again while it reaches no one: every key change reloads nats-server,
/// and for about 15 ms the CLIENTS account's imports are re-registered, so a request sent then finds no
/// responder (it was never delivered, so sending it again is safe), and an answer on its way may be lost
/// (a read is asked again). How many tries it took comes back.
pub async fn request_across_reloads(
    client: &async_nats::Client,
    subject: &str,
    headers: async_nats::HeaderMap,
    payload: &str,
) -> (Result<async_nats::Message, async_nats::RequestError>, u32) {
    let mut tries = 0;
    loop {
        tries += 1;
        let answer = client.request_with_headers(subject.to_owned(), headers.clone(), payload.to_owned().into()).await;
        match answer {
            // A reply on its way during the reload can be lost too: a read is asked again after its timeout.
            Err(err)
                if matches!(
                    err.kind(),
                    async_nats::RequestErrorKind::NoResponders | async_nats::RequestErrorKind::TimedOut
                ) && tries < 50 =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            answer => return (answer, tries),
        }
    }
}

/// NATS headers carrying an API key, as every request on a public subject must.
pub fn key_header(key: &str) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Authorization", format!("Bearer {key}").as_str());
    headers
}

/// Connects to `address` as an API key's NATS user (user = key id, password = key, replies on
/// `_INBOX_<key id>`), retrying while the users file catches up with a key made a moment ago; returns
/// the connection and how long it took.
pub async fn connect_as_key(address: &str, key_id: &str, key: &str) -> (async_nats::Client, Duration) {
    let started = std::time::Instant::now();
    loop {
        let attempt = async_nats::ConnectOptions::with_user_and_password(key_id.into(), key.into())
            .custom_inbox_prefix(format!("_INBOX_{key_id}"))
            .request_timeout(Some(Duration::from_secs(3)))
            .connect(address)
            .await;
        match attempt {
            Ok(client) => return (client, started.elapsed()),
            Err(_) if started.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(err) => panic!("key {key_id} cannot connect to NATS: {err}"),
        }
    }
}

/// A real git repository made by the test, served as a `file://` URL.
pub struct GitRepo {
    dir: tempfile::TempDir,
}

impl GitRepo {
    pub async fn new() -> Self {
        let repo = Self { dir: tempfile::tempdir().expect("temporary directory") };
        repo.git(&["init", "--quiet", "--initial-branch=main"]).await;
        repo
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.dir.path().display())
    }

    /// Writes files (an `x` mode makes one executable), commits them, and tags the commit.
    pub async fn commit_and_tag(&self, files: &[(&str, &str, bool)], tag: &str) {
        use std::os::unix::fs::PermissionsExt;
        for (path, content, executable) in files {
            let file = self.dir.path().join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, content).unwrap();
            let mode = if *executable { 0o755 } else { 0o644 };
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        self.git(&["add", "--all"]).await;
        self.git(&["commit", "--quiet", "--allow-empty", "-m", tag]).await;
        self.git(&["tag", tag]).await;
    }

    /// The commit the current branch names.
    pub async fn head(&self) -> String {
        let output = Command::new("git").arg("-C").arg(self.dir.path()).args(["rev-parse", "HEAD"]).output().await;
        String::from_utf8_lossy(&output.expect("git runs").stdout).trim().to_owned()
    }

    /// Creates a branch at the current commit.
    pub async fn branch(&self, name: &str) {
        self.git(&["branch", name]).await;
    }

    async fn git(&self, args: &[&str]) {
        let output = Command::new("git")
            .arg("-C")
            .arg(self.dir.path())
            .args(["-c", "user.name=test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"])
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .await
            .expect("git runs");
        assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    }
}

/// Incompressible bytes, quickly (xorshift).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

impl TestApp {
    /// Waits (a minute at most) until the git trigger has handled every push event stored so far, as
    /// zero2prod's `dispatch_all_pending_emails` drains its queue: for the pushes and for the hand-overs
    /// of rebuilt components to their dependents, the trigger's consumer has been delivered the subject's
    /// last event and acknowledged everything delivered. The trigger submits a push's builds before it
    /// acknowledges the push, so once this returns, every build the pushes so far asked for has a record,
    /// and a push that built nothing has been handled, not merely not yet read.
    pub async fn pushes_handled(&self) {
        pushes_handled_on(&self.nats.jetstream).await
    }
}

/// [`TestApp::pushes_handled`] for any stack, through a JetStream connection of the stack's account.
pub async fn pushes_handled_on(jetstream: &async_nats::jetstream::Context) {
    use async_nats::jetstream::consumer::PullConsumer;
    let stream = jetstream.get_stream("ARTIFACTS_PUSH").await.expect("the push stream exists");
    let consumers =
        [("git-trigger", "artifacts.git.push.accepted"), ("git-trigger-dependents", "artifacts.git.push.dependents")];
    let started = std::time::Instant::now();
    for (name, subject) in consumers {
        // The last event on the subject now; none yet leaves nothing to wait for.
        let Ok(last) = stream.get_last_raw_message_by_subject(subject).await else { continue };
        loop {
            let mut consumer: PullConsumer = stream.get_consumer(name).await.expect("the trigger's consumer");
            let info = consumer.info().await.expect("consumer info");
            if info.delivered.stream_sequence >= last.sequence && info.num_ack_pending == 0 && info.num_pending == 0 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the git trigger did not handle the pushes within a minute ({name}: event {} stored, {} delivered, {} unacknowledged, {} pending)",
                last.sequence,
                info.delivered.stream_sequence,
                info.num_ack_pending,
                info.num_pending
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl GitRepo {
    /// Moves (or creates) a branch to the current commit, as a push to it would.
    pub async fn move_branch(&self, name: &str) {
        self.git(&["branch", "--force", name]).await;
    }

    /// Moves a tag to the current commit (`git tag -f`), as someone re-releasing a version would.
    pub async fn move_tag(&self, name: &str) {
        self.git(&["tag", "--force", name]).await;
    }

    /// The committer time of the current commit, seconds since the epoch.
    pub async fn head_time(&self) -> u64 {
        let output =
            Command::new("git").arg("-C").arg(self.dir.path()).args(["log", "-1", "--format=%ct"]).output().await;
        String::from_utf8_lossy(&output.expect("git runs").stdout).trim().parse().expect("a time")
    }
}

/// The Python that checks what this service signs with code no one here wrote (`cryptography`,
/// `spdx-tools`): `ARTIFACTS_PYTHON`, else the suite's environment (`target/python`, which `scripts/test`
/// makes), else `python3`. Runs `provenance/tests/<script>` with `args`: its exit status and output.
pub fn independent_check(script: &str, args: &[&Path]) -> (i32, String, String) {
    let python = std::env::var_os("ARTIFACTS_PYTHON").map(PathBuf::from).unwrap_or_else(|| {
        let venv = repo_root().join("target/python/bin/python3");
        if venv.exists() {
            venv
        } else {
            PathBuf::from("python3")
        }
    });
    let output = std::process::Command::new(&python)
        .arg(repo_root().join("provenance/tests").join(script))
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("{} runs: {err}", python.display()));
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
