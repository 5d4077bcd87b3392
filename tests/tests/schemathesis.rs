//! Fuzzing the HTTP API from its own OpenAPI document with schemathesis (from PyPI; scripts/test installs
//! it), bounded in examples and time: no 5xx, every status code, content type and body as documented.

use std::time::Duration;

use std::path::PathBuf;

use artifacts_tests::{Registry, TestApp, ADMIN_KEY};

/// `st`, from the scripts directory of the python3 that has schemathesis installed.
async fn schemathesis() -> PathBuf {
    let scripts = tokio::process::Command::new("python3")
        .args(["-c", "import schemathesis, sysconfig; print(sysconfig.get_path('scripts'))"])
        .output()
        .await
        .expect("python3 runs");
    let st = PathBuf::from(String::from_utf8_lossy(&scripts.stdout).trim()).join("st");
    assert!(
        st.is_file(),
        "schemathesis is not installed for python3: run scripts/test (it runs pip install schemathesis)"
    );
    st
}

#[tokio::test]
async fn the_api_matches_its_openapi_document_under_fuzzing() {
    let st = schemathesis().await;
    // A ready stack (readiness needs the registry too), so that any 5xx is a fault.
    let registry = Registry::start().await;
    let address = registry.address.clone();
    let app = TestApp::spawn_with(|s| s.registry.address = address).await;
    // schemathesis keeps a cache of what it found in its working directory.
    let workdir = tempfile::tempdir().unwrap();
    let run = tokio::process::Command::new(st)
        .current_dir(workdir.path())
        .arg("run")
        .arg(app.url("/api/v1/openapi.json"))
        .args(["--header", &format!("Authorization: Bearer {ADMIN_KEY}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--max-examples", "25", "--phases", "examples,coverage,fuzzing", "--request-timeout", "10"])
        .args(["--generation-deterministic", "--no-color"])
        // An endless stream of live events: each request would only wait out the timeout.
        .args(["--exclude-path", "/api/v1/builds/events"])
        .env("SCHEMATHESIS_HOOKS", "")
        .kill_on_drop(true)
        .output();
    let output =
        tokio::time::timeout(Duration::from_secs(300), run).await.expect("schemathesis ends within 5 minutes").unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
