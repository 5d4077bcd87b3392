//! Cancelling, pinning and deleting, each by a caller who may build the component concerned.

use artifacts_engine::attempt::finish;
use artifacts_engine::neutral_tag;
use artifacts_runtime::auth::Caller;
use artifacts_runtime::service::Reply;
use artifacts_runtime::{Nats, Settings};
use artifacts_schemas::messages::keys::Scope;
use artifacts_schemas::messages::manage::{BuildPinRequest, Deleted, DeletedStatus};
use artifacts_schemas::{
    parse_json, BuildQuery, BuildRecord, BuildStatus, ComponentQuery, Failure, ImageQuery, RequestError,
};

/// The record of a build the caller may manage (404 for a build it may not see).
async fn managed_build(
    nats: &Nats,
    caller: &Caller,
    build_id: &artifacts_schemas::BuildId,
) -> Result<BuildRecord, RequestError> {
    let record = nats
        .store
        .build(build_id)
        .await?
        .filter(|record| caller.allows(record.work.component().as_str()))
        .ok_or_else(|| RequestError::not_found(format!("no build has id {build_id}")))?;
    caller.require_for(Scope::Build, record.work.component())?;
    Ok(record)
}

pub async fn cancel(nats: &Nats, caller: &Caller, payload: &[u8]) -> Result<Reply, RequestError> {
    let query: BuildQuery = parse_json(payload)?;
    managed_build(nats, caller, &query.build_id).await?;
    let mut ended_before = None;
    let message = format!("cancelled by key {}", caller.key_id);
    let record = nats
        .store
        .update_build(&query.build_id, |record| {
            ended_before = record.status.is_finished().then_some(record.status);
            if ended_before.is_none() {
                finish(record, BuildStatus::Cancelled, None, Some(message.clone()));
            }
        })
        .await?;
    if let Some(status) = ended_before {
        let status = serde_json::to_value(status).unwrap_or_default();
        return Err(RequestError::new(
            Failure::Conflict,
            format!(
                "build {} already ended ({}): only a queued or running build can be cancelled",
                query.build_id,
                status.as_str().unwrap_or_default()
            ),
        ));
    }
    Ok(Reply::ok(&record))
}

pub async fn pin(nats: &Nats, caller: &Caller, payload: &[u8]) -> Result<Reply, RequestError> {
    let asked: BuildPinRequest = parse_json(payload)?;
    managed_build(nats, caller, &asked.build_id).await?;
    let record = nats.store.update_build(&asked.build_id, |record| record.pinned = asked.pinned).await?;
    Ok(Reply::ok(&record))
}

/// The image target answers 404 from now on; its registry manifests go at the next collection (the
/// collector deletes manifests no retained build names).
pub async fn delete_image(
    nats: &Nats,
    settings: &Settings,
    caller: &Caller,
    payload: &[u8],
) -> Result<Reply, RequestError> {
    let query: ImageQuery = parse_json(payload)?;
    caller.require_for(Scope::Build, &query.component)?;
    if !nats.store.remove_image(&query).await? {
        return Err(RequestError::not_found(format!(
            "no image is stored for component {} on branch {} for {}",
            query.component, query.branch, query.architecture
        )));
    }
    // The neutral tag stops listing it; the registry being away leaves that to the branch's next build.
    if let Err(err) = neutral_tag::refresh(nats, settings, &query.component, &query.branch).await {
        tracing::warn!(%err, "the image is deleted, but its repository's neutral tag still lists it");
    }
    Ok(Reply::ok(&Deleted { status: DeletedStatus::Deleted }))
}

/// The component version answers 404 from now on and its archive goes at once, unless a stored
/// component depends on it (409 naming it).
pub async fn delete_component(nats: &Nats, caller: &Caller, payload: &[u8]) -> Result<Reply, RequestError> {
    let query: ComponentQuery = parse_json(payload)?;
    caller.require_for(Scope::Build, &query.component)?;
    let Some(record) = nats.store.component(&query).await? else {
        return Err(RequestError::not_found(format!(
            "no component {}@{} is stored for {}",
            query.component, query.tag, query.architecture
        )));
    };
    let dependants = nats.store.dependants_of(&record.component, &record.tag, record.architecture);
    if let Some(dependant) = dependants.await?.first() {
        return Err(RequestError::new(
            Failure::Conflict,
            format!(
                "{}@{} for {} is a dependency of {}@{}: delete that first",
                query.component, query.tag, query.architecture, dependant.component, dependant.tag
            ),
        ));
    }
    nats.store.remove_component(&query).await?;
    Ok(Reply::ok(&Deleted { status: DeletedStatus::Deleted }))
}
