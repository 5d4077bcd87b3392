//! `<prefix>.image.build`: checks a submission, stores its Dockerfile by content, and queues the build
//! (or answers with the identical build already queued or running).
//!
//! What a build may read is checked here, before anything is queued: the images of this service's
//! registry it names (`FROM`, `COPY --from`) must belong to components the caller may read, and an
//! uploaded context must have been uploaded by the caller or for the same component. The repository
//! the build pushes to must be its (component, branch)'s alone (`image_access::claim`).

use async_nats::Message;
use sha2::{Digest, Sha256};

use artifacts_engine::builder::ensure_buildable;
use artifacts_engine::image_access;
use artifacts_runtime::secrets;
use artifacts_runtime::service::{Reply, Request};
use artifacts_runtime::uploads::require_grant;
use artifacts_runtime::{auth::Caller, Nats, Settings};
use artifacts_schemas::messages::image::MAX_DOCKERFILE_BYTES;
use artifacts_schemas::messages::keys::Scope;
use artifacts_schemas::messages::secrets::SecretInput;
use artifacts_schemas::{
    parse_json, BuildAccepted, BuildKind, BuildWork, ComponentName, Failure, ImageBuildRequest, ImageBuildSummary,
    ImageJob, RequestError, RequestedBy, Trigger, TriggeredImageBuild,
};

use artifacts_store::{Objects, Submission};

use crate::dockerfile::{check_target, newer_syntax, referenced_images, secret_ids};
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
    if let Some(target) = &build.target {
        check_target(target, &build.dockerfile).map_err(RequestError::invalid)?;
    }
    require_readable_frontend(settings, &build.dockerfile).await?;
    require_readable_bases(nats, settings, caller, &build).await?;
    if let Some(context) = &build.context {
        require_grant(nats, context_hex(context)?, caller, &build.component).await?;
    }
    ensure_buildable(nats, settings, SERVICE_NAME, build.architecture).await?;
    queue(nats, settings, &build, request.requested_by.clone(), None).await
}

/// An image rebuild a push asks for, from the git trigger (a stack-only subject: the trigger checked the
/// push and its sender): the Dockerfile and context of the image's last build, already checked then.
pub async fn answer_triggered(nats: &Nats, settings: &Settings, message: &Message) -> Reply {
    let triggered = async {
        let triggered: TriggeredImageBuild = parse_json(&message.payload)?;
        ensure_buildable(nats, settings, SERVICE_NAME, triggered.request.architecture).await?;
        queue(nats, settings, &triggered.request, RequestedBy::default(), Some(triggered.trigger)).await
    };
    triggered.await.into()
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
        let may_read = |component: &ComponentName| caller.may(Scope::Read, component);
        image_access::require_readable(nats, &settings.registry.address, &reference, "the Dockerfile", may_read)
            .await?;
    }
    Ok(())
}

/// 400 for what the engine's built-in Dockerfile frontend cannot read (a heredoc), or a `# syntax=`
/// frontend image the engine does not have (it cannot pull one): the line and why, never a build that
/// silently reads the file otherwise. A frontend image present on the engine is used, heredocs and all.
async fn require_readable_frontend(settings: &Settings, dockerfile: &str) -> Result<(), RequestError> {
    let found = newer_syntax(dockerfile).map_err(RequestError::invalid)?;
    if let Some((line, image)) = &found.syntax {
        let docker = artifacts_engine::docker::connect(settings).await.map_err(RequestError::unavailable)?;
        if docker.inspect_image(image).await.is_ok() {
            return Ok(());
        }
        return Err(RequestError::invalid(format!(
            "line {line}: `# syntax={image}` asks BuildKit to build with the Dockerfile frontend image {image}, \
             which the build engine does not have and cannot pull; remove the line to use the engine's built-in \
             frontend, or have the operator load that image into the engine"
        )));
    }
    if let Some(line) = found.heredoc {
        return Err(RequestError::invalid(format!(
            "line {line}: heredocs (`<<EOF`) need a newer Dockerfile frontend than the build engine's built-in \
             one, which would read the lines that follow as instructions; write the commands on the line (or \
             COPY a file), or name a frontend image present on the engine with `# syntax=`"
        )));
    }
    Ok(())
}

/// The hex digest in a context's object name `contexts/<sha256 hex>`.
fn context_hex(object: &str) -> Result<&str, RequestError> {
    object
        .strip_prefix("contexts/")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| RequestError::invalid("context must name an uploaded object `contexts/<sha256 hex>`"))
}

/// The build secrets a build of `request` reads, as inputs of what is built: the ones its Dockerfile
/// mounts that its component may use, each with a keyed fingerprint of its value (every secret the
/// component may use when the Dockerfile names a mount's secret with a variable). A changed value is
/// another build; a change to a secret the Dockerfile does not mount is not.
async fn secret_inputs(nats: &Nats, request: &ImageBuildRequest) -> Result<Vec<SecretInput>, RequestError> {
    match secret_ids(&request.dockerfile).map_err(RequestError::invalid)? {
        Some(ids) if ids.is_empty() => Ok(Vec::new()),
        Some(ids) => secrets::fingerprints(nats, &request.component, Some(&ids)).await,
        None => secrets::fingerprints(nats, &request.component, None).await,
    }
}

/// Stores the Dockerfile and queues a checked request, or answers with the identical build (same
/// Dockerfile, context, arguments, target and secret values read) queued, running or (unless `force`)
/// built successfully.
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
    if nats.store.object_info(Objects::Uploads, &dockerfile_object).await?.is_none() {
        nats.store.put_object(Objects::Uploads, &dockerfile_object, &mut request.dockerfile.as_bytes()).await?;
    }
    let context_digest = match &request.context {
        Some(object) => Some(context_digest(nats, object).await?),
        None => None,
    };
    let secrets = secret_inputs(nats, request).await?;
    let summary = ImageBuildSummary {
        component: request.component.clone(),
        branch: request.branch.clone(),
        architecture: request.architecture,
        dockerfile_digest: format!("sha256:{dockerfile_hex}"),
        context_digest,
        build_args: request.build_args.clone(),
        target: request.target.clone(),
        secrets,
        trigger: trigger.clone(),
    };
    // One repository, one (component, branch): a pair whose repository name another pair owns is a 409.
    let repository = image_access::claim(nats, &request.component, &request.branch).await?;
    let submitted = nats
        .store
        .submit(Submission {
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
                target: request.target.clone(),
            },
            rerun_failed: true,
            force: request.force,
            headers: artifacts_runtime::telemetry::request_headers(),
        })
        .await?;
    let image_name = format!("{}/{}:{}", settings.registry.address, repository, request.architecture.short());
    Ok(submitted.accepted(Some(image_name)))
}

/// A context must already be in the uploads store as `contexts/<sha256 hex>`, and its content must hash
/// to that name.
async fn context_digest(nats: &Nats, object: &str) -> Result<String, RequestError> {
    let hex_digest = context_hex(object)?;
    let info = nats.store.object_info(Objects::Uploads, object).await?.ok_or_else(|| {
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
