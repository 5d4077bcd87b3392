//! Benchmarks of component storage, each against its raw baseline in the same run:
//!
//! 1. Downloading a 1 GiB component through the gateway (a separate `artifacts-gateway` process, whose
//!    peak resident memory is read from /proc) against a raw object-store get of the same object.
//! 2. Storing a component (the worker's path: an uncompressed tar stream, as Docker gives it, checked,
//!    spooled and written again in path order with the commit's time (reproducible), its files hashed for
//!    the SBOM, gzipped and put into the object store) against `tar -czf` of the same directory to a file;
//!    then what signing adds: the SBOM document, the provenance statement and its signature, as a share
//!    of storing (which a build does on top of cloning and running its command).
//!
//!     cargo run --release -p artifacts-tests --bin bench-components [-- DOWNLOAD_MIB [STORE_MIB]]
//!
//! `DOWNLOAD_MIB` 0 skips the download (default 1024); `STORE_MIB` is the output directory's size
//! (default 256; 192 makes a .tar.gz of about 100 MiB).

use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::io::AsyncReadExt;

use artifacts_runtime::archive::Limits;
use artifacts_tests::{noise, GatewayProcess, TestApp, ADMIN_KEY};

fn mib_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / took.as_secs_f64()
}

async fn download(app: &TestApp, size_mib: usize) {
    let size = size_mib * 1024 * 1024;
    let data = noise(size, 7);
    let started = Instant::now();
    let record = app.store_archive("bench-big", "v1", &data).await;
    let put_took = started.elapsed();
    drop(data);
    let object = record.object.clone();

    // The gateway under test runs as its own process, so its memory is its own.
    let gateway = GatewayProcess::start(app, &[]).await;
    let idle_rss = gateway.peak_rss_mib();

    let mut raw_runs = Vec::new();
    let mut gateway_runs = Vec::new();
    for _ in 0..2 {
        let started = Instant::now();
        let mut reader = app.nats.store.object(artifacts_store::Objects::Archives, &object).await.unwrap();
        let mut buffer = vec![0u8; 128 * 1024];
        let mut total = 0u64;
        loop {
            let n = reader.read(&mut buffer).await.unwrap();
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        assert_eq!(total, size as u64);
        raw_runs.push(started.elapsed());

        let url = gateway.url("/api/v1/components/bench-big/v1/amd64/archive");
        let started = Instant::now();
        let response =
            app.http.get(&url).bearer_auth(ADMIN_KEY).timeout(Duration::from_secs(600)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.bytes_stream();
        let mut total = 0u64;
        while let Some(chunk) = body.next().await {
            total += chunk.unwrap().len() as u64;
        }
        assert_eq!(total, size as u64);
        gateway_runs.push(started.elapsed());
    }
    let peak = gateway.peak_rss_mib();
    drop(gateway);
    let best = |runs: &[Duration]| *runs.iter().min().unwrap();
    let (raw, through) = (best(&raw_runs), best(&gateway_runs));
    println!("### Download of a {size_mib} MiB component (best of 2)\n");
    println!("| path | MiB/s | share of raw |");
    println!("|---|---|---|");
    println!("| raw object-store get | {:.0} | 100% |", mib_per_s(size as u64, raw));
    println!(
        "| GET .../archive through the gateway | {:.0} | {:.0}% |",
        mib_per_s(size as u64, through),
        100.0 * raw.as_secs_f64() / through.as_secs_f64()
    );
    println!(
        "\ngateway peak RSS: {peak:.1} MiB (idle: {idle_rss:.1} MiB); object-store put took {:.1}s\n",
        put_took.as_secs_f64()
    );
}

/// A directory of mixed content: text (compressible) and noise.
fn make_tree(root: &std::path::Path, size_mib: usize) {
    let text: Vec<u8> = (0..)
        .map(|i: u32| format!("line {i} of a build log, with some words repeated\n"))
        .flat_map(String::into_bytes)
        .take(1 << 20)
        .collect();
    for i in 0..size_mib {
        let dir = root.join(format!("d{}", i % 16));
        std::fs::create_dir_all(&dir).unwrap();
        let content = if i % 2 == 0 { text.clone() } else { noise(1 << 20, i as u64) };
        std::fs::write(dir.join(format!("f{i}.bin")), content).unwrap();
    }
}

async fn store(app: &TestApp, size_mib: usize) {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("out");
    make_tree(&tree, size_mib);

    let started = Instant::now();
    let status = tokio::process::Command::new("tar")
        .arg("-czf")
        .arg(work.path().join("out.tar.gz"))
        .arg("-C")
        .arg(work.path())
        .arg("out")
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let tar_took = started.elapsed();
    let tar_size = std::fs::metadata(work.path().join("out.tar.gz")).unwrap().len();

    let started = Instant::now();
    let mut child = tokio::process::Command::new("tar")
        .arg("-cf")
        .arg("-")
        .arg("-C")
        .arg(work.path())
        .arg("out")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stream = tokio_util::io::ReaderStream::with_capacity(child.stdout.take().unwrap(), 64 * 1024)
        .map(|chunk| chunk.map_err(|err| bollard::errors::Error::IOError { err }));
    let limits = Limits { max_bytes: u64::MAX, max_entries: u64::MAX };
    // The worker's path as a build takes it: reproducible (sorted, the commit's time), SBOM files hashed.
    let commit_time = 1_700_000_000;
    let stored = artifacts_build_component::output::store(
        Box::pin(stream),
        &app.nats.store,
        "bench/store.tar.gz",
        limits,
        commit_time,
    )
    .await
    .unwrap_or_else(|_| panic!("storing failed"));
    child.wait().await.unwrap();
    let ours_took = started.elapsed();

    // What the worker does next: the SBOM of every file, the statement, the signature.
    let key = artifacts_provenance::SigningKey::generate();
    let record = bench_record(&stored);
    let job = artifacts_schemas::ComponentJob {
        build_id: record.build_id.clone(),
        url: record.url.clone(),
        component: record.component.clone(),
        tag: record.tag.clone(),
        architecture: record.architecture,
        dependents: Vec::new(),
        component_patterns: None,
        trigger: None,
        rebuilt_for_push: Vec::new(),
        replaces_version: false,
    };
    let builder = artifacts_provenance::spdx::ImageReference {
        reference: "busybox:latest".into(),
        digest: format!("sha256:{}", "b".repeat(64)),
    };
    let started = Instant::now();
    let now = time::OffsetDateTime::now_utc();
    let signed = artifacts_build_component::attest::sign(
        &key,
        "http://127.0.0.1:8080",
        &job,
        &record,
        builder,
        &stored.files,
        now,
    )
    .unwrap_or_else(|_| panic!("signing failed"));
    let signing_took = started.elapsed();

    println!("### Storing a {size_mib} MiB output directory\n");
    println!("| path | seconds | MiB/s (input) | .tar.gz MiB | time vs tar -czf |");
    println!("|---|---|---|---|---|");
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "| tar -czf to a file | {:.2} | {:.0} | {:.1} | 1.00x |",
        tar_took.as_secs_f64(),
        size_mib as f64 / tar_took.as_secs_f64(),
        mib(tar_size)
    );
    println!(
        "| tar stream -> rewrite -> gzip -> object store | {:.2} | {:.0} | {:.1} | {:.2}x |",
        ours_took.as_secs_f64(),
        size_mib as f64 / ours_took.as_secs_f64(),
        mib(stored.size),
        ours_took.as_secs_f64() / tar_took.as_secs_f64()
    );
    println!(
        "\nSigning ({} files: SBOM {} KiB, envelope {} KiB): {:.1} ms, {:.2}% of storing.",
        stored.files.len(),
        signed.sbom.len() / 1024,
        signed.envelope.len() / 1024,
        signing_took.as_secs_f64() * 1e3,
        100.0 * signing_took.as_secs_f64() / ours_took.as_secs_f64()
    );
}

/// A component record for what was stored, as a build would write it.
fn bench_record(stored: &artifacts_build_component::output::Stored) -> artifacts_schemas::ComponentRecord {
    artifacts_schemas::ComponentRecord {
        component: artifacts_schemas::ComponentName::parse("bench").unwrap(),
        tag: artifacts_schemas::TagName::parse("v1").unwrap(),
        architecture: artifacts_schemas::Architecture::Amd64,
        url: "https://example.com/acme/bench.git".into(),
        commit: "c".repeat(40),
        builder_image: "busybox:latest".into(),
        dependencies: Vec::new(),
        digest: stored.digest.clone(),
        size: stored.size,
        bucket: "artifacts_archives".into(),
        object: "bench/store.tar.gz".into(),
        build_id: artifacts_schemas::BuildId::generate(),
        built_at: artifacts_schemas::Timestamp::now(),
        secrets: Vec::new(),
    }
}

#[tokio::main]
async fn main() {
    let size_mib: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(1024);
    let store_mib: usize = std::env::args().nth(2).and_then(|n| n.parse().ok()).unwrap_or(256);
    let app = TestApp::spawn().await;
    if size_mib > 0 {
        download(&app, size_mib).await;
    }
    store(&app, store_mib).await;
}
