//! `<prefix>.image.build`: checks a submission, stores its Dockerfile by content, and queues the build
//! (or answers with the identical build already queued or running).

use async_nats::Message;
use sha2::{Digest, Sha256};

use artifacts_runtime::builds::{self, Submission};
use artifacts_runtime::nats::unavailable;
use artifacts_runtime::service::{requested_by, Reply};
use artifacts_runtime::{Nats, Settings};
use artifacts_schemas::messages::image::MAX_DOCKERFILE_BYTES;
use artifacts_schemas::{
    parse_json, BuildAccepted, BuildKind, Failure, ImageBuildRequest, ImageBuildSummary, ImageJob, ImageRepository,
    RequestError,
};

use artifacts_runtime::builder::ensure_buildable;

use crate::SERVICE_NAME;

pub async fn answer(nats: &Nats, settings: &Settings, message: &Message) -> Reply {
    accept(nats, settings, message).await.into()
}

async fn accept(nats: &Nats, settings: &Settings, message: &Message) -> Result<BuildAccepted, RequestError> {
    let requested_by = requested_by(message.headers.as_ref())?;
    let request: ImageBuildRequest = parse_json(&message.payload)?;
    if request.dockerfile.len() > MAX_DOCKERFILE_BYTES {
        return Err(RequestError::new(Failure::TooLarge, "the Dockerfile is larger than 1 MiB"));
    }
    if request.dockerfile.trim().is_empty() {
        return Err(RequestError::invalid("the Dockerfile is empty"));
    }
    ensure_buildable(nats, settings, SERVICE_NAME, request.architecture).await?;

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
        trigger: request.trigger.clone(),
    };
    let submitted = builds::submit(
        nats,
        Submission {
            kind: BuildKind::Image,
            summary: serde_json::to_value(&summary).expect("summaries serialise"),
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
        },
    )
    .await?;
    let image_name = format!(
        "{}/{}:{}",
        settings.registry.address,
        ImageRepository::new(&request.component, &request.branch),
        request.architecture.short()
    );
    Ok(BuildAccepted::queued(submitted.build_id, Some(image_name)))
}

/// A context must already be in the uploads store as `contexts/<sha256 hex>`, and its content must hash
/// to that name.
async fn context_digest(nats: &Nats, object: &str) -> Result<String, RequestError> {
    let hex_digest = object
        .strip_prefix("contexts/")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| RequestError::invalid("context must name an uploaded object `contexts/<sha256 hex>`"))?;
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
