//! Benchmark: `GET /api/v1/images` through the gateway against a raw NATS request/reply to the same
//! lookup function with the same key, in one run on one nats-server. The gateway runs as its own
//! process (as `artifacts up` runs it) with no rate limit, and the benchmark uses a key of its own.
//! Prints a Markdown table for BENCHMARKS.md.
//!
//!     cargo build --release --workspace --bins
//!     cargo run --release -p artifacts-tests --bin bench-lookup [-- REQUESTS]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use artifacts_tests::{key_header, GatewayProcess, TestApp};

const PAYLOAD: &str = r#"{"component":"libfoo","branch":"main","architecture":"amd64"}"#;
const PATH: &str = "/api/v1/images?component=libfoo&branch=main&architecture=amd64";

struct Run {
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Run {
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        sorted[((sorted.len() as f64 - 1.0) * p) as usize]
    }
    fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// `requests` calls of `one`, `concurrency` at a time, each worker a task of its own.
async fn timed<F, Fut>(requests: usize, concurrency: usize, one: F) -> Run
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let one = Arc::new(one);
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let one = Arc::clone(&one);
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(requests / concurrency);
                for _ in 0..requests / concurrency {
                    let t = Instant::now();
                    one().await;
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(requests);
    for worker in workers {
        latencies.extend(worker.await.expect("a worker finishes"));
    }
    Run { latencies, elapsed: started.elapsed() }
}

async fn raw_nats(client: &async_nats::Client, key: &str, requests: usize, concurrency: usize) -> Run {
    let (client, headers) = (client.clone(), key_header(key));
    timed(requests, concurrency, move || {
        let (client, headers) = (client.clone(), headers.clone());
        async move {
            let reply =
                client.request_with_headers("artifacts.image.get", headers, PAYLOAD.into()).await.expect("reply");
            assert!(String::from_utf8_lossy(&reply.payload).contains("not_found"), "{reply:?}");
        }
    })
    .await
}

async fn gateway(http: &reqwest::Client, url: &str, key: &str, requests: usize, concurrency: usize) -> Run {
    let (http, url, key) = (http.clone(), url.to_owned(), key.to_owned());
    timed(requests, concurrency, move || {
        let request = http.get(&url).bearer_auth(&key);
        async move {
            let response = request.send().await.expect("answer");
            assert_eq!(response.status(), 404);
            response.bytes().await.expect("body");
        }
    })
    .await
}

fn row(name: &str, run: &Run, baseline: &Run) {
    println!(
        "| {name} | {} | {:.0} | {:.3} | {:.3} | {:.2}x | {:.2}x |",
        run.latencies.len(),
        run.per_second(),
        run.percentile(0.5).as_secs_f64() * 1e3,
        run.percentile(0.99).as_secs_f64() * 1e3,
        run.per_second() / baseline.per_second(),
        run.percentile(0.5).as_secs_f64() / baseline.percentile(0.5).as_secs_f64(),
    );
}

#[tokio::main]
async fn main() {
    let requests: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(20_000);
    let app = TestApp::spawn().await;
    let (key, _) = app.create_key(json!({"name": "bench-lookup", "scopes": ["read"]})).await;
    let gateway_process = GatewayProcess::start(&app, &[("ARTIFACTS__GATEWAY__RATE_LIMIT_PER_MINUTE", "0")]).await;
    let url = gateway_process.url(PATH);
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build().expect("HTTP client");
    // Warm up connections and caches on both paths.
    raw_nats(&app.nats.client, &key, 2_000, 8).await;
    gateway(&http, &url, &key, 2_000, 8).await;

    println!("| path | requests | req/s | p50 ms | p99 ms | rate vs raw | p50 vs raw |");
    println!("|---|---|---|---|---|---|---|");
    for concurrency in [1, 64] {
        let raw = raw_nats(&app.nats.client, &key, requests, concurrency).await;
        let http = gateway(&http, &url, &key, requests, concurrency).await;
        row(&format!("raw NATS request/reply, {concurrency} in flight"), &raw, &raw);
        row(&format!("GET /images via gateway, {concurrency} in flight"), &http, &raw);
    }
}
