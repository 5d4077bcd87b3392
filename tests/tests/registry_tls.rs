//! The registry over TLS (issue 29): with `registry.tls = true`, `artifacts up` serves the registry with a
//! certificate of a CA of its own; an image build through the stack pushes to it (the Docker engine
//! trusts it through `/etc/docker/certs.d/<address>/ca.crt`, which `up` writes, and the service's own
//! registry client through `registry.ca_file`), and skopeo reads the image with the CA and refuses it
//! without. The default registry is plain HTTP, as docs/registry.md tells remote clients: skopeo then
//! needs `--tls-verify=false`. Needs a Docker engine, skopeo, and a non-loopback address on this machine
//! (the engine would accept any certificate from a loopback registry).

use std::time::Duration;

use artifacts_tests::up::UpStack;
use artifacts_tests::{free_port, require_docker, require_program, unique_name};
use serde_json::Value;

/// This machine's first non-loopback IPv4 address.
fn outside_address() -> String {
    let output = std::process::Command::new("hostname").arg("-I").output().expect("hostname -I runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.split_whitespace()
        .find(|address| address.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| !ip.is_loopback()))
        .expect("this test needs a non-loopback IPv4 address on this machine")
        .to_owned()
}

/// Builds a small image through the stack; its name once the build succeeded.
async fn build_image(stack: &UpStack, component: &str) -> String {
    let build_id = stack.submit_image(component, "FROM busybox\nRUN echo over-tls > /tls.txt\n").await;
    let record = stack.wait_for(&build_id, Duration::from_secs(240), |r| {
        matches!(r["status"].as_str(), Some("succeeded" | "failed" | "cancelled"))
    });
    let record = record.await.expect("the build ends within 4 minutes");
    let log = stack.log(&build_id).await;
    assert_eq!(record["status"], "succeeded", "{record:#}\n{log}");
    // The service's own registry client wrote the architecture tag and the manifest list.
    assert!(!log.contains("is not updated"), "{log}");
    let found = stack.get(&format!("/api/v1/images?component={component}&branch=main&architecture=amd64")).await;
    let found: Value = found.expect("the lookup answers");
    assert_eq!(found["status"], "found", "{found:#}");
    found["imageName"].as_str().expect("an image name").to_owned()
}

/// `skopeo inspect docker://<image>` with the admin key and `args`: (succeeded, stdout, stderr).
async fn skopeo_inspect(image: &str, key: &str, args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(require_program("skopeo", "skopeo"))
        .arg("inspect")
        .args(args)
        .args(["--creds", &format!("anyone:{key}")])
        .arg(format!("docker://{image}"))
        .output()
        .await
        .expect("skopeo runs");
    let said = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.success(), said(&output.stdout), said(&output.stderr))
}

/// Removes `/etc/docker/certs.d/<address>` (which `up` wrote) when the test ends, however it ends.
struct CertsDir(std::path::PathBuf);

impl Drop for CertsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn an_image_is_built_into_a_tls_registry_and_read_with_its_ca() {
    require_docker().await;
    let address = format!("{}:{}", outside_address(), free_port());
    let certs = CertsDir(std::path::Path::new("/etc/docker/certs.d").join(&address));
    let stack =
        UpStack::start(&[("ARTIFACTS__REGISTRY__ADDRESS", &address), ("ARTIFACTS__REGISTRY__TLS", "true")]).await;

    // up made a CA and gave it to the engine.
    let ca = stack.data.path().canonicalize().unwrap().join("registry-ca.crt");
    let engine_copy = certs.0.join("ca.crt");
    assert_eq!(
        std::fs::read_to_string(&engine_copy).unwrap_or_else(|err| panic!("{}: {err}", engine_copy.display())),
        std::fs::read_to_string(&ca).unwrap()
    );
    // The registry speaks TLS with a certificate of that CA, and nothing else.
    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .build()
        .unwrap();
    let answer = trusting.get(format!("https://{address}/v2/")).send().await.expect("the registry answers over TLS");
    assert_eq!(answer.status(), 401, "it asks for a token");
    let plain = reqwest::get(format!("http://{address}/v2/")).await.expect("an answer");
    assert_eq!(plain.status(), 400, "plain HTTP is refused");

    // A build pushes through the engine, and tags through the service's own client.
    let component = unique_name("tls");
    let image = build_image(&stack, &component).await;
    assert!(image.starts_with(&format!("{address}/")), "{image}");

    // skopeo with the CA reads it; without, it names the unknown authority.
    let cert_dir = tempfile::tempdir().unwrap();
    std::fs::copy(&ca, cert_dir.path().join("ca.crt")).unwrap();
    let cert_dir_arg = cert_dir.path().display().to_string();
    let (read, manifest, said) = skopeo_inspect(&image, &stack.admin_key, &["--cert-dir", &cert_dir_arg]).await;
    assert!(read, "skopeo with the CA: {said}");
    let manifest: Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(manifest["Architecture"], "amd64", "{manifest:#}");
    // skopeo also reads /etc/docker/certs.d, where up put the CA: a client elsewhere has an empty one.
    let elsewhere = tempfile::tempdir().unwrap();
    let elsewhere_arg = elsewhere.path().display().to_string();
    let (read, _, said) = skopeo_inspect(&image, &stack.admin_key, &["--cert-dir", &elsewhere_arg]).await;
    println!("skopeo without the CA: {said}");
    assert!(!read && said.contains("certificate signed by unknown authority"), "{said}");

    // The engine pulls it back, checking the certificate against the CA up gave it.
    let login = tokio::process::Command::new("docker")
        .args(["login", &address, "--username", "anyone", "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut login = login;
    use tokio::io::AsyncWriteExt as _;
    login.stdin.take().unwrap().write_all(stack.admin_key.as_bytes()).await.unwrap();
    assert!(login.wait().await.unwrap().success(), "docker login to the TLS registry");
    artifacts_tests::docker(&["rmi", "--force", &image]).await;
    artifacts_tests::docker(&["pull", &image]).await;
    artifacts_tests::docker(&["rmi", "--force", &image]).await;
    let _ = tokio::process::Command::new("docker").args(["logout", &address]).output().await;
}

#[tokio::test]
async fn the_default_registry_is_plain_http_as_remote_clients_are_told() {
    require_docker().await;
    let stack = UpStack::start(&[]).await;
    let component = unique_name("plain");
    let image = build_image(&stack, &component).await;
    let (read, _, said) = skopeo_inspect(&image, &stack.admin_key, &[]).await;
    println!("skopeo over HTTPS: {said}");
    assert!(!read && said.contains("server gave HTTP response to HTTPS client"), "{said}");
    let (read, manifest, said) = skopeo_inspect(&image, &stack.admin_key, &["--tls-verify=false"]).await;
    assert!(read, "skopeo --tls-verify=false: {said}");
    assert!(manifest.contains("\"Architecture\": \"amd64\""), "{manifest}");
}
