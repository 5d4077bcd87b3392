//! Faults replayed on the real stack (`artifacts up`: nats-server, registry, gateway and every function as
//! supervised processes) with a real Docker engine and real git repositories. Prints each figure, then
//! asserts it: the "Faults" section of BENCHMARKS.md quotes this output.
//!
//! - `kill -9` of what a build depends on, while it uses it: the worker while the build's own command
//!   runs (component and image), nats-server while a component's command runs, the registry while the
//!   image is being pushed into it. No build lost, none run twice to completion, none stuck, no container
//!   left, the killed process running again; the recovery time.
//! - nats-server killed and restarted with 20 builds queued: all 20 finish.
//! - SIGTERM of the worker three times during one long build: it succeeds with `attempts` = 1.
//! - 50 polls of a failing component: no new build.
//! - 20 concurrent requests for one component version through HTTP, NATS and a webhook: one build.
//! - `kill -9` of `artifacts up` itself: every process it ran stops.

use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{json, Value};

use artifacts_tests::up::{is_running, UpStack};
use artifacts_tests::{
    docker, key_header, manifest, pushes_handled_on, require_docker, sign_webhook, unique_name, webhook_fixture,
    GitRepo, Registry, TestApp, ADMIN_KEY, WEBHOOK_SECRET,
};

const ACK_WAIT_SECS: &str = "6";
const GRACE_SECS: &str = "2";

fn finished(record: &Value) -> bool {
    matches!(record["status"].as_str(), Some("succeeded" | "failed" | "cancelled"))
}

fn running(record: &Value) -> bool {
    record["status"] == "running"
}

/// Containers these builds left behind (the engine may be running other tests' builds).
async fn build_containers(build_ids: &[String]) -> usize {
    let labels =
        docker(&["ps", "-a", "--filter", "label=artifacts.build-id", "--format", "{{.Label \"artifacts.build-id\"}}"]);
    labels.await.lines().filter(|id| build_ids.iter().any(|ours| ours == id)).count()
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: signalling a process the stack under test started.
    unsafe { libc::kill(pid as i32, signal) };
}

/// What a build's own command prints once it runs: `started-$((6*7))` in the command, so the command
/// line the log shows first does not match.
const STARTED: &str = "started-42";

/// Follows the build's log live (as the dashboard does) until it shows `marker`; panics if the build
/// ends first, or after 90 s.
async fn wait_for_log(stack: &UpStack, build_id: &str, marker: &str) {
    use futures::StreamExt;
    let deadline = Instant::now() + Duration::from_secs(90);
    let url = stack.url(&format!("/api/v1/builds/{build_id}/logs"));
    let mut seen = String::new();
    while Instant::now() < deadline {
        // The client's 30 s limit ends a long stream; it is followed again from the start.
        let Ok(response) = stack.http.get(&url).bearer_auth(&stack.admin_key).send().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut body = response.bytes_stream();
        seen.clear();
        while let Some(Ok(chunk)) = body.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains(marker) {
                return;
            }
        }
        assert!(!seen.contains("event: end"), "build {build_id} ended before its log showed {marker}:\n{seen}");
    }
    panic!("build {build_id}'s log did not show {marker} within 90 s:\n{seen}");
}

/// Whether the stack's registry is receiving a blob of a repository of `component` right now (its upload
/// directory holds an upload in progress).
fn receiving_upload(stack: &UpStack, component: &str) -> bool {
    let repositories = stack.data.path().join("registry/docker/registry/v2/repositories");
    let Ok(entries) = std::fs::read_dir(repositories) else { return false };
    entries.flatten().filter(|repository| repository.file_name().to_string_lossy().contains(component)).any(
        |repository| {
            std::fs::read_dir(repository.path().join("_uploads")).is_ok_and(|mut uploads| uploads.next().is_some())
        },
    )
}

/// Waits (a minute at most) until `program` runs under `up` with another pid than `killed`.
async fn restarted(stack: &UpStack, program: &str, killed: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(pid) = stack.pid_of(program).filter(|pid| *pid != killed && is_running(*pid)) {
            return pid;
        }
        assert!(Instant::now() < deadline, "up did not start {program} again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A JetStream connection of the stack's own account (the `service` user `up` made), to see what the
/// git trigger has handled.
async fn stack_jetstream(stack: &UpStack) -> async_nats::jetstream::Context {
    let password =
        std::fs::read_to_string(stack.data.path().join("nats-service-password")).expect("up's service password");
    let client = async_nats::ConnectOptions::with_user_and_password("service".into(), password.trim().into())
        .connect(format!("127.0.0.1:{}", stack.nats_port))
        .await
        .expect("the service user connects");
    async_nats::jetstream::new(client)
}

async fn submit_component(stack: &UpStack, url: &str, component: &str, tag: &str) -> String {
    let body = json!({"url": url, "component": component, "tag": tag, "architecture": "amd64"});
    let answer = stack
        .http
        .post(stack.url("/api/v1/components"))
        .bearer_auth(&stack.admin_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    let accepted: Value = answer.json().await.unwrap();
    accepted["buildId"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn builds_survive_faults_and_identical_work_is_done_once() {
    require_docker().await;
    let repo = GitRepo::new().await;
    let temp = std::env::temp_dir().display().to_string();
    let mut stack = UpStack::start(&[
        ("ARTIFACTS__BUILD__ACK_WAIT_SECS", ACK_WAIT_SECS),
        ("ARTIFACTS__BUILD__SHUTDOWN_GRACE_SECS", GRACE_SECS),
        ("ARTIFACTS__BUILD__SLOTS", "4"),
        ("ARTIFACTS__GIT__ALLOWED_SCHEMES", "https,file"),
        ("ARTIFACTS__GIT__FILE_ROOTS", &temp),
        ("ARTIFACTS__HOOKS__GITHUB__SECRET", WEBHOOK_SECRET),
        ("ARTIFACTS__GATEWAY__RATE_LIMIT_PER_MINUTE", "0"),
    ])
    .await;
    stack.wait_ready(Duration::from_secs(30)).await;
    let url = repo.url();
    let mut report = Vec::new();

    // kill -9 of what a build depends on, while the build uses it.
    let slow = manifest("echo started-$((6*7)); sleep 4; echo finished-$((6*7)); echo done > /out/result", &[]);
    repo.commit_and_tag(&[("artifact.toml", &slow, false)], "slow").await;
    for (program, kind) in [
        ("artifacts-build-component", "a component build"),
        ("artifacts-build-image", "an image build"),
        ("nats-server", "a component build"),
        ("docker-registry", "an image push"),
    ] {
        let component = unique_name(&format!("kill-{}", program.trim_start_matches("artifacts-")));
        let build_id = match kind {
            "a component build" => submit_component(&stack, &url, &component, "slow").await,
            "an image build" => {
                let dockerfile = format!("FROM busybox\nRUN echo {component} started-$((6*7)) && sleep 4\n");
                stack.submit_image(&component, &dockerfile).await
            }
            // A layer of 64 MiB that does not compress: its push takes a while.
            _ => {
                let dockerfile =
                    format!("FROM busybox\nRUN echo {component} && head -c 67108864 /dev/urandom > /noise\n");
                stack.submit_image(&component, &dockerfile).await
            }
        };
        // The moment the build depends on it: its command runs (worker, nats-server), or its image is
        // being pushed (registry).
        let during = match kind {
            "an image push" => {
                let deadline = Instant::now() + Duration::from_secs(120);
                while !receiving_upload(&stack, &component) {
                    let record = stack.get(&format!("/api/v1/builds/{build_id}")).await.unwrap_or_default();
                    assert!(
                        !finished(&record) && Instant::now() < deadline,
                        "no push of {component} was seen: {record}"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                "while its image was pushed"
            }
            _ => {
                wait_for_log(&stack, &build_id, STARTED).await;
                "while its command ran"
            }
        };
        let pid = stack.pid_of(program).unwrap_or_else(|| panic!("{program} runs under up"));
        let killed = Instant::now();
        signal(pid, libc::SIGKILL);
        let record = stack.wait_for(&build_id, Duration::from_secs(120), finished).await;
        let recovered = killed.elapsed();
        restarted(&stack, program, pid).await;
        let ready = stack.wait_ready(Duration::from_secs(60)).await + recovered;
        let builds = stack.builds_of(&component).await;
        let succeeded = builds.iter().filter(|b| b["status"] == "succeeded").count();
        let left = build_containers(std::slice::from_ref(&build_id)).await;
        let attempts = record.as_ref().map_or(0, |r| r["attempts"].as_u64().unwrap_or(0));
        let line = format!(
            "kill -9 {program} during {kind} ({during}): lost {}, stuck {}, succeeded {succeeded} of {} builds, \
             attempts {attempts}, containers left {left}, build done after {:.1}s, stack ready after {:.1}s",
            usize::from(record.as_ref().is_some_and(|r| r["status"] != "succeeded")),
            usize::from(record.is_none()),
            builds.len(),
            recovered.as_secs_f64(),
            ready.as_secs_f64(),
        );
        println!("{line}");
        report.push(line);
        let log = stack.log(&build_id).await;
        assert_eq!(
            record.as_ref().map(|r| r["status"].clone()),
            Some(json!("succeeded")),
            "{program}: {record:?}\n{log}"
        );
        assert_eq!((builds.len(), succeeded, left), (1, 1, 0), "{program}: {builds:#?}");
        let runs = log.matches("== attempt ").count();
        match program {
            // The killed worker's attempt is counted, and another delivery built it.
            "artifacts-build-component" | "artifacts-build-image" => {
                assert_eq!((attempts, runs), (2, 2), "{program}: the build was taken over: {record:?}\n{log}")
            }
            // JetStream gone for a moment is not the build's fault: it ran on, once, uncounted.
            "nats-server" => {
                assert_eq!((attempts, runs), (1, 1), "{program}: the build ran on: {record:?}\n{log}");
                assert!(log.contains("finished-42"), "its output during and after the outage is in its log: {log}");
            }
            // The engine retries a push that lost its registry, or the build does (a counted attempt).
            _ => {}
        }
    }

    // nats-server killed with 20 builds queued; `up` restarts it.
    let quick = manifest("echo queued > /out/result", &[]);
    let mut queued = Vec::new();
    for n in 0..20 {
        repo.commit_and_tag(&[("artifact.toml", &quick, false), ("n", &n.to_string(), false)], &format!("q{n}")).await;
    }
    let component = unique_name("queued");
    for n in 0..20 {
        queued.push(submit_component(&stack, &url, &component, &format!("q{n}")).await);
    }
    let killed = Instant::now();
    signal(stack.pid_of("nats-server").expect("nats-server runs under up"), libc::SIGKILL);
    let ends = join_all(queued.iter().map(|id| stack.wait_for(id, Duration::from_secs(240), finished))).await;
    let succeeded = ends.iter().flatten().filter(|r| r["status"] == "succeeded").count();
    let line = format!(
        "nats-server killed with 20 builds queued: {succeeded} of 20 succeeded, all done {:.1}s after the kill",
        killed.elapsed().as_secs_f64()
    );
    println!("{line}");
    report.push(line);
    assert_eq!(succeeded, 20, "{ends:#?}");
    stack.wait_ready(Duration::from_secs(60)).await;

    // SIGTERM of the worker three times during one long build.
    let long = manifest("sleep 10; echo long > /out/result", &[]);
    repo.commit_and_tag(&[("artifact.toml", &long, false)], "long").await;
    let component = unique_name("sigterm");
    let build_id = submit_component(&stack, &url, &component, "long").await;
    let started = Instant::now();
    for _ in 0..3 {
        stack.wait_for(&build_id, Duration::from_secs(60), running).await.expect("the build runs");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let pid = stack.pid_of("artifacts-build-component").expect("the worker runs");
        signal(pid, libc::SIGTERM);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let record = stack.wait_for(&build_id, Duration::from_secs(120), finished).await.expect("the build ends");
    let line = format!(
        "SIGTERM of the worker 3 times during one build: {}, attempts {}, {:.1}s in all",
        record["status"],
        record["attempts"],
        started.elapsed().as_secs_f64()
    );
    println!("{line}");
    report.push(line);
    let log = stack.log(&build_id).await;
    assert_eq!(
        (record["status"].as_str(), record["attempts"].as_u64()),
        (Some("succeeded"), Some(1)),
        "{record}\n{log}"
    );

    // 50 polls of a failing component.
    repo.commit_and_tag(&[("artifact.toml", &manifest("exit 3", &[]), false)], "broken").await;
    let component = unique_name("broken");
    let build_id = submit_component(&stack, &url, &component, "broken").await;
    let record = stack.wait_for(&build_id, Duration::from_secs(60), finished).await.expect("the build ends");
    assert_eq!(record["status"], "failed");
    let mut failed_answers = 0;
    for _ in 0..50 {
        let path = format!("/api/v1/components?component={component}&tag=broken&architecture=amd64");
        let answer = stack.http.get(stack.url(&path)).bearer_auth(&stack.admin_key).send().await.unwrap();
        let body: Value = answer.json().await.unwrap();
        failed_answers += usize::from(body["status"] == "failed" && body["buildId"] == build_id.as_str());
    }
    let builds = stack.builds_of(&component).await.len();
    let line = format!("50 polls of a failing component: {failed_answers} answered failed, {builds} build in all");
    println!("{line}");
    report.push(line);
    assert_eq!((failed_answers, builds), (50, 1));

    // 20 concurrent requests for one component version: HTTP, NATS and webhook pushes together.
    let component = unique_name("once");
    repo.commit_and_tag(&[("artifact.toml", &manifest("echo one > /out/result", &[]), false)], "o1").await;
    let first = submit_component(&stack, &url, &component, "o1").await;
    stack.wait_for(&first, Duration::from_secs(60), finished).await.expect("the first version builds");
    repo.commit_and_tag(&[("artifact.toml", &manifest("sleep 2; echo two > /out/result", &[]), false)], "o2").await;
    let commit = repo.head().await;
    let nats = async_nats::ConnectOptions::with_user_and_password("admin".into(), stack.admin_key.clone())
        .custom_inbox_prefix("_INBOX_admin")
        .connect(format!("127.0.0.1:{}", stack.nats_port))
        .await
        .unwrap();
    let mut push = webhook_fixture("github-tag-push.json");
    push["repository"]["clone_url"] = json!(url);
    push["ref"] = json!("refs/tags/o2");
    push["after"] = json!(commit);
    let push = serde_json::to_vec(&push).unwrap();
    let request = json!({"url": url, "component": component, "tag": "o2", "architecture": "amd64"}).to_string();
    let asked = (0..20).map(|n| {
        let (stack, nats, push, request) = (&stack, &nats, &push, &request);
        async move {
            match n % 3 {
                0 => {
                    let answer = stack
                        .http
                        .post(stack.url("/api/v1/components"))
                        .bearer_auth(&stack.admin_key)
                        .header("Content-Type", "application/json")
                        .body(request.clone())
                        .send()
                        .await
                        .unwrap();
                    answer.status().as_u16()
                }
                1 => {
                    let headers = key_header(&stack.admin_key);
                    let answer = nats
                        .request_with_headers("artifacts.component.build", headers, request.clone().into())
                        .await
                        .unwrap();
                    let body: Value = serde_json::from_slice(&answer.payload).unwrap();
                    if body["buildId"].is_string() {
                        202
                    } else {
                        500
                    }
                }
                _ => {
                    let answer = stack
                        .http
                        .post(stack.url("/api/v1/hooks/github"))
                        .header("X-GitHub-Event", "push")
                        .header("X-GitHub-Delivery", format!("delivery-{n}"))
                        .header("X-Hub-Signature-256", format!("sha256={}", sign_webhook(push)))
                        .header("Content-Type", "application/json")
                        .body(push.clone())
                        .send()
                        .await
                        .unwrap();
                    answer.status().as_u16()
                }
            }
        }
    });
    let statuses = join_all(asked).await;
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
    // The pushes go through the push stream and the git trigger: once it has handled every one of them,
    // whatever they would build has a record.
    pushes_handled_on(&stack_jetstream(&stack).await).await;
    let builds =
        stack.builds_of(&component).await.into_iter().filter(|b| b["request"]["tag"] == "o2").collect::<Vec<_>>();
    let line =
        format!("20 concurrent requests for one component version (HTTP, NATS, webhook): {} build", builds.len());
    println!("{line}");
    report.push(line);
    assert_eq!(builds.len(), 1, "{builds:#?}");
    let record = stack.wait_for(builds[0]["buildId"].as_str().unwrap(), Duration::from_secs(60), finished).await;
    assert_eq!(record.map(|r| r["status"].clone()), Some(json!("succeeded")));
    // Every build of this stack (this test's own), each kill's included.
    let listed = stack.get("/api/v1/builds?limit=500").await.expect("the builds are listed");
    let ours: Vec<String> = listed["builds"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|b| b["buildId"].as_str().map(str::to_owned))
        .collect();
    assert!(ours.len() >= 28, "{listed}");
    let mut left = build_containers(&ours).await;
    for _ in 0..50 {
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        left = build_containers(&ours).await;
    }
    let labels =
        docker(&["ps", "-a", "--filter", "label=artifacts.build-id", "--format", "{{.Labels}} {{.Status}}"]).await;
    assert_eq!(left, 0, "no build container is left: {labels}");

    // `up` itself killed with SIGKILL: every process it ran stops by itself (before, an orphan whose log
    // pipe had closed panicked in its shutdown task and ran on for good).
    let processes = stack.processes();
    let killed = Instant::now();
    stack.child.start_kill().unwrap();
    let mut left = processes.clone();
    while !left.is_empty() && killed.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        left.retain(|(pid, _)| is_running(*pid));
    }
    let line = format!(
        "kill -9 of artifacts up: {} of {} processes still running {:.1}s later",
        left.len(),
        processes.len(),
        killed.elapsed().as_secs_f64()
    );
    println!("{line}");
    report.push(line);
    assert!(processes.len() >= 8, "nats-server, the registry, the gateway and every function: {processes:?}");
    assert!(left.is_empty(), "outlived up: {left:?}");

    println!("\n== faults ==\n{}", report.join("\n"));
}

/// Issue 16: a submission that claimed the identical-work key but never recorded its build (JetStream was
/// electing a leader) left the claim behind, and the client's retry was answered 202 with that build's
/// id: a build that nobody would ever record or run. Now the retry is told to retry (503).
#[tokio::test]
async fn an_identical_submission_never_answers_with_a_build_that_has_no_record() {
    require_docker().await;
    let registry = Registry::start().await;
    let address = registry.address.clone();
    let app = TestApp::spawn_with(|settings| settings.registry.address = address).await;
    let body = json!({"dockerfile": "FROM busybox\nRUN true\n", "component": unique_name("claim"),
                      "branch": "main", "architecture": "amd64"});
    let submit = || app.http.post(app.url("/api/v1/images")).bearer_auth(ADMIN_KEY).json(&body).send();
    let accepted: Value = submit().await.unwrap().json().await.unwrap();
    let first = accepted["buildId"].as_str().expect("a build id").to_owned();
    assert_eq!(app.wait_for_build(&first).await["status"], "succeeded");

    // The claim as a submitter that failed after claiming leaves it: a fresh build id with no record.
    let active = &artifacts_tests::raw_bucket(&app.nats, "active").await;
    let claims: Vec<String> = futures::TryStreamExt::try_collect(active.keys().await.unwrap()).await.unwrap();
    let mut claim = None;
    for key in claims {
        if active.get(&key).await.unwrap().is_some_and(|value| value == first.as_bytes()) {
            claim = Some(key);
        }
    }
    let claim = claim.expect("the first build's claim");
    let orphan = artifacts_schemas::BuildId::generate();
    active.put(&claim, orphan.as_str().to_owned().into()).await.unwrap();

    let retried = submit().await.unwrap();
    let status = retried.status().as_u16();
    let answer: Value = retried.json().await.unwrap();
    assert_ne!(answer["buildId"], json!(orphan.as_str()), "answered with a build that has no record: {answer}");
    assert_eq!(status, 503, "{answer}");
    assert!(answer["errorMessage"].as_str().unwrap().contains("retry"), "{answer}");
}
