//! The registry's HTTP API, as the workers' own identity (a registry behind token authentication is
//! answered with a token for it, see `registry_auth`): pointing a build's architecture tag (`:amd64`) at
//! the manifest that build pushed, which the Docker engine cannot do without a race (tagging in a shared
//! engine and pushing the tag lets two concurrent builds of one repository push each other's image),
//! reading a pushed image's manifest and layers and pushing its attestation beside it (cosign's
//! `sha256-<hex>.att`), and deleting manifests for the collector. Over `https://` when `registry.tls` is set, trusting
//! `registry.ca_file` beside the built-in roots.

use std::time::Duration;

use artifacts_schemas::Architecture;

use artifacts_runtime::registry_auth::{builder_password, BUILDER_USER};
use artifacts_runtime::Settings;

/// The manifest kinds Docker and the registry exchange, newest first.
const MANIFEST_TYPES: &str = "application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.index.v1+json";

const TIMEOUT: Duration = Duration::from_secs(30);

/// The workers' registry credentials, when the admin key they derive from is set.
pub fn builder_credentials(settings: &Settings) -> Option<bollard::auth::DockerCredentials> {
    let password = builder_password(settings.admin_key()?);
    Some(bollard::auth::DockerCredentials {
        username: Some(BUILDER_USER.to_owned()),
        password: Some(password.expose().to_owned()),
        serveraddress: Some(settings.registry.address.clone()),
        ..Default::default()
    })
}

/// The registry's HTTP client: `registry.ca_file` (the CA `artifacts up` made, or the operator's) is
/// trusted beside the built-in roots.
pub fn http_client(settings: &Settings) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder().timeout(TIMEOUT);
    if let Some(file) = &settings.registry.ca_file {
        let pem = std::fs::read(file)
            .map_err(|err| format!("cannot read the registry's CA (registry.ca_file) {}: {err}", file.display()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|err| format!("registry.ca_file {} holds no PEM certificate: {err}", file.display()))?;
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder.build().map_err(|err| err.to_string())
}

/// Makes `to_tag` name the manifest `from_tag` names, in `repository` of the registry.
pub async fn copy_tag(settings: &Settings, repository: &str, from_tag: &str, to_tag: &str) -> Result<(), String> {
    let client = http_client(settings)?;
    let manifests = format!("{}/v2/{repository}/manifests", settings.registry.base_url());
    let read = |token: Option<&str>| {
        let mut request = client.get(format!("{manifests}/{from_tag}")).header(reqwest::header::ACCEPT, MANIFEST_TYPES);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let unreadable = |err: reqwest::Error| format!("cannot read the manifest of {repository}:{from_tag}: {err}");
    let (fetched, token) = with_token(&client, settings, repository, read).await.map_err(unreadable)?;
    let fetched = fetched.error_for_status().map_err(unreadable)?;
    let content_type = fetched.headers().get(reqwest::header::CONTENT_TYPE).cloned();
    let manifest = fetched.bytes().await.map_err(|err| format!("cannot read the manifest: {err}"))?;
    let mut put = client.put(format!("{manifests}/{to_tag}")).body(manifest);
    if let Some(content_type) = content_type {
        put = put.header(reqwest::header::CONTENT_TYPE, content_type);
    }
    if let Some(token) = &token {
        put = put.bearer_auth(token);
    }
    put.send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|err| format!("cannot tag {repository}:{to_tag}: {err}"))?;
    Ok(())
}

/// Deletes the manifest `digest` of `repository` (its tags go with it). An absent one is no error.
pub async fn delete_manifest(settings: &Settings, repository: &str, digest: &str) -> Result<(), String> {
    let client = http_client(settings)?;
    let url = format!("{}/v2/{repository}/manifests/{digest}", settings.registry.base_url());
    let delete = |token: Option<&str>| {
        let mut request = client.delete(&url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let failed = |err: reqwest::Error| format!("cannot delete {repository}@{digest}: {err}");
    let (answer, _) = with_token(&client, settings, repository, delete).await.map_err(failed)?;
    if answer.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(());
    }
    answer.error_for_status().map(drop).map_err(failed)
}

/// A layer may be large: reading one has this long, not [`TIMEOUT`].
const BLOB_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Requests about one repository as the workers: the token the registry asked for once is sent with the
/// requests after (and fetched again when it is refused).
struct Session<'a> {
    settings: &'a Settings,
    client: reqwest::Client,
    repository: &'a str,
    token: Option<String>,
}

impl<'a> Session<'a> {
    fn new(settings: &'a Settings, repository: &'a str) -> Result<Self, String> {
        Ok(Self { settings, client: http_client(settings)?, repository, token: None })
    }

    /// `<registry>/v2/<repository>/<path>`.
    fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.settings.registry.base_url(), self.repository)
    }

    async fn send(
        &mut self,
        request: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, reqwest::Error> {
        if let Some(token) = &self.token {
            let answer = request(&self.client).bearer_auth(token).send().await?;
            if answer.status() != reqwest::StatusCode::UNAUTHORIZED {
                return Ok(answer);
            }
        }
        let client = &self.client;
        let send = |token: Option<&str>| {
            let mut request = request(client);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            request.send()
        };
        let (answer, token) = with_token(client, self.settings, self.repository, send).await?;
        if token.is_some() {
            self.token = token;
        }
        Ok(answer)
    }

    /// [`Self::send`], asked again a few times while the registry answers with a 500: distribution 2.8
    /// fails a read of a manifest whose links a concurrent put rewrites (see [`publish_manifest_list`]).
    async fn send_again_on_500(
        &mut self,
        request: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let mut answer = self.send(&request).await?;
        for _ in 0..5 {
            if !answer.status().is_server_error() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            answer = self.send(&request).await?;
        }
        Ok(answer)
    }
}

/// The manifest `reference` (a tag or a digest) of `repository`: its media type and its bytes.
pub async fn manifest(settings: &Settings, repository: &str, reference: &str) -> Result<(String, Vec<u8>), String> {
    let mut session = Session::new(settings, repository)?;
    let url = session.url(&format!("manifests/{reference}"));
    let failed = |err: reqwest::Error| format!("cannot read the manifest of {repository}:{reference}: {err}");
    let answer = session
        .send_again_on_500(|client| client.get(&url).header(reqwest::header::ACCEPT, MANIFEST_TYPES))
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(failed)?;
    let media_type = answer
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = answer.bytes().await.map_err(failed)?;
    Ok((media_type, bytes.to_vec()))
}

/// The digest of the manifest `reference` (a tag or a digest) of `repository`, as the registry names it
/// (`Docker-Content-Digest`); `None` when the repository has no such manifest.
pub async fn manifest_digest(settings: &Settings, repository: &str, reference: &str) -> Result<Option<String>, String> {
    let mut session = Session::new(settings, repository)?;
    let url = session.url(&format!("manifests/{reference}"));
    let failed = |err: reqwest::Error| format!("cannot look up {repository}:{reference}: {err}");
    let answer = session
        .send_again_on_500(|client| client.head(&url).header(reqwest::header::ACCEPT, MANIFEST_TYPES))
        .await
        .map_err(failed)?;
    if answer.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    let answer = answer.error_for_status().map_err(failed)?;
    let digest = answer.headers().get("docker-content-digest").and_then(|value| value.to_str().ok());
    match digest {
        Some(digest) => Ok(Some(digest.to_owned())),
        None => Err(format!("the registry names no digest for {repository}:{reference}")),
    }
}

/// The blob `digest` of `repository`, as an answer whose body is read as it comes (a layer may be large:
/// the request has [`BLOB_TIMEOUT`]).
pub async fn blob(settings: &Settings, repository: &str, digest: &str) -> Result<reqwest::Response, String> {
    let mut session = Session::new(settings, repository)?;
    let url = session.url(&format!("blobs/{digest}"));
    session
        .send(|client| client.get(&url).timeout(BLOB_TIMEOUT))
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|err| format!("cannot read the blob {digest} of {repository}: {err}"))
}

/// Pushes an image's attestation as cosign does (`artifacts_provenance::cosign`): its config and layer
/// (each uploaded unless the repository has it), then its manifest under `sha256-<hex>.att`. The caller
/// holds the registry's push gate (`Store::registry_push`): a blob sweep must not run in between.
pub async fn push_attestation(
    settings: &Settings,
    repository: &str,
    attestation: &artifacts_provenance::cosign::Attestation,
) -> Result<(), String> {
    let mut session = Session::new(settings, repository)?;
    for blob in [&attestation.config, &attestation.layer] {
        upload_blob(&mut session, &blob.digest, &blob.bytes).await?;
    }
    let manifest = &attestation.manifest;
    let url = session.url(&format!("manifests/{}", attestation.tag));
    let failed = |err: reqwest::Error| format!("cannot push {repository}:{}: {err}", attestation.tag);
    let answer = session
        .send_again_on_500(|client| {
            client.put(&url).header(reqwest::header::CONTENT_TYPE, &manifest.media_type).body(manifest.bytes.clone())
        })
        .await
        .map_err(failed)?;
    refused(answer, &format!("cannot push {repository}:{}", attestation.tag)).await.map(drop)
}

/// Uploads one blob in a single request (`POST /blobs/uploads/`, then `PUT <location>&digest=`), unless
/// the repository has it.
async fn upload_blob(session: &mut Session<'_>, digest: &str, bytes: &[u8]) -> Result<(), String> {
    let repository = session.repository;
    let failed = |err: reqwest::Error| format!("cannot upload the blob {digest} to {repository}: {err}");
    let head = session.url(&format!("blobs/{digest}"));
    let present = session.send(|client| client.head(&head)).await.map_err(failed)?;
    if present.status().is_success() {
        return Ok(());
    }
    let uploads = session.url("blobs/uploads/");
    let started = session.send(|client| client.post(&uploads).header(reqwest::header::CONTENT_LENGTH, 0)).await;
    let started =
        refused(started.map_err(failed)?, &format!("cannot upload the blob {digest} to {repository}")).await?;
    let location = started
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| format!("the registry named no upload location for {repository}"))?;
    // Relative to the registry (distribution answers an absolute URL, others may not).
    let location = match location.starts_with("http://") || location.starts_with("https://") {
        true => location.to_owned(),
        false => format!("{}/{}", session.settings.registry.base_url(), location.trim_start_matches('/')),
    };
    let separator = if location.contains('?') { '&' } else { '?' };
    let put = format!("{location}{separator}digest={}", digest.replace(':', "%3A"));
    let answer = session
        .send(|client| {
            client.put(&put).header(reqwest::header::CONTENT_TYPE, "application/octet-stream").body(bytes.to_vec())
        })
        .await
        .map_err(failed)?;
    refused(answer, &format!("cannot upload the blob {digest} to {repository}")).await.map(drop)
}

/// The answer when it is a success; otherwise its status and what the registry said, after `what`.
async fn refused(answer: reqwest::Response, what: &str) -> Result<reqwest::Response, String> {
    let status = answer.status();
    if status.is_success() {
        return Ok(answer);
    }
    let said = answer.text().await.unwrap_or_default();
    let said: String = said.trim().chars().take(300).collect();
    Err(format!("{what}: the registry answered {status}: {said}"))
}

/// Deletes the attestation `push_attestation` pushed beside the image `image_digest` of `repository`
/// (tag `sha256-<hex>.att`). An absent one is no error.
pub async fn delete_attestation(settings: &Settings, repository: &str, image_digest: &str) -> Result<(), String> {
    let Ok(tag) = artifacts_provenance::cosign::attestation_tag(image_digest) else { return Ok(()) };
    match manifest_digest(settings, repository, &tag).await? {
        Some(digest) => delete_manifest(settings, repository, &digest).await,
        None => Ok(()),
    }
}

const MANIFEST_LIST_TYPE: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Makes `tag` of `repository` a multi-platform manifest list of `members` (each architecture's image
/// manifest, by digest), and deletes the list it named before, so that old lists do not keep the blobs
/// of collected images. No members: the tag goes.
pub async fn publish_manifest_list(
    settings: &Settings,
    repository: &str,
    tag: &str,
    members: &[(Architecture, String)],
) -> Result<(), String> {
    let client = http_client(settings)?;
    let manifests = format!("{}/v2/{repository}/manifests", settings.registry.base_url());
    let head = |reference: &str, token: Option<&str>| {
        let mut request =
            client.head(format!("{manifests}/{reference}")).header(reqwest::header::ACCEPT, MANIFEST_TYPES);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let failed = |err: reqwest::Error| format!("cannot publish {repository}:{tag}: {err}");
    let (previous, token) =
        with_token(&client, settings, repository, |token| head(tag, token)).await.map_err(failed)?;
    let header = |answer: &reqwest::Response, name: &str| {
        answer.headers().get(name).and_then(|value| value.to_str().ok()).map(str::to_owned)
    };
    // Only a list this function published is replaced; an image someone pushed as `latest` by hand stays
    // until a list takes its tag.
    let previous = previous
        .status()
        .is_success()
        .then(|| header(&previous, "content-type").filter(|kind| kind == MANIFEST_LIST_TYPE))
        .flatten()
        .and_then(|_| header(&previous, "docker-content-digest"));
    let mut entries = Vec::new();
    for (architecture, digest) in members {
        // distribution 2.8 rewrites a manifest's links in place when the same manifest is put under
        // another tag (as `copy_tag` may do at the same time), and a read in between fails with a 500
        // ("invalid checksum digest format"): asked again, it answers.
        let mut answer = head(digest, token.as_deref()).await.map_err(failed)?;
        for _ in 0..5 {
            if !answer.status().is_server_error() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            answer = head(digest, token.as_deref()).await.map_err(failed)?;
        }
        let answer = answer.error_for_status().map_err(failed)?;
        let media_type = header(&answer, "content-type").unwrap_or_default();
        let size: u64 = header(&answer, "content-length").and_then(|size| size.parse().ok()).unwrap_or_default();
        let mut platform = serde_json::json!({"os": "linux", "architecture": architecture.oci_architecture()});
        if let Some(variant) = architecture.oci_variant() {
            platform["variant"] = variant.into();
        }
        entries
            .push(serde_json::json!({"mediaType": media_type, "size": size, "digest": digest, "platform": platform}));
    }
    let mut published = None;
    if !entries.is_empty() {
        let list = serde_json::json!({"schemaVersion": 2, "mediaType": MANIFEST_LIST_TYPE, "manifests": entries});
        let put = || {
            let mut put = client
                .put(format!("{manifests}/{tag}"))
                .header(reqwest::header::CONTENT_TYPE, MANIFEST_LIST_TYPE)
                .body(list.to_string());
            if let Some(token) = &token {
                put = put.bearer_auth(token);
            }
            put.send()
        };
        // The registry checks that every member exists, reading the links that a concurrent put of the
        // same manifest rewrites in place (above): such a read fails as "digest invalid" (400) or with a
        // 500, and the same list put again is taken.
        let mut answer = put().await.map_err(failed)?;
        for _ in 0..5 {
            let status = answer.status();
            if !(status.is_server_error() || status == reqwest::StatusCode::BAD_REQUEST) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            answer = put().await.map_err(failed)?;
        }
        let answer = answer.error_for_status().map_err(failed)?;
        published = header(&answer, "docker-content-digest");
    }
    match previous {
        Some(previous) if Some(&previous) != published.as_ref() => {
            delete_manifest(settings, repository, &previous).await
        }
        _ => Ok(()),
    }
}

/// Sends a request; when the registry asks for a token, gets one for the workers and sends it again.
async fn with_token<F, Fut>(
    client: &reqwest::Client,
    settings: &Settings,
    repository: &str,
    send: F,
) -> Result<(reqwest::Response, Option<String>), reqwest::Error>
where
    F: Fn(Option<&str>) -> Fut,
    Fut: std::future::Future<Output = Result<reqwest::Response, reqwest::Error>>,
{
    let answer = send(None).await?;
    if answer.status() != reqwest::StatusCode::UNAUTHORIZED {
        return Ok((answer, None));
    }
    let challenge = answer.headers().get(reqwest::header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok());
    let Some(challenge) = challenge.map(str::to_owned) else { return Ok((answer, None)) };
    match fetch_token(client, settings, &challenge, repository).await {
        Ok(token) => Ok((send(Some(&token)).await?, Some(token))),
        Err(err) => {
            tracing::warn!(%err, "cannot get a registry token");
            Ok((answer, None))
        }
    }
}

/// A token for every action on `repository`, from the realm the registry's challenge names
/// (`Bearer realm="…",service="…",scope="…"`).
async fn fetch_token(
    client: &reqwest::Client,
    settings: &Settings,
    challenge: &str,
    repository: &str,
) -> Result<String, String> {
    let parameter = |name: &str| {
        let start = challenge.find(&format!("{name}=\""))? + name.len() + 2;
        let end = challenge[start..].find('"')? + start;
        Some(challenge[start..end].to_owned())
    };
    let realm = parameter("realm").ok_or_else(|| format!("the registry's challenge names no realm: {challenge}"))?;
    let service = parameter("service").unwrap_or_default();
    let password = settings
        .admin_key()
        .map(builder_password)
        .ok_or("the registry wants a token, and without an admin key the workers have no registry identity")?;
    #[derive(serde::Deserialize)]
    struct Token {
        token: String,
    }
    let scope = format!("repository:{repository}:pull,push,delete");
    let answer = client
        .get(realm)
        .query(&[("service", service.as_str()), ("scope", scope.as_str())])
        .basic_auth(BUILDER_USER, Some(password.expose()))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|err| format!("cannot get a registry token: {err}"))?;
    let token: Token = answer.json().await.map_err(|err| format!("the token endpoint answered no token: {err}"))?;
    Ok(token.token)
}

/// What a blob sweep freed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Swept {
    pub blobs: u64,
    pub bytes: u64,
}

/// Runs the registry's own `garbage-collect` over its filesystem storage at `storage_dir`, which deletes
/// the blobs no manifest refers to any more (after [`delete_manifest`]). Must run with no push in
/// flight ([`artifacts_store::Store::registry_sweep`]). Killed after [`artifacts_store::SWEEP_LIMIT`].
pub async fn sweep_blobs(storage_dir: &std::path::Path) -> Result<Swept, String> {
    let program = artifacts_runtime::find_program("docker-registry")
        .or_else(|| artifacts_runtime::find_program("registry"))
        .ok_or("docker-registry is not installed here (Debian: apt-get install docker-registry)")?;
    // The command needs only the storage section; the registry's own file may name another root (its
    // environment overrides it) or not be readable here.
    let config = storage_dir.with_file_name(".artifacts-gc-registry.yml");
    let text = format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n",
        serde_json::to_string(&storage_dir.display().to_string()).expect("strings serialise")
    );
    tokio::fs::write(&config, text).await.map_err(|err| format!("cannot write {}: {err}", config.display()))?;
    let before = blob_usage(storage_dir).await;
    let run = tokio::process::Command::new(&program)
        .arg("garbage-collect")
        .arg(&config)
        .env("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", storage_dir)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(artifacts_store::SWEEP_LIMIT, run)
        .await
        .map_err(|_| "the registry's garbage-collect ran out of time".to_owned())?
        .map_err(|err| format!("cannot run {}: {err}", program.display()))?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stderr);
        let last = said.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or_default();
        return Err(format!("the registry's garbage-collect failed ({}): {last}", output.status));
    }
    let after = blob_usage(storage_dir).await;
    Ok(Swept { blobs: before.blobs.saturating_sub(after.blobs), bytes: before.bytes.saturating_sub(after.bytes) })
}

/// Manifest lists that no tag names, in the repositories under `storage_dir`: (repository, digest).
///
/// [`publish_manifest_list`] replaces a tag's list and deletes the one it replaced, but two builds
/// publishing at once both replace the same list, and the list that lost the tag stays; so does one
/// whose publisher stopped in between. Left, such a list would keep the blobs of collected images.
/// A list is only taken once its revision is [`UNTAGGED_LIST_AGE`] old: a push writes the revision
/// just before the tag.
pub async fn untagged_lists(storage_dir: &std::path::Path) -> Vec<(String, String)> {
    fn repositories(dir: &std::path::Path, found: &mut Vec<std::path::PathBuf>) {
        if dir.join("_manifests").is_dir() {
            found.push(dir.to_path_buf());
        }
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|kind| kind.is_dir())
                && !entry.file_name().to_string_lossy().starts_with('_')
            {
                repositories(&entry.path(), found);
            }
        }
    }
    fn link(path: std::path::PathBuf) -> Option<String> {
        std::fs::read_to_string(path).ok().map(|link| link.trim().to_owned())
    }
    let root = storage_dir.join("docker/registry/v2");
    tokio::task::spawn_blocking(move || {
        let mut found = Vec::new();
        repositories(&root.join("repositories"), &mut found);
        let mut untagged = Vec::new();
        for repository in found {
            let manifests = repository.join("_manifests");
            // Revisions before tags: a list pushed in between is not among the revisions read.
            let revisions: Vec<_> = std::fs::read_dir(manifests.join("revisions/sha256"))
                .into_iter()
                .flatten()
                .flatten()
                .filter(|revision| {
                    let age = revision.path().join("link").metadata().and_then(|m| m.modified()).ok();
                    age.and_then(|modified| modified.elapsed().ok()).is_some_and(|age| age >= UNTAGGED_LIST_AGE)
                })
                .map(|revision| format!("sha256:{}", revision.file_name().to_string_lossy()))
                .collect();
            let tagged: std::collections::BTreeSet<String> = std::fs::read_dir(manifests.join("tags"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|tag| link(tag.path().join("current/link")))
                .collect();
            let name = repository.strip_prefix(root.join("repositories")).expect("under the root");
            for digest in revisions.into_iter().filter(|digest| !tagged.contains(digest)) {
                let hex = &digest["sha256:".len()..];
                let Some(prefix) = hex.get(..2) else { continue };
                let blob = root.join("blobs/sha256").join(prefix).join(hex).join("data");
                // Manifests are small; anything large is not one.
                let is_list = std::fs::metadata(&blob).is_ok_and(|m| m.len() < 4 << 20)
                    && std::fs::read(&blob)
                        .ok()
                        .and_then(|data| serde_json::from_slice::<serde_json::Value>(&data).ok())
                        .is_some_and(|manifest| manifest["mediaType"] == MANIFEST_LIST_TYPE);
                if is_list {
                    untagged.push((name.to_string_lossy().into_owned(), digest));
                }
            }
        }
        untagged
    })
    .await
    .unwrap_or_default()
}

/// See [`untagged_lists`].
const UNTAGGED_LIST_AGE: Duration = Duration::from_secs(5);

/// Blobs under the registry's storage and their bytes.
async fn blob_usage(storage_dir: &std::path::Path) -> Swept {
    fn walk(dir: &std::path::Path, usage: &mut Swept) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_dir() {
                walk(&entry.path(), usage);
            } else if kind.is_file() && entry.file_name() == "data" {
                usage.blobs += 1;
                usage.bytes += entry.metadata().map_or(0, |m| m.len());
            }
        }
    }
    let blobs = storage_dir.join("docker/registry/v2/blobs");
    tokio::task::spawn_blocking(move || {
        let mut usage = Swept::default();
        walk(&blobs, &mut usage);
        usage
    })
    .await
    .unwrap_or_default()
}
