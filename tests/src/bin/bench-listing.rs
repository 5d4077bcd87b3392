//! Benchmark: `GET /api/v1/builds?component=C&limit=20` with 1,000 and with 100,000 build records, and a
//! push's matching (what the git trigger rebuilds) with 1,000 and 100,000 component records, against the
//! raw read of one record from the key-value bucket in the same run; then the collector's time for
//! 10,000 records. One nats-server, the gateway and lookup in this process. Prints Markdown rows for
//! BENCHMARKS.md.
//!
//!     cargo run --release -p artifacts-tests --bin bench-listing [-- LARGE]

use std::time::{Duration, Instant};

use artifacts_schemas::{BuildKind, BuildStatus};
use artifacts_tests::TestApp;

const REQUESTS: usize = 200;

fn p50(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// Stores builds until `total` exist; every tenth is component `c`'s, the rest spread over 100 others.
async fn fill(app: &TestApp, stored: &mut usize, total: usize) {
    while *stored < total {
        let component = if (*stored).is_multiple_of(10) { "c".to_owned() } else { format!("other-{}", *stored % 100) };
        app.store_build(BuildKind::Component, BuildStatus::Succeeded, &component).await;
        *stored += 1;
    }
}

async fn listing(app: &TestApp) -> Duration {
    let mut samples = Vec::with_capacity(REQUESTS);
    for _ in 0..REQUESTS {
        let started = Instant::now();
        let answer = app.get("/api/v1/builds?component=c&limit=20").await;
        let body: serde_json::Value = answer.json().await.expect("a JSON list");
        assert_eq!(body["builds"].as_array().map(Vec::len), Some(20), "{body}");
        samples.push(started.elapsed());
    }
    p50(samples)
}

async fn raw_get(app: &TestApp, build_id: &str) -> Duration {
    let mut samples = Vec::with_capacity(REQUESTS);
    for _ in 0..REQUESTS {
        let started = Instant::now();
        artifacts_tests::raw_bucket(&app.nats, "builds")
            .await
            .get(build_id)
            .await
            .expect("JetStream answers")
            .expect("the record");
        samples.push(started.elapsed());
    }
    p50(samples)
}

#[tokio::main]
async fn main() {
    let large: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let app = TestApp::spawn_with(|settings| settings.gateway.rate_limit_per_minute = 0).await;
    let mut stored = 0;
    let probe = app.store_build(BuildKind::Image, BuildStatus::Succeeded, "probe").await;
    stored += 1;

    println!(
        "| build records | GET /builds?component=c&limit=20 p50 ms | raw KV get p50 ms | listing vs raw | vs 1,000 |"
    );
    println!("|---|---|---|---|---|");
    let mut first = None;
    for total in [1_000, large] {
        let filling = Instant::now();
        fill(&app, &mut stored, total).await;
        eprintln!("stored {total} records ({:.1}s)", filling.elapsed().as_secs_f64());
        let (listed, raw) = (listing(&app).await, raw_get(&app, probe.as_str()).await);
        let base = *first.get_or_insert(listed);
        println!(
            "| {total} | {:.3} | {:.3} | {:.1}x | {:.2}x |",
            listed.as_secs_f64() * 1e3,
            raw.as_secs_f64() * 1e3,
            listed.as_secs_f64() / raw.as_secs_f64(),
            listed.as_secs_f64() / base.as_secs_f64()
        );
    }

    // A push's matching: the repository pushed to builds 3 of the components; the others come from
    // 1,000 other repositories.
    let app = TestApp::spawn_with(|_| {}).await;
    let probe = app.store_build(BuildKind::Image, BuildStatus::Succeeded, "probe").await;
    let pushed = "https://git.example.com/acme/pushed.git";
    let mut components = 0;
    println!("\n| component records | push matching p50 ms | raw KV get p50 ms | matching vs raw | vs 1,000 |");
    println!("|---|---|---|---|---|");
    let mut first = None;
    for total in [1_000, large] {
        let filling = Instant::now();
        while components < total {
            let url = if components < 3 {
                pushed.to_owned()
            } else {
                format!("https://git.example.com/r{}.git", components % 1000)
            };
            app.store_component(&format!("c-{components}"), "main", &url, &[], true).await;
            components += 1;
        }
        eprintln!("stored {total} component records ({:.1}s)", filling.elapsed().as_secs_f64());
        let mut samples = Vec::with_capacity(REQUESTS);
        for _ in 0..REQUESTS {
            let started = Instant::now();
            let matched = artifacts_git_trigger::matching(&app.nats, pushed, "refs/heads/main").await.expect("matches");
            assert_eq!(matched.components.len(), 3, "{matched:?}");
            samples.push(started.elapsed());
        }
        let matched = p50(samples);
        let raw = raw_get(&app, probe.as_str()).await;
        let base = *first.get_or_insert(matched);
        println!(
            "| {total} | {:.3} | {:.3} | {:.1}x | {:.2}x |",
            matched.as_secs_f64() * 1e3,
            raw.as_secs_f64() * 1e3,
            matched.as_secs_f64() / raw.as_secs_f64(),
            matched.as_secs_f64() / base.as_secs_f64()
        );
    }

    // The collector over a fresh history of 10,000 records of 100 targets, keeping 3 of each.
    let app = TestApp::spawn_with(|settings| settings.retention.gc_interval_secs = 0).await;
    for n in 0..10_000 {
        app.store_build(BuildKind::Component, BuildStatus::Succeeded, &format!("gc-{}", n % 100)).await;
    }
    let mut settings = app.settings.clone();
    settings.retention.keep_successful = 3;
    let started = Instant::now();
    let report = artifacts_gc::collect(&app.nats, &settings, false).await.expect("the collection runs");
    let took = started.elapsed();
    let left = app.get("/api/v1/builds?limit=500").await.json::<serde_json::Value>().await.expect("a list");
    println!(
        "\ncollection of 10000 build records (100 targets, keep 3): {:.1}s, removed {} builds, {} bytes; {} listed after",
        took.as_secs_f64(),
        report.removed.builds,
        report.removed.bytes,
        left["builds"].as_array().map_or(0, Vec::len)
    );
}
