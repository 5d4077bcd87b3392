//! Benchmark: end-to-end image build through the service (POST /api/v1/images?wait -> succeeded, which
//! includes queueing, the build, tagging, pushing both tags and the records) against `docker build` +
//! `docker push` by the CLI, for the same Dockerfile, in one run against the same engine and registry.
//! Every iteration changes the `RUN` line so neither side gets it from the layer cache.
//!
//!     cargo run --release -p artifacts-tests --bin bench-image-build [-- ITERATIONS]

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use artifacts_tests::{docker, require_docker, Registry, TestApp, ADMIN_KEY};

fn dockerfile(nonce: &str) -> String {
    format!("FROM busybox\nRUN echo {nonce} > /nonce && sleep 1\nCMD cat /nonce\n")
}

async fn cli_build_and_push(registry: &str, nonce: &str) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), dockerfile(nonce)).unwrap();
    let image = format!("{registry}/bench-cli-main-image:{nonce}");
    let started = Instant::now();
    let build = tokio::process::Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "--quiet", "--network", "none", "-t", &image])
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    assert!(build.status.success(), "{}", String::from_utf8_lossy(&build.stderr));
    docker(&["push", "--quiet", &image]).await;
    started.elapsed()
}

async fn service_build(app: &TestApp, nonce: &str) -> Duration {
    let body =
        json!({"dockerfile": dockerfile(nonce), "component": "bench-svc", "branch": "main", "architecture": "amd64"});
    let started = Instant::now();
    let response =
        app.http.post(app.url("/api/v1/images?wait=600")).bearer_auth(ADMIN_KEY).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let record: Value = response.json().await.unwrap();
    assert_eq!(record["status"], "succeeded", "{record}");
    started.elapsed()
}

fn mean(samples: &[Duration]) -> f64 {
    samples.iter().map(Duration::as_secs_f64).sum::<f64>() / samples.len() as f64
}

#[tokio::main]
async fn main() {
    let iterations: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(5);
    require_docker().await;
    let registry = Registry::start().await;
    let address = registry.address.clone();
    let app = TestApp::spawn_with(|s| s.registry.address = address).await;
    let run = std::process::id();
    // Warm-up: the base image's layers reach the registry once for each side.
    cli_build_and_push(&registry.address, &format!("warm-{run}")).await;
    service_build(&app, &format!("warm-{run}")).await;

    let (mut cli, mut service) = (Vec::new(), Vec::new());
    for i in 0..iterations {
        cli.push(cli_build_and_push(&registry.address, &format!("cli-{run}-{i}")).await);
        service.push(service_build(&app, &format!("svc-{run}-{i}")).await);
    }
    let (cli_mean, service_mean) = (mean(&cli), mean(&service));
    println!("| path | builds | mean s | min s | max s | vs docker CLI |");
    println!("|---|---|---|---|---|---|");
    for (name, samples, m) in [
        ("docker build + docker push (CLI)", &cli, cli_mean),
        ("POST /images?wait to succeeded", &service, service_mean),
    ] {
        let min = samples.iter().min().unwrap().as_secs_f64();
        let max = samples.iter().max().unwrap().as_secs_f64();
        println!(
            "| {name} | {} | {m:.3} | {min:.3} | {max:.3} | {:+.1}% |",
            samples.len(),
            (m / cli_mean - 1.0) * 100.0
        );
    }
}
