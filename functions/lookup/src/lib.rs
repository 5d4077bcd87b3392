//! The `lookup` function: answers `<prefix>.image.get`, `<prefix>.component.get`,
//! `<prefix>.component.archive`, `<prefix>.build.get`, `<prefix>.build.list`, the catalogs and the
//! attestations (`<prefix>.provenance.key`, `<prefix>.build.provenance`, `<prefix>.build.sbom`) from the
//! JetStream key-value buckets and object store, with the same JSON the gateway answers over HTTP.
//!
//! Every answer follows the caller's key: a component outside its patterns is a 403, and build lists
//! leave such builds out. A lookup of an absent component whose source is known starts its build through
//! `<prefix>.component.build` (the design page's "if not exists: clone and build") only when the caller
//! may build that component; a `read` key is told that building needs the `build` scope.

mod archive;
pub mod attestations;
mod catalog;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use artifacts_runtime::auth::{Authenticator, Caller};
use artifacts_runtime::service::{self, Reply, Request, ServiceSpec, LOOKUP_HEADER};
use artifacts_runtime::{Nats, Settings};
use artifacts_schemas::messages::build::ListStatus;
use artifacts_schemas::messages::keys::Scope;
use artifacts_schemas::{
    parse_json, AcceptedStatus, BuildAccepted, BuildId, BuildList, BuildListQuery, BuildQuery, ComponentBuildRequest,
    ComponentLookupReply, ComponentQuery, Endpoint, ImageLookupReply, ImageQuery, RequestError,
};
use artifacts_store::{Attestation, Catalog, List, Store};

/// The process's work (boxed here: see [`artifacts_runtime::Work`]).
pub fn run(settings: Settings, nats: Nats, shutdown: CancellationToken) -> artifacts_runtime::Work {
    Box::pin(serve(settings, nats, shutdown))
}

async fn serve(settings: Settings, nats: Nats, shutdown: CancellationToken) -> anyhow::Result<()> {
    let handler_nats = nats.clone();
    let base_url: Arc<str> = settings.public_url().into();
    let authenticator = Authenticator::start(&settings, &nats, shutdown.clone());
    let transfers = Arc::new(archive::Transfers::default());
    service::serve(
        &nats,
        ServiceSpec {
            name: service::LOOKUP_SERVICE,
            description: "Looks up images, components and builds",
            endpoints: vec![
                Endpoint::ImageGet,
                Endpoint::ComponentGet,
                Endpoint::ComponentArchive,
                Endpoint::BuildGet,
                Endpoint::BuildList,
                Endpoint::CatalogImages,
                Endpoint::CatalogComponents,
                Endpoint::ProvenanceKey,
                Endpoint::BuildProvenance,
                Endpoint::BuildSbom,
            ],
            metadata: Default::default(),
        },
        authenticator,
        move |request| {
            let (nats, base_url, transfers) = (handler_nats.clone(), Arc::clone(&base_url), Arc::clone(&transfers));
            async move { answer(&nats, &base_url, &transfers, &request).await }
        },
        shutdown,
    )
    .await
}

async fn answer(nats: &Nats, base_url: &str, transfers: &Arc<archive::Transfers>, request: &Request) -> Reply {
    let store = &nats.store;
    let caller = &request.caller;
    let payload = &request.message.payload;
    let result = match request.endpoint {
        Endpoint::ImageGet => image(store, caller, payload).await,
        Endpoint::ComponentGet => component(nats, base_url, request).await,
        Endpoint::ComponentArchive => archive::start(nats, transfers, caller, payload).await,
        Endpoint::BuildGet => build(store, caller, payload).await,
        Endpoint::BuildList => builds(store, caller, payload).await,
        Endpoint::CatalogImages => catalog::images(store, Catalog::Images, caller, payload).await,
        Endpoint::CatalogComponents => catalog::components(store, Catalog::Components, caller, payload).await,
        Endpoint::ProvenanceKey => attestations::key(nats),
        Endpoint::BuildProvenance => attestations::of_build(nats, caller, payload, Attestation::Provenance).await,
        Endpoint::BuildSbom => attestations::of_build(nats, caller, payload, Attestation::Sbom).await,
        other => Err(RequestError::internal(format!("lookup does not serve {}", other.suffix()))),
    };
    result.unwrap_or_else(Reply::from)
}

async fn image(store: &Store, caller: &Caller, payload: &[u8]) -> Result<Reply, RequestError> {
    let query: ImageQuery = parse_json(payload)?;
    caller.require_for(Scope::Read, &query.component)?;
    Ok(match store.image(&query).await? {
        Some(record) => Reply::ok(&ImageLookupReply::found(record)),
        None => Reply::with_code(404, &ImageLookupReply::not_found(&query)),
    })
}

/// A stored component, or, when it is absent but its source is known (the query's `url`, or the source
/// of an earlier build) and the caller may build it, its build: started through
/// `<prefix>.component.build` with the caller's own key.
async fn component(nats: &Nats, base_url: &str, request: &Request) -> Result<Reply, RequestError> {
    let query: ComponentQuery = parse_json(&request.message.payload)?;
    let caller = &request.caller;
    caller.require_for(Scope::Read, &query.component)?;
    if let Some(record) = nats.store.component(&query).await? {
        return Ok(Reply::ok(&ComponentLookupReply::found(&query, record, base_url)));
    }
    let known = nats.store.source(&query.component).await?;
    let Some(url) = query.url.clone().or(known.map(|source| source.url)) else {
        return Ok(Reply::with_code(404, &ComponentLookupReply::not_found(&query)));
    };
    if !caller.may(Scope::Build, &query.component) {
        let mut answer = ComponentLookupReply::not_found(&query);
        answer.error_message = Some(format!(
            "component {} at tag {} for {} has not been built, and building it needs an API key with the build scope",
            query.component, query.tag, query.architecture
        ));
        return Ok(Reply::with_code(404, &answer));
    }
    let build = ComponentBuildRequest {
        url,
        component: query.component.clone(),
        tag: query.tag.clone(),
        architecture: query.architecture,
        // Absent from the store: an identical build that succeeded is gone (deleted), so build it again.
        force: true,
    };
    let payload = serde_json::to_vec(&build).expect("requests serialise");
    // The caller's own headers: the submission authenticates the same key.
    let mut headers = request.message.headers.clone().unwrap_or_default();
    headers.insert(LOOKUP_HEADER, "true");
    let reply = service::call(nats, Endpoint::ComponentBuild, headers, payload.into()).await;
    if reply.is_failure() {
        return Ok(reply);
    }
    let accepted: BuildAccepted = parse_json(&reply.body)?;
    Ok(match accepted.status {
        // Still absent: a 404 whose body says why and names the failed build.
        AcceptedStatus::Failed => Reply::with_code(404, &ComponentLookupReply::failed(accepted)),
        // Succeeded: it was stored since this lookup read the store; the next lookup finds it.
        AcceptedStatus::Queued | AcceptedStatus::Succeeded => {
            Reply::with_code(202, &ComponentLookupReply::building(accepted))
        }
    })
}

async fn build(store: &Store, caller: &Caller, payload: &[u8]) -> Result<Reply, RequestError> {
    let query: BuildQuery = parse_json(payload)?;
    match store.build(&query.build_id).await? {
        Some(record) if caller.allows(record.work.component().as_str()) => Ok(Reply::ok(&record)),
        Some(_) => Err(RequestError::forbidden("this API key may not see builds of that component")),
        None => Err(RequestError::not_found(format!("no build has id {}", query.build_id))),
    }
}

/// Index pages one listing may read: filters that match little (a status, another team's builds) stop
/// there and answer what they found with a cursor to go on from, so no request reads the whole history.
const MAX_PAGES_PER_LISTING: usize = 50;

/// Newest first, from the component's index list (or the list of every build), a page at a time.
async fn builds(store: &Store, caller: &Caller, payload: &[u8]) -> Result<Reply, RequestError> {
    let query: BuildListQuery = if payload.is_empty() { BuildListQuery::default() } else { parse_json(payload)? };
    let list = query.component.as_ref().map_or(List::All, List::Component);
    let mut walk = store.walk_builds(list, query.cursor.as_deref()).await?;
    let mut found = Vec::new();
    // A round takes as many ids as builds are still wanted and reads their records at once, so a page
    // costs a few round trips rather than one per build; the cursor stays exact (no id is read ahead).
    'rounds: while found.len() < query.limit() && walk.pages_read() <= MAX_PAGES_PER_LISTING {
        let mut ids = Vec::new();
        while ids.len() < query.limit() - found.len() && walk.pages_read() <= MAX_PAGES_PER_LISTING {
            match walk.next().await? {
                // An id that is no build id was never written by a submission: skipped.
                Some(build_id) => ids.extend(BuildId::parse(&build_id).ok()),
                None if ids.is_empty() => break 'rounds,
                None => break,
            }
        }
        let records = futures::future::try_join_all(ids.iter().map(|id| store.build(id)));
        for record in records.await?.into_iter().flatten() {
            let matches = caller.allows(record.work.component().as_str())
                && query.kind.is_none_or(|kind| kind == record.work.kind())
                && query.status.is_none_or(|status| status == record.status)
                && query.component.as_ref().is_none_or(|component| record.work.component() == component);
            if matches {
                found.push(record);
            }
        }
    }
    let next_cursor = walk.cursor();
    Ok(Reply::ok(&BuildList { status: ListStatus::Ok, error_message: None, builds: found, next_cursor }))
}
