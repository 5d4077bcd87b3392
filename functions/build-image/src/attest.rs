//! What a successful image build attests (CONTRACT "Signed provenance and SBOM"): an SPDX 2.3 document of
//! the pushed image (its base images, its layers as the registry holds them and the operating-system
//! packages their dpkg and apk databases list), and an in-toto statement with a SLSA provenance v1
//! predicate whose subject is the image's manifest digest and whose resolved dependencies are the base
//! images by the digests the worker's engine (or this service's registry) has them under. The statement is
//! signed (DSSE) with the service's key; both are stored by build id, and the envelope is pushed beside the
//! image as cosign stores attestations (`<repository>:sha256-<hex>.att`).

use std::collections::BTreeMap;

use futures::TryStreamExt as _;
use serde::Deserialize;
use tokio_util::io::{StreamReader, SyncIoBridge};

use artifacts_engine::attempt::BuildFailure;
use artifacts_engine::docker::{engine_away, engine_unanswered};
use artifacts_engine::image_access::registry_repository;
use artifacts_engine::registry;
use artifacts_provenance::image::{ImagePackages, LayerError};
use artifacts_provenance::spdx::{DocumentInfo, ImageReference, ImageSbom, Layer, OsPackage, PackageManager};
use artifacts_provenance::statement::{
    BuildFacts, DigestError, ResourceDescriptor, BUILD_TYPE_IMAGE, DEFAULT_BUILDER_ID,
};
use artifacts_provenance::{cosign, Envelope, Statement};
use artifacts_runtime::logs::BuildLog;
use artifacts_runtime::{Nats, Settings};
use artifacts_schemas::{ImageJob, ImageRepository};
use artifacts_store::{Attestation, SWEEP_LIMIT};

/// The packages of an image whose layers take more than this (compressed) are not read.
pub const PACKAGE_SCAN_LIMIT: u64 = 1 << 30;

/// What the build made and pushed.
pub struct Pushed<'a> {
    /// The Dockerfile as submitted.
    pub dockerfile: &'a str,
    /// `<registry>/<repository>:<arch>-<build id>`.
    pub immutable_name: &'a str,
    /// The manifest digest the push reported.
    pub digest: &'a str,
    pub started_on: time::OffsetDateTime,
}

/// Signs and stores the provenance and SBOM of the image `job` made, and pushes the envelope beside it.
pub async fn attest(
    nats: &Nats,
    settings: &Settings,
    docker: &bollard::Docker,
    job: &ImageJob,
    pushed: Pushed<'_>,
    log: &mut BuildLog,
) -> Result<(), BuildFailure> {
    let key = nats.provenance.key().map_err(|err| BuildFailure::Unavailable(err.message))?;
    let repository = ImageRepository::new(&job.component, &job.branch).to_string();
    let subject_name = format!("{}/{repository}", settings.registry.address);

    let references = crate::dockerfile::referenced_images(pushed.dockerfile, &job.build_args)
        .map_err(|err| BuildFailure::Passing(format!("cannot read the Dockerfile's base images: {err}")))?;
    let mut base_images = Vec::with_capacity(references.len());
    for reference in references {
        match base_image_digest(docker, settings, &reference).await? {
            Some(digest) => base_images.push(ImageReference { reference, digest }),
            None => {
                log.write(&format!(
                    "warning: the digest of base image {reference} is known neither to the engine nor to the \
                     registry: the provenance does not list it"
                ))
                .await
            }
        }
    }

    let layers = layers(settings, &repository, pushed.digest).await?;
    let os_packages = os_packages(settings, &repository, &layers, log).await?;

    let finished_on = time::OffsetDateTime::now_utc();
    let unsignable = |err: DigestError| BuildFailure::Passing(format!("cannot attest the image: {err}"));
    let sbom = ImageSbom {
        component: job.component.to_string(),
        tag: job.branch.to_string(),
        architecture: job.architecture.to_string(),
        image: ImageReference { reference: pushed.immutable_name.to_owned(), digest: pushed.digest.to_owned() },
        base_images: base_images.clone(),
        layers,
        os_packages,
        source: None,
        info: DocumentInfo {
            namespace: format!("{}/api/v1/builds/{}/sbom", settings.public_url(), job.build_id),
            created: finished_on,
            tool: format!("artifacts-build-image-{}", env!("CARGO_PKG_VERSION")),
        },
    }
    .document()
    .map_err(unsignable)?;

    let resolved = base_images
        .iter()
        .map(|base| ResourceDescriptor::image(&base.reference, &base.digest))
        .collect::<Result<Vec<_>, _>>()
        .map_err(unsignable)?;
    let statement = Statement::provenance(BuildFacts {
        subject_name: subject_name.clone(),
        subject_digest: pushed.digest.to_owned(),
        build_type: BUILD_TYPE_IMAGE.to_owned(),
        request: request(job),
        resolved_dependencies: resolved,
        builder_id: DEFAULT_BUILDER_ID.to_owned(),
        invocation_id: job.build_id.to_string(),
        started_on: pushed.started_on,
        finished_on,
    })
    .map_err(unsignable)?;
    let envelope = Envelope::sign_statement(&key, &statement);

    let store = &nats.store;
    let unavailable =
        |err: artifacts_store::StoreError| BuildFailure::Unavailable(format!("cannot store the attestations: {err}"));
    store.put_attestation(&job.build_id, Attestation::Sbom, &sbom.to_json()).await.map_err(unavailable)?;
    store.put_attestation(&job.build_id, Attestation::Provenance, &envelope.to_json()).await.map_err(unavailable)?;

    let attestation = cosign::attestation(pushed.digest, &envelope).map_err(unsignable)?;
    // Blobs are uploaded before the manifest that refers to them: never while the collector sweeps.
    let gate_wait = SWEEP_LIMIT + std::time::Duration::from_secs(60);
    store
        .registry_push(
            job.build_id.as_str(),
            gate_wait,
            registry::push_attestation(settings, &repository, &attestation),
        )
        .await
        .map_err(BuildFailure::from)?
        .map_err(BuildFailure::Passing)?;
    log.write(&format!("signed its provenance and SBOM; attestation pushed as {subject_name}:{}", attestation.tag))
        .await;
    Ok(())
}

/// The request as the build's record summarises it (`ImageBuildSummary`), without its secrets.
fn request(job: &ImageJob) -> serde_json::Value {
    // `dockerfiles/<hex>`, `contexts/<hex>`: the uploads are named by their digest.
    let digest = |object: &str| format!("sha256:{}", object.rsplit('/').next().unwrap_or(object));
    let mut request = serde_json::json!({
        "component": job.component,
        "branch": job.branch,
        "architecture": job.architecture,
        "dockerfileDigest": digest(&job.dockerfile),
        "buildArgs": job.build_args,
    });
    if let Some(context) = &job.context {
        request["contextDigest"] = digest(context).into();
    }
    if let Some(target) = &job.target {
        request["target"] = target.clone().into();
    }
    request
}

/// The digest of a base image as the build used it: the engine's (a pulled image's manifest digest, else
/// one made on the engine by its configuration's digest); else, for an image of this service's registry,
/// the registry's; else the digest the reference pins. `None` when nothing says.
async fn base_image_digest(
    docker: &bollard::Docker,
    settings: &Settings,
    reference: &str,
) -> Result<Option<String>, BuildFailure> {
    match docker.inspect_image(reference).await {
        Ok(inspected) => {
            let digest = artifacts_engine::docker::image_digest(inspected);
            if digest.is_some() {
                return Ok(digest);
            }
        }
        Err(err) if engine_unanswered(&err) => {
            return Err(engine_away(format!("lost the Docker engine while reading base image {reference}: {err}")))
        }
        Err(_) => {}
    }
    let pinned = reference.split_once('@').map(|(_, digest)| digest).filter(|digest| digest.starts_with("sha256:"));
    if let Some(digest) = pinned {
        return Ok(Some(digest.to_owned()));
    }
    let Some(repository) = registry_repository(reference, &settings.registry.address) else { return Ok(None) };
    let path = reference.split_once('/').map_or(reference, |(_, path)| path);
    let tag = path.rsplit_once(':').map_or("latest", |(_, tag)| tag);
    registry::manifest_digest(settings, &repository, tag).await.map_err(|err| {
        BuildFailure::Passing(format!("cannot read the digest of base image {reference} in the registry: {err}"))
    })
}

#[derive(Deserialize)]
struct ImageManifest {
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    size: u64,
    digest: String,
}

/// The layers of the pushed manifest `digest`, lowest first.
async fn layers(settings: &Settings, repository: &str, digest: &str) -> Result<Vec<Layer>, BuildFailure> {
    let (_, manifest) = registry::manifest(settings, repository, digest).await.map_err(BuildFailure::Passing)?;
    let manifest: ImageManifest = serde_json::from_slice(&manifest).map_err(|err| {
        BuildFailure::Passing(format!("the registry's manifest {repository}@{digest} is not an image manifest: {err}"))
    })?;
    Ok(manifest
        .layers
        .into_iter()
        .map(|layer| Layer { digest: layer.digest, size: layer.size, media_type: layer.media_type })
        .collect())
}

/// The operating-system packages the image's package databases list, read from its layers in the
/// registry as they stream in; none when the layers are larger than [`PACKAGE_SCAN_LIMIT`] together or
/// compressed in a way the reader does not know (the log says so).
async fn os_packages(
    settings: &Settings,
    repository: &str,
    layers: &[Layer],
    log: &mut BuildLog,
) -> Result<Vec<OsPackage>, BuildFailure> {
    let total: u64 = layers.iter().map(|layer| layer.size).sum();
    if total > PACKAGE_SCAN_LIMIT {
        log.write(&format!(
            "the image's layers take {total} bytes, more than {PACKAGE_SCAN_LIMIT}: the SBOM lists no \
             operating-system packages"
        ))
        .await;
        return Ok(Vec::new());
    }
    let mut packages = ImagePackages::new();
    for layer in layers {
        let answer = registry::blob(settings, repository, &layer.digest).await.map_err(BuildFailure::Passing)?;
        let stream = Box::pin(answer.bytes_stream().map_err(std::io::Error::other));
        let reader = SyncIoBridge::new(StreamReader::new(stream));
        let (returned, read) = tokio::task::spawn_blocking(move || {
            let read = packages.add_layer(reader);
            (packages, read)
        })
        .await
        .map_err(|err| BuildFailure::Passing(format!("reading the image's layers stopped: {err}")))?;
        packages = returned;
        match read {
            Ok(()) => {}
            Err(LayerError::Compression) => {
                log.write(&format!(
                    "layer {} is compressed in a way the SBOM's reader does not know: the SBOM lists no \
                     operating-system packages",
                    layer.digest
                ))
                .await;
                return Ok(Vec::new());
            }
            Err(err) => {
                return Err(BuildFailure::Passing(format!(
                    "cannot read layer {} of {repository} for its packages: {err}",
                    layer.digest
                )))
            }
        }
    }
    let found = packages.packages();
    if !found.is_empty() {
        let mut managers: BTreeMap<&str, usize> = BTreeMap::new();
        for package in &found {
            let manager = match package.manager {
                PackageManager::Dpkg => "dpkg",
                PackageManager::Apk => "apk",
            };
            *managers.entry(manager).or_default() += 1;
        }
        let counts: Vec<String> = managers.iter().map(|(manager, count)| format!("{count} {manager}")).collect();
        let distro = packages.distro().map(|distro| format!(" of {distro}")).unwrap_or_default();
        log.write(&format!("the SBOM lists {} operating-system packages{distro}", counts.join(", "))).await;
    }
    Ok(found)
}
