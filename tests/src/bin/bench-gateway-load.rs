//! Benchmark: the gateway's memory under many and hostile connections, read from `/proc` of a gateway
//! running as its own process, against its idle memory in the same run.
//!
//! 1. 1,000 concurrent keep-alive connections each make a request, stay open, then all close: resident
//!    memory after they are gone.
//! 2. 10,000 connections that send nothing or half a request head stay open (until the head timeout):
//!    resident memory while they are open, and how long `/healthz` takes on a new connection meanwhile.
//! 3. 60 parallel 60 MiB webhook posts without a signature, then 60 parallel 5 MiB posts with a made-up
//!    one (read, up to the budget of bodies held at once, to find it wrong): peak resident memory.
//!
//! Run it with
//!
//!     cargo build --release --workspace --bins
//!     cargo run --release -p artifacts-tests --bin bench-gateway-load
//!
//! Needs `ulimit -n` above 10,100 (the benchmark raises its soft limit to the hard one).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use artifacts_tests::GatewayProcess;
use artifacts_tests::TestApp;

const IDLE_CONNECTIONS: usize = 10_000;

/// Raises this process's open-file limit to its hard limit.
fn raise_file_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Reads an answer's status line, then the rest until the head ends.
async fn status(stream: &mut TcpStream) -> u16 {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0)
}

/// `GET /healthz` on a new connection: how long until the answer's head.
async fn healthz(gateway: &GatewayProcess) -> Duration {
    let started = Instant::now();
    let mut stream = TcpStream::connect(gateway.address()).await.expect("the gateway accepts");
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    assert_eq!(status(&mut stream).await, 200);
    started.elapsed()
}

async fn keep_alive_connections(gateway: &GatewayProcess) -> (f64, f64) {
    let mut connections = Vec::with_capacity(1_000);
    for _ in 0..1_000 {
        let mut stream = TcpStream::connect(gateway.address()).await.expect("the gateway accepts");
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        connections.push(stream);
    }
    for stream in &mut connections {
        assert_eq!(status(stream).await, 200);
    }
    let open = gateway.rss_mib();
    drop(connections);
    settle().await;
    (open, gateway.rss_mib())
}

/// Long enough for the gateway to see the connections closed and give their memory back.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(3)).await;
}

async fn idle_connections(gateway: &GatewayProcess) -> (f64, Duration, f64) {
    let mut connections = Vec::with_capacity(IDLE_CONNECTIONS);
    let mut slowest = Duration::ZERO;
    for i in 0..IDLE_CONNECTIONS {
        let mut stream = TcpStream::connect(gateway.address()).await.expect("the gateway accepts");
        if i % 2 == 0 {
            stream.write_all(b"GET /api/v1/images HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
        }
        connections.push(stream);
        if i % 1_000 == 999 {
            slowest = slowest.max(healthz(gateway).await);
        }
    }
    for _ in 0..20 {
        slowest = slowest.max(healthz(gateway).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss = gateway.rss_mib();
    drop(connections);
    settle().await;
    (rss, slowest, gateway.rss_mib())
}

/// Posts `size` bytes to the GitHub webhook, unsigned or with a made-up signature; answers the status
/// (sending stops at the answer).
async fn webhook(address: String, size: usize, made_up_signature: bool) -> u16 {
    let mut stream = TcpStream::connect(address).await.expect("the gateway accepts");
    let signature =
        if made_up_signature { format!("X-Hub-Signature-256: sha256={}\r\n", "0".repeat(64)) } else { String::new() };
    let head = format!(
        "POST /api/v1/hooks/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\n{signature}Content-Length: {size}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let sending = async move {
        let chunk = vec![b'{'; 1024 * 1024];
        for _ in 0..size.div_ceil(chunk.len()) {
            if writer.write_all(&chunk[..chunk.len().min(size)]).await.is_err() {
                return;
            }
        }
    };
    let answering = async move {
        let mut buffer = [0u8; 512];
        let n = reader.read(&mut buffer).await.unwrap_or(0);
        String::from_utf8_lossy(&buffer[..n]).split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0)
    };
    let (_, code) = tokio::join!(sending, answering);
    code
}

#[tokio::main]
async fn main() {
    raise_file_limit();
    let app = TestApp::spawn().await;
    // The cap leaves room above the 10,000 held connections for the health checks.
    let gateway = GatewayProcess::start(
        &app,
        &[("ARTIFACTS__GATEWAY__MAX_CONNECTIONS", "10100"), ("ARTIFACTS__HOOKS__GITHUB__SECRET", "bench-secret")],
    )
    .await;
    healthz(&gateway).await;
    let idle = gateway.rss_mib();

    let (while_open, after) = keep_alive_connections(&gateway).await;
    let (held, slowest, released) = idle_connections(&gateway).await;

    gateway.reset_peak_rss();
    let started = Instant::now();
    let posts = (0..60).map(|_| tokio::spawn(webhook(gateway.address(), 60 * 1024 * 1024, false)));
    let codes: Vec<u16> = futures::future::join_all(posts).await.into_iter().map(|code| code.unwrap()).collect();
    let took = started.elapsed();
    assert!(codes.iter().all(|code| *code == 401), "every unsigned post is refused: {codes:?}");
    let peak = gateway.peak_rss_mib();

    // A made-up signature passes the header checks: bodies up to the cap are read to find it wrong.
    settle().await;
    gateway.reset_peak_rss();
    let signed_started = Instant::now();
    let posts = (0..60).map(|_| tokio::spawn(webhook(gateway.address(), 5 * 1024 * 1024, true)));
    let codes: Vec<u16> = futures::future::join_all(posts).await.into_iter().map(|code| code.unwrap()).collect();
    let signed_took = signed_started.elapsed();
    assert!(codes.iter().all(|code| matches!(code, 401 | 503)), "every made-up signature is refused: {codes:?}");
    let refused = codes.iter().filter(|code| **code == 503).count();
    let signed_peak = gateway.peak_rss_mib();

    println!("| measure | gateway RSS MiB | target |");
    println!("|---|---|---|");
    println!("| idle, after one request | {idle:.1} | |");
    println!("| 1,000 keep-alive connections open | {while_open:.1} | |");
    println!("| after the 1,000 closed | {after:.1} | < 64 |");
    println!(
        "| {IDLE_CONNECTIONS} idle or half-head connections open | {held:.1} | < 256 (slowest /healthz meanwhile: {:.1} ms, target < 50) |",
        slowest.as_secs_f64() * 1e3
    );
    println!("| after the {IDLE_CONNECTIONS} closed | {released:.1} | |");
    println!(
        "| peak through 60 parallel 60 MiB unsigned webhook posts (all 401, {:.2} s) | {peak:.1} | < 128 |",
        took.as_secs_f64()
    );
    println!(
        "| peak through 60 parallel 5 MiB webhook posts with a made-up signature ({} read and 401, {refused} 503 at once, {:.2} s) | {signed_peak:.1} | |",
        60 - refused,
        signed_took.as_secs_f64()
    );
}
