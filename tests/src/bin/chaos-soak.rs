//! Chaos soak (issue 30): the whole stack under `artifacts up` (nats-server, Debian's docker-registry, the
//! gateway and every function, each a supervised process), driven from outside through its public
//! interfaces while one of its processes is killed with SIGKILL every 20 s.
//!
//! - two clients submit unique image and component builds, one over HTTP, one over NATS, alternating
//!   image and component; a submission whose answer was lost (no answer, a 503, a timeout) is sent again
//!   with the same body until it is accepted;
//! - a pusher makes a new git tag and sends its signed GitHub tag-push webhook (the same delivery again
//!   when the answer was lost); each push must build the tag once;
//! - a reader looks up a known image and a known component over HTTP all the time;
//! - the killer sends SIGKILL to one process every 20 s, in turn: build-component, nats-server, gateway,
//!   build-image, registry, lookup, git-trigger, gc; `up` starts each again.
//!
//! Then every accepted build must end (the drain). It prints builds accepted, lost (no record), stuck (not
//! ended after the drain), doubled (two builds of one content or one pushed tag), failed (valid input that
//! did not succeed), lookups answered right / 503 / refused / wrong, corrupt archives (digest mismatch),
//! containers left over, and the longest time any process stayed down; and a last line
//! `chaos-soak result: {json}` that `tests/tests/chaos_soak.rs` reads. Exits 1 when a figure that must be
//! zero is not (the data directory, with every process's log, is then kept and named).
//!
//!     cargo build --workspace --bins
//!     target/debug/chaos-soak --minutes 10 [--kill-every 20] [--interval-ms 2000] [--drain-minutes 5]
//!                             [--data-dir DIR] [--keep]
//!
//! Needs what `scripts/test` installs and starts: nats-server, docker-registry, a Docker engine with the
//! `busybox` image, git.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::Digest;
use tokio::process::Command;

use artifacts_tests::up::{children, UpStack};
use artifacts_tests::{
    docker, free_port, key_header, manifest, require_docker, sign_webhook, webhook_fixture, workspace_binary, GitRepo,
    WEBHOOK_SECRET,
};

/// The processes killed, in turn. The first six are the ones a two-minute run reaches.
const VICTIMS: [&str; 8] = [
    "artifacts-build-component",
    "nats-server",
    "artifacts-gateway",
    "artifacts-build-image",
    "docker-registry",
    "artifacts-lookup",
    "artifacts-git-trigger",
    "artifacts-gc",
];

/// How long a lookup refused while the gateway is down may last.
const REFUSED_LIMIT: Duration = Duration::from_secs(2);

struct Args {
    minutes: f64,
    kill_every: Duration,
    interval: Duration,
    push_interval: Duration,
    drain: Duration,
    data_dir: Option<PathBuf>,
    /// Keep the data directory (every process's log) even when nothing went wrong.
    keep: bool,
}

fn args() -> Args {
    let mut args = Args {
        minutes: 2.0,
        kill_every: Duration::from_secs(20),
        interval: Duration::from_millis(2000),
        push_interval: Duration::from_millis(4000),
        drain: Duration::from_secs(300),
        data_dir: None,
        keep: false,
    };
    let mut given = std::env::args().skip(1);
    let usage = "usage: chaos-soak [--minutes M] [--kill-every SECS] [--interval-ms MS] [--push-interval-ms MS] \
                 [--drain-minutes M] [--data-dir DIR] [--keep]";
    while let Some(flag) = given.next() {
        let mut value = || given.next().unwrap_or_else(|| panic!("{flag} needs a value\n{usage}"));
        let number = |text: String| text.parse::<f64>().unwrap_or_else(|_| panic!("not a number: {text}\n{usage}"));
        match flag.as_str() {
            "--minutes" => args.minutes = number(value()),
            "--kill-every" => args.kill_every = Duration::from_secs_f64(number(value())),
            "--interval-ms" => args.interval = Duration::from_secs_f64(number(value()) / 1e3),
            "--push-interval-ms" => args.push_interval = Duration::from_secs_f64(number(value()) / 1e3),
            "--drain-minutes" => args.drain = Duration::from_secs_f64(number(value()) * 60.0),
            "--data-dir" => args.data_dir = Some(PathBuf::from(value())),
            "--keep" => args.keep = true,
            "-h" | "--help" => {
                println!("{usage}");
                std::process::exit(0);
            }
            other => {
                eprintln!("unknown argument {other}\n{usage}");
                std::process::exit(2);
            }
        }
    }
    args
}

/// Seconds since the soak began, for the lines it prints.
fn stamp(start: Instant) -> String {
    let secs = start.elapsed().as_secs();
    format!("{:02}:{:02}", secs / 60, secs % 60)
}

// ---------------------------------------------------------------------------------------------------
// The stack.

struct Stack {
    up: UpStack,
    registry_port: u16,
    /// The admin key's NATS connection (replies on `_INBOX_admin`), which follows nats-server restarts.
    nats: async_nats::Client,
}

/// `artifacts up` on free ports, its own output in `<data dir>/up.log`, every process's in `logs/`.
async fn start_stack(data: tempfile::TempDir) -> Stack {
    let (gateway, nats_port, registry_port) = (free_port(), free_port(), free_port());
    let admin_key = format!("ak-soak-{:016x}", rand::random::<u64>());
    let temp = std::env::temp_dir().display().to_string();
    let output = std::fs::File::create(data.path().join("up.log")).expect("up.log");
    let mut command = Command::new(workspace_binary("artifacts"));
    command
        .args(["up", "--data-dir"])
        .arg(data.path())
        .env("ARTIFACTS__GATEWAY__LISTEN", format!("127.0.0.1:{gateway}"))
        .env("NATS_URL", format!("nats://127.0.0.1:{nats_port}"))
        .env("ARTIFACTS__REGISTRY__ADDRESS", format!("127.0.0.1:{registry_port}"))
        .env("ARTIFACTS_ADMIN_KEY", &admin_key)
        .env_remove("ARTIFACTS_CONFIG")
        .env("ARTIFACTS__GIT__ALLOWED_SCHEMES", "https,file")
        .env("ARTIFACTS__GIT__FILE_ROOTS", &temp)
        .env("ARTIFACTS__HOOKS__GITHUB__SECRET", WEBHOOK_SECRET)
        .env("ARTIFACTS__GATEWAY__RATE_LIMIT_PER_MINUTE", "0")
        .env("ARTIFACTS__BUILD__ACK_WAIT_SECS", "10")
        .env("ARTIFACTS__BUILD__SHUTDOWN_GRACE_SECS", "2")
        .stdin(Stdio::null())
        .stdout(output.try_clone().expect("a second handle"))
        .stderr(output)
        .kill_on_drop(true);
    let child = command.spawn().expect("artifacts up starts");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("a client");
    let up = UpStack {
        child,
        data,
        gateway: format!("http://127.0.0.1:{gateway}"),
        nats_port,
        admin_key: admin_key.clone(),
        http,
    };
    up.wait_ready(Duration::from_secs(120)).await;
    let nats = async_nats::ConnectOptions::with_user_and_password("admin".into(), admin_key)
        .custom_inbox_prefix("_INBOX_admin")
        .request_timeout(Some(Duration::from_secs(10)))
        .retry_on_initial_connect()
        .connect(format!("127.0.0.1:{nats_port}"))
        .await
        .expect("the admin key connects to NATS");
    Stack { up, registry_port, nats }
}

impl Stack {
    fn pid_of(&self, program: &str) -> Option<u32> {
        self.up.pid_of(program)
    }

    /// Whether `program`'s process serves again: it listens, or its service answers `$SRV.PING`.
    async fn serves(&self, program: &str) -> bool {
        let connects = |port: u16| async move {
            matches!(
                tokio::time::timeout(Duration::from_millis(500), tokio::net::TcpStream::connect(("127.0.0.1", port)))
                    .await,
                Ok(Ok(_))
            )
        };
        match program {
            "nats-server" => connects(self.up.nats_port).await,
            "docker-registry" => connects(self.registry_port).await,
            "artifacts-gateway" => {
                let health = self.up.http.get(self.up.url("/healthz")).timeout(Duration::from_millis(500)).send();
                health.await.is_ok_and(|answer| answer.status() == 200)
            }
            function => {
                let ping = self.nats.request(format!("$SRV.PING.{function}"), "".into());
                matches!(tokio::time::timeout(Duration::from_millis(500), ping).await, Ok(Ok(_)))
            }
        }
    }

    async fn record(&self, build_id: &str) -> Option<(u16, Value)> {
        let answer =
            self.up.http.get(self.up.url(&format!("/api/v1/builds/{build_id}"))).bearer_auth(&self.up.admin_key);
        let answer = answer.send().await.ok()?;
        let status = answer.status().as_u16();
        Some((status, answer.json().await.ok()?))
    }

    /// Every build record of a component, newest first (`None` while the stack does not answer).
    async fn builds_of(&self, component: &str) -> Option<Vec<Value>> {
        let list = self.up.get(&format!("/api/v1/builds?component={component}&limit=500")).await?;
        list["builds"].as_array().cloned()
    }
}

fn ended(record: &Value) -> bool {
    matches!(record["status"].as_str(), Some("succeeded" | "failed" | "cancelled"))
}

// ---------------------------------------------------------------------------------------------------
// What happened, as the soak saw it.

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Image,
    Component,
}

struct Submission {
    client: &'static str,
    kind: Kind,
    component: String,
    tag: String,
    /// The `result` file a component build's archive must hold.
    expected: Option<String>,
    build_id: Option<String>,
    /// Sends in all; answers lost (no answer or a timeout); clean 503s (or NATS 503 errors).
    sends: u32,
    lost_answers: u32,
    unavailable: u32,
    /// An answer other than accepted or unavailable: a defect.
    rejected: Vec<String>,
}

struct Push {
    tag: String,
    delivery: String,
    sends: u32,
    accepted: bool,
    rejected: Vec<String>,
}

#[derive(Default)]
struct Lookups {
    right: u64,
    unavailable: u64,
    refused: u64,
    wrong: u64,
    timed_out: u64,
    wrong_examples: Vec<String>,
    /// Runs of refused lookups: (from, to) since the soak began.
    refused_runs: Vec<(Duration, Duration)>,
    slowest: Duration,
    /// Lookups answered after more than 2 s: when, how long, the status.
    slow: Vec<String>,
}

struct Kill {
    victim: &'static str,
    pid: u32,
    at: Duration,
    /// Until its new process served; `None`: never within two minutes.
    down: Option<Duration>,
}

#[derive(Default)]
struct Ledger {
    submissions: Vec<Submission>,
    pushes: Vec<Push>,
    lookups: Lookups,
    kills: Vec<Kill>,
    /// (program, from, how long) for every time a process of the stack was absent.
    absences: Vec<(String, Duration, Duration)>,
    /// Exits of processes nobody killed: (program, when).
    unplanned_exits: Vec<(String, Duration)>,
    killed_pids: BTreeSet<u32>,
    /// Times the Docker engine (shared with whatever else runs on the machine, and not killed by the
    /// soak) did not answer: (from, to).
    engine_outages: Vec<(Duration, Duration)>,
}

type Shared = Arc<Mutex<Ledger>>;

// ---------------------------------------------------------------------------------------------------
// Clients.

enum Answer {
    Accepted(String),
    /// A clean "try again": 503 (HTTP) or a 503 service error (NATS).
    Unavailable,
    /// No answer: refused, dropped, timed out.
    Lost,
    Rejected(String),
}

async fn send_http(stack: &Stack, path: &str, body: &Value) -> Answer {
    let answer = stack.up.http.post(stack.up.url(path)).bearer_auth(&stack.up.admin_key).json(body).send().await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(_) => return Answer::Lost,
    };
    let status = answer.status().as_u16();
    let Ok(text) = answer.text().await else { return Answer::Lost };
    let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    match (status, parsed["buildId"].as_str()) {
        (200 | 202, Some(id)) => Answer::Accepted(id.to_owned()),
        (503, _) if parsed["status"].is_string() => Answer::Unavailable,
        _ => Answer::Rejected(format!("HTTP {status}: {text}")),
    }
}

async fn send_nats(stack: &Stack, subject: &str, body: &Value) -> Answer {
    let request =
        stack.nats.request_with_headers(subject.to_owned(), key_header(&stack.up.admin_key), body.to_string().into());
    let message = match request.await {
        Ok(message) => message,
        Err(_) => return Answer::Lost,
    };
    let parsed: Value = serde_json::from_slice(&message.payload).unwrap_or(Value::Null);
    let code = message.headers.as_ref().and_then(|h| h.get("Nats-Service-Error-Code")).map(|c| c.to_string());
    match (code.as_deref(), parsed["buildId"].as_str()) {
        (None, Some(id)) => Answer::Accepted(id.to_owned()),
        (Some("503"), _) => Answer::Unavailable,
        _ => Answer::Rejected(format!("NATS {code:?}: {}", String::from_utf8_lossy(&message.payload))),
    }
}

/// Sends one submission until it is accepted (the same body each time), rejected, or `give_up` passes.
async fn submit(
    stack: &Stack,
    client: &'static str,
    kind: Kind,
    body: &Value,
    record: &mut Submission,
    give_up: Instant,
) {
    loop {
        record.sends += 1;
        let answer = match (client, kind) {
            ("http", Kind::Image) => send_http(stack, "/api/v1/images", body).await,
            ("http", Kind::Component) => send_http(stack, "/api/v1/components", body).await,
            (_, Kind::Image) => send_nats(stack, "artifacts.image.build", body).await,
            (_, Kind::Component) => send_nats(stack, "artifacts.component.build", body).await,
        };
        match answer {
            Answer::Accepted(id) => {
                record.build_id = Some(id);
                return;
            }
            Answer::Unavailable => record.unavailable += 1,
            Answer::Lost => record.lost_answers += 1,
            Answer::Rejected(why) => {
                record.rejected.push(why);
                // A 409 or 400 for a unique, valid build is a defect; sending it again changes nothing.
                if record.rejected.len() >= 3 {
                    return;
                }
            }
        }
        if Instant::now() >= give_up {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One client: unique image and component builds, alternating, one every `interval`, until `stop`.
async fn client(
    stack: Arc<Stack>,
    ledger: Shared,
    name: &'static str,
    repo: Arc<GitRepo>,
    interval: Duration,
    stop: Arc<AtomicBool>,
    end: Instant,
) {
    let short = &name[..1];
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let began = Instant::now();
        n += 1;
        let kind = if n % 2 == 1 { Kind::Image } else { Kind::Component };
        let (component, tag, expected, body) = match kind {
            Kind::Image => {
                let component = format!("soak-{short}-i{n}");
                let dockerfile = format!("FROM busybox\nRUN echo {component} > /soak\n");
                let body = json!({"dockerfile": dockerfile, "component": component, "branch": "main",
                                  "architecture": "amd64"});
                (component, "main".to_owned(), None, body)
            }
            Kind::Component => {
                let component = format!("soak-{short}-c{n}");
                let tag = format!("t{n}");
                let content = format!("{component} {tag}");
                let recipe = manifest(&format!("echo '{content}' > /out/result"), &[]);
                repo.commit_and_tag(&[("artifact.toml", &recipe, false)], &tag).await;
                let body = json!({"url": repo.url(), "component": component, "tag": tag, "architecture": "amd64"});
                (component, tag, Some(format!("{content}\n")), body)
            }
        };
        let mut record = Submission {
            client: name,
            kind,
            component,
            tag,
            expected,
            build_id: None,
            sends: 0,
            lost_answers: 0,
            unavailable: 0,
            rejected: Vec::new(),
        };
        // A submission in hand when the soak ends is still sent until accepted, for up to two minutes.
        submit(&stack, name, kind, &body, &mut record, end.max(Instant::now()) + Duration::from_secs(120)).await;
        ledger.lock().unwrap().submissions.push(record);
        tokio::time::sleep(interval.saturating_sub(began.elapsed())).await;
    }
}

/// Makes a new tag in the pushed repository and sends its signed GitHub tag-push webhook, one every
/// `interval`, until `stop`; a delivery whose answer was lost is sent again (same delivery id and body).
async fn pusher(
    stack: Arc<Stack>,
    ledger: Shared,
    repo: Arc<GitRepo>,
    interval: Duration,
    stop: Arc<AtomicBool>,
    end: Instant,
) {
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let began = Instant::now();
        n += 1;
        let tag = format!("p{n}");
        let recipe = manifest(&format!("echo 'soak-push {tag}' > /out/result"), &[]);
        repo.commit_and_tag(&[("artifact.toml", &recipe, false)], &tag).await;
        let mut payload = webhook_fixture("github-tag-push.json");
        payload["repository"]["clone_url"] = json!(repo.url());
        payload["ref"] = json!(format!("refs/tags/{tag}"));
        payload["after"] = json!(repo.head().await);
        let body = serde_json::to_vec(&payload).expect("JSON");
        let delivery = format!("soak-{}-{n}", std::process::id());
        let mut push = Push { tag, delivery, sends: 0, accepted: false, rejected: Vec::new() };
        let give_up = end.max(Instant::now()) + Duration::from_secs(120);
        loop {
            push.sends += 1;
            let answer = stack
                .up
                .http
                .post(stack.up.url("/api/v1/hooks/github"))
                .header("X-GitHub-Event", "push")
                .header("X-GitHub-Delivery", &push.delivery)
                .header("X-Hub-Signature-256", format!("sha256={}", sign_webhook(&body)))
                .header("Content-Type", "application/json")
                .body(body.clone())
                .send()
                .await;
            if let Ok(answer) = answer {
                let status = answer.status().as_u16();
                let text = answer.text().await.unwrap_or_default();
                match status {
                    202 => {
                        push.accepted = true;
                        break;
                    }
                    503 => {}
                    _ => push.rejected.push(format!("HTTP {status}: {text}")),
                }
            }
            if Instant::now() >= give_up || push.rejected.len() >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        ledger.lock().unwrap().pushes.push(push);
        tokio::time::sleep(interval.saturating_sub(began.elapsed())).await;
    }
}

/// What the reader must be answered.
struct Known {
    image_build: String,
    image_digest: String,
    component_build: String,
    component_digest: String,
}

/// Looks up the known image and component in turn over HTTP until `stop`.
async fn reader(stack: Arc<Stack>, ledger: Shared, known: Known, stop: Arc<AtomicBool>, start: Instant) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().expect("a client");
    let image = stack.up.url("/api/v1/images?component=soak-known&branch=main&architecture=amd64");
    let component = stack.up.url("/api/v1/components?component=soak-known&tag=v1&architecture=amd64");
    let mut refused_since: Option<Duration> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let (url, build, digest) = if n % 2 == 1 {
            (&component, &known.component_build, &known.component_digest)
        } else {
            (&image, &known.image_build, &known.image_digest)
        };
        let asked = Instant::now();
        let answer = http.get(url).bearer_auth(&stack.up.admin_key).send().await;
        let answer = match answer {
            Ok(answer) => {
                let status = answer.status().as_u16();
                answer.text().await.map(|text| (status, text))
            }
            Err(err) => Err(err),
        };
        let took = asked.elapsed();
        {
            let mut ledger = ledger.lock().unwrap();
            let lookups = &mut ledger.lookups;
            lookups.slowest = lookups.slowest.max(took);
            if took > Duration::from_secs(2) {
                let status = match &answer {
                    Ok((status, _)) => format!("HTTP {status}"),
                    Err(err) if err.is_timeout() => "timed out".to_owned(),
                    Err(_) => "no answer".to_owned(),
                };
                lookups.slow.push(format!(
                    "asked at {:.1}s, {status} after {:.2}s",
                    asked.duration_since(start).as_secs_f64(),
                    took.as_secs_f64()
                ));
            }
            match answer {
                Err(err) if err.is_timeout() => lookups.timed_out += 1,
                Err(_) => {
                    lookups.refused += 1;
                    refused_since.get_or_insert(asked.duration_since(start));
                }
                Ok((status, text)) => {
                    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    if status == 200
                        && body["status"] == "found"
                        && body["buildId"] == **build
                        && body["digest"] == **digest
                    {
                        lookups.right += 1;
                    } else if status == 503 && body["status"].is_string() && body["errorMessage"].is_string() {
                        lookups.unavailable += 1;
                    } else {
                        lookups.wrong += 1;
                        if lookups.wrong_examples.len() < 10 {
                            lookups.wrong_examples.push(format!("{}: HTTP {status}: {text}", stamp(start)));
                        }
                    }
                    if let Some(since) = refused_since.take() {
                        lookups.refused_runs.push((since, asked.duration_since(start)));
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Some(since) = refused_since {
        ledger.lock().unwrap().lookups.refused_runs.push((since, start.elapsed()));
    }
}

/// SIGKILLs one process of the stack every `every`, in turn, and measures how long each stays down
/// (until its new process serves).
async fn killer(stack: Arc<Stack>, ledger: Shared, every: Duration, start: Instant, end: Instant) {
    let mut recoveries = Vec::new();
    for round in 0.. {
        let at = start + every / 2 + every * round;
        if at >= end {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        let victim = VICTIMS[round as usize % VICTIMS.len()];
        let mut pid = None;
        for _ in 0..100 {
            pid = stack.pid_of(victim);
            if pid.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let Some(pid) = pid else {
            println!("{} {victim} is not running: not killed", stamp(start));
            continue;
        };
        ledger.lock().unwrap().killed_pids.insert(pid);
        // SAFETY: kill(2) of a process of the stack this program started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let killed = Instant::now();
        let (stack, ledger) = (Arc::clone(&stack), Arc::clone(&ledger));
        recoveries.push(tokio::spawn(async move {
            let mut down = None;
            while killed.elapsed() < Duration::from_secs(120) {
                if stack.pid_of(victim).is_some_and(|new| new != pid) && stack.serves(victim).await {
                    down = Some(killed.elapsed());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            match down {
                Some(down) => println!(
                    "{} killed {victim} (pid {pid}): serving again after {:.2}s",
                    stamp(start),
                    down.as_secs_f64()
                ),
                None => println!("{} killed {victim} (pid {pid}): not serving again within 120s", stamp(start)),
            }
            ledger.lock().unwrap().kills.push(Kill { victim, pid, at: killed.duration_since(start), down });
        }));
    }
    for recovery in recoveries {
        let _ = recovery.await;
    }
}

/// Watches the stack's processes every 100 ms: how long each was absent, and exits nobody caused.
async fn watcher(stack: Arc<Stack>, ledger: Shared, stop: Arc<AtomicBool>, start: Instant) {
    let up = stack.up.child.id().expect("up runs");
    let mut pids: BTreeMap<String, u32> = children(up).into_iter().map(|(pid, name)| (name, pid)).collect();
    let names: Vec<String> = pids.keys().cloned().collect();
    let mut absent: BTreeMap<String, Duration> = BTreeMap::new();
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now: BTreeMap<String, u32> = children(up).into_iter().map(|(pid, name)| (name, pid)).collect();
        let at = start.elapsed();
        let mut ledger = ledger.lock().unwrap();
        for name in &names {
            let (current, before) = (now.get(name).copied(), pids.get(name).copied());
            if current == before {
                continue;
            }
            if let Some(old) = before {
                if !ledger.killed_pids.contains(&old) {
                    ledger.unplanned_exits.push((name.clone(), at));
                }
            }
            match current {
                None => {
                    absent.insert(name.clone(), at);
                    pids.remove(name);
                }
                Some(pid) => {
                    if let Some(since) = absent.remove(name) {
                        ledger.absences.push((name.clone(), since, at - since));
                    }
                    pids.insert(name.clone(), pid);
                }
            }
        }
    }
}

/// Asks the Docker engine every 2 s whether it answers: the soak does not kill it, but a build that
/// fails while it is away fails for a reason outside the stack, and the figures should say so.
async fn engine_watcher(ledger: Shared, stop: Arc<AtomicBool>, start: Instant) {
    let mut down_since: Option<Duration> = None;
    while !stop.load(Ordering::Relaxed) {
        let asked = start.elapsed();
        let version = Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]).output();
        let answers =
            matches!(tokio::time::timeout(Duration::from_secs(5), version).await, Ok(Ok(out)) if out.status.success());
        match (answers, down_since) {
            (false, None) => down_since = Some(asked),
            (true, Some(since)) => {
                ledger.lock().unwrap().engine_outages.push((since, asked));
                down_since = None;
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    if let Some(since) = down_since {
        ledger.lock().unwrap().engine_outages.push((since, start.elapsed()));
    }
}

// ---------------------------------------------------------------------------------------------------
// Setup and the end.

/// Builds the known image and component the reader looks up, and the component the pushes rebuild.
async fn setup(stack: &Stack, known_repo: &GitRepo, push_repo: &GitRepo) -> Known {
    let post = |path: &'static str, body: Value| async move {
        let answer = stack.up.http.post(stack.up.url(path)).bearer_auth(&stack.up.admin_key).json(&body).send();
        let answer = answer.await.expect("the gateway answers");
        let status = answer.status();
        let body: Value = answer.json().await.expect("JSON");
        assert!(status.is_success(), "{path}: {status} {body}");
        let id = body["buildId"].as_str().expect("a build id").to_owned();
        let record = stack.up.wait_for(&id, Duration::from_secs(300), ended).await.expect("the setup build ends");
        assert_eq!(record["status"], "succeeded", "{record}");
        record
    };
    let image = post(
        "/api/v1/images",
        json!({"dockerfile": "FROM busybox\nRUN echo known > /known\n", "component": "soak-known",
               "branch": "main", "architecture": "amd64"}),
    );
    known_repo.commit_and_tag(&[("artifact.toml", &manifest("echo known > /out/result", &[]), false)], "v1").await;
    let component = post(
        "/api/v1/components",
        json!({"url": known_repo.url(), "component": "soak-known", "tag": "v1", "architecture": "amd64"}),
    );
    push_repo
        .commit_and_tag(&[("artifact.toml", &manifest("echo 'soak-push p0' > /out/result", &[]), false)], "p0")
        .await;
    let pushed = post(
        "/api/v1/components",
        json!({"url": push_repo.url(), "component": "soak-push", "tag": "p0", "architecture": "amd64"}),
    );
    let (image, component, _) = futures::join!(image, component, pushed);
    // The digests the lookups answer now, which they must keep answering.
    let found = stack.up.get("/api/v1/images?component=soak-known&branch=main&architecture=amd64").await.unwrap();
    assert_eq!(found["buildId"], image["buildId"], "{found}");
    let stored = stack.up.get("/api/v1/components?component=soak-known&tag=v1&architecture=amd64").await.unwrap();
    assert_eq!(stored["buildId"], component["buildId"], "{stored}");
    Known {
        image_build: image["buildId"].as_str().unwrap().to_owned(),
        image_digest: found["digest"].as_str().expect("an image digest").to_owned(),
        component_build: component["buildId"].as_str().unwrap().to_owned(),
        component_digest: stored["digest"].as_str().expect("a component digest").to_owned(),
    }
}

/// Downloads a component's archive: whether its SHA-256 is the digest its record and `ETag` give, and it
/// holds `result` with the expected text. `None` while the gateway does not answer.
async fn archive_intact(
    stack: &Stack,
    component: &str,
    tag: &str,
    digest: &str,
    expected: &str,
) -> Option<Result<(), String>> {
    let url = stack.up.url(&format!("/api/v1/components/{component}/{tag}/amd64/archive"));
    let answer = stack.up.http.get(url).bearer_auth(&stack.up.admin_key).send().await.ok()?;
    if answer.status() == 503 {
        return None;
    }
    if answer.status() != 200 {
        return Some(Err(format!("archive of {component} {tag}: HTTP {}", answer.status())));
    }
    let etag =
        answer.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or_default().trim_matches('"').to_owned();
    let bytes = answer.bytes().await.ok()?;
    let actual = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)));
    if actual != digest || etag != digest {
        return Some(Err(format!("{component} {tag}: record {digest}, ETag {etag}, archive {actual}")));
    }
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    let mut found = None;
    let entries = archive.entries().map_err(|err| err.to_string());
    let read = entries.and_then(|entries| {
        for entry in entries {
            let mut entry = entry.map_err(|err| err.to_string())?;
            if entry.path().map_err(|err| err.to_string())?.to_string_lossy().trim_start_matches("./") == "result" {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut entry, &mut text).map_err(|err| err.to_string())?;
                found = Some(text);
            }
        }
        Ok(())
    });
    Some(match (read, found) {
        (Err(err), _) => Err(format!("{component} {tag}: unreadable archive: {err}")),
        (Ok(()), Some(text)) if text == expected => Ok(()),
        (Ok(()), found) => Err(format!("{component} {tag}: result {found:?}, expected {expected:?}")),
    })
}

/// Asks until the stack answers (it may still be restarting a process).
async fn retrying<T, F: std::future::Future<Output = Option<T>>>(what: &str, mut ask: impl FnMut() -> F) -> T {
    let started = Instant::now();
    loop {
        if let Some(answer) = ask().await {
            return answer;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "{what}: no answer for two minutes");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Containers of this stack's builds (label `artifacts.build-id`) that still exist.
async fn leftover_containers(ours: &BTreeSet<String>) -> Vec<String> {
    let listed =
        docker(&["ps", "-a", "--filter", "label=artifacts.build-id", "--format", "{{.Label \"artifacts.build-id\"}}"])
            .await;
    listed.lines().filter(|id| ours.contains(*id)).map(str::to_owned).collect()
}

#[tokio::main]
async fn main() {
    let args = args();
    require_docker().await;
    let data = match &args.data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).expect("the data directory");
            tempfile::Builder::new().prefix("chaos-soak-").tempdir_in(dir).expect("a data directory")
        }
        None => tempfile::Builder::new().prefix("chaos-soak-").tempdir().expect("a data directory"),
    };
    println!(
        "chaos soak: {} min, a kill every {}s, data directory {}",
        args.minutes,
        args.kill_every.as_secs_f64(),
        data.path().display()
    );
    let setup_started = Instant::now();
    let stack = Arc::new(start_stack(data).await);
    // The repositories live until the end: a build still queued clones its repository.
    let (known_repo, push_repo) = (GitRepo::new().await, Arc::new(GitRepo::new().await));
    let (http_repo, nats_repo) = (Arc::new(GitRepo::new().await), Arc::new(GitRepo::new().await));
    let known = setup(&stack, &known_repo, &push_repo).await;
    println!("stack up and known builds made in {:.1}s", setup_started.elapsed().as_secs_f64());

    let ledger: Shared = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.minutes * 60.0);
    let watch = Arc::new(AtomicBool::new(false));
    let watching = tokio::spawn(watcher(Arc::clone(&stack), Arc::clone(&ledger), Arc::clone(&watch), start));
    let engine_watch = tokio::spawn(engine_watcher(Arc::clone(&ledger), Arc::clone(&watch), start));
    let tasks = vec![
        tokio::spawn(client(
            Arc::clone(&stack),
            Arc::clone(&ledger),
            "http",
            Arc::clone(&http_repo),
            args.interval,
            Arc::clone(&stop),
            end,
        )),
        tokio::spawn(client(
            Arc::clone(&stack),
            Arc::clone(&ledger),
            "nats",
            Arc::clone(&nats_repo),
            args.interval,
            Arc::clone(&stop),
            end,
        )),
        tokio::spawn(pusher(
            Arc::clone(&stack),
            Arc::clone(&ledger),
            Arc::clone(&push_repo),
            args.push_interval,
            Arc::clone(&stop),
            end,
        )),
        tokio::spawn(reader(Arc::clone(&stack), Arc::clone(&ledger), known, Arc::clone(&stop), start)),
    ];
    killer(Arc::clone(&stack), Arc::clone(&ledger), args.kill_every, start, end).await;
    tokio::time::sleep_until(end.into()).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("a soak task");
    }
    let soaked = start.elapsed();
    println!("{} load stopped; draining", stamp(start));
    stack.up.wait_ready(Duration::from_secs(120)).await;

    // The drain: every accepted build and every accepted push's build must end.
    let drain_started = Instant::now();
    let accepted: Vec<(usize, String)> = {
        let ledger = ledger.lock().unwrap();
        ledger.submissions.iter().enumerate().filter_map(|(n, s)| s.build_id.clone().map(|id| (n, id))).collect()
    };
    let pushed: Vec<String> =
        ledger.lock().unwrap().pushes.iter().filter(|p| p.accepted).map(|p| p.tag.clone()).collect();
    let mut records: BTreeMap<String, Value> = BTreeMap::new();
    let mut missing: BTreeSet<String> = BTreeSet::new();
    let mut push_builds: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    loop {
        missing.clear();
        for (_, id) in &accepted {
            if records.get(id).is_some_and(ended) {
                continue;
            }
            match stack.record(id).await {
                Some((200, record)) => {
                    records.insert(id.clone(), record);
                }
                Some((404, _)) => {
                    missing.insert(id.clone());
                }
                _ => {}
            }
        }
        push_builds.clear();
        if let Some(builds) = stack.builds_of("soak-push").await {
            for build in builds {
                if let Some(tag) = build["request"]["tag"].as_str() {
                    push_builds.entry(tag.to_owned()).or_default().push(build.clone());
                }
            }
        }
        let builds_open = accepted.iter().any(|(_, id)| !records.get(id).is_some_and(ended));
        let pushes_open =
            pushed.iter().any(|tag| push_builds.get(tag).is_none_or(|b| b.is_empty() || !b.iter().all(ended)));
        if !builds_open && !pushes_open {
            break;
        }
        if drain_started.elapsed() >= args.drain {
            println!("the drain ran out after {:.0}s", drain_started.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let drained = drain_started.elapsed();
    watch.store(true, Ordering::Relaxed);
    let _ = watching.await;
    let _ = engine_watch.await;

    // The figures.
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    let mut defects: Vec<String> = Vec::new();
    // Failed builds: (build id, status and errorMessage).
    let mut failures: Vec<(String, String)> = Vec::new();
    let (mut lost, mut stuck, mut doubled, mut failed, mut second_attempts) = (0, 0, 0, 0, 0);
    let mut ours: BTreeSet<String> = BTreeSet::new();
    let mut archives: Vec<(String, String, String, String)> = Vec::new();
    // Succeeded image builds: (component, build id, digest of its record).
    let mut images: Vec<(String, String, Value)> = Vec::new();
    for submission in &ledger.submissions {
        let Some(id) = &submission.build_id else { continue };
        ours.insert(id.clone());
        let record = records.get(id);
        let Some(record) = record else {
            lost += 1;
            defects.push(format!(
                "lost: {} {} {} build {id} has no record",
                submission.client, submission.component, submission.tag
            ));
            continue;
        };
        if !ended(record) {
            stuck += 1;
            defects.push(format!("stuck: {id} ({}) is {} after the drain", submission.component, record["status"]));
        } else if record["status"] != "succeeded" {
            failed += 1;
            failures.push((id.clone(), format!("{} {}", record["status"], record["errorMessage"])));
            defects.push(format!(
                "failed: {id} ({}): {} {}",
                submission.component, record["status"], record["errorMessage"]
            ));
        }
        if record["attempts"].as_u64().unwrap_or(0) > 1 {
            second_attempts += 1;
        }
        let builds = retrying("the builds of a component", || stack.builds_of(&submission.component)).await;
        let builds: Vec<Value> =
            builds.into_iter().filter(|b| b["request"]["component"] == *submission.component).collect();
        for build in &builds {
            if let Some(other) = build["buildId"].as_str() {
                ours.insert(other.to_owned());
            }
        }
        if builds.len() > 1 {
            doubled += 1;
            let ids: Vec<&str> = builds.iter().filter_map(|b| b["buildId"].as_str()).collect();
            defects.push(format!(
                "doubled: {} {} has {} builds: {ids:?}",
                submission.component,
                submission.tag,
                builds.len()
            ));
        }
        if let (Kind::Component, Some(expected), Some(digest)) =
            (submission.kind, &submission.expected, record["result"]["digest"].as_str())
        {
            archives.push((submission.component.clone(), submission.tag.clone(), digest.to_owned(), expected.clone()));
        }
        if submission.kind == Kind::Image && record["status"] == "succeeded" {
            images.push((submission.component.clone(), id.clone(), record["result"]["digest"].clone()));
        }
    }
    let mut pushes_built = 0;
    for tag in &pushed {
        let builds = push_builds.get(tag).cloned().unwrap_or_default();
        for build in &builds {
            if let Some(id) = build["buildId"].as_str() {
                ours.insert(id.to_owned());
            }
        }
        match builds.len() {
            0 => {
                lost += 1;
                defects.push(format!("lost: the push of tag {tag} built nothing"));
            }
            1 => pushes_built += 1,
            n => {
                doubled += 1;
                let ids: Vec<&str> = builds.iter().filter_map(|b| b["buildId"].as_str()).collect();
                defects.push(format!("doubled: the push of tag {tag} made {n} builds: {ids:?}"));
            }
        }
        if let Some(build) = builds.first() {
            if !ended(build) {
                stuck += 1;
                defects.push(format!("stuck: push build {} of {tag} is {}", build["buildId"], build["status"]));
            } else if build["status"] != "succeeded" {
                failed += 1;
                let id = build["buildId"].as_str().unwrap_or_default().to_owned();
                failures.push((id, format!("{} {}", build["status"], build["errorMessage"])));
                defects.push(format!(
                    "failed: push build {} of {tag}: {} {}",
                    build["buildId"], build["status"], build["errorMessage"]
                ));
            } else if let Some(digest) = build["result"]["digest"].as_str() {
                archives.push(("soak-push".into(), tag.clone(), digest.to_owned(), format!("soak-push {tag}\n")));
            }
            if build["attempts"].as_u64().unwrap_or(0) > 1 {
                second_attempts += 1;
            }
        }
    }
    let mut corrupt = 0;
    for (component, tag, digest, expected) in &archives {
        let checked = retrying("an archive", || archive_intact(&stack, component, tag, digest, expected)).await;
        if let Err(why) = checked {
            corrupt += 1;
            defects.push(format!("corrupt: {why}"));
        }
    }
    // Each built image is what its lookup answers (the lookup a client runs before `docker pull`).
    let mut images_wrong = 0;
    for (component, id, digest) in &images {
        let path = format!("/api/v1/images?component={component}&branch=main&architecture=amd64");
        let found = retrying("an image lookup", || async {
            let answer = stack.up.http.get(stack.up.url(&path)).bearer_auth(&stack.up.admin_key).send().await.ok()?;
            let status = answer.status().as_u16();
            (status != 503).then_some(())?;
            Some((status, answer.json::<Value>().await.unwrap_or(Value::Null)))
        })
        .await;
        if found.0 != 200 || found.1["buildId"] != **id || found.1["digest"] != *digest || !digest.is_string() {
            images_wrong += 1;
            defects.push(format!(
                "image {component} built by {id} ({digest}): the lookup answers HTTP {} {}",
                found.0, found.1
            ));
        }
    }
    // Removed containers go within a few seconds of a build's end.
    let mut left = leftover_containers(&ours).await;
    for _ in 0..30 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        left = leftover_containers(&ours).await;
    }
    for id in &left {
        defects.push(format!("container left over: build {id}"));
    }

    let submissions = &ledger.submissions;
    let accepted_count = submissions.iter().filter(|s| s.build_id.is_some()).count();
    let by = |client: &str, kind: Kind| {
        submissions.iter().filter(|s| s.client == client && s.kind == kind && s.build_id.is_some()).count()
    };
    let never_accepted: Vec<&Submission> = submissions.iter().filter(|s| s.build_id.is_none()).collect();
    let rejected: Vec<String> = submissions
        .iter()
        .flat_map(|s| s.rejected.iter().map(move |why| format!("{} {}: {why}", s.client, s.component)))
        .chain(ledger.pushes.iter().flat_map(|p| p.rejected.iter().map(move |why| format!("push {}: {why}", p.tag))))
        .collect();
    for why in &rejected {
        defects.push(format!("rejected: {why}"));
    }
    for submission in &never_accepted {
        defects.push(format!("never accepted: {} {} {}", submission.client, submission.component, submission.tag));
    }
    let resent = submissions.iter().filter(|s| s.sends > 1).count();
    let lost_answers: u32 = submissions.iter().map(|s| s.lost_answers).sum();
    let unavailable: u32 = submissions.iter().map(|s| s.unavailable).sum();
    let pushes_accepted = ledger.pushes.iter().filter(|p| p.accepted).count();
    let pushes_resent = ledger.pushes.iter().filter(|p| p.sends > 1).count();

    let lookups = &ledger.lookups;
    let gateway_outages: Vec<(Duration, Duration)> = ledger
        .kills
        .iter()
        .filter(|k| k.victim == "artifacts-gateway")
        .map(|k| (k.at, k.at + k.down.unwrap_or(Duration::from_secs(120))))
        .collect();
    let slack = Duration::from_millis(200);
    let mut refused_longest = Duration::ZERO;
    let mut refused_outside = 0;
    for &(from, to) in &lookups.refused_runs {
        refused_longest = refused_longest.max(to - from);
        let during_outage = gateway_outages.iter().any(|&(down, up)| from + slack >= down && to <= up + slack);
        if !during_outage {
            refused_outside += 1;
            defects.push(format!(
                "lookups refused from {:.1}s to {:.1}s, outside every gateway outage {gateway_outages:?}",
                from.as_secs_f64(),
                to.as_secs_f64()
            ));
        }
    }
    if refused_longest >= REFUSED_LIMIT {
        defects.push(format!("lookups refused for {:.2}s at a time (limit 2 s)", refused_longest.as_secs_f64()));
    }
    for example in &lookups.wrong_examples {
        defects.push(format!("wrong lookup answer: {example}"));
    }
    if lookups.timed_out > 0 {
        defects.push(format!("{} lookups timed out (15 s)", lookups.timed_out));
    }
    let longest_down = ledger.kills.iter().filter_map(|k| k.down.map(|d| (d, k.victim))).max();
    let never_back: Vec<&Kill> = ledger.kills.iter().filter(|k| k.down.is_none()).collect();
    for kill in &never_back {
        defects.push(format!(
            "{} (pid {}) killed at {:.0}s never served again",
            kill.victim,
            kill.pid,
            kill.at.as_secs_f64()
        ));
    }
    let longest_absent = ledger.absences.iter().max_by_key(|a| a.2);
    let mut per_victim: BTreeMap<&str, (usize, Duration)> = BTreeMap::new();
    for kill in &ledger.kills {
        let entry = per_victim.entry(kill.victim).or_default();
        entry.0 += 1;
        entry.1 = entry.1.max(kill.down.unwrap_or(Duration::MAX));
    }

    println!();
    println!(
        "== chaos soak: {:.1} min of load, {} kills, drained in {:.0}s ==",
        soaked.as_secs_f64() / 60.0,
        ledger.kills.len(),
        drained.as_secs_f64()
    );
    println!(
        "builds accepted: {accepted_count} (HTTP {} images + {} components, NATS {} images + {} components); {resent} sent more than once ({lost_answers} answers lost, {unavailable} answered 503)",
        by("http", Kind::Image),
        by("http", Kind::Component),
        by("nats", Kind::Image),
        by("nats", Kind::Component)
    );
    println!("pushes accepted: {pushes_accepted} ({pushes_resent} sent more than once), built: {pushes_built}");
    println!(
        "lost: {lost}, stuck: {stuck}, doubled: {doubled}, failed: {failed}, rejected: {}, never accepted: {}",
        rejected.len(),
        never_accepted.len()
    );
    println!("builds that needed a second attempt: {second_attempts}");
    println!(
        "lookups: {} right, {} 503, {} refused (longest run {:.2}s, {refused_outside} outside a gateway outage), {} wrong, {} timed out; slowest answer {:.2}s",
        lookups.right,
        lookups.unavailable,
        lookups.refused,
        refused_longest.as_secs_f64(),
        lookups.wrong,
        lookups.timed_out,
        lookups.slowest.as_secs_f64()
    );
    if !lookups.slow.is_empty() {
        println!("lookups answered after more than 2 s: {}", lookups.slow.join("; "));
    }
    println!("archives checked: {}, corrupt: {corrupt}", archives.len());
    println!("images checked (lookup answers the build and digest): {}, wrong: {images_wrong}", images.len());
    println!("containers left over: {}", left.len());
    for (victim, (count, worst)) in &per_victim {
        let worst =
            if *worst == Duration::MAX { "never back".to_owned() } else { format!("{:.2}s", worst.as_secs_f64()) };
        println!("  {victim}: killed {count}x, longest down {worst}");
    }
    match longest_down {
        Some((down, victim)) => println!("longest down (kill to serving again): {:.2}s ({victim})", down.as_secs_f64()),
        None => println!("longest down: no kill"),
    }
    if let Some((name, at, absent)) = longest_absent {
        println!("longest without a process: {:.2}s ({name} at {:.0}s)", absent.as_secs_f64(), at.as_secs_f64());
    }
    if !ledger.engine_outages.is_empty() {
        let outages: Vec<String> = ledger
            .engine_outages
            .iter()
            .map(|(from, to)| format!("{:.0}s to {:.0}s", from.as_secs_f64(), to.as_secs_f64()))
            .collect();
        println!("the Docker engine did not answer (not a kill of the soak): {}", outages.join(", "));
    }
    if !ledger.unplanned_exits.is_empty() {
        let exits: Vec<String> =
            ledger.unplanned_exits.iter().map(|(name, at)| format!("{name} at {:.0}s", at.as_secs_f64())).collect();
        println!("exits nobody caused: {}", exits.join(", "));
    }
    for defect in defects.iter().filter(|d| !d.starts_with("failed: ")).take(40) {
        println!("DEFECT {defect}");
    }
    // Failures grouped by their reason (the record's errorMessage), with a few build ids each.
    let mut reasons: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, reason) in &failures {
        reasons.entry(reason.clone()).or_default().push(id.clone());
    }
    for (reason, ids) in &reasons {
        let shown: Vec<&str> = ids.iter().take(5).map(String::as_str).collect();
        println!(
            "DEFECT failed: {} builds ({}{}): {reason}",
            ids.len(),
            shown.join(", "),
            if ids.len() > 5 { ", ..." } else { "" }
        );
    }
    if defects.len() > 40 + failures.len() {
        println!("({} more defects not shown)", defects.len() - 40 - failures.len());
    }
    let result = json!({
        "minutes": soaked.as_secs_f64() / 60.0,
        "kills": ledger.kills.len(),
        "accepted": accepted_count,
        "pushesAccepted": pushes_accepted,
        "pushesBuilt": pushes_built,
        "lost": lost,
        "stuck": stuck,
        "doubled": doubled,
        "failed": failed,
        "rejected": rejected.len(),
        "neverAccepted": never_accepted.len(),
        "secondAttempts": second_attempts,
        "lookupsRight": lookups.right,
        "lookups503": lookups.unavailable,
        "lookupsRefused": lookups.refused,
        "lookupsWrong": lookups.wrong,
        "lookupsTimedOut": lookups.timed_out,
        "lookupsSlow": lookups.slow.len(),
        "slowestLookupMs": lookups.slowest.as_millis() as u64,
        "refusedLongestMs": refused_longest.as_millis() as u64,
        "refusedOutsideGatewayOutage": refused_outside,
        "archivesChecked": archives.len(),
        "corrupt": corrupt,
        "imagesChecked": images.len(),
        "imagesWrong": images_wrong,
        "containersLeft": left.len(),
        "longestDownMs": longest_down.map(|(d, _)| d.as_millis() as u64),
        "neverBack": never_back.len(),
        "unplannedExits": ledger.unplanned_exits.len(),
        "engineOutages": ledger.engine_outages.len(),
        "defects": defects.len(),
    });
    println!("chaos-soak result: {result}");

    // Stop the stack (SIGTERM: `up` stops every process in order).
    let mut stack = Arc::into_inner(stack).expect("every task ended");
    if let Some(pid) = stack.up.child.id() {
        // SAFETY: kill(2) of the `artifacts up` this program started.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    let _ = tokio::time::timeout(Duration::from_secs(60), stack.up.child.wait()).await;
    if !defects.is_empty() || args.keep {
        let kept = stack.up.data.keep();
        println!("data directory kept (logs/ has every process's log): {}", kept.display());
    }
    if !defects.is_empty() {
        std::process::exit(1);
    }
}
