//! Benchmark: `GET /api/v1/images` through the gateway against a raw NATS request/reply to the same
//! lookup function, in one run on one nats-server. Prints a Markdown table for BENCHMARKS.md.
//!
//!     cargo run --release -p artifacts-tests --bin bench-lookup [-- REQUESTS]

use std::time::{Duration, Instant};

use futures::future::join_all;

use artifacts_tests::{TestApp, ADMIN_KEY};

const PAYLOAD: &str = r#"{"component":"libfoo","branch":"main","architecture":"amd64"}"#;
const PATH: &str = "/api/v1/images?component=libfoo&branch=main&architecture=amd64";
const CONCURRENCY: usize = 32;

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

async fn raw_nats(app: &TestApp, requests: usize, concurrency: usize) -> Run {
    timed(requests, concurrency, || async {
        let reply = app.nats.client.request("artifacts.image.get", PAYLOAD.into()).await.expect("reply");
        assert!(!reply.payload.is_empty());
    })
    .await
}

async fn gateway(app: &TestApp, requests: usize, concurrency: usize) -> Run {
    let url = app.url(PATH);
    timed(requests, concurrency, || async {
        let response = app.http.get(&url).bearer_auth(ADMIN_KEY).send().await.expect("answer");
        assert_eq!(response.status(), 404);
        response.bytes().await.expect("body");
    })
    .await
}

async fn timed<F, Fut>(requests: usize, concurrency: usize, one: F) -> Run
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    let per_worker = requests / concurrency;
    let workers = (0..concurrency).map(|_| async {
        let mut latencies = Vec::with_capacity(per_worker);
        for _ in 0..per_worker {
            let t = Instant::now();
            one().await;
            latencies.push(t.elapsed());
        }
        latencies
    });
    let latencies = join_all(workers).await.into_iter().flatten().collect();
    Run { latencies, elapsed: started.elapsed() }
}

fn row(name: &str, run: &Run, baseline: &Run) {
    println!(
        "| {name} | {} | {:.0} | {:.3} | {:.3} | {:.2}x |",
        run.latencies.len(),
        run.per_second(),
        run.percentile(0.5).as_secs_f64() * 1e3,
        run.percentile(0.99).as_secs_f64() * 1e3,
        baseline.per_second() / run.per_second(),
    );
}

#[tokio::main]
async fn main() {
    let requests: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(20_000);
    let app = TestApp::spawn().await;
    // Warm up connections and caches on both paths.
    raw_nats(&app, 1_000, 8).await;
    gateway(&app, 1_000, 8).await;

    println!("| path | requests | req/s | p50 ms | p99 ms | time vs raw NATS |");
    println!("|---|---|---|---|---|---|");
    for concurrency in [1, CONCURRENCY] {
        let raw = raw_nats(&app, requests, concurrency).await;
        let http = gateway(&app, requests, concurrency).await;
        row(&format!("raw NATS request/reply, {concurrency} in flight"), &raw, &raw);
        row(&format!("GET /images via gateway, {concurrency} in flight"), &http, &raw);
    }
}
