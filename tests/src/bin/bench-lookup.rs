//! Benchmark: `GET /api/v1/images` through the gateway against a raw NATS request/reply to the same
//! lookup function with the same key, in one run on one nats-server. The gateway runs as its own
//! process (as `artifacts up` runs it) with no rate limit, and the benchmark uses a key of its own.
//! Prints a Markdown table for BENCHMARKS.md.
//!
//!     cargo build --release --workspace --bins
//!     cargo run --release -p artifacts-tests --bin bench-lookup [-- REQUESTS]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

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

/// A keep-alive HTTP/1.1 connection that sends one prepared request at a time and reads the answer by
/// its `Content-Length`: a client as lean as wrk, so the figures are the gateway's, not a client library's.
struct HttpConnection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl HttpConnection {
    async fn open(address: &str) -> Self {
        let stream = TcpStream::connect(address).await.expect("the gateway accepts");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        Self { stream, buffer: Vec::with_capacity(4096) }
    }

    /// Sends `request` and answers the status of the response, read to its end.
    async fn exchange(&mut self, request: &[u8]) -> u16 {
        self.stream.write_all(request).await.expect("the request is sent");
        self.buffer.clear();
        loop {
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await.expect("the answer arrives");
            assert!(n > 0, "the gateway closed the connection");
            self.buffer.extend_from_slice(&chunk[..n]);
            let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
            let head = String::from_utf8_lossy(&self.buffer[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse().ok())
                .expect("answers carry Content-Length");
            if self.buffer.len() >= end + 4 + length {
                return head.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status line");
            }
        }
    }
}

async fn gateway(address: &str, key: &str, requests: usize, concurrency: usize) -> Run {
    let request: Arc<[u8]> =
        format!("GET {PATH} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {key}\r\n\r\n").into_bytes().into();
    let mut connections = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        connections.push(Arc::new(Mutex::new(HttpConnection::open(address).await)));
    }
    let next = Arc::new(AtomicUsize::new(0));
    timed(requests, concurrency, move || {
        // Each worker takes the next idle connection; with one connection per worker none ever waits.
        let connection = Arc::clone(&connections[next.fetch_add(1, Ordering::Relaxed) % connections.len()]);
        let request = Arc::clone(&request);
        async move {
            let status = connection.lock().await.exchange(&request).await;
            assert_eq!(status, 404);
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
    let address = gateway_process.address();
    // Warm up connections and caches on both paths.
    raw_nats(&app.nats.client, &key, 2_000, 8).await;
    gateway(&address, &key, 2_000, 8).await;

    println!("| path | requests | req/s | p50 ms | p99 ms | rate vs raw | p50 vs raw |");
    println!("|---|---|---|---|---|---|---|");
    for concurrency in [1, 64] {
        let raw = raw_nats(&app.nats.client, &key, requests, concurrency).await;
        let http = gateway(&address, &key, requests, concurrency).await;
        row(&format!("raw NATS request/reply, {concurrency} in flight"), &raw, &raw);
        row(&format!("GET /images via gateway, {concurrency} in flight"), &http, &raw);
    }
}
