//! `<prefix>.image.build`: checks a submission, stores its Dockerfile by content, and queues the build
//! (or answers with the identical build already queued or running).
//!
//! What a build may read is checked here, before anything is queued: the images of this service's
//! registry it names (`FROM`, `COPY --from`) must belong to components the caller may read, and an
//! uploaded context must have been uploaded by the caller or for the same component.

use async_nats::jetstream::kv;
use sha2::{Digest, Sha256};

use artifacts_runtime::builder::ensure_buildable;
use artifacts_runtime::builds::{self, Submission};
use artifacts_runtime::nats::{read_json, unavailable};
use artifacts_runtime::registry_auth;
use artifacts_runtime::service::{Reply, Request};
use artifacts_runtime::uploads::require_grant;
use artifacts_runtime::{auth::Caller, Nats, Settings};
use artifacts_schemas::messages::image::MAX_DOCKERFILE_BYTES;
use artifacts_schemas::messages::keys::Scope;
use artifacts_schemas::{
    parse_json, Architecture, BuildAccepted, BuildKind, BuildWork, ComponentName, Failure, ImageBuildRequest,
    ImageBuildSummary, ImageJob, ImageRecord, ImageRepository, RequestError, RequestedBy, Trigger,
};

use crate::dockerfile::{may_name_image_id, referenced_images, registry_repository};
use crate::SERVICE_NAME;

pub async fn answer(nats: &Nats, settings: &Settings, request: &Request) -> Reply {
    accept(nats, settings, request).await.into()
}

async fn accept(nats: &Nats, settings: &Settings, request: &Request) -> Result<BuildAccepted, RequestError> {
    let build: ImageBuildRequest = parse_json(&request.message.payload)?;
    let caller = &request.caller;
    caller.require_for(Scope::Build, &build.component)?;
    if build.dockerfile.len() > MAX_DOCKERFILE_BYTES {
        return Err(RequestError::new(Failure::TooLarge, "the Dockerfile is larger than 1 MiB"));
    }
    if build.dockerfile.trim().is_empty() {
        return Err(RequestError::invalid("the Dockerfile is empty"));
    }
    require_readable_bases(nats, settings, caller, &build).await?;
    if let Some(context) = &build.context {
        require_grant(nats, context_hex(context)?, caller, &build.component).await?;
    }
    ensure_buildable(nats, settings, SERVICE_NAME, build.architecture).await?;
    queue(nats, settings, &build, request.requested_by.clone(), None).await
}

/// 403 unless every image of this service's registry the Dockerfile uses belongs to a component the
/// caller may read; 400 when the images cannot be told (a variable without a value).
async fn require_readable_bases(
    nats: &Nats,
    settings: &Settings,
    caller: &Caller,
    build: &ImageBuildRequest,
) -> Result<(), RequestError> {
    let references = referenced_images(&build.dockerfile, &build.build_args).map_err(RequestError::invalid)?;
    for reference in references {
        if may_name_image_id(&reference) {
            return Err(RequestError::forbidden(format!(
                "the Dockerfile names {reference:?}, which the engine may read as an image id: name images by repository and tag"
            )));
        }
        let Some(repository) = registry_repository(&reference, &settings.registry.address) else { continue };
        let owners = image_owners(nats, &repository).await?;
        if owners.is_empty() {
            return Err(RequestError::forbidden(format!(
                "{reference} is not an image this service built: only its own images may be used from {}",
                settings.registry.address
            )));
        }
        if let Some(refused) = owners.iter().find(|owner| !caller.may(Scope::Read, &owner.component)) {
            return Err(RequestError::forbidden(format!(
                "the Dockerfile uses {reference}, an image of component {}, which this API key may not read",
                refused.component
            )));
        }
    }
    Ok(())
}

/// The image records whose repository is `repository` (`<component>-<branch slug>-image`). The name
/// alone is ambiguous (`a-b` + `c` and `a` + `b-c`), so every split is looked up in the images bucket,
/// whose keys are `<component slug>/<branch slug>/<architecture>`.
async fn image_owners(nats: &Nats, repository: &str) -> Result<Vec<ImageRecord>, RequestError> {
    let Some(stem) = repository.strip_suffix("-image") else { return Ok(Vec::new()) };
    let mut owners = Vec::new();
    for (at, _) in stem.match_indices('-') {
        let (component_slug, branch_slug) = (&stem[..at], &stem[at + 1..]);
        for architecture in Architecture::ALL {
            let key = format!("{component_slug}/{branch_slug}/{}", architecture.short());
            let Ok(Some(record)) = read_json::<ImageRecord>(&nats.stores.images, &key).await else { continue };
            if ImageRepository::new(&record.component, &record.branch).as_str() == repository {
                owners.push(record);
            }
        }
    }
    Ok(owners)
}

/// The hex digest in a context's object name `contexts/<sha256 hex>`.
fn context_hex(object: &str) -> Result<&str, RequestError> {
    object
        .strip_prefix("contexts/")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| RequestError::invalid("context must name an uploaded object `contexts/<sha256 hex>`"))
}

/// Stores the Dockerfile and queues a checked request, or answers with the identical build (same
/// Dockerfile, context, arguments and target) queued, running or (unless `force`) built successfully.
/// `trigger` is the push a triggered build answers.
pub async fn queue(
    nats: &Nats,
    settings: &Settings,
    request: &ImageBuildRequest,
    requested_by: RequestedBy,
    trigger: Option<Trigger>,
) -> Result<BuildAccepted, RequestError> {
    let dockerfile_hex = hex::encode(Sha256::digest(request.dockerfile.as_bytes()));
    let dockerfile_object = format!("dockerfiles/{dockerfile_hex}");
    if nats.stores.uploads.info(&dockerfile_object).await.is_err() {
        nats.stores
            .uploads
            .put(dockerfile_object.as_str(), &mut request.dockerfile.as_bytes())
            .await
            .map_err(unavailable)?;
    }
    let context_digest = match &request.context {
        Some(object) => Some(context_digest(nats, object).await?),
        None => None,
    };
    let summary = ImageBuildSummary {
        component: request.component.clone(),
        branch: request.branch.clone(),
        architecture: request.architecture,
        dockerfile_digest: format!("sha256:{dockerfile_hex}"),
        context_digest,
        build_args: request.build_args.clone(),
        trigger: trigger.clone(),
    };
    record_repository(nats, &ImageRepository::new(&request.component, &request.branch), &request.component).await?;
    let submitted = builds::submit(
        nats,
        Submission {
            work: BuildWork::Image { request: summary, result: None },
            requested_by,
            job_subject: nats.subjects.jobs(BuildKind::Image, request.architecture),
            job: |build_id: &artifacts_schemas::BuildId| ImageJob {
                build_id: build_id.clone(),
                component: request.component.clone(),
                branch: request.branch.clone(),
                architecture: request.architecture,
                dockerfile: dockerfile_object.clone(),
                context: request.context.clone(),
                build_args: request.build_args.clone(),
            },
            rerun_failed: true,
            force: request.force,
        },
    )
    .await?;
    let image_name = format!(
        "{}/{}:{}",
        settings.registry.address,
        ImageRepository::new(&request.component, &request.branch),
        request.architecture.short()
    );
    Ok(submitted.accepted(Some(image_name)))
}

/// Notes which component the repository holds images of, for registry tokens (the name does not say:
/// branches are slugged). A repository's name follows from its component, so the first note stands.
async fn record_repository(
    nats: &Nats,
    repository: &ImageRepository,
    component: &ComponentName,
) -> Result<(), RequestError> {
    let key = registry_auth::repository_key(repository.as_str()).map_err(RequestError::internal)?;
    match nats.stores.repositories.create(&key, component.as_str().to_owned().into()).await {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(unavailable(err)),
    }
}

/// A context must already be in the uploads store as `contexts/<sha256 hex>`, and its content must hash
/// to that name.
async fn context_digest(nats: &Nats, object: &str) -> Result<String, RequestError> {
    let hex_digest = context_hex(object)?;
    let info = nats.stores.uploads.info(object).await.map_err(|_| {
        RequestError::invalid(format!("context {object} is not in the uploads object store: upload it first"))
    })?;
    let stored = info.digest.as_deref().and_then(|d| d.strip_prefix("SHA-256=")).map(|b64| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE.decode(b64).map(hex::encode).unwrap_or_default()
    });
    if stored.as_deref() != Some(hex_digest) {
        return Err(RequestError::invalid(format!("context {object} does not hash to its name")));
    }
    Ok(format!("sha256:{hex_digest}"))
}
