//! Artifacts anyone can check (issue 31), end to end on the real stack: reproducible component archives
//! (the same commit on two worker engines, byte for byte), immutable versions (a moved tag is a 409 over
//! HTTP and NATS, a push of it builds nothing, an admin's `force` rebuilds it), and signed provenance and
//! SBOMs that implementations no one here wrote accept (Python's `cryptography`, `tarfile`, `hashlib`),
//! whose tampering `artifacts verify` catches and names.

use std::io::Read;

use serde_json::{json, Value};
use sha2::Digest as _;

use artifacts_provenance::dsse::{Envelope, IN_TOTO_PAYLOAD_TYPE};
use artifacts_provenance::key::SigningKey;
use artifacts_schemas::Architecture;
use artifacts_tests::engines::DockerEngine;
use artifacts_tests::{
    independent_check, key_header, manifest, raw_objects, require_docker, unique_name as name, workspace_binary,
    GitRepo, TestApp, ADMIN_KEY,
};

async fn app_on(host: Option<String>) -> TestApp {
    require_docker().await;
    TestApp::spawn_with(|settings| {
        artifacts_tests::allow_local_repositories(settings);
        settings.docker.host = host;
    })
    .await
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// A recipe whose output the build writes at different times, in an order that is not the paths' order,
/// with a directory, a symlink and modes of its own.
const UNORDERED: &str = "mkdir -p /out/zeta /out/alpha && echo z > /out/zeta/z && sleep 1 && echo a > /out/alpha/a \
     && echo m > /out/m && chmod 700 /out/zeta && chmod 755 /out/m && ln -s alpha/a /out/link";

#[tokio::test]
async fn the_same_commit_built_on_two_engines_gives_the_same_archive() {
    let second = DockerEngine::start().await;
    second.load_busybox(Architecture::Amd64).await;
    let (one, two) = (app_on(None).await, app_on(Some(second.host.clone())).await);
    let repo = GitRepo::new().await;
    repo.commit_and_tag(&[("artifact.toml", &manifest(UNORDERED, &[]), false)], "v1.0.0").await;
    let commit_time = repo.head_time().await;
    let component = name("repro");

    let first = one.build_component(&repo.url(), &component, "v1.0.0").await;
    assert_eq!(first["status"], "succeeded", "{first}");
    let other = two.build_component(&repo.url(), &component, "v1.0.0").await;
    assert_eq!(other["status"], "succeeded", "{other}");
    let (bytes, found) = one.stored_archive(&component, "v1.0.0").await;
    let (other_bytes, _) = two.stored_archive(&component, "v1.0.0").await;
    assert_eq!(sha256(&bytes), sha256(&other_bytes), "two engines, one commit: the same archive");
    assert_eq!(found["commit"], first["result"]["commit"], "the lookup names the commit: {found}");

    // A rebuild of the same commit later (force) on the first engine: the same bytes again.
    let body =
        json!({"url": repo.url(), "component": component, "tag": "v1.0.0", "architecture": "amd64", "force": true});
    let response = one.http.post(one.url("/api/v1/components?wait=120")).bearer_auth(ADMIN_KEY).json(&body).send();
    let again: Value = response.await.unwrap().json().await.unwrap();
    assert_eq!(again["status"], "succeeded", "{again}");
    assert_ne!(again["buildId"], first["buildId"], "built anew");
    assert_eq!(again["result"]["digest"], first["result"]["digest"]);

    // What the contract fixes: gzip header without a name and with time 0; entries in byte order of their
    // paths, each at the commit's time, owner and group 0 without names.
    assert_eq!(&bytes[..3], [0x1f, 0x8b, 8]);
    assert_eq!(bytes[3] & 0x08, 0, "no file name in the gzip header");
    assert_eq!(&bytes[4..8], [0, 0, 0, 0], "gzip time 0");
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    let mut paths = Vec::new();
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let header = entry.header();
        assert_eq!(header.mtime().unwrap(), commit_time, "{:?}", entry.path());
        assert_eq!((header.uid().unwrap(), header.gid().unwrap()), (0, 0));
        assert_eq!(header.username().unwrap().unwrap_or(""), "");
        assert_eq!(header.groupname().unwrap().unwrap_or(""), "");
        if let Some(gnu) = header.as_gnu() {
            assert_eq!((gnu.atime().unwrap_or(0), gnu.ctime().unwrap_or(0)), (0, 0), "no access or change times");
        }
        paths.push(entry.path().unwrap().to_string_lossy().trim_end_matches('/').to_owned());
        let mut rest = Vec::new();
        entry.read_to_end(&mut rest).unwrap();
    }
    let mut sorted = paths.clone();
    sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    assert_eq!(paths, sorted);
    assert_eq!(paths, ["alpha", "alpha/a", "link", "m", "zeta", "zeta/z"]);
}

#[tokio::test]
async fn provenance_and_sbom_verify_with_independent_tools_and_tampering_is_named() {
    let app = app_on(None).await;
    let library = GitRepo::new().await;
    library
        .commit_and_tag(
            &[("artifact.toml", &manifest("mkdir -p /out/lib && echo lib > /out/lib/l.txt", &[]), false)],
            "v1",
        )
        .await;
    let dependency = name("provlib");
    let built = app.build_component(&library.url(), &dependency, "v1").await;
    assert_eq!(built["status"], "succeeded", "{built}");
    let program = GitRepo::new().await;
    let recipe =
        manifest(&format!("cat /deps/{dependency}/lib/l.txt > /out/uses && {UNORDERED}"), &[(&dependency, "v1")]);
    program.commit_and_tag(&[("artifact.toml", &recipe, false)], "v2").await;
    let component = name("provapp");
    let record = app.build_component(&program.url(), &component, "v2").await;
    assert_eq!(record["status"], "succeeded", "{record}");
    let build_id = record["buildId"].as_str().unwrap();
    let (bytes, found) = app.stored_archive(&component, "v2").await;

    // The key needs no API key.
    let key: Value = app.http.get(app.url("/api/v1/provenance/key")).send().await.unwrap().json().await.unwrap();
    assert_eq!((key["status"].as_str(), key["algorithm"].as_str()), (Some("ok"), Some("ed25519")), "{key}");
    let envelope = app.get(&format!("/api/v1/builds/{build_id}/provenance")).await.bytes().await.unwrap();
    let sbom = app.get(&format!("/api/v1/builds/{build_id}/sbom")).await.bytes().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let [key_file, envelope_file, sbom_file, archive_file] =
        ["key.pem", "envelope.json", "sbom.json", "archive.tar.gz"].map(|name| dir.path().join(name));
    std::fs::write(&key_file, key["publicKeyPem"].as_str().unwrap()).unwrap();
    std::fs::write(&envelope_file, &envelope).unwrap();
    std::fs::write(&sbom_file, &sbom).unwrap();
    std::fs::write(&archive_file, &bytes).unwrap();

    // Python's cryptography, over DSSE's PAE computed there.
    let (status, out, err) = independent_check("verify_dsse.py", &[&envelope_file, &key_file]);
    assert_eq!(status, 0, "{err}");
    let checked: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(checked["keyid"], key["keyid"]);
    let statement = &checked["payload"];
    assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(
        format!("sha256:{}", statement["subject"][0]["digest"]["sha256"].as_str().unwrap()),
        found["digest"].as_str().unwrap()
    );
    let predicate = &statement["predicate"];
    assert_eq!(predicate["runDetails"]["metadata"]["invocationId"], build_id);
    let resolved = predicate["buildDefinition"]["resolvedDependencies"].as_array().unwrap();
    let commit = record["result"]["commit"].as_str().unwrap();
    assert!(
        resolved.iter().any(|d| d["digest"]["gitCommit"] == commit && d["uri"] == program.url().as_str()),
        "{resolved:?}"
    );
    let library_digest = built["result"]["digest"].as_str().unwrap().trim_start_matches("sha256:");
    assert!(resolved.iter().any(|d| d["digest"]["sha256"] == library_digest), "the dependency's archive: {resolved:?}");
    assert!(
        resolved.iter().any(|d| d["uri"].as_str().is_some_and(|uri| uri.starts_with("docker://busybox"))),
        "{resolved:?}"
    );

    // The SBOM against the archive, entry for entry, with tarfile and hashlib; and SPDX's own validator.
    let (status, out, err) = independent_check("check_sbom.py", &[&sbom_file, &archive_file]);
    assert_eq!(status, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["files"], 4, "{out}");
    let (status, _, err) = independent_check("validate_spdx.py", &[&sbom_file]);
    assert_eq!(status, 0, "{err}");

    // Over NATS, the same bytes.
    let over_nats = app.nats_request("artifacts.build.provenance", &json!({"buildId": build_id}).to_string()).await;
    assert_eq!(&over_nats.payload[..], &envelope[..]);
    let key_over_nats = app.nats_request("artifacts.provenance.key", "{}").await;
    assert_eq!(serde_json::from_slice::<Value>(&key_over_nats.payload).unwrap()["keyid"], key["keyid"]);

    // `artifacts verify`: every check passes, then each tampering fails the check it breaks.
    // The gateway runs in this test's runtime: the client runs as a process awaited here, not blocked on.
    let verify = |pinned: bool| {
        let mut command = tokio::process::Command::new(workspace_binary("artifacts"));
        command
            .args(["verify", "component", &component, "v2"])
            .env("ARTIFACTS_URL", app.url(""))
            .env("ARTIFACTS_KEY", ADMIN_KEY);
        if pinned {
            command.arg("--key").arg(&key_file);
        }
        async move {
            let output = command.output().await.unwrap();
            let printed = String::from_utf8_lossy(&output.stdout).into_owned();
            (output.status.code(), printed + &String::from_utf8_lossy(&output.stderr))
        }
    };
    let (code, out) = verify(true).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("verified") && out.contains(commit) && out.contains(&dependency), "{out}");

    let objects = raw_objects(&app.nats, "archives").await;
    let object = record["result"]["object"].as_str().unwrap().to_owned();
    let provenance_object = format!("attestations/{build_id}/provenance.intoto.json");
    let put = |name: String, bytes: Vec<u8>| {
        let objects = objects.clone();
        async move { objects.put(name.as_str(), &mut &bytes[..]).await.unwrap() }
    };

    // A byte changed in the stored archive, written straight into the object store.
    let mut changed = bytes.clone();
    let middle = changed.len() / 2;
    changed[middle] ^= 0x01;
    put(object.clone(), changed).await;
    let (code, out) = verify(true).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("FAILED subject"), "{out}");
    put(object.clone(), bytes.clone()).await;
    assert_eq!(verify(true).await.0, Some(0));

    // The envelope re-signed with another key.
    let payload = Envelope::from_json(&envelope).unwrap().payload_bytes().unwrap();
    let resigned = Envelope::sign(&SigningKey::generate(), IN_TOTO_PAYLOAD_TYPE, &payload);
    put(provenance_object.clone(), resigned.to_json()).await;
    let (code, out) = verify(true).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("FAILED signature"), "{out}");

    // The provenance of another build (the dependency's).
    let library_build = built["buildId"].as_str().unwrap();
    let other = app.get(&format!("/api/v1/builds/{library_build}/provenance")).await.bytes().await.unwrap();
    put(provenance_object.clone(), other.to_vec()).await;
    let (code, out) = verify(true).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("FAILED subject") && out.contains("FAILED build"), "{out}");
    put(provenance_object, envelope.to_vec()).await;
    assert_eq!(verify(false).await.0, Some(0), "the key the gateway serves verifies too");
}

#[tokio::test]
async fn a_moved_tag_is_refused_and_the_version_keeps_its_first_build() {
    let app = app_on(None).await;
    let repo = GitRepo::new().await;
    repo.commit_and_tag(&[("artifact.toml", &manifest("echo first > /out/f", &[]), false)], "v1.0.0").await;
    let first_commit = repo.head().await;
    let component = name("immutable");
    let first = app.build_component(&repo.url(), &component, "v1.0.0").await;
    assert_eq!(first["status"], "succeeded", "{first}");
    let first_digest = first["result"]["digest"].clone();

    // Re-released: the tag moved to another commit.
    repo.commit_and_tag(&[("artifact.toml", &manifest("echo second > /out/f", &[]), false)], "v1.0.1").await;
    repo.move_tag("v1.0.0").await;
    let moved_commit = repo.head().await;
    let names_both = |message: &str| message.contains(&first_commit[..12]) && message.contains(&moved_commit[..12]);

    let body = json!({"url": repo.url(), "component": component, "tag": "v1.0.0", "architecture": "amd64"});
    let response =
        app.http.post(app.url("/api/v1/components")).bearer_auth(ADMIN_KEY).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 409);
    let refused: Value = response.json().await.unwrap();
    assert_eq!(refused["status"], "conflict");
    assert!(names_both(refused["errorMessage"].as_str().unwrap()), "{refused}");

    let reply = app.nats_request("artifacts.component.build", &body.to_string()).await;
    let refused: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(refused["status"], "conflict", "{refused}");
    assert!(names_both(refused["errorMessage"].as_str().unwrap()), "{refused}");

    // A build key's force does not replace a released version.
    let (builder, _) = app.create_key(json!({"name": "builder", "scopes": ["build"]})).await;
    let forced =
        json!({"url": repo.url(), "component": component, "tag": "v1.0.0", "architecture": "amd64", "force": true});
    let response =
        app.http.post(app.url("/api/v1/components")).bearer_auth(&builder).json(&forced).send().await.unwrap();
    assert_eq!(response.status(), 409);

    // A push of the moved tag builds nothing.
    let push = json!({"repository": repo.url(), "ref": "refs/tags/v1.0.0", "after": moved_commit});
    let accepted = app.nats_request_with("artifacts.git.push", key_header(ADMIN_KEY), &push.to_string()).await;
    assert!(String::from_utf8_lossy(&accepted.payload).contains("accepted"), "{:?}", accepted.payload);
    app.pushes_handled().await;
    assert!(app.triggered_builds(&component).await.is_empty(), "a moved tag's push built something");
    let (_, found) = app.stored_archive(&component, "v1.0.0").await;
    assert_eq!((&found["digest"], found["commit"].as_str()), (&first_digest, Some(first_commit.as_str())));
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("artifacts_push_builds_refused_total{") && metrics.contains("moved_tag"), "{metrics}");

    // An admin's force builds the version anew from the commit its tag names now.
    let response = app.http.post(app.url("/api/v1/components?wait=120")).bearer_auth(ADMIN_KEY).json(&forced).send();
    let rebuilt: Value = response.await.unwrap().json().await.unwrap();
    assert_eq!(rebuilt["status"], "succeeded", "{rebuilt}");
    assert_eq!(rebuilt["result"]["commit"], moved_commit.as_str());
    let (_, found) = app.stored_archive(&component, "v1.0.0").await;
    assert_eq!(found["commit"], moved_commit.as_str());

    // Branches move as before.
    repo.branch("main-line").await;
    let branch = app.build_component(&repo.url(), &component, "main-line").await;
    assert_eq!(branch["status"], "succeeded", "{branch}");
    repo.commit_and_tag(&[("artifact.toml", &manifest("echo third > /out/f", &[]), false)], "v1.0.2").await;
    repo.move_branch("main-line").await;
    let moved = app.build_component(&repo.url(), &component, "main-line").await;
    assert_eq!(moved["status"], "succeeded", "{moved}");
    assert_ne!(moved["result"]["commit"], branch["result"]["commit"]);
}

#[tokio::test]
async fn an_sbom_larger_than_a_nats_message_is_refused_there_and_streamed_over_http() {
    let app = app_on(None).await;
    let repo = GitRepo::new().await;
    let recipe = manifest("i=0; while [ $i -lt 4000 ]; do echo $i > /out/file-$i; i=$((i+1)); done", &[]);
    repo.commit_and_tag(&[("artifact.toml", &recipe, false)], "v1").await;
    let component = name("manyfiles");
    let record = app.build_component(&repo.url(), &component, "v1").await;
    assert_eq!(record["status"], "succeeded", "{record}");
    let build_id = record["buildId"].as_str().unwrap();

    let response = app.get(&format!("/api/v1/builds/{build_id}/sbom")).await;
    assert_eq!(response.status(), 200);
    let length: usize = response.headers()["content-length"].to_str().unwrap().parse().unwrap();
    let sbom: Value = response.json().await.unwrap();
    assert_eq!(sbom["files"].as_array().unwrap().len(), 4000);
    assert!(length > 1 << 20, "the SBOM of 4,000 files is larger than a NATS message ({length} bytes)");

    let reply = app.nats_request("artifacts.build.sbom", &json!({"buildId": build_id}).to_string()).await;
    let refused: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(refused["status"], "too_large", "{refused}");
    let message = refused["errorMessage"].as_str().unwrap();
    assert!(message.contains(&length.to_string()) && message.contains("/sbom"), "{message}");
}
