//! `<prefix>.component.build`: checks a submission, remembers where the component's source is, and
//! queues the build (or answers with the identical build already queued or running).

use async_nats::Message;

use artifacts_runtime::builder::ensure_buildable;
use artifacts_runtime::builds::{self, Submission};
use artifacts_runtime::configuration::redact_url;
use artifacts_runtime::nats::unavailable;
use artifacts_runtime::service::{requested_by, Reply};
use artifacts_runtime::{Nats, Settings};
use artifacts_schemas::names::slug_with_hash;
use artifacts_schemas::{
    parse_json, BuildAccepted, BuildId, BuildKind, ComponentBuildRequest, ComponentBuildSummary, ComponentJob,
    ComponentSource, GitUrl, RequestError, RequestedBy,
};

use crate::SERVICE_NAME;

pub async fn answer(nats: &Nats, settings: &Settings, message: &Message) -> Reply {
    accept(nats, settings, message).await.into()
}

async fn accept(nats: &Nats, settings: &Settings, message: &Message) -> Result<BuildAccepted, RequestError> {
    let requested_by = requested_by(message.headers.as_ref())?;
    let request: ComponentBuildRequest = parse_json(&message.payload)?;
    GitUrl::parse(&request.url, &settings.git.allowed_schemes)?;
    ensure_buildable(nats, settings, SERVICE_NAME, request.architecture).await?;
    queue(nats, &request, requested_by, Vec::new()).await
}

/// Queues a checked request. `dependents` are the builds waiting for this one (for cycle detection).
pub async fn queue(
    nats: &Nats,
    request: &ComponentBuildRequest,
    requested_by: RequestedBy,
    dependents: Vec<String>,
) -> Result<BuildAccepted, RequestError> {
    let source = ComponentSource { component: request.component.clone(), url: request.url.clone() };
    let bytes = serde_json::to_vec(&source).expect("records serialise");
    nats.stores.sources.put(slug_with_hash(request.component.as_str()), bytes.into()).await.map_err(unavailable)?;
    let summary = ComponentBuildSummary {
        url: redact_url(&request.url),
        component: request.component.clone(),
        tag: request.tag.clone(),
        architecture: request.architecture,
        trigger: request.trigger.clone(),
    };
    let submitted = builds::submit(
        nats,
        Submission {
            kind: BuildKind::Component,
            summary: serde_json::to_value(&summary).expect("summaries serialise"),
            requested_by,
            job_subject: nats.subjects.jobs(BuildKind::Component, request.architecture),
            job: |build_id: &BuildId| ComponentJob {
                build_id: build_id.clone(),
                url: request.url.clone(),
                component: request.component.clone(),
                tag: request.tag.clone(),
                architecture: request.architecture,
                dependents: dependents.clone(),
            },
        },
    )
    .await?;
    Ok(BuildAccepted::queued(submitted.build_id, None))
}
