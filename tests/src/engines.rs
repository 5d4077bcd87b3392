//! Docker engines of their own, as separate build hosts have: each its own `dockerd` with its own socket,
//! data root and exec root (run as these machines run Docker: no iptables, no bridge, vfs storage), and
//! the base images a test builds on, made here since nothing can be pulled.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::process::{Child, Command};

use artifacts_schemas::Architecture;

use crate::{repo_root, require_program};

pub struct DockerEngine {
    child: Child,
    dir: tempfile::TempDir,
    /// The engine's address, for `DOCKER_HOST` / `docker.host`.
    pub host: String,
}

impl DockerEngine {
    pub async fn start() -> Self {
        let dockerd = require_program("dockerd", "docker.io");
        // Short: the engine's containerd puts sockets under the exec root, and socket paths are short.
        let dir = tempfile::Builder::new().prefix("eng").tempdir_in("/tmp").expect("a temporary directory");
        let path = dir.path();
        let host = format!("unix://{}", path.join("docker.sock").display());
        let log = std::fs::File::create(path.join("dockerd.log")).expect("a log file");
        let child = Command::new(dockerd)
            .args(["--host", &host])
            .arg("--data-root")
            .arg(path.join("root"))
            .arg("--exec-root")
            .arg(path.join("exec"))
            .arg("--pidfile")
            .arg(path.join("docker.pid"))
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none", "--storage-driver=vfs"])
            .stdout(Stdio::null())
            .stderr(log)
            // Its own process group: the engine's containerd and shims go with it.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("dockerd starts");
        let engine = Self { child, dir, host };
        for _ in 0..120 {
            if engine.try_docker(&["info"]).await.is_ok() {
                return engine;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("a second dockerd did not start; see {}", engine.dir.path().join("dockerd.log").display());
    }

    async fn try_docker(&self, args: &[&str]) -> Result<String, String> {
        let output = Command::new("docker").env("DOCKER_HOST", &self.host).args(args).output().await;
        let output = output.map_err(|err| err.to_string())?;
        match output.status.success() {
            true => Ok(String::from_utf8_lossy(&output.stdout).into_owned()),
            false => Err(String::from_utf8_lossy(&output.stderr).into_owned()),
        }
    }

    /// Runs the docker CLI against this engine; it must succeed.
    pub async fn docker(&self, args: &[&str]) -> String {
        self.try_docker(args).await.unwrap_or_else(|err| panic!("docker {args:?} on {}: {err}", self.host))
    }

    /// Loads `busybox:latest` for `architecture` (see [`busybox_image`]).
    pub async fn load_busybox(&self, architecture: Architecture) {
        let image = busybox_image(architecture);
        let mut load = Command::new("docker")
            .env("DOCKER_HOST", &self.host)
            .args(["load", "-q"])
            .stdin(std::fs::File::open(&image).expect("the image tarball"))
            .stdout(Stdio::null())
            .spawn()
            .expect("docker load runs");
        assert!(load.wait().await.expect("docker load ends").success(), "docker load of {}", image.display());
    }

    /// Kills the engine, its containerd and its running builds at once, as a host that loses power.
    /// Whether a process of this engine runs a command line containing `needle`: a build step under
    /// BuildKit is no container `docker ps` lists, but a descendant of the engine's own process.
    pub fn runs(&self, needle: &str) -> bool {
        let Some(engine) = self.child.id() else { return false };
        let parent = |pid: u32| -> Option<u32> {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
            stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
        };
        let Ok(entries) = std::fs::read_dir("/proc") else { return false };
        entries.flatten().filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok()).any(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if !cmdline.contains(needle) {
                return false;
            }
            let mut ancestor = Some(pid);
            while let Some(pid) = ancestor.filter(|pid| *pid > 1) {
                if pid == engine {
                    return true;
                }
                ancestor = parent(pid);
            }
            false
        })
    }

    pub fn kill(&mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) on the engine's own process group; it touches no memory of this process.
            unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
        }
    }
}

impl Drop for DockerEngine {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where the static busybox of `architecture` is: the host's own for its architecture (Debian's
/// `busybox-static`), else the one `scripts/test` unpacks from Debian's package for that architecture
/// (`target/foreign/<arch>/busybox`).
pub fn busybox_binary(architecture: Architecture) -> PathBuf {
    if architecture == artifacts_runtime::configuration::native_architecture() {
        return require_program("busybox", "busybox-static");
    }
    let path = repo_root().join("target/foreign").join(architecture.short()).join("busybox");
    assert!(
        path.exists(),
        "{} is missing: scripts/test unpacks busybox-static for {architecture} there (apt-get download busybox-static:{})",
        path.display(),
        architecture.short()
    );
    path
}

/// A `docker load` tarball of `busybox:latest` for `architecture`, made once per test run: one layer
/// with the static busybox and its applet links, and an image configuration that names the
/// architecture, so images built from it are of that architecture too. (`docker import --platform`
/// would label it with the engine's own architecture on Docker 20.10.)
pub fn busybox_image(architecture: Architecture) -> PathBuf {
    let out =
        std::env::temp_dir().join(format!("artifacts-busybox-{}-{}.tar", architecture.short(), std::process::id()));
    if out.exists() {
        return out;
    }
    let busybox = busybox_binary(architecture);
    let layer = busybox_layer(&busybox);
    let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&layer)));
    let config = serde_json::json!({
        "architecture": architecture.oci_architecture(),
        "os": "linux",
        "config": {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    })
    .to_string();
    let config_name = format!("{}.json", hex::encode(Sha256::digest(config.as_bytes())));
    let manifest =
        serde_json::json!([{"Config": config_name, "RepoTags": ["busybox:latest"], "Layers": ["layer.tar"]}]);
    // Made aside and renamed: tests running at once may make it together.
    let partial = tempfile::NamedTempFile::new_in(std::env::temp_dir()).expect("a temporary file");
    let mut tarball = tar::Builder::new(partial.reopen().expect("the image tarball"));
    for (name, bytes) in [
        ("layer.tar", layer),
        (config_name.as_str(), config.into_bytes()),
        ("manifest.json", manifest.to_string().into_bytes()),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        tarball.append_data(&mut header, name, bytes.as_slice()).expect("written");
    }
    tarball.finish().expect("written");
    partial.persist(&out).expect("renamed");
    out
}

fn busybox_layer(busybox: &Path) -> Vec<u8> {
    let applets = std::process::Command::new(busybox).arg("--list").output().expect("busybox --list runs");
    let mut layer = tar::Builder::new(Vec::new());
    for dir in ["bin/", "tmp/", "etc/"] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(if dir == "tmp/" { 0o1777 } else { 0o755 });
        header.set_size(0);
        layer.append_data(&mut header, dir, std::io::empty()).expect("written");
    }
    let binary = std::fs::read(busybox).expect("busybox readable");
    let mut header = tar::Header::new_gnu();
    header.set_size(binary.len() as u64);
    header.set_mode(0o755);
    layer.append_data(&mut header, "bin/busybox", binary.as_slice()).expect("written");
    for applet in String::from_utf8_lossy(&applets.stdout).split_whitespace().filter(|a| *a != "busybox") {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        header.set_mode(0o777);
        layer.append_link(&mut header, format!("bin/{applet}"), "busybox").expect("written");
    }
    let passwd = b"root:x:0:0:root:/root:/bin/sh\n";
    let mut header = tar::Header::new_gnu();
    header.set_size(passwd.len() as u64);
    header.set_mode(0o644);
    layer.append_data(&mut header, "etc/passwd", &passwd[..]).expect("written");
    layer.into_inner().expect("a layer")
}
