//! Benchmark: the stack on a 3-node NATS cluster with build workers on hosts of their own (each a
//! `dockerd` with its own socket and data root), in one run:
//!
//! 1. builds per minute with one worker host and with two, for builds that wait (`RUN sleep`), so
//!    that two cores can show what a second host adds;
//! 2. lookup p50 through the gateway and as a raw NATS request/reply to the lookup function, on one
//!    nats-server and on the cluster;
//! 3. the longest pause of lookups while the node leading the components bucket's stream is killed.
//!
//! Prints Markdown tables for BENCHMARKS.md.
//!
//!     cargo build --release --workspace --bins
//!     cargo run --release -p artifacts-tests --bin bench-cluster [-- BUILDS LOOKUPS]

use std::time::{Duration, Instant};

use artifacts_schemas::Architecture;
use artifacts_tests::cluster::{cluster_app_with, finished, leader_of, submit, worker_with};
use artifacts_tests::engines::DockerEngine;
use artifacts_tests::{key_header, TestApp, ADMIN_KEY};

/// How long each benchmark build waits, as a build waiting on a download or a test server would.
const BUILD_WAIT_SECS: u64 = 6;

const LOOKUP: &str = "/api/v1/components?component=bench-lookup&tag=v1&architecture=amd64";
const LOOKUP_REQUEST: &str = r#"{"component":"bench-lookup","tag":"v1","architecture":"amd64"}"#;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1).map(|n| n.parse::<usize>().expect("counts"));
    let (builds, lookups) = (args.next().unwrap_or(8), args.next().unwrap_or(2000));

    // Tens of thousands of lookups a minute with one key: no rate limit.
    let unlimited = |settings: &mut artifacts_runtime::Settings| settings.gateway.rate_limit_per_minute = 0;
    let single = TestApp::spawn_without_builder(unlimited).await;
    single.store_component("bench-lookup", "v1", "https://example.com/x.git", &[], true).await;
    let (mut cluster, _registry) = cluster_app_with(unlimited).await;
    cluster.store_component("bench-lookup", "v1", "https://example.com/x.git", &[], true).await;

    // 1. Builds per minute, one host then two; each host builds one at a time (build.slots = 1).
    let engines = [DockerEngine::start().await, DockerEngine::start().await];
    for engine in &engines {
        engine.load_busybox(Architecture::Amd64).await;
    }
    let one_host = {
        let _worker = worker_with(&cluster, Some(&engines[0]), "amd64", &[("ARTIFACTS__BUILD__SLOTS", "1")]).await;
        builds_per_minute(&cluster, "one", builds).await
    };
    let two_hosts = {
        let _first = worker_with(&cluster, Some(&engines[0]), "amd64", &[("ARTIFACTS__BUILD__SLOTS", "1")]).await;
        let _second = worker_with(&cluster, Some(&engines[1]), "amd64", &[("ARTIFACTS__BUILD__SLOTS", "1")]).await;
        builds_per_minute(&cluster, "two", builds).await
    };
    println!("### Builds per minute ({builds} builds, each `RUN sleep {BUILD_WAIT_SECS}`, one at a time per host)\n");
    println!("| worker hosts | builds/min | vs one host |");
    println!("|---|---|---|");
    println!("| 1 | {one_host:.1} | 1.00x |");
    println!("| 2 | {two_hosts:.1} | {:.2}x |\n", two_hosts / one_host);

    // 2. Lookup p50, one server against the cluster.
    let single_raw = p50(lookups, || raw_lookup(&single)).await;
    let single_http = p50(lookups, || http_lookup(&single)).await;
    let cluster_raw = p50(lookups, || raw_lookup(&cluster)).await;
    let cluster_http = p50(lookups, || http_lookup(&cluster)).await;
    println!("### Lookup p50 ({lookups} sequential lookups of a stored component)\n");
    println!("| lookup | one nats-server ms | 3-node cluster ms | cluster vs one |");
    println!("|---|---|---|---|");
    for (name, one, three) in [
        ("raw NATS request/reply to the lookup function", single_raw, cluster_raw),
        ("GET /api/v1/components through the gateway", single_http, cluster_http),
    ] {
        println!(
            "| {name} | {:.3} | {:.3} | {:.2}x |",
            one.as_secs_f64() * 1e3,
            three.as_secs_f64() * 1e3,
            three.as_secs_f64() / one.as_secs_f64()
        );
    }
    println!();

    // 3. The longest pause of lookups while the components stream's leader goes, as a host losing power.
    let stream = "KV_artifacts_components".to_owned();
    let leader = leader_of(&cluster, &stream).await;
    let mut answered = vec![Instant::now()];
    let mut failed = std::collections::BTreeMap::<String, usize>::new();
    let started = Instant::now();
    let mut killed = false;
    while started.elapsed() < Duration::from_secs(20) {
        if !killed && started.elapsed() > Duration::from_secs(2) {
            cluster.nodes_mut().find(|node| node.name() == leader).expect("the leader is a node").stop().await;
            killed = true;
        }
        let asked = cluster.http.get(cluster.url(LOOKUP)).bearer_auth(ADMIN_KEY).timeout(Duration::from_secs(10));
        match asked.send().await {
            Ok(response) if response.status() == 200 => answered.push(Instant::now()),
            Ok(response) => {
                let status = response.status().as_u16();
                let said: serde_json::Value = response.json().await.unwrap_or_default();
                *failed.entry(format!("{status} {}", said["errorMessage"].as_str().unwrap_or(""))).or_default() += 1;
            }
            Err(err) => *failed.entry(format!("no answer: {err}")).or_default() += 1,
        }
    }
    let pause = answered.windows(2).map(|pair| pair[1] - pair[0]).max().expect("answers");
    println!("### Lookups while the node leading `{stream}` is killed (20 s of back-to-back lookups)\n");
    println!("| longest pause s | lookups answered | lookups failed |");
    println!("|---|---|---|");
    println!("| {:.2} | {} | {} |\n", pause.as_secs_f64(), answered.len() - 1, failed.values().sum::<usize>());
    for (failure, count) in failed {
        println!("- {count} x {failure}");
    }
}

/// Submits `builds` distinct waiting builds at once and answers how many finished per minute.
async fn builds_per_minute(app: &TestApp, hosts: &str, builds: usize) -> f64 {
    let run = std::process::id();
    let started = Instant::now();
    let mut ids = Vec::new();
    for n in 0..builds {
        let component = format!("bench-{hosts}-{n}-{run}");
        let dockerfile = format!("FROM busybox\nRUN sleep {BUILD_WAIT_SECS} && echo {component} > /x\n");
        ids.push(submit(app, &component, &dockerfile, "amd64").await);
    }
    for build_id in &ids {
        let record = finished(app, build_id).await;
        assert_eq!(record["status"], "succeeded", "{record}");
    }
    builds as f64 * 60.0 / started.elapsed().as_secs_f64()
}

async fn p50<F, Fut>(requests: usize, one: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    // Warm: connections open, the lookup's caches filled.
    for _ in 0..50 {
        one().await;
    }
    let mut latencies = Vec::with_capacity(requests);
    for _ in 0..requests {
        let started = Instant::now();
        one().await;
        latencies.push(started.elapsed());
    }
    latencies.sort_unstable();
    latencies[latencies.len() / 2]
}

async fn raw_lookup(app: &TestApp) {
    let subject = app.settings.subjects().endpoint(artifacts_schemas::Endpoint::ComponentGet);
    let reply = app
        .nats
        .client
        .request_with_headers(subject, key_header(ADMIN_KEY), LOOKUP_REQUEST.into())
        .await
        .expect("the lookup function answers");
    assert!(String::from_utf8_lossy(&reply.payload).contains("bench-lookup"), "{reply:?}");
}

async fn http_lookup(app: &TestApp) {
    let response = app.http.get(app.url(LOOKUP)).bearer_auth(ADMIN_KEY).send().await.expect("the gateway answers");
    assert_eq!(response.status(), 200);
}
