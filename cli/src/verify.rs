//! `artifacts verify component|image`: checks an artifact against the provenance the service signed, with
//! the service's public key (fetched, or pinned with `--key`), so that a user need not take the service's
//! word. For a component: the archive as downloaded, its digest against the lookup's and the signed
//! subject's, every file against the SBOM. For an image: the manifest digest the registry serves for the
//! image against the signed subject. Prints the source commit, the builder and the dependencies with each
//! check; exits 1 when any check fails.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context};
use futures::StreamExt;
use serde_json::{json, Value};

use artifacts_provenance::verify::{self, Check, Expected, Report};
use artifacts_provenance::{KeyInfo, PublicKey};

use crate::client::{text, Client};

pub struct Target {
    pub component: String,
    /// A component's tag, an image's branch.
    pub version: String,
    pub architecture: String,
    /// A public key file (PEM) to check against instead of the key the service serves.
    pub key: Option<PathBuf>,
}

pub async fn component(client: &Client, target: Target) -> anyhow::Result<ExitCode> {
    let query = [("component", &target.component), ("tag", &target.version), ("architecture", &target.architecture)];
    let what = format!("component {}@{} for {}", target.component, target.version, target.architecture);
    let found = client.send(client.get("/components").query(&query), &what).await?;
    if found["status"] != "found" {
        return Err(anyhow!(
            "{what} is not stored yet (build {}): verify it once it is built",
            text(&found["buildId"])
        ));
    }
    let build_id = text(&found["buildId"]);
    let url =
        found["downloadUrl"].as_str().or(found["component"].as_str()).ok_or_else(|| anyhow!("no download URL"))?;
    let key = public_key(client, target.key.as_ref()).await?;
    let envelope = attestation(client, &build_id, "provenance").await?;
    let sbom = attestation(client, &build_id, "sbom").await?;
    let archive = download(client, url).await?;
    let lookup_digest = text(&found["digest"]);
    let report = tokio::task::spawn_blocking(move || {
        let archive = std::fs::File::open(archive.path())?;
        let mut report = verify::verify_component(
            &envelope,
            &key.0,
            std::io::BufReader::new(archive),
            &sbom,
            &Expected { build_id: Some(&build_id) },
        );
        let same = report.artifact_digest == lookup_digest;
        let detail = if same {
            format!("the archive is {lookup_digest}, as the lookup says")
        } else {
            format!("the archive is {}, the lookup says {lookup_digest}", report.artifact_digest)
        };
        report.checks.push(Check { name: "lookup", passed: same, detail });
        Ok::<_, std::io::Error>((report, key.1))
    })
    .await??;
    Ok(print(client, &what, report))
}

pub async fn image(client: &Client, target: Target) -> anyhow::Result<ExitCode> {
    let query = [("component", &target.component), ("branch", &target.version), ("architecture", &target.architecture)];
    let what = format!("image {}:{} for {}", target.component, target.version, target.architecture);
    let found = client.send(client.get("/images").query(&query), &what).await?;
    let build_id = text(&found["buildId"]);
    let digest = text(&found["digest"]);
    let key = public_key(client, target.key.as_ref()).await?;
    let envelope = attestation(client, &build_id, "provenance").await?;
    let report = verify::verify_image(&envelope, &key.0, &digest, &Expected { build_id: Some(&build_id) });
    Ok(print(client, &what, (report, key.1)))
}

/// The key to check with, and where it came from.
async fn public_key(client: &Client, pinned: Option<&PathBuf>) -> anyhow::Result<(PublicKey, String)> {
    if let Some(file) = pinned {
        let pem = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        let key = PublicKey::from_pem(&pem).map_err(|err| anyhow!("{}: {err}", file.display()))?;
        return Ok((key, format!("pinned ({})", file.display())));
    }
    let answer = client.send(client.get("/provenance/key"), "the service's provenance key").await?;
    let info: KeyInfo = serde_json::from_value(answer).context("the service's provenance key")?;
    let key = info.public_key().map_err(|err| anyhow!("the service's provenance key: {err}"))?;
    Ok((key, "served by the gateway (pin it with --key)".to_owned()))
}

async fn attestation(client: &Client, build_id: &str, which: &str) -> anyhow::Result<Vec<u8>> {
    let response =
        client.get(&format!("/builds/{build_id}/{which}")).send().await.map_err(|err| client.unreachable(err))?;
    let status = response.status().as_u16();
    let bytes = response.bytes().await.map_err(|err| client.unreachable(err))?;
    if status != 200 {
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        return Err(client.refusal(status, &body, &format!("the {which} of build {build_id}")));
    }
    Ok(bytes.to_vec())
}

/// The archive as the gateway serves it, in a temporary file (checked by the report, not here).
async fn download(client: &Client, url: &str) -> anyhow::Result<tempfile::NamedTempFile> {
    if !url.starts_with(&format!("{}/", client.url)) {
        return Err(anyhow!("the gateway answered a download URL elsewhere ({url}): not sending the key there"));
    }
    let response = client.authorize(client.http.get(url)).send().await.map_err(|err| client.unreachable(err))?;
    let status = response.status().as_u16();
    if status != 200 {
        let body: Value = response.json().await.unwrap_or(Value::Null);
        return Err(client.refusal(status, &body, "the download"));
    }
    let mut file = tempfile::NamedTempFile::new().context("no room for the archive")?;
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        file.write_all(&chunk.map_err(|err| client.unreachable(err))?)?;
    }
    Ok(file)
}

fn print(client: &Client, what: &str, (report, key_source): (Report, String)) -> ExitCode {
    let passed = report.passed();
    if client.json {
        let mut value = serde_json::to_value(&report).expect("reports serialise");
        value["status"] = json!(if passed { "verified" } else { "failed" });
        value["keySource"] = json!(key_source);
        println!("{}", serde_json::to_string_pretty(&value).expect("JSON prints"));
    } else {
        println!("{what}: {}", if passed { "verified" } else { "NOT VERIFIED" });
        println!("  artifact   {}", report.artifact_digest);
        println!("  key        {} ({key_source})", report.keyid);
        if let Some(build) = &report.invocation_id {
            println!("  build      {build}");
        }
        if let Some(source) = &report.source {
            println!("  source     {} at {}", source.uri, source.commit);
        }
        if let Some(builder) = &report.builder_id {
            println!("  builder    {builder}");
        }
        for dependency in &report.dependencies {
            let name = dependency.name.as_deref().or(dependency.uri.as_deref()).unwrap_or("-");
            let digest = dependency.digest.get("sha256").map(|hex| format!("sha256:{hex}")).unwrap_or_default();
            println!("  depends on {name} {digest}");
        }
        for check in &report.checks {
            println!("  {} {:<12} {}", if check.passed { "ok    " } else { "FAILED" }, check.name, check.detail);
        }
    }
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
