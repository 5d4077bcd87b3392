//! The whole stack as `artifacts up` runs it: nats-server, the registry, the gateway and every function
//! as real processes, supervised. For tests that kill processes.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::{free_port, workspace_binary};

pub struct UpStack {
    pub child: Child,
    pub data: tempfile::TempDir,
    pub gateway: String,
    pub nats_port: u16,
    pub admin_key: String,
    pub http: reqwest::Client,
}

impl UpStack {
    /// Starts `artifacts up` on free ports with these extra environment variables, and waits until it says
    /// the stack is up.
    pub async fn start(env: &[(&str, &str)]) -> Self {
        Self::launch(&[], free_port(), env).await
    }

    /// Like `start`, with `artifacts up --nats-cluster NODES`: the nodes on consecutive free ports, whose
    /// route ports (each one's port + 2000) are free too.
    pub async fn start_cluster(nodes: u16, env: &[(&str, &str)]) -> Self {
        let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        let first = (0..200)
            .map(|_| rand::random_range(20_000..40_000))
            .find(|&first| (first..first + nodes).all(|port| free(port) && free(port + 2000)))
            .expect("consecutive free ports");
        Self::launch(&["--nats-cluster", &nodes.to_string()], first, env).await
    }

    async fn launch(args: &[&str], nats_port: u16, env: &[(&str, &str)]) -> Self {
        let data = tempfile::tempdir().expect("temporary directory");
        let (gateway, registry) = (free_port(), free_port());
        let mut command = Command::new(workspace_binary("artifacts"));
        // --verbose: every process's lines on up's output, which the test shows when it fails.
        command
            .args(["up", "--verbose", "--data-dir"])
            .arg(data.path())
            .args(args)
            .env("ARTIFACTS__GATEWAY__LISTEN", format!("127.0.0.1:{gateway}"))
            .env("NATS_URL", format!("nats://127.0.0.1:{nats_port}"))
            .env("ARTIFACTS__REGISTRY__ADDRESS", format!("127.0.0.1:{registry}"))
            .env_remove("ARTIFACTS_ADMIN_KEY")
            .env_remove("ARTIFACTS_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("artifacts up starts");
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let mut admin_key = None;
        let started = tokio::time::timeout(Duration::from_secs(90), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.trim().strip_prefix("admin key: ") {
                    admin_key = rest.split_whitespace().next().map(str::to_owned);
                }
                if line.starts_with("Press Ctrl-C") {
                    return;
                }
            }
        })
        .await;
        assert!(started.is_ok(), "artifacts up did not come up in 90s");
        // The stack's own log, shown with the test's output when it fails.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("{line}");
            }
        });
        let admin_key = admin_key.expect("up prints the admin key it made");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("a client");
        Self { child, data, gateway: format!("http://127.0.0.1:{gateway}"), nats_port, admin_key, http }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway)
    }

    /// The pid of the stack's process running `program` (a binary name such as `artifacts-build-image`).
    pub fn pid_of(&self, program: &str) -> Option<u32> {
        children(self.child.id()?).into_iter().find(|(_, name)| name == program).map(|(pid, _)| pid)
    }

    /// Every process the stack runs: (pid, program).
    pub fn processes(&self) -> Vec<(u32, String)> {
        self.child.id().map(children).unwrap_or_default()
    }

    /// Waits until `/readyz` answers 200; how long that took.
    pub async fn wait_ready(&self, limit: Duration) -> Duration {
        let started = Instant::now();
        while started.elapsed() < limit {
            let answer = self.http.get(self.url("/readyz")).send().await;
            if answer.is_ok_and(|a| a.status() == 200) {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the stack was not ready within {limit:?}");
    }

    /// Submits an image build of `dockerfile` for amd64 on branch main; its build id.
    pub async fn submit_image(&self, component: &str, dockerfile: &str) -> String {
        let form = reqwest::multipart::Form::new()
            .text("dockerfile", dockerfile.to_owned())
            .text("component", component.to_owned())
            .text("branch", "main")
            .text("architecture", "amd64");
        let answer =
            self.http.post(self.url("/api/v1/images")).bearer_auth(&self.admin_key).multipart(form).send().await;
        let answer = answer.expect("the gateway answers");
        assert_eq!(answer.status(), 202);
        let accepted: Value = answer.json().await.expect("JSON");
        accepted["buildId"].as_str().expect("a build id").to_owned()
    }

    /// GET with the admin key; `None` while the stack does not answer (a process is restarting).
    pub async fn get(&self, path: &str) -> Option<Value> {
        let answer = self.http.get(self.url(path)).bearer_auth(&self.admin_key).send().await.ok()?;
        answer.json().await.ok()
    }

    /// The build's record once `done` holds for it, or `None` after `limit`.
    pub async fn wait_for(&self, build_id: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Option<Value> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(record) = self.get(&format!("/api/v1/builds/{build_id}")).await.filter(|r| done(r)) {
                return Some(record);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// The build's log as the gateway streams it (server-sent events), for a build that has ended.
    pub async fn log(&self, build_id: &str) -> String {
        let answer = self.http.get(self.url(&format!("/api/v1/builds/{build_id}/logs"))).bearer_auth(&self.admin_key);
        match tokio::time::timeout(Duration::from_secs(5), async { answer.send().await?.text().await }).await {
            Ok(Ok(text)) => text,
            _ => "(the log could not be read)".into(),
        }
    }

    /// Every build record of a component.
    pub async fn builds_of(&self, component: &str) -> Vec<Value> {
        for _ in 0..100 {
            if let Some(list) = self.get(&format!("/api/v1/builds?component={component}&limit=500")).await {
                if let Some(builds) = list["builds"].as_array() {
                    return builds.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the builds of {component} could not be listed");
    }
}

/// The processes whose parent is `pid`: (pid, the base name of the program they run).
/// Whether `pid` still runs (a zombie no longer does: it waits only to be reaped).
pub fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rfind(')').map(|close| stat[close + 1..].trim_start().to_owned()))
        .is_some_and(|rest| !rest.starts_with('Z'))
}

pub fn children(pid: u32) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        // `pid (comm) state ppid ...`: the name may hold spaces, so read after the last ')'.
        let Some(close) = stat.rfind(')') else { continue };
        let parent = stat[close + 1..].split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
        if parent != Some(pid) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{child}/cmdline")) else { continue };
        let program = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        let name = Path::new(&*String::from_utf8_lossy(program)).file_name().map(|n| n.to_string_lossy().into_owned());
        found.push((child, name.unwrap_or_default()));
    }
    found
}
