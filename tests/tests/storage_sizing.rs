//! Storage sized to the servers (issue 29), through `artifacts up`:
//! - a 3-node NATS cluster whose nodes have 20 GiB of JetStream storage each runs the stack with the
//!   caps lowered by settings, and with the default caps `up` fails with a message naming the setting to
//!   lower: both for a cluster `up` runs (`--nats-cluster 3`, `storage.jetstream_bytes = 20GiB`) and
//!   for three nats-server nodes started here with `max_file_store: 20GiB`;
//! - `up` never promises nats-server more than the disk holds: on a 3 GiB filesystem, the server it runs
//!   gets half of it and the default caps are lowered to fit, and the stack starts.
//!
//! Needs nats-server, docker-registry, the workspace's binaries, and root for the tmpfs.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use artifacts_tests::up::UpStack;
use artifacts_tests::{free_port, require_program, workspace_binary};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Caps that fit 20 GiB: 12 + 2 + 1 GiB and 17 streams of 256 MiB.
const LOWERED: [(&str, &str); 3] = [
    ("ARTIFACTS__STORAGE__ARCHIVES_BYTES", "12GiB"),
    ("ARTIFACTS__STORAGE__UPLOADS_BYTES", "2GiB"),
    ("ARTIFACTS__STORAGE__LOGS_BYTES", "1GiB"),
];

/// How a run of `artifacts up` went.
enum Run {
    /// It said the stack is up (and still runs; killed on drop).
    Up { _child: tokio::process::Child, output: String },
    /// It exited first.
    Exited { success: bool, output: String },
}

/// Runs `artifacts up --data-dir <data> <args>` on free loopback ports (NATS at `nats_url` unless given
/// in `env`) until it says the stack is up or exits, within 3 minutes.
async fn run_up(data: &Path, args: &[&str], nats_url: &str, env: &[(&str, &str)]) -> Run {
    let mut command = tokio::process::Command::new(workspace_binary("artifacts"));
    command
        .args(["up", "--data-dir"])
        .arg(data)
        .args(args)
        .env("ARTIFACTS__GATEWAY__LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("NATS_URL", nats_url)
        .env("ARTIFACTS__REGISTRY__ADDRESS", format!("127.0.0.1:{}", free_port()))
        .env_remove("ARTIFACTS_ADMIN_KEY")
        .env_remove("ARTIFACTS_CONFIG")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("artifacts up starts");
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    for output in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let lines_tx = lines_tx.clone();
        tokio::spawn(async move {
            let mut output = BufReader::new(output).lines();
            while let Ok(Some(line)) = output.next_line().await {
                let _ = lines_tx.send(line);
            }
        });
    }
    drop(lines_tx);
    let mut output = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(180), async {
        while let Some(line) = lines.recv().await {
            let up = line.starts_with("Press Ctrl-C");
            output.push(line);
            if up {
                return true;
            }
        }
        false
    })
    .await;
    let up = ended
        .unwrap_or_else(|_| panic!("artifacts up neither came up nor exited in 3 minutes:\n{}", output.join("\n")));
    let text = output.join("\n");
    if up {
        tokio::spawn(async move { while lines.recv().await.is_some() {} });
        return Run::Up { _child: child, output: text };
    }
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.expect("up exits").unwrap();
    Run::Exited { success: status.success(), output: text }
}

#[tokio::test]
async fn a_cluster_up_runs_with_20_gib_per_node_takes_lowered_caps_and_names_the_setting_otherwise() {
    let data = tempfile::tempdir().unwrap();
    let budget = [("ARTIFACTS__STORAGE__JETSTREAM_BYTES", "20GiB")];
    let nats = format!("nats://127.0.0.1:{}", free_port());
    match run_up(data.path(), &["--nats-cluster", "3"], &nats, &budget).await {
        Run::Exited { success, output } => {
            println!("{output}");
            assert!(!success, "{output}");
            assert!(output.contains("lower storage.archives_bytes (now 64.0 GiB)"), "{output}");
            assert!(output.contains("storage.jetstream_bytes"), "{output}");
        }
        Run::Up { output, .. } => panic!("the default caps (80 GiB) do not fit 20 GiB per node:\n{output}"),
    }

    let env: Vec<(&str, &str)> = budget.iter().chain(&LOWERED).copied().collect();
    let stack = UpStack::start_cluster(3, &env).await;
    stack.wait_ready(Duration::from_secs(60)).await;
    let config = std::fs::read_to_string(stack.data.path().join("nats-server.conf")).unwrap();
    assert!(config.contains(&format!("max_file_store: {}", 20u64 << 30)), "{config}");
}

/// One node of a 3-node cluster with 20 GiB of JetStream storage and no users, killed on drop.
async fn node(dir: &Path, n: usize, ports: &[(u16, u16)]) -> tokio::process::Child {
    let routes: Vec<String> = ports.iter().map(|(_, route)| format!("nats://127.0.0.1:{route}")).collect();
    let config = dir.join(format!("node-{n}.conf"));
    std::fs::write(
        &config,
        format!(
            "server_name: node-{n}\nlisten: 127.0.0.1:{}\nmax_payload: 1MB\njetstream {{\n  store_dir: {:?}\n  max_file_store: 20GiB\n}}\ncluster {{\n  name: small\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
            ports[n].0,
            dir.join(format!("store-{n}")),
            ports[n].1,
            routes.join(", ")
        ),
    )
    .unwrap();
    tokio::process::Command::new(require_program("nats-server", "nats-server"))
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("nats-server starts")
}

#[tokio::test]
async fn the_stack_starts_on_a_cluster_of_20_gib_nodes_with_lowered_caps_and_names_the_setting_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let mut nodes = Vec::new();
    for n in 0..3 {
        nodes.push(node(dir.path(), n, &ports).await);
    }
    let url = ports.iter().map(|(port, _)| format!("nats://127.0.0.1:{port}")).collect::<Vec<_>>().join(",");
    for (port, _) in &ports {
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", *port)).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let replicas = [("ARTIFACTS__NATS__REPLICAS", "3")];

    let data = tempfile::tempdir().unwrap();
    match run_up(data.path(), &[], &url, &replicas).await {
        Run::Exited { success, output } => {
            println!("{output}");
            assert!(!success, "{output}");
            assert!(output.contains("storage.archives_bytes = 64.0 GiB"), "the setting is named: {output}");
            assert!(output.contains("max_file_store"), "{output}");
            assert!(!output.contains("is the server running with JetStream enabled"), "JetStream is on: {output}");
        }
        Run::Up { output, .. } => panic!("64 GiB of archives do not fit nodes of 20 GiB:\n{output}"),
    }

    let env: Vec<(&str, &str)> = replicas.iter().chain(&LOWERED).copied().chain([("NATS_URL", url.as_str())]).collect();
    let stack = UpStack::start(&env).await;
    stack.wait_ready(Duration::from_secs(60)).await;
    drop(nodes);
}

/// A tmpfs of `size` mounted on a temporary directory, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(mounted.success(), "this test mounts a tmpfs, which needs root (scripts/test runs as root)");
        Self(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

#[tokio::test]
async fn up_promises_nats_no_more_than_the_disk_holds_and_fits_the_default_caps_to_it() {
    let disk = Tmpfs::mount("3g");
    let data = disk.0.path().join("data");
    let nats = format!("nats://127.0.0.1:{}", free_port());
    let output = match run_up(&data, &[], &nats, &[]).await {
        Run::Up { output, _child } => {
            drop(_child);
            output
        }
        Run::Exited { output, .. } => panic!("the stack starts on a 3 GiB disk:\n{output}"),
    };
    println!("{output}");
    assert!(output.contains("they are lowered to fit"), "{output}");
    let config = std::fs::read_to_string(data.join("nats-server.conf")).unwrap();
    let promised: u64 = config
        .lines()
        .find_map(|line| line.trim().strip_prefix("max_file_store: "))
        .and_then(|bytes| bytes.parse().ok())
        .unwrap_or_else(|| panic!("up writes max_file_store: {config}"));
    assert!(promised <= 3 << 30 >> 1, "half of the 3 GiB disk at most: {promised}");
    assert!(promised >= 1 << 30, "about half of it: {promised}");
}
