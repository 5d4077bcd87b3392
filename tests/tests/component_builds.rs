//! Components end to end: real git repositories made here (served as file:// URLs, with the allowlist
//! widened), built in containers on the real Docker engine, stored in the JetStream object store,
//! downloaded through the gateway.

use std::collections::BTreeMap;
use std::io::Read;

use serde_json::{json, Value};
use sha2::Digest;

use artifacts_tests::{manifest, require_docker, unique_name as name, GitRepo, TestApp, ADMIN_KEY};

async fn app() -> TestApp {
    require_docker().await;
    TestApp::spawn_with(artifacts_tests::allow_local_repositories).await
}

/// Submits a build and waits for its final record.
async fn build(app: &TestApp, url: &str, component: &str, tag: &str) -> Value {
    let body = json!({"url": url, "component": component, "tag": tag, "architecture": "amd64"});
    let response = app
        .http
        .post(app.url("/api/v1/components"))
        .bearer_auth(ADMIN_KEY)
        .header("linux_username", "carol")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(status, 202, "{answer}");
    app.wait_for_build(answer["buildId"].as_str().unwrap()).await
}

/// Downloads a stored component and returns its files (path -> content), checking its digest.
async fn download(app: &TestApp, component: &str, tag: &str) -> BTreeMap<String, String> {
    let found: Value = app
        .get(&format!("/api/v1/components?component={component}&tag={tag}&architecture=amd64"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["status"], "found", "{found}");
    let response = app.http.get(found["component"].as_str().unwrap()).bearer_auth(ADMIN_KEY).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], format!("\"{}\"", found["digest"].as_str().unwrap()).as_str());
    let bytes = response.bytes().await.unwrap();
    assert_eq!(bytes.len() as u64, found["size"].as_u64().unwrap());
    assert_eq!(format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes))), found["digest"].as_str().unwrap());
    let mut files = BTreeMap::new();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_ref()));
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type().is_file() {
            let mut content = String::new();
            entry.read_to_string(&mut content).unwrap();
            files.insert(entry.path().unwrap().display().to_string(), content);
        }
    }
    files
}

#[tokio::test]
async fn a_component_is_built_stored_and_downloaded() {
    let app = app().await;
    let repo = GitRepo::new().await;
    let component = name("libfoo");
    repo.commit_and_tag(
        &[
            (
                "artifact.toml",
                &manifest("mkdir -p /out/lib && echo libfoo-v1 > /out/lib/foo.txt && cp data.txt /out/", &[]),
                false,
            ),
            ("data.txt", "data from the repository\n", false),
        ],
        "v1.0.0",
    )
    .await;
    let record = build(&app, &repo.url(), &component, "v1.0.0").await;
    assert_eq!(record["status"], "succeeded", "{record}");
    assert_eq!(record["kind"], "component");
    assert_eq!(record["requestedBy"]["linuxUsername"], "carol");
    let result = &record["result"];
    assert_eq!(result["commit"].as_str().unwrap().len(), 40, "{result}");
    assert_eq!(result["builderImage"], "busybox:latest");
    assert_eq!(result["url"], repo.url().as_str());

    let files = download(&app, &component, "v1.0.0").await;
    assert_eq!(files.get("lib/foo.txt").map(String::as_str), Some("libfoo-v1\n"), "{files:?}");
    assert_eq!(files.get("data.txt").map(String::as_str), Some("data from the repository\n"));

    // NATS clients get the object store's bucket and object name, and can read it themselves.
    let reply = app
        .nats_request(
            "artifacts.component.get",
            &json!({"component": component, "tag": "v1.0.0", "architecture": "x86_64"}).to_string(),
        )
        .await;
    let found: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(found["bucket"], "artifacts_archives");
    let object = found["object"].as_str().unwrap();
    let mut reader = artifacts_tests::raw_objects(&app.nats, "archives").await.get(object).await.unwrap();
    let mut bytes = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut bytes).await.unwrap();
    assert_eq!(format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes))), found["digest"].as_str().unwrap());
}

#[tokio::test]
async fn build_sh_is_run_with_artifact_out_and_a_repository_without_instructions_fails() {
    let app = app().await;
    let repo = GitRepo::new().await;
    let component = name("script");
    repo.commit_and_tag(
        &[("build.sh", "#!/bin/sh\nset -e\necho built-by-script > \"$ARTIFACT_OUT/result\"\n", true)],
        "v1",
    )
    .await;
    let record = build(&app, &repo.url(), &component, "v1").await;
    assert_eq!(record["status"], "succeeded", "{record}");
    assert_eq!(download(&app, &component, "v1").await.get("result").map(String::as_str), Some("built-by-script\n"));

    let empty = GitRepo::new().await;
    empty.commit_and_tag(&[("README", "nothing to build\n", false)], "v1").await;
    let record = build(&app, &empty.url(), &name("empty"), "v1").await;
    assert_eq!(record["status"], "failed");
    assert!(
        record["errorMessage"].as_str().unwrap().contains("neither artifact.toml nor an executable build.sh"),
        "{record}"
    );

    let failing = GitRepo::new().await;
    failing.commit_and_tag(&[("artifact.toml", &manifest("echo compiling && exit 7", &[]), false)], "v1").await;
    let record = build(&app, &failing.url(), &name("failing"), "v1").await;
    let message = record["errorMessage"].as_str().unwrap();
    assert!(message.contains("exited with code 7") && message.contains("compiling"), "{message}");
}

#[tokio::test]
async fn a_component_uses_its_dependency_and_an_absent_one_is_built_first() {
    let app = app().await;
    let (lib, app_component) = (name("lib"), name("app"));
    let lib_repo = GitRepo::new().await;
    lib_repo
        .commit_and_tag(
            &[("artifact.toml", &manifest("mkdir -p /out/lib && echo from-lib-v1 > /out/lib/x.so", &[]), false)],
            "v1",
        )
        .await;
    let lib_record = build(&app, &lib_repo.url(), &lib, "v1").await;
    assert_eq!(lib_record["status"], "succeeded", "{lib_record}");

    let app_repo = GitRepo::new().await;
    let uses_lib = format!("cat /deps/{lib}/lib/x.so > /out/used.txt");
    app_repo.commit_and_tag(&[("artifact.toml", &manifest(&uses_lib, &[(&lib, "v1")]), false)], "v1").await;
    let record = build(&app, &app_repo.url(), &app_component, "v1").await;
    assert_eq!(record["status"], "succeeded", "{record}");
    assert_eq!(download(&app, &app_component, "v1").await.get("used.txt").map(String::as_str), Some("from-lib-v1\n"));
    let dependency = &record["result"]["dependencies"][0];
    assert_eq!(dependency["component"], lib.as_str());
    assert_eq!(dependency["digest"], lib_record["result"]["digest"]);

    // lib@v2 was never built; its source is known from v1, so app@v2 builds it first.
    lib_repo
        .commit_and_tag(
            &[("artifact.toml", &manifest("mkdir -p /out/lib && echo from-lib-v2 > /out/lib/x.so", &[]), false)],
            "v2",
        )
        .await;
    app_repo.commit_and_tag(&[("artifact.toml", &manifest(&uses_lib, &[(&lib, "v2")]), false)], "v2").await;
    let record = build(&app, &app_repo.url(), &app_component, "v2").await;
    assert_eq!(record["status"], "succeeded", "{record}");
    assert_eq!(download(&app, &app_component, "v2").await.get("used.txt").map(String::as_str), Some("from-lib-v2\n"));
}

#[tokio::test]
async fn dependency_cycles_are_refused_with_the_cycle_named() {
    let app = app().await;
    let (a, b) = (name("cycle-a"), name("cycle-b"));
    let (repo_a, repo_b) = (GitRepo::new().await, GitRepo::new().await);
    repo_a.commit_and_tag(&[("artifact.toml", &manifest("true", &[(&b, "v1")]), false)], "v1").await;
    repo_b.commit_and_tag(&[("artifact.toml", &manifest("true", &[(&a, "v1")]), false)], "v1").await;
    let record = build(&app, &repo_a.url(), &a, "v1").await;
    assert!(record["errorMessage"].as_str().unwrap().contains("source is unknown"), "{record}");
    let record = build(&app, &repo_b.url(), &b, "v1").await;
    assert_eq!(record["status"], "failed");
    let message = record["errorMessage"].as_str().unwrap();
    assert!(message.contains(&format!("dependency cycle: {b}@v1 -> {a}@v1 -> {b}@v1")), "{message}");
}

#[tokio::test]
async fn an_absent_tag_is_built_on_lookup_and_an_unknown_tag_is_refused_naming_it() {
    let app = app().await;
    let repo = GitRepo::new().await;
    let component = name("lazy");
    repo.commit_and_tag(&[("artifact.toml", &manifest("echo one > /out/v", &[]), false)], "v1").await;

    // Never built, but the lookup names its source: it is built.
    let url = repo.url();
    let response = app
        .http
        .get(app.url("/api/v1/components"))
        .query(&[("component", component.as_str()), ("tag", "v1"), ("architecture", "amd64"), ("url", url.as_str())])
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let building: Value = response.json().await.unwrap();
    assert_eq!(building["status"], "building");
    let record = app.wait_for_build(building["buildId"].as_str().unwrap()).await;
    assert_eq!(record["status"], "succeeded", "{record}");

    // A new tag of a known component: the plain lookup starts its build.
    repo.commit_and_tag(&[("artifact.toml", &manifest("echo two > /out/v", &[]), false)], "v2").await;
    let response = app.get(&format!("/api/v1/components?component={component}&tag=v2&architecture=amd64")).await;
    assert_eq!(response.status(), 202);
    let building: Value = response.json().await.unwrap();
    let record = app.wait_for_build(building["buildId"].as_str().unwrap()).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    assert_eq!(download(&app, &component, "v2").await.get("v").map(String::as_str), Some("two\n"));

    // A tag the repository lacks is refused at submission (the commit is part of what identifies a build).
    let body = json!({"url": repo.url(), "component": component, "tag": "v9", "architecture": "amd64"});
    let response =
        app.http.post(app.url("/api/v1/components")).bearer_auth(ADMIN_KEY).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let answer: Value = response.json().await.unwrap();
    let message = answer["errorMessage"].as_str().unwrap();
    assert!(message.contains("v9") && message.contains("not found"), "{message}");
}

/// Issue 14: an unreachable example URL was retried three times over 15 s while its record said `queued`.
#[tokio::test]
async fn a_repository_that_cannot_exist_is_refused_at_once_in_plain_words() {
    let app = app().await;
    let not_a_repository = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let cases = [
        ("https://no-such-host.invalid/acme/libfoo.git".to_owned(), "the host no-such-host.invalid is not known"),
        (format!("file://{}", not_a_repository.path().display()), "there is no git repository there"),
    ];
    for (url, expected) in cases {
        let body = json!({"url": url, "component": "unreachable", "tag": "v1", "architecture": "amd64"});
        let started = std::time::Instant::now();
        let response =
            app.http.post(app.url("/api/v1/components")).bearer_auth(ADMIN_KEY).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 400, "{url}");
        let answer: Value = response.json().await.unwrap();
        let message = answer["errorMessage"].as_str().unwrap();
        assert!(message.contains(expected), "{url}: {message}");
        assert!(!message.contains("fatal:"), "git's own words are not the message: {message}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "{url} took {:?}", started.elapsed());
    }
    let builds: Value = app.get("/api/v1/builds?kind=component").await.json().await.unwrap();
    assert_eq!(builds["builds"].as_array().unwrap().len(), 0, "nothing was queued to retry");
}

#[tokio::test]
async fn hostile_urls_are_refused_and_run_nothing() {
    let app = app().await;
    let marker = std::env::temp_dir().join(format!("artifacts-pwned-{}", std::process::id()));
    let marker_text = marker.display().to_string();
    for url in [
        format!("-u touch {marker_text}"),
        format!("--upload-pack=touch {marker_text}"),
        format!("ext::sh -c touch% {marker_text}"),
        format!("ssh://-oProxyCommand=touch {marker_text}/x"),
        "ssh://-oProxyCommand=id/repo".to_owned(),
    ] {
        let body = json!({"url": url, "component": "hostile", "tag": "v1", "architecture": "amd64"});
        let response =
            app.http.post(app.url("/api/v1/components")).bearer_auth(ADMIN_KEY).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 400, "{url}");
        let over_nats = app.nats_request("artifacts.component.build", &body.to_string()).await;
        assert_eq!(over_nats.headers.unwrap().get("Nats-Service-Error-Code").unwrap().as_str(), "400", "{url}");
    }
    let builds: Value = app.get("/api/v1/builds?kind=component").await.json().await.unwrap();
    assert_eq!(builds["builds"].as_array().unwrap().len(), 0, "nothing was queued");
    assert!(!marker.exists(), "a hostile URL ran a command");
}

#[tokio::test]
async fn an_output_symlink_to_etc_passwd_leaks_nothing() {
    let app = app().await;
    let repo = GitRepo::new().await;
    let component = name("leak");
    repo.commit_and_tag(
        &[("artifact.toml", &manifest("ln -s /etc/passwd /out/passwd && echo ok > /out/ok", &[]), false)],
        "v1",
    )
    .await;
    let record = build(&app, &repo.url(), &component, "v1").await;
    assert_eq!(record["status"], "failed", "{record}");
    assert!(record["errorMessage"].as_str().unwrap().contains("resolves outside"), "{record}");
    let found = app.get(&format!("/api/v1/components?component={component}&tag=v1&architecture=amd64")).await;
    assert_ne!(found.status(), 200, "nothing was stored");
}

/// NATS clients may not read the object store (it holds every team's archives): the lookup streams a
/// component's chunks to a caller whose key may read it, as `examples/nats_request.py --download` does.
#[tokio::test]
async fn a_python_client_downloads_an_archive_over_nats() {
    let app = app().await;
    let repo = GitRepo::new().await;
    let component = name("over-nats");
    let big = "head -c 3000000 /dev/urandom > /out/big.bin && echo hi > /out/hi.txt";
    repo.commit_and_tag(&[("artifact.toml", &manifest(big, &[]), false)], "v1").await;
    let record = build(&app, &repo.url(), &component, "v1").await;
    assert_eq!(record["status"], "succeeded", "{record}");

    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("archive.tar.gz");
    let query = json!({"component": component, "tag": "v1", "architecture": "amd64"}).to_string();
    let download = |key: String| {
        let (file, query, server) = (file.clone(), query.clone(), app.nats_server.url());
        async move {
            tokio::process::Command::new("python3")
                .arg(artifacts_tests::repo_root().join("examples/nats_request.py"))
                .args(["--server", &server, "--key", &key, "--download"])
                .arg(&file)
                .arg(&query)
                .output()
                .await
                .expect("python3 runs")
        }
    };
    let output = download(ADMIN_KEY.to_owned()).await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    let bytes = std::fs::read(&file).unwrap();
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)));
    assert_eq!(answer["digest"], digest.as_str());
    assert_eq!(record["result"]["digest"], digest.as_str(), "the stored archive, byte for byte");
    assert!(bytes.len() > 1024 * 1024, "several chunks were fetched");

    let (other, _) = app.create_key(json!({"name": "other team", "scopes": ["read"], "components": ["other-*"]})).await;
    let refused = download(other).await;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("forbidden"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// Issue 10: a client polling a failing component started a build at every poll. A lookup answers
/// `failed` with the build and its reason instead; an explicit submission still runs it again.
#[tokio::test]
async fn polling_a_failing_component_starts_no_new_build() {
    let app = app().await;
    let repo = GitRepo::new().await;
    let component = name("fails");
    repo.commit_and_tag(&[("artifact.toml", &manifest("echo broken >&2; exit 3", &[]), false)], "v1").await;
    let failed = build(&app, &repo.url(), &component, "v1").await;
    assert_eq!(failed["status"], "failed", "{failed}");

    let query = format!("/api/v1/components?component={component}&tag=v1&architecture=amd64");
    let nats_query = json!({"component": component, "tag": "v1", "architecture": "amd64"}).to_string();
    for poll in 0..50 {
        let answer: Value = if poll % 2 == 0 {
            app.get(&query).await.json().await.unwrap()
        } else {
            serde_json::from_slice(&app.nats_request("artifacts.component.get", &nats_query).await.payload).unwrap()
        };
        assert_eq!(answer["status"], "failed", "poll {poll}: {answer}");
        assert_eq!(answer["buildId"], failed["buildId"]);
        assert!(answer["errorMessage"].as_str().unwrap().contains("exit"), "{answer}");
    }
    let builds: Value = app.get(&format!("/api/v1/builds?component={component}")).await.json().await.unwrap();
    assert_eq!(builds["builds"].as_array().unwrap().len(), 1, "50 polls started no build: {builds}");

    let again = build(&app, &repo.url(), &component, "v1").await;
    assert_ne!(again["buildId"], failed["buildId"], "an explicit submission runs it again");
}
