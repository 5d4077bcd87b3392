//! `<prefix>.image.build`: checks a submission, stores its Dockerfile by content, and queues the build
//! (or answers with the identical build already queued or running).

use std::time::Duration;

use async_nats::Message;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use artifacts_runtime::builds::{self, Submission};
use artifacts_runtime::nats::unavailable;
use artifacts_runtime::service::{requested_by, Reply};
use artifacts_runtime::{Nats, Settings};
use artifacts_schemas::messages::image::MAX_DOCKERFILE_BYTES;
use artifacts_schemas::messages::submission::AcceptedStatus;
use artifacts_schemas::{
    parse_json, Architecture, BuildAccepted, BuildKind, Failure, ImageBuildRequest, ImageBuildSummary, ImageJob,
    ImageRepository, RequestError,
};

use crate::{ARCHITECTURES_METADATA, SERVICE_NAME};

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
    ensure_buildable(nats, settings, request.architecture).await?;

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
    };
    let submitted = builds::submit(
        nats,
        Submission {
            kind: BuildKind::Image,
            summary: serde_json::to_value(&summary).expect("summaries serialise"),
            requested_by,
            job_subject: nats.subjects.image_jobs(request.architecture),
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
    let build_id = submitted.build_id;
    Ok(BuildAccepted {
        status: AcceptedStatus::Queued,
        error_message: None,
        image_name: Some(format!(
            "{}/{}:{}",
            settings.registry.address,
            ImageRepository::new(&request.component, &request.branch),
            request.architecture.short()
        )),
        status_url: format!("/api/v1/builds/{build_id}"),
        logs_url: format!("/api/v1/builds/{build_id}/logs"),
        build_id,
    })
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

/// Refuses an architecture that no running worker builds, rather than queueing a build nobody takes.
async fn ensure_buildable(nats: &Nats, settings: &Settings, architecture: Architecture) -> Result<(), RequestError> {
    if settings.build_architectures().contains(&architecture) {
        return Ok(());
    }
    let mut offered: Vec<String> = settings.build_architectures().iter().map(|a| a.platform().to_owned()).collect();
    let inbox = nats.client.new_inbox();
    let mut answers = nats.client.subscribe(inbox.clone()).await.map_err(unavailable)?;
    nats.client.publish_with_reply(format!("$SRV.INFO.{SERVICE_NAME}"), inbox, "".into()).await.map_err(unavailable)?;
    let deadline = tokio::time::sleep(Duration::from_millis(300));
    tokio::pin!(deadline);
    loop {
        let answer = tokio::select! {
            _ = &mut deadline => break,
            answer = answers.next() => match answer { Some(answer) => answer, None => break },
        };
        let info: serde_json::Value = serde_json::from_slice(&answer.payload).unwrap_or_default();
        let platforms = info["metadata"][ARCHITECTURES_METADATA].as_str().unwrap_or("");
        if platforms.split(',').any(|p| p == architecture.platform()) {
            return Ok(());
        }
        offered.extend(platforms.split(',').filter(|p| !p.is_empty()).map(str::to_owned));
    }
    offered.sort();
    offered.dedup();
    Err(RequestError::invalid(format!(
        "no build worker builds {architecture}: the workers running build {}",
        offered.join(", ")
    )))
}
