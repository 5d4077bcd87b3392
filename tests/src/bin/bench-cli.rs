//! Benchmark of the `artifacts` client against curl on the same URLs, in the same run:
//!
//! 1. `artifacts component get` of a 1 GiB archive (to a file, digest checked) against `curl -o` of its
//!    download URL, through a gateway process of its own; the client's peak resident memory from GNU
//!    time. Twice: with every process on both cores, then with the stack (this benchmark, nats-server,
//!    the gateway) on CPU 0 and the client on CPU 1, as when client and server are different machines.
//! 2. `artifacts image build --detach` of a 200 MiB context directory (packed honouring .dockerignore,
//!    while it uploads) against `curl -F` of the same context already packed, to the 202 answer. Each
//!    upload starts a build; the next upload waits for it to end, so none shares the machine with one.
//!
//!     cargo run --release -p artifacts-tests --bin bench-cli [-- DOWNLOAD_MIB UPLOAD_MIB]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use artifacts_tests::up::children;
use artifacts_tests::{noise, workspace_binary, GatewayProcess, TestApp, ADMIN_KEY};

fn mib_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / took.as_secs_f64()
}

/// Runs `command` to its end under GNU time (`/usr/bin/time`, Debian's `time`): how long it took, its
/// peak resident memory (MiB) and the CPU time it used (user and system, seconds). A child's peak
/// counts the memory of the process it was forked from, so the measured program must be forked by a
/// small one, not by this benchmark.
fn measured(command: &mut Command) -> (Duration, f64, f64) {
    let report = tempfile::NamedTempFile::new().expect("a temporary file");
    let mut timed = Command::new("/usr/bin/time");
    timed.args(["-f", "%M %U %S", "-o"]).arg(report.path()).arg(command.get_program()).args(command.get_args());
    for (name, value) in command.get_envs() {
        if let Some(value) = value {
            timed.env(name, value);
        }
    }
    timed.stdout(std::process::Stdio::null());
    let started = Instant::now();
    let status = timed.status().expect("/usr/bin/time runs (Debian: apt-get install time)");
    let took = started.elapsed();
    assert!(status.success(), "{command:?} failed");
    let said = std::fs::read_to_string(report.path()).unwrap();
    let figures: Vec<f64> =
        said.trim().lines().last().unwrap().split_whitespace().map(|figure| figure.parse().unwrap()).collect();
    (took, figures[0] / 1024.0, figures[1] + figures[2])
}

/// Waits until no build is queued or running, so that an upload never shares the machine with the build
/// the previous one started.
async fn settle(http: &reqwest::Client, base: &str) {
    for _ in 0..600 {
        let mut busy = false;
        for status in ["queued", "running"] {
            let url = format!("{base}/api/v1/builds?status={status}");
            let listed: serde_json::Value =
                http.get(url).bearer_auth(ADMIN_KEY).send().await.unwrap().json().await.unwrap();
            busy |= listed["builds"].as_array().is_some_and(|builds| !builds.is_empty());
        }
        if !busy {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("builds still running after 5 minutes");
}

/// The fastest run's time and CPU time, and the highest peak of memory of all.
fn best(runs: &[(Duration, f64, f64)]) -> (Duration, f64, f64) {
    let fastest = runs.iter().min_by_key(|run| run.0).expect("runs");
    let peak = runs.iter().map(|run| run.1).fold(0.0, f64::max);
    (fastest.0, peak, fastest.2)
}

/// The CPUs (a `taskset` list) this process may run on.
fn own_cpus() -> String {
    let said = Command::new("taskset").args(["-c", "-p", &std::process::id().to_string()]).output();
    let said = String::from_utf8(said.expect("taskset (util-linux) runs").stdout).expect("text");
    // "pid 123's current affinity list: 0-3"
    said.rsplit(": ").next().expect("a list").trim().to_owned()
}

/// Sets the CPUs (a `taskset` list) every thread of each process may run on.
fn pin(pids: &[u32], cpus: &str) {
    for pid in pids {
        let pinned = Command::new("taskset").args(["-a", "-p", "-c", cpus, &pid.to_string()]).output();
        assert!(pinned.expect("taskset (util-linux) runs").status.success(), "taskset -p {cpus} {pid}");
    }
}

/// One archive's download by curl, by curl and `sha256sum`, and by the client.
struct Download {
    url: String,
    base: String,
    home: PathBuf,
    size: u64,
}

impl Download {
    /// Prints the three clients' rows; with `cpus`, each client runs on those CPUs only.
    fn compare(&self, cores: &str, cpus: Option<&str>) {
        let out = self.home.join("archive.tar.gz");
        let (mut curl_runs, mut checked_runs, mut cli_runs) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..3 {
            let _ = std::fs::remove_file(&out);
            // What a script that checks the digest does (Debian's `sha256sum` hashes without the CPU's SHA
            // instructions: about 5 s of CPU for 1 GiB).
            let script = format!(
                "curl -sSf -H 'Authorization: Bearer {ADMIN_KEY}' -o '{out}' '{url}' && sha256sum '{out}' > /dev/null",
                out = out.display(),
                url = self.url
            );
            checked_runs.push(measured(on_cpus(cpus, "sh").args(["-c", &script])));
            let _ = std::fs::remove_file(&out);
            curl_runs.push(measured(
                on_cpus(cpus, "curl")
                    .args(["-sSf", "-H", &format!("Authorization: Bearer {ADMIN_KEY}"), "-o"])
                    .arg(&out)
                    .arg(&self.url),
            ));
            let _ = std::fs::remove_file(&out);
            cli_runs.push(measured(
                cli(cpus, &self.base, &self.home)
                    .args(["component", "get", "bench-cli@v1", "-o"])
                    .arg(&out)
                    .arg("--json"),
            ));
            assert_eq!(std::fs::metadata(&out).expect("downloaded").len(), self.size);
        }
        let ((curl, curl_rss, curl_cpu), (ours, ours_rss, ours_cpu)) = (best(&curl_runs), best(&cli_runs));
        let (checked, checked_rss, checked_cpu) = best(&checked_runs);
        let size = self.size;
        println!("| {cores} | curl -o | {:.0} | 1.00x | {curl_rss:.1} | {curl_cpu:.2} |", mib_per_s(size, curl));
        println!(
            "| {cores} | curl -o, then sha256sum | {:.0} | {:.2}x | {checked_rss:.1} | {checked_cpu:.2} |",
            mib_per_s(size, checked),
            curl.as_secs_f64() / checked.as_secs_f64()
        );
        println!(
            "| {cores} | artifacts component get -o (digest checked) | {:.0} | {:.2}x | {ours_rss:.1} | {ours_cpu:.2} |",
            mib_per_s(size, ours),
            curl.as_secs_f64() / ours.as_secs_f64()
        );
    }
}

/// `program`, run on the CPUs `cpus` (a `taskset` list) only when given.
fn on_cpus(cpus: Option<&str>, program: impl AsRef<std::ffi::OsStr>) -> Command {
    match cpus {
        None => Command::new(program),
        Some(cpus) => {
            let mut command = Command::new("taskset");
            command.args(["-c", cpus]).arg(program);
            command
        }
    }
}

fn cli(cpus: Option<&str>, gateway: &str, home: &Path) -> Command {
    let mut command = on_cpus(cpus, workspace_binary("artifacts"));
    command.env("ARTIFACTS_URL", gateway).env("ARTIFACTS_KEY", ADMIN_KEY).env("XDG_CONFIG_HOME", home);
    command
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1).map(|n| n.parse::<usize>().expect("sizes in MiB"));
    let (download_mib, upload_mib) = (args.next().unwrap_or(1024), args.next().unwrap_or(200));
    let app = TestApp::spawn().await;
    // Contexts past the default 64 MiB body cap are this benchmark's subject.
    let gateway = GatewayProcess::start(&app, &[("ARTIFACTS__GATEWAY__MAX_BODY_BYTES", "1073741824")]).await;
    let base = gateway.url("");
    let work = tempfile::tempdir().expect("a temporary directory");

    // 1. Download: on the cores the stack uses, then from a core of the clients' own.
    let size = (download_mib * 1024 * 1024) as u64;
    let record = app.store_archive("bench-cli", "v1", &noise(size as usize, 11)).await;
    let url = gateway.url("/api/v1/components/bench-cli/v1/amd64/archive");
    assert_eq!(record.size, size);
    let download = Download { url, base: base.clone(), home: work.path().to_owned(), size };
    println!("### `artifacts component get` of a {download_mib} MiB archive (best of 3)\n");
    println!("| cores | client | MiB/s | vs curl | peak RSS MiB | CPU s |");
    println!("|---|---|---|---|---|---|");
    download.compare("shared with the stack", None);
    let stack: Vec<u32> = std::iter::once(std::process::id())
        .chain(children(std::process::id()).into_iter().map(|(pid, _)| pid))
        .collect();
    let all_cpus = own_cpus();
    pin(&stack, "0");
    download.compare("stack on CPU 0, client on CPU 1", Some("1"));
    pin(&stack, &all_cpus);
    println!();

    // 2. Upload.
    let context = work.path().join("context");
    std::fs::create_dir_all(&context).unwrap();
    for n in 0..upload_mib {
        std::fs::write(context.join(format!("f{n}.bin")), noise(1 << 20, n as u64)).unwrap();
    }
    std::fs::write(context.join("Dockerfile"), "FROM busybox\nRUN true\n").unwrap();
    let tar = work.path().join("context.tar");
    assert!(Command::new("tar").arg("-cf").arg(&tar).arg("-C").arg(&context).arg(".").status().unwrap().success());
    let upload_bytes = std::fs::metadata(&tar).unwrap().len();
    let images = format!("{base}/api/v1/images");
    let (mut curl_runs, mut cli_runs) = (Vec::new(), Vec::new());
    for run in 0..3 {
        // Each run its own component: identical uploads would still be uploaded, but builds would pile up.
        let component = format!("bench-upload-{run}");
        curl_runs.push(measured(
            Command::new("curl")
                .args(["-sSf", "-o", "/dev/null", "-H", &format!("Authorization: Bearer {ADMIN_KEY}")])
                .arg("-F")
                .arg(format!("dockerfile=@{}", context.join("Dockerfile").display()))
                .arg("-F")
                .arg(format!("context=@{}", tar.display()))
                .args(["-F", &format!("component={component}-curl"), "-F", "branch=main", "-F", "architecture=amd64"])
                .arg(&images),
        ));
        settle(&app.http, &base).await;
        cli_runs.push(measured(cli(None, &base, work.path()).args(["image", "build"]).arg(&context).args([
            "--component",
            &format!("{component}-cli"),
            "--branch",
            "main",
            "--detach",
            "--json",
        ])));
        settle(&app.http, &base).await;
    }
    let ((curl, curl_rss, curl_cpu), (ours, ours_rss, ours_cpu)) = (best(&curl_runs), best(&cli_runs));
    println!("### `artifacts image build --detach` of a {upload_mib} MiB context (best of 3)\n");
    println!("| client | MiB/s | vs curl | peak RSS MiB | CPU s |");
    println!("|---|---|---|---|---|");
    println!(
        "| curl -F (context packed beforehand) | {:.0} | 1.00x | {curl_rss:.1} | {curl_cpu:.2} |",
        mib_per_s(upload_bytes, curl)
    );
    println!(
        "| artifacts image build --detach (packs while it uploads) | {:.0} | {:.2}x | {ours_rss:.1} | {ours_cpu:.2} |",
        mib_per_s(upload_bytes, ours),
        curl.as_secs_f64() / ours.as_secs_f64()
    );
}
