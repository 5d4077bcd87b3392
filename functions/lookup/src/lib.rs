//! The `lookup` function: answers `<prefix>.image.get`, `<prefix>.component.get`, `<prefix>.build.get`
//! and `<prefix>.build.list` from the JetStream key-value buckets, with the same JSON the gateway
//! answers over HTTP. A lookup of an absent component whose source is known starts its build through
//! `<prefix>.component.build` (the design page's "if not exists: clone and build").

use std::sync::Arc;

use async_nats::jetstream::kv;
use async_nats::Message;
use futures::TryStreamExt;
use tokio_util::sync::CancellationToken;

use artifacts_runtime::nats::{read_json, unavailable};
use artifacts_runtime::service::{self, Reply, ServiceSpec};
use artifacts_runtime::{Nats, Settings};
use artifacts_schemas::names::slug_with_hash;
use artifacts_schemas::{
    parse_json, BuildAccepted, BuildList, BuildListQuery, BuildQuery, BuildRecord, ComponentBuildRequest,
    ComponentLookupReply, ComponentQuery, ComponentRecord, ComponentSource, Endpoint, ImageLookupReply, ImageQuery,
    ImageRecord, RequestError,
};

pub async fn run(settings: Settings, nats: Nats, shutdown: CancellationToken) -> anyhow::Result<()> {
    let handler_nats = nats.clone();
    let base_url: Arc<str> = settings.public_url().into();
    service::serve(
        &nats,
        ServiceSpec {
            name: "artifacts-lookup",
            description: "Looks up images, components and builds",
            endpoints: vec![Endpoint::ImageGet, Endpoint::ComponentGet, Endpoint::BuildGet, Endpoint::BuildList],
            metadata: Default::default(),
        },
        move |endpoint, message| {
            let (nats, base_url) = (handler_nats.clone(), Arc::clone(&base_url));
            async move { answer(&nats, &base_url, endpoint, &message).await }
        },
        shutdown,
    )
    .await
}

async fn answer(nats: &Nats, base_url: &str, endpoint: Endpoint, message: &Message) -> Reply {
    let stores = &nats.stores;
    let result = match endpoint {
        Endpoint::ImageGet => image(&stores.images, message).await,
        Endpoint::ComponentGet => component(nats, base_url, message).await,
        Endpoint::BuildGet => build(&stores.builds, message).await,
        Endpoint::BuildList => builds(&stores.builds, message).await,
        other => Err(RequestError::internal(format!("lookup does not serve {}", other.suffix()))),
    };
    result.unwrap_or_else(Reply::from)
}

async fn image(images: &kv::Store, message: &Message) -> Result<Reply, RequestError> {
    let query: ImageQuery = parse_json(&message.payload)?;
    Ok(match read_json::<ImageRecord>(images, &query.record_key()).await? {
        Some(record) => Reply::ok(&ImageLookupReply::found(record)),
        None => Reply::with_code(404, &ImageLookupReply::not_found(&query)),
    })
}

/// A stored component, or, when it is absent but its source is known (the query's `url`, or the source
/// of an earlier build), its build: started through `<prefix>.component.build` on behalf of the asker.
async fn component(nats: &Nats, base_url: &str, message: &Message) -> Result<Reply, RequestError> {
    let query: ComponentQuery = parse_json(&message.payload)?;
    if let Some(record) = read_json::<ComponentRecord>(&nats.stores.components, &query.record_key()).await? {
        return Ok(Reply::ok(&ComponentLookupReply::found(&query, record, base_url)));
    }
    let known = read_json::<ComponentSource>(&nats.stores.sources, &slug_with_hash(query.component.as_str())).await?;
    let Some(url) = query.url.clone().or(known.map(|source| source.url)) else {
        return Ok(Reply::with_code(404, &ComponentLookupReply::not_found(&query)));
    };
    let request = ComponentBuildRequest {
        url,
        component: query.component.clone(),
        tag: query.tag.clone(),
        architecture: query.architecture,
        trigger: None,
    };
    let payload = serde_json::to_vec(&request).expect("requests serialise");
    let headers = message.headers.clone().unwrap_or_default();
    let reply = service::call(nats, Endpoint::ComponentBuild, headers, payload.into()).await;
    if reply.is_failure() {
        return Ok(reply);
    }
    let accepted: BuildAccepted = parse_json(&reply.body)?;
    Ok(Reply::with_code(202, &ComponentLookupReply::building(accepted)))
}

async fn build(builds: &kv::Store, message: &Message) -> Result<Reply, RequestError> {
    let query: BuildQuery = parse_json(&message.payload)?;
    match read_json::<BuildRecord>(builds, query.build_id.as_str()).await? {
        Some(record) => Ok(Reply::ok(&record)),
        None => Err(RequestError::not_found(format!("no build has id {}", query.build_id))),
    }
}

/// Build ids are UUIDv7, so walking the keys in reverse order visits the newest builds first.
async fn builds(builds: &kv::Store, message: &Message) -> Result<Reply, RequestError> {
    let query: BuildListQuery =
        if message.payload.is_empty() { BuildListQuery::default() } else { parse_json(&message.payload)? };
    let mut keys: Vec<String> = builds.keys().await.map_err(unavailable)?.try_collect().await.map_err(unavailable)?;
    keys.sort_unstable_by(|a, b| b.cmp(a));
    let mut found = Vec::new();
    for key in keys {
        if found.len() == query.limit() {
            break;
        }
        let Some(record) = read_json::<BuildRecord>(builds, &key).await? else {
            continue;
        };
        let matches = query.kind.is_none_or(|kind| kind == record.kind)
            && query.status.is_none_or(|status| status == record.status)
            && query.component.as_ref().is_none_or(|component| {
                record.request.get("component").and_then(|c| c.as_str()) == Some(component.as_str())
            });
        if matches {
            found.push(record);
        }
    }
    Ok(Reply::ok(&BuildList {
        status: artifacts_schemas::messages::build::ListStatus::Ok,
        error_message: None,
        builds: found,
    }))
}
