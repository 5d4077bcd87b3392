//! Helpers for the integration tests: every test gets its own real `nats-server` (JetStream, a temporary
//! store, a random port) and its own gateway and functions, run in-process on port 0 and driven over real
//! HTTP and real NATS. Nothing is shared between tests and nothing is mocked.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use artifacts_gateway::startup::Application;
use artifacts_runtime::configuration::Secret;
use artifacts_runtime::{Nats, Settings};

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
    port: u16,
    _store: tempfile::TempDir,
}

impl NatsServer {
    pub async fn start() -> Self {
        let bin = require_program("nats-server", "nats-server");
        let store = tempfile::tempdir().expect("temporary directory");
        let mut child = Command::new(bin)
            .arg("-c")
            .arg(repo_root().join("nats/nats-server.conf"))
            .args(["-a", "127.0.0.1", "-p", "-1", "-sd"])
            .arg(store.path())
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
        // Keep draining its output so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, port, _store: store }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub async fn stop(&mut self) {
        let _ = self.child.kill().await;
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
    settings
}

/// A whole stack for one test: nats-server, the lookup function and the gateway.
pub struct TestApp {
    pub address: String,
    pub nats: Nats,
    pub settings: Settings,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    pub nats_server: NatsServer,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(configure: impl FnOnce(&mut Settings)) -> Self {
        let nats_server = NatsServer::start().await;
        let mut settings = test_settings(&nats_server.url());
        configure(&mut settings);
        let nats = artifacts_runtime::nats::connect(&settings, "test").await.expect("NATS connects");
        let shutdown = CancellationToken::new();

        let lookup_nats = artifacts_runtime::nats::connect(&settings, "test-lookup").await.expect("NATS connects");
        tokio::spawn(artifacts_lookup::run(lookup_nats, shutdown.clone()));

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
        };
        test_app.wait_for_service("artifacts-lookup").await;
        test_app
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

    /// A NATS request with a raw JSON payload, as any client would send it.
    pub async fn nats_request(&self, subject: &str, payload: &str) -> async_nats::Message {
        self.nats.client.request(subject.to_owned(), payload.to_owned().into()).await.expect("NATS answers")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
