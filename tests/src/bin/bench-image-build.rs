//! Benchmark: end-to-end image build through the service (POST /api/v1/images?wait -> succeeded, which
//! includes queueing, the build, tagging, pushing both tags and the records) against `docker build` +
//! `docker push` by the CLI, for the same Dockerfile, in one run against the same engine and registry.
//! Every iteration changes the `RUN` line so neither side gets it from the layer cache.
//!
//! The service builds with the engine's BuildKit, so it is measured against both CLI paths: the classic
//! builder (`DOCKER_BUILDKIT=0`) and BuildKit (`DOCKER_BUILDKIT=1`, with Debian's 20.10 CLI, which needs no
//! buildx). Then the shared layer cache: on an engine of its own, a cold build of a Dockerfile whose early
//! step takes 10 s, a rebuild with only the last step changed on the same (warm) engine, and the same
//! rebuild after `docker builder prune -af` and removing the images (a worker that never built it).
//!
//!     cargo run --release -p artifacts-tests --bin bench-image-build [-- ITERATIONS]

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use artifacts_schemas::Architecture;
use artifacts_tests::engines::DockerEngine;
use artifacts_tests::{docker, require_docker, Registry, TestApp, ADMIN_KEY};

/// Debian's 20.10 CLI, which talks to the engine's BuildKit itself (a newer CLI wants buildx).
const BUILDKIT_CLI: &str = "/usr/bin/docker";

fn dockerfile(nonce: &str) -> String {
    format!("FROM busybox\nRUN echo {nonce} > /nonce && sleep 1\nCMD cat /nonce\n")
}

async fn cli_build_and_push(registry: &str, nonce: &str, buildkit: bool) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), dockerfile(nonce)).unwrap();
    let image = format!("{registry}/bench-cli-main-image:{nonce}");
    let started = Instant::now();
    let build = tokio::process::Command::new(if buildkit { BUILDKIT_CLI } else { "docker" })
        .env("DOCKER_BUILDKIT", if buildkit { "1" } else { "0" })
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
    service_build_of(app, "bench-svc", &dockerfile(nonce)).await
}

async fn service_build_of(app: &TestApp, component: &str, dockerfile: &str) -> Duration {
    let body = json!({"dockerfile": dockerfile, "component": component, "branch": "main", "architecture": "amd64"});
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
    // RUST_LOG=artifacts_build_image=debug: the stack's log on standard error (each build's phases).
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    }
    require_docker().await;
    let registry = Registry::start().await;
    let address = registry.address.clone();
    let app = TestApp::spawn_with(|s| s.registry.address = address).await;
    let run = std::process::id();
    // Warm-up: the base image's layers reach the registry once for each side.
    cli_build_and_push(&registry.address, &format!("warm-{run}"), false).await;
    cli_build_and_push(&registry.address, &format!("warmbk-{run}"), true).await;
    service_build(&app, &format!("warm-{run}")).await;

    let (mut cli, mut buildkit_cli, mut service) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..iterations {
        cli.push(cli_build_and_push(&registry.address, &format!("cli-{run}-{i}"), false).await);
        buildkit_cli.push(cli_build_and_push(&registry.address, &format!("bk-{run}-{i}"), true).await);
        service.push(service_build(&app, &format!("svc-{run}-{i}")).await);
    }
    let (cli_mean, bk_mean) = (mean(&cli), mean(&buildkit_cli));
    println!("| path | builds | mean s | min s | max s | vs classic CLI | vs BuildKit CLI |");
    println!("|---|---|---|---|---|---|---|");
    for (name, samples) in [
        ("docker build + docker push (CLI, classic builder)", &cli),
        ("DOCKER_BUILDKIT=1 docker build + docker push (CLI)", &buildkit_cli),
        ("POST /images?wait to succeeded (BuildKit)", &service),
    ] {
        let m = mean(samples);
        let min = samples.iter().min().unwrap().as_secs_f64();
        let max = samples.iter().max().unwrap().as_secs_f64();
        println!(
            "| {name} | {} | {m:.3} | {min:.3} | {max:.3} | {:.3}x | {:.3}x |",
            samples.len(),
            m / cli_mean,
            m / bk_mean
        );
    }

    // The shared layer cache, on an engine of its own (its cache is pruned).
    let engine = DockerEngine::start().await;
    engine.load_busybox(Architecture::Amd64).await;
    let (address, host) = (registry.address.clone(), engine.host.clone());
    let worker = TestApp::spawn_with(|s| {
        s.registry.address = address;
        s.docker.host = Some(host);
    })
    .await;
    let slow = |last: &str| {
        format!(
            "FROM busybox\nRUN echo {run} && sleep 10 && echo slow > /slow\nRUN echo {last} > /last\nCMD cat /last\n"
        )
    };
    let forget = || async {
        engine.docker(&["builder", "prune", "-af"]).await;
        let images = engine.docker(&["images", "-q", "--filter", "reference=*/*"]).await;
        for id in images.split_whitespace() {
            engine.docker(&["rmi", "--force", id]).await;
        }
    };
    let component = format!("bench-cache-{run}");
    forget().await;
    let cold = service_build_of(&worker, &component, &slow("first")).await;
    let warm = service_build_of(&worker, &component, &slow("warm")).await;
    forget().await;
    let fresh = service_build_of(&worker, &component, &slow("fresh")).await;
    let s = |d: Duration| d.as_secs_f64();
    println!();
    println!("| build (early step 10 s, then one changed last step) | s | vs cold | vs warm rebuild |");
    println!("|---|---|---|---|");
    println!("| cold (empty engine cache, nothing in the registry) | {:.3} | 1.000x | |", s(cold));
    println!("| rebuild on the warm worker | {:.3} | {:.3}x | 1.000x |", s(warm), s(warm) / s(cold));
    println!(
        "| rebuild on a fresh worker (builder prune -af, images removed) | {:.3} | {:.3}x | {:.3}x |",
        s(fresh),
        s(fresh) / s(cold),
        s(fresh) / s(warm)
    );
}
