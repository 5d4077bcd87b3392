//! Storage sized to the servers (issue 29): the byte caps of streams, buckets and object stores are
//! settings (`storage.*_bytes`). On a server with less JetStream storage than the defaults reserve, the
//! stack says which setting to lower instead of blaming JetStream for being off; with the caps lowered
//! it starts.

use std::process::Stdio;
use std::time::Duration;

use artifacts_tests::{free_port, require_program, test_settings};

/// A nats-server whose JetStream may store 20 GiB, killed on drop.
async fn server_with_20_gib(store: &std::path::Path) -> (tokio::process::Child, String) {
    let config = store.join("small.conf");
    std::fs::write(
        &config,
        format!("server_name: small\njetstream {{\n  store_dir: {:?}\n  max_file_store: 20GB\n}}\n", store.join("js")),
    )
    .unwrap();
    let port = free_port();
    let child = tokio::process::Command::new(require_program("nats-server", "nats-server"))
        .arg("-c")
        .arg(&config)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("nats-server starts");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, format!("nats://127.0.0.1:{port}"))
}

#[tokio::test]
async fn too_little_storage_names_the_setting_and_lowered_caps_fit() {
    let store = tempfile::tempdir().unwrap();
    let (_server, url) = server_with_20_gib(store.path()).await;

    let defaults = test_settings(&url);
    let refused =
        artifacts_runtime::nats::connect(&defaults, "test").await.err().expect("64 GiB of archives do not fit");
    let message = format!("{refused:#}");
    println!("{message}");
    assert!(message.contains("storage.archives_bytes = 64.0 GiB"), "the setting to lower is named: {message}");
    assert!(message.contains("max_file_store"), "{message}");
    assert!(!message.contains("is the server running with JetStream enabled"), "JetStream is on: {message}");

    let mut lowered = test_settings(&url);
    lowered.storage.archives_bytes = 12 << 30;
    lowered.storage.uploads_bytes = 2 << 30;
    lowered.storage.logs_bytes = 1 << 30;
    let nats = artifacts_runtime::nats::connect(&lowered, "test").await.expect("lowered caps fit in 20 GiB");
    let mut archives = nats.jetstream.get_stream("OBJ_artifacts_archives").await.unwrap();
    assert_eq!(archives.info().await.unwrap().config.max_bytes, 12 << 30);

    // A cap changed later reaches the existing bucket.
    let mut smaller = lowered.clone();
    smaller.storage.archives_bytes = 10 << 30;
    let again = artifacts_runtime::nats::connect(&smaller, "test").await.expect("a lower cap is applied");
    let mut archives = again.jetstream.get_stream("OBJ_artifacts_archives").await.unwrap();
    assert_eq!(archives.info().await.unwrap().config.max_bytes, 10 << 30);
}
