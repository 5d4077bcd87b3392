//! The registry's HTTP API, for what the Docker engine cannot do without a race: pointing a build's
//! architecture tag (`:amd64`) at the manifest that build pushed. Tagging in a shared engine and pushing
//! the tag lets two concurrent builds of one repository push each other's image; copying the manifest
//! from the build's own immutable tag cannot.

use std::time::Duration;

/// The manifest kinds Docker and the registry exchange, newest first.
const MANIFEST_TYPES: &str = "application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.index.v1+json";

const TIMEOUT: Duration = Duration::from_secs(30);

/// Makes `to_tag` name the manifest `from_tag` names, in `repository` of the registry at `address`.
pub async fn copy_tag(address: &str, repository: &str, from_tag: &str, to_tag: &str) -> Result<(), String> {
    let client = reqwest::Client::builder().timeout(TIMEOUT).build().map_err(|err| err.to_string())?;
    let manifests = format!("http://{address}/v2/{repository}/manifests");
    let fetched = client
        .get(format!("{manifests}/{from_tag}"))
        .header(reqwest::header::ACCEPT, MANIFEST_TYPES)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|err| format!("cannot read the manifest of {repository}:{from_tag}: {err}"))?;
    let content_type = fetched.headers().get(reqwest::header::CONTENT_TYPE).cloned();
    let manifest = fetched.bytes().await.map_err(|err| format!("cannot read the manifest: {err}"))?;
    let mut put = client.put(format!("{manifests}/{to_tag}")).body(manifest);
    if let Some(content_type) = content_type {
        put = put.header(reqwest::header::CONTENT_TYPE, content_type);
    }
    put.send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|err| format!("cannot tag {repository}:{to_tag}: {err}"))?;
    Ok(())
}
