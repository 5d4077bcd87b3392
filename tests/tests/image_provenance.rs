//! Signed provenance and SBOM of image builds (CONTRACT "Signed provenance and SBOM"), end to end through
//! the real Docker engine and registry: the envelope verifies with Python's `cryptography` (code no one
//! here wrote, `provenance/tests/verify_dsse.py`) against the key the gateway serves, its subject is the
//! digest lookups answer, its resolved dependencies are the base images by digest; the SBOM names the base
//! images, the layers the registry holds and the packages their dpkg database lists, and is valid SPDX
//! 2.3 for the SPDX project's own validator; the envelope is in the registry as cosign stores it
//! (`skopeo` reads it back); `artifacts verify image` says "verified"; the collector deletes the
//! attestation with the image.

use serde_json::{json, Value};
use sha2::Digest as _;

use artifacts_tests::{docker, independent_check, workspace_binary, TestApp, ADMIN_KEY};

fn component(test: &str) -> String {
    format!("prov-{test}-{}", std::process::id())
}

/// Submits a multipart image build with a context and waits for its record.
async fn build(app: &TestApp, component: &str, dockerfile: &str, context: &[(&str, &str)]) -> Value {
    let form = reqwest::multipart::Form::new()
        .part("dockerfile", reqwest::multipart::Part::bytes(dockerfile.as_bytes().to_vec()).file_name("Dockerfile"))
        .part(
            "context",
            reqwest::multipart::Part::bytes(artifacts_tests::context_tar(context)).file_name("context.tar"),
        )
        .text("component", component.to_owned())
        .text("branch", "main")
        .text("architecture", "amd64")
        .text("force", "true");
    let response =
        app.http.post(app.url("/api/v1/images")).bearer_auth(ADMIN_KEY).multipart(form).send().await.unwrap();
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    let record = app.wait_for_build(accepted["buildId"].as_str().unwrap()).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    record
}

async fn get_bytes(app: &TestApp, path: &str) -> Vec<u8> {
    let response = app.get(path).await;
    assert_eq!(response.status(), 200, "{path}");
    response.bytes().await.unwrap().to_vec()
}

async fn lookup(app: &TestApp, component: &str) -> Value {
    let found = app.get(&format!("/api/v1/images?component={component}&branch=main&architecture=amd64")).await;
    assert_eq!(found.status(), 200);
    found.json().await.unwrap()
}

/// `skopeo inspect --raw` of a reference in the test's plain-HTTP registry: the manifest, or `None`.
async fn skopeo_raw(reference: &str) -> Option<Value> {
    let output = tokio::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", &format!("docker://{reference}")])
        .output()
        .await
        .expect("skopeo runs (apt-get install skopeo)");
    output.status.success().then(|| serde_json::from_slice(&output.stdout).expect("a manifest"))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

const DPKG_STATUS: &str = "\
Package: base-files
Status: install ok installed
Priority: required
Architecture: amd64
Version: 12.4+deb12u5
Description: Debian base system miscellaneous files

Package: removed-long-ago
Status: deinstall ok config-files
Architecture: amd64
Version: 0.1-1
";

#[tokio::test]
async fn image_builds_have_signed_provenance_an_sbom_and_a_cosign_attestation() {
    let (app, registry) = TestApp::spawn_with_registry(|settings| {
        settings.retention.keep_successful = 1;
        settings.retention.gc_interval_secs = 0;
    })
    .await;
    let address = registry.address.clone();

    // A base image in this service's registry, with a dpkg database and an os-release.
    let base = component("base");
    let base_dockerfile = "FROM busybox\nCOPY status /var/lib/dpkg/status\nCOPY os-release /etc/os-release\n";
    let base_record = build(
        &app,
        &base,
        base_dockerfile,
        &[("status", DPKG_STATUS), ("os-release", "PRETTY_NAME=\"Debian GNU/Linux 12\"\nID=debian\n")],
    )
    .await;
    let base_image = base_record["result"]["imageName"].as_str().unwrap().to_owned();
    let base_digest = lookup(&app, &base).await["digest"].as_str().unwrap().to_owned();

    // The image: from that base, a file of busybox's, and a package its own layer adds to the database.
    let image = component("app");
    let dockerfile = |n: u32| {
        format!(
            "FROM {base_image}\nCOPY --from=busybox /bin/busybox /opt/busybox\nRUN printf '\\nPackage: prov-hello\\nStatus: install ok installed\\nArchitecture: amd64\\nVersion: 1.0-{n}\\n' >> /var/lib/dpkg/status\n"
        )
    };
    let first = build(&app, &image, &dockerfile(1), &[("unused.txt", "x\n")]).await;
    let build_id = first["buildId"].as_str().unwrap().to_owned();
    let (lines, _) = app.follow_logs(&build_id).await;
    let found = lookup(&app, &image).await;
    assert_eq!(found["buildId"], build_id.as_str());
    let digest = found["digest"].as_str().unwrap().to_owned();
    let hex = digest.strip_prefix("sha256:").unwrap().to_owned();
    let image_repository = first["result"]["imageName"].as_str().unwrap().rsplit_once(':').unwrap().0.to_owned();
    let attestation_tag = format!("sha256-{hex}.att");
    assert!(
        lines.iter().any(|line| line.ends_with(&format!(
            "signed its provenance and SBOM; attestation pushed as {image_repository}:{attestation_tag}"
        ))),
        "{lines:#?}"
    );

    // The envelope verifies with Python's cryptography over DSSE's PAE, with the key the gateway serves.
    let envelope = get_bytes(&app, &format!("/api/v1/builds/{build_id}/provenance")).await;
    let key: Value = serde_json::from_slice(&get_bytes(&app, "/api/v1/provenance/key").await).unwrap();
    assert_eq!(key["status"], "ok", "{key}");
    let dir = tempfile::tempdir().unwrap();
    let envelope_file = dir.path().join("envelope.json");
    let key_file = dir.path().join("key.pem");
    std::fs::write(&envelope_file, &envelope).unwrap();
    std::fs::write(&key_file, key["publicKeyPem"].as_str().unwrap()).unwrap();
    let (status, stdout, stderr) = independent_check("verify_dsse.py", &[&envelope_file, &key_file]);
    assert_eq!(status, 0, "Python refused the envelope: {stderr}");
    let verified: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(verified["keyid"], key["keyid"]);
    assert_eq!(verified["payloadType"], "application/vnd.in-toto+json");
    let statement = &verified["payload"];
    println!("{}", serde_json::to_string_pretty(statement).unwrap());

    // The statement: about the digest lookups answer, of this build, from these base images.
    assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(statement["subject"], json!([{"name": image_repository, "digest": {"sha256": hex}}]));
    let definition = &statement["predicate"]["buildDefinition"];
    assert_eq!(definition["buildType"], "urn:artifact-storage:build-type:image:v1");
    let request = &definition["externalParameters"];
    assert_eq!(request["component"], image.as_str());
    assert_eq!(request["branch"], "main");
    assert_eq!(request["architecture"], "linux/amd64", "as build records name it");
    assert_eq!(request["dockerfileDigest"], format!("sha256:{}", sha256_hex(dockerfile(1).as_bytes())));
    assert!(request["contextDigest"].as_str().unwrap().starts_with("sha256:"), "{request}");
    let dependencies = definition["resolvedDependencies"].as_array().unwrap();
    let dependency = |uri: &str| {
        dependencies
            .iter()
            .find(|d| d["uri"] == uri)
            .unwrap_or_else(|| panic!("no dependency {uri}: {dependencies:#?}"))["digest"]["sha256"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(dependency(&format!("docker://{base_image}")), base_digest.strip_prefix("sha256:").unwrap());
    let busybox_id = docker(&["image", "inspect", "-f", "{{.Id}}", "busybox"]).await;
    let busybox = dependency("docker://busybox");
    assert!(
        busybox_id.trim().ends_with(&busybox),
        "the engine's busybox is {busybox_id}, the provenance says {busybox}"
    );
    assert_eq!(dependencies.len(), 2, "{dependencies:#?}");
    let run = &statement["predicate"]["runDetails"];
    assert_eq!(run["builder"]["id"], "urn:artifact-storage:builder:v1");
    assert_eq!(run["metadata"]["invocationId"], build_id.as_str());
    assert!(run["metadata"]["startedOn"].as_str().unwrap() <= run["metadata"]["finishedOn"].as_str().unwrap());

    // The SBOM: the image, its base images, the layers the registry holds, the packages of its database.
    let sbom_bytes = get_bytes(&app, &format!("/api/v1/builds/{build_id}/sbom")).await;
    let sbom: Value = serde_json::from_slice(&sbom_bytes).unwrap();
    assert_eq!(sbom["spdxVersion"], "SPDX-2.3");
    let packages = sbom["packages"].as_array().unwrap();
    let relationships = sbom["relationships"].as_array().unwrap();
    let related = |kind: &str| -> Vec<&Value> {
        relationships
            .iter()
            .filter(|r| r["relationshipType"] == kind && r["spdxElementId"] == "SPDXRef-Package-artifact")
            .map(|r| packages.iter().find(|p| p["SPDXID"] == r["relatedSpdxElement"]).expect("a package"))
            .collect()
    };
    let sha256_of = |package: &Value| {
        package["checksums"].as_array().unwrap().iter().find(|c| c["algorithm"] == "SHA256").unwrap()["checksumValue"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let described = packages.iter().find(|p| p["SPDXID"] == "SPDXRef-Package-artifact").unwrap();
    assert_eq!(sha256_of(described), hex);
    let bases: Vec<(String, String)> =
        related("DESCENDANT_OF").iter().map(|p| (p["name"].as_str().unwrap().to_owned(), sha256_of(p))).collect();
    assert!(
        bases.contains(&(base_image.clone(), base_digest.strip_prefix("sha256:").unwrap().to_owned())),
        "{bases:?}"
    );
    assert!(bases.contains(&("busybox".to_owned(), busybox.clone())), "{bases:?}");
    let manifest = skopeo_raw(&format!("{image_repository}@{digest}")).await.expect("the image's manifest");
    let layers: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().trim_start_matches("sha256:").to_owned())
        .collect();
    assert_eq!(layers.len(), 5, "busybox's, two of the base and two of the image: {manifest}");
    let contained = related("CONTAINS");
    let sbom_layers: Vec<String> = contained
        .iter()
        .filter(|p| p["SPDXID"].as_str().unwrap().starts_with("SPDXRef-Package-layer-"))
        .map(|p| sha256_of(p))
        .collect();
    assert_eq!(sbom_layers, layers, "every layer, lowest first");
    let purls: Vec<&str> = contained
        .iter()
        .filter(|p| p["SPDXID"].as_str().unwrap().starts_with("SPDXRef-Package-os-"))
        .map(|p| p["externalRefs"][0]["referenceLocator"].as_str().unwrap())
        .collect();
    assert_eq!(
        purls,
        ["pkg:deb/debian/base-files@12.4%2Bdeb12u5?arch=amd64", "pkg:deb/debian/prov-hello@1.0-1?arch=amd64"],
        "the database as the top layer leaves it"
    );
    let sbom_file = dir.path().join("sbom.spdx.json");
    std::fs::write(&sbom_file, &sbom_bytes).unwrap();
    let (status, _, stderr) = independent_check("validate_spdx.py", &[&sbom_file]);
    assert_eq!(status, 0, "the SPDX validator refused the SBOM: {stderr}");

    // In the registry as cosign stores it: an OCI manifest whose one layer is the envelope.
    let attestation = skopeo_raw(&format!("{image_repository}:{attestation_tag}")).await.expect("the attestation");
    assert_eq!(attestation["mediaType"], "application/vnd.oci.image.manifest.v1+json", "{attestation}");
    let layer = &attestation["layers"][0];
    assert_eq!(attestation["layers"].as_array().unwrap().len(), 1, "{attestation}");
    assert_eq!(layer["mediaType"], "application/vnd.dsse.envelope.v1+json");
    assert_eq!(layer["digest"], format!("sha256:{}", sha256_hex(&envelope)));
    assert_eq!(layer["size"], envelope.len());
    assert_eq!(layer["annotations"]["predicateType"], "https://slsa.dev/provenance/v1");
    let repository = image_repository.strip_prefix(&format!("{address}/")).unwrap();
    let blob = reqwest::get(format!("http://{address}/v2/{repository}/blobs/{}", layer["digest"].as_str().unwrap()))
        .await
        .unwrap();
    assert_eq!(blob.status(), 200);
    assert_eq!(blob.bytes().await.unwrap().to_vec(), envelope, "the layer is the envelope");

    // The client checks it all and says so.
    let config = tempfile::tempdir().unwrap();
    let verify = tokio::process::Command::new(workspace_binary("artifacts"))
        .args(["verify", "image", &image, "main"])
        .env("ARTIFACTS_URL", app.url(""))
        .env("ARTIFACTS_KEY", ADMIN_KEY)
        .env("XDG_CONFIG_HOME", config.path())
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{said}{}", String::from_utf8_lossy(&verify.stderr));
    assert!(said.contains("verified") && !said.contains("NOT VERIFIED"), "{said}");

    // A newer build replaces it; the collector deletes the older image and its attestation together.
    let second = build(&app, &image, &dockerfile(2), &[("unused.txt", "x\n")]).await;
    let second_hex = lookup(&app, &image).await["digest"].as_str().unwrap().trim_start_matches("sha256:").to_owned();
    assert_ne!(second_hex, hex);
    let second_tag = format!("sha256-{second_hex}.att");
    assert!(skopeo_raw(&format!("{image_repository}:{second_tag}")).await.is_some());
    let collected = app.http.post(app.url("/api/v1/gc")).bearer_auth(ADMIN_KEY).json(&json!({})).send().await.unwrap();
    assert_eq!(collected.status(), 200);
    let report: Value = collected.json().await.unwrap();
    assert!(report["removed"]["images"].as_u64().unwrap() >= 1, "{report}");
    assert!(skopeo_raw(&format!("{image_repository}@{digest}")).await.is_none(), "the older image went");
    assert!(skopeo_raw(&format!("{image_repository}:{attestation_tag}")).await.is_none(), "and its attestation");
    assert!(
        skopeo_raw(&format!("{image_repository}:{second_tag}")).await.is_some(),
        "the kept image's attestation stays ({})",
        second["buildId"]
    );
}

#[tokio::test]
async fn behind_token_authentication_the_workers_push_the_attestation() {
    let (app, registry, _signing) = TestApp::spawn_with_token_registry().await;
    let image = component("token");
    let record = build(&app, &image, "FROM busybox\nRUN echo token > /token\n", &[("unused.txt", "x\n")]).await;
    let digest = lookup(&app, &image).await["digest"].as_str().unwrap().to_owned();
    let image_repository = record["result"]["imageName"].as_str().unwrap().rsplit_once(':').unwrap().0.to_owned();
    assert!(image_repository.starts_with(&registry.address), "{image_repository}");
    let tag = format!("sha256-{}.att", digest.trim_start_matches("sha256:"));
    let output = tokio::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", "--creds", &format!("anyone:{ADMIN_KEY}")])
        .arg(format!("docker://{image_repository}:{tag}"))
        .output()
        .await
        .expect("skopeo runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let attestation: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(attestation["layers"][0]["mediaType"], "application/vnd.dsse.envelope.v1+json", "{attestation}");
    let envelope = get_bytes(&app, &format!("/api/v1/builds/{}/provenance", record["buildId"].as_str().unwrap())).await;
    assert_eq!(attestation["layers"][0]["digest"], format!("sha256:{}", sha256_hex(&envelope)));
}
