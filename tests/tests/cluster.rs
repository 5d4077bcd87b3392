//! The stack across hosts, with real processes: a 3-node NATS cluster (every stream, bucket and object
//! store with 3 replicas), build workers as processes of their own, each on a Docker engine of its own
//! (socket, data root), one of them building arm64 under QEMU emulation.
//!
//! - A NATS node killed during builds, the jobs stream's leader: no accepted build is lost or run twice,
//!   and lookups keep answering (the longest pause is printed).
//! - A worker host killed mid-build (its engine and its worker): the build finishes on the other host.
//! - An image built for amd64 and arm64 is one manifest list under `latest`; pulled for arm64 it runs
//!   arm64 binaries.
//! - `artifacts up --nats-cluster 3`: every stream with 3 replicas, and builds go on with a node killed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::Value;

use artifacts_schemas::Architecture;
use artifacts_tests::cluster::{cluster_app, finished, leader_of, listing, submit, worker};
use artifacts_tests::engines::DockerEngine;
use artifacts_tests::up::UpStack;
use artifacts_tests::ADMIN_KEY;

#[tokio::test]
async fn losing_the_jobs_leader_node_loses_and_doubles_no_build_and_lookups_keep_answering() {
    let (mut app, _registry) = cluster_app().await;
    let _worker = worker(&app, None, "amd64").await;
    let looked_up = app.store_component("cluster-lookup", "v1", "https://example.com/x.git", &[], true).await;
    assert_eq!(looked_up.component.as_str(), "cluster-lookup");

    // Lookups all along: the longest time between two answers is the pause a client saw.
    let answered = Arc::new(Mutex::new(vec![Instant::now()]));
    let stop = tokio_util::sync::CancellationToken::new();
    let lookups = {
        let (http, url, answered, stop) = (
            app.http.clone(),
            app.url("/api/v1/components?component=cluster-lookup&tag=v1&architecture=amd64"),
            Arc::clone(&answered),
            stop.clone(),
        );
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let asked = http.get(&url).bearer_auth(ADMIN_KEY).timeout(Duration::from_secs(10)).send().await;
                if asked.is_ok_and(|response| response.status() == 200) {
                    answered.lock().unwrap().push(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let run = std::process::id();
    let mut ids = Vec::new();
    for n in 0..4 {
        let component = format!("cluster{n}-{run}");
        ids.push(
            submit(&app, &component, &format!("FROM busybox\nRUN sleep 2 && echo {component} > /x\n"), "amd64").await,
        );
    }
    // Mid-builds: once a worker runs one of them, the node leading the jobs stream goes, as a host that
    // loses power.
    let deadline = Instant::now() + Duration::from_secs(60);
    let running = loop {
        let mut running = Vec::new();
        for build_id in &ids {
            let record: Value = app.get(&format!("/api/v1/builds/{build_id}")).await.json().await.unwrap_or_default();
            if record["status"] == "running" {
                running.push(build_id.clone());
            }
        }
        if !running.is_empty() {
            break running;
        }
        assert!(Instant::now() < deadline, "no build started within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let leader = leader_of(&app, "ARTIFACTS_JOBS").await;
    let node = app.nodes_mut().find(|node| node.name() == leader).expect("the leader is one of the nodes");
    node.stop().await;
    let (killed_at, killed_on) = (Instant::now(), time::OffsetDateTime::now_utc());
    // Submissions go on while the cluster elects another leader.
    for n in 4..6 {
        let component = format!("cluster{n}-{run}");
        ids.push(
            submit(&app, &component, &format!("FROM busybox\nRUN sleep 1 && echo {component} > /x\n"), "amd64").await,
        );
    }
    for build_id in &ids {
        let record = finished(&app, build_id).await;
        assert_eq!(record["status"], "succeeded", "{record}");
        if running.contains(build_id) {
            // It ran when the node went, and ended after.
            let finished_at = time::OffsetDateTime::parse(
                record["finishedAt"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap();
            assert!(finished_at > killed_on, "build {build_id} was running when the node was killed: {record}");
        }
    }
    stop.cancel();
    lookups.await.unwrap();

    // Nothing doubled: one build per submission, each component with one image version.
    let listed = listing(&app, "/api/v1/builds?kind=image&limit=100").await;
    let builds = listed["builds"].as_array().unwrap();
    assert_eq!(builds.len(), ids.len(), "one build per submission: {listed}");
    for n in 0..ids.len() {
        let listed = listing(&app, &format!("/api/v1/catalog/images?component=cluster{n}-{run}")).await;
        assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");
    }
    let answered = answered.lock().unwrap();
    let pause = answered.windows(2).map(|pair| pair[1] - pair[0]).max().unwrap();
    let after_kill = answered.iter().filter(|at| **at > killed_at).count();
    println!(
        "longest pause of lookups with node {leader} killed: {:.2} s ({} lookups)",
        pause.as_secs_f64(),
        answered.len()
    );
    assert!(after_kill > 10, "lookups answered after the kill: {after_kill}");
    // The target BENCHMARKS.md states (under 5 s), not the request timeout's 10 s.
    assert!(pause < Duration::from_secs(5), "lookups paused {pause:?}");
}

#[tokio::test]
async fn a_worker_host_killed_mid_build_hands_the_build_to_the_other_host() {
    let (app, _registry) = cluster_app().await;
    let mut engines = vec![DockerEngine::start().await, DockerEngine::start().await];
    for engine in &engines {
        engine.load_busybox(Architecture::Amd64).await;
    }
    let mut workers = [worker(&app, Some(&engines[0]), "amd64").await, worker(&app, Some(&engines[1]), "amd64").await];
    let component = format!("hostloss-{}", std::process::id());
    let build_id =
        submit(&app, &component, &format!("FROM busybox\nRUN sleep 6 && echo {component} > /done\n"), "amd64").await;

    // The host running it is the one whose engine runs the step (BuildKit runs it as no container).
    let deadline = Instant::now() + Duration::from_secs(60);
    let running_on = loop {
        assert!(Instant::now() < deadline, "no host started the build");
        let found = engines.iter().position(|engine| engine.runs("sleep 6 && echo"));
        if let Some(n) = found {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    workers[running_on].kill().await.expect("SIGKILL");
    engines[running_on].kill();

    let record = finished(&app, &build_id).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    assert_eq!(record["attempts"], 2, "the other host built it once more: {record}");
    let (lines, end) = app.follow_logs(&build_id).await;
    assert_eq!(end, "succeeded");
    assert!(lines.iter().any(|line| line.contains("attempt 2 of 3")), "{lines:#?}");
}

#[tokio::test]
async fn an_image_built_for_amd64_and_arm64_is_one_manifest_list_that_docker_pulls_per_platform() {
    let (app, registry) = cluster_app().await;
    let amd64 = DockerEngine::start().await;
    amd64.load_busybox(Architecture::Amd64).await;
    let arm64 = DockerEngine::start().await;
    arm64.load_busybox(Architecture::Arm64).await;
    let _native = worker(&app, Some(&amd64), "amd64").await;
    let _emulated = worker(&app, Some(&arm64), "arm64").await;

    let component = format!("multiarch-{}", std::process::id());
    let dockerfile = "FROM busybox\nRUN uname -m > /arch\nCMD [\"cat\", \"/arch\"]\n";
    let on_amd64 = submit(&app, &component, dockerfile, "amd64").await;
    let on_arm64 = submit(&app, &component, dockerfile, "arm64").await;
    for build_id in [&on_amd64, &on_arm64] {
        let record = finished(&app, build_id).await;
        assert_eq!(record["status"], "succeeded", "{record}");
    }
    let (lines, _) = app.follow_logs(&on_arm64).await;
    assert!(lines.iter().any(|line| line.contains("linux/arm64 (under QEMU emulation)")), "{lines:#?}");

    let repository = format!("{component}-main-image");
    let list: Value = app
        .http
        .get(format!("http://{}/v2/{repository}/manifests/latest", registry.address))
        .header("Accept", "application/vnd.docker.distribution.manifest.list.v2+json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut platforms: Vec<&str> =
        list["manifests"].as_array().unwrap().iter().map(|m| m["platform"]["architecture"].as_str().unwrap()).collect();
    platforms.sort_unstable();
    assert_eq!(platforms, ["amd64", "arm64"], "{list}");

    // `docker pull` of the neutral tag picks the platform asked for, and its binaries are arm64's.
    let image = format!("{}/{repository}:latest", registry.address);
    let puller = DockerEngine::start().await;
    puller.docker(&["pull", "--platform", "linux/arm64", &image]).await;
    assert_eq!(puller.docker(&["image", "inspect", "-f", "{{.Architecture}}", &image]).await.trim(), "arm64");
    assert_eq!(puller.docker(&["run", "--rm", "--network", "none", &image]).await.trim(), "aarch64");
    puller.docker(&["pull", "--platform", "linux/amd64", &image]).await;
    assert_eq!(puller.docker(&["run", "--rm", "--network", "none", &image]).await.trim(), "x86_64");
}

#[tokio::test]
async fn artifacts_up_with_a_local_cluster_replicates_everything_and_builds_through_a_lost_node() {
    artifacts_tests::require_docker().await;
    let stack = UpStack::start_cluster(3, &[]).await;
    stack.wait_ready(Duration::from_secs(60)).await;
    let nodes: Vec<u32> =
        stack.processes().into_iter().filter(|(_, name)| name == "nats-server").map(|(pid, _)| pid).collect();
    assert_eq!(nodes.len(), 3, "{:?}", stack.processes());

    // Every stream (buckets and object stores are streams too) has a replica on each node.
    let password = std::fs::read_to_string(stack.data.path().join("nats-service-password")).unwrap();
    let nats = async_nats::ConnectOptions::with_user_and_password("service".into(), password.trim().into())
        .connect(format!("127.0.0.1:{}", stack.nats_port))
        .await
        .expect("the service user connects");
    let jetstream = async_nats::jetstream::new(nats);
    let mut streams = jetstream.stream_names();
    let mut names = Vec::new();
    while let Some(name) = streams.next().await {
        let name = name.unwrap();
        let replicas = jetstream.get_stream(&name).await.unwrap().info().await.unwrap().config.num_replicas;
        assert_eq!(replicas, 3, "{name}");
        names.push(name);
    }
    assert!(names.iter().any(|name| name == "ARTIFACTS_JOBS"), "{names:?}");

    let run = std::process::id();
    let before = stack.submit_image(&format!("upcluster-a-{run}"), "FROM busybox\nRUN echo a > /a\n").await;
    let record = stack.wait_for(&before, Duration::from_secs(120), |r| r["status"] == "succeeded").await;
    assert!(record.is_some(), "{}", stack.log(&before).await);

    // A node lost for good (up restarts it; the stack must not need it meanwhile).
    // SAFETY: kill(2) on a child process of the stack; it touches no memory of this process.
    unsafe { libc::kill(nodes[0] as i32, libc::SIGKILL) };
    let after = loop {
        let form = reqwest::multipart::Form::new()
            .text("dockerfile", "FROM busybox\nRUN echo b > /b\n")
            .text("component", format!("upcluster-b-{run}"))
            .text("branch", "main")
            .text("architecture", "amd64");
        let answer = stack.http.post(stack.url("/api/v1/images")).bearer_auth(&stack.admin_key).multipart(form);
        match answer.send().await {
            Ok(answer) if answer.status() == 202 => break answer.json::<Value>().await.unwrap(),
            // A 503 while the cluster elects leaders says to retry.
            Ok(answer) => assert_eq!(answer.status(), 503),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let after = after["buildId"].as_str().unwrap().to_owned();
    let record = stack.wait_for(&after, Duration::from_secs(120), |r| r["status"] == "succeeded").await;
    assert!(record.is_some(), "{}", stack.log(&after).await);
    let found = stack.get(&format!("/api/v1/images?component=upcluster-a-{run}&branch=main&architecture=amd64")).await;
    assert!(found.is_some_and(|image| image["buildId"] == before.as_str()), "the first image is still found");
}
