//! The `lookup` function: answers `<prefix>.image.get`, `<prefix>.component.get`, `<prefix>.build.get`
//! and `<prefix>.build.list` from the JetStream key-value buckets, with the same JSON the gateway
//! answers over HTTP.

use async_nats::jetstream::kv;
use async_nats::Message;
use futures::TryStreamExt;
use tokio_util::sync::CancellationToken;

use artifacts_runtime::nats::{read_json, unavailable};
use artifacts_runtime::service::{self, Reply, ServiceSpec};
use artifacts_runtime::Nats;
use artifacts_schemas::{
    parse_json, BuildList, BuildListQuery, BuildQuery, BuildRecord, ComponentLookupReply, ComponentQuery,
    ComponentRecord, Endpoint, ImageLookupReply, ImageQuery, ImageRecord, RequestError,
};

pub async fn run(nats: Nats, shutdown: CancellationToken) -> anyhow::Result<()> {
    let stores = nats.stores.clone();
    service::serve(
        &nats,
        ServiceSpec {
            name: "artifacts-lookup",
            description: "Looks up images, components and builds",
            endpoints: vec![Endpoint::ImageGet, Endpoint::ComponentGet, Endpoint::BuildGet, Endpoint::BuildList],
            metadata: Default::default(),
        },
        move |endpoint, message| {
            let stores = stores.clone();
            async move { answer(&stores, endpoint, &message).await }
        },
        shutdown,
    )
    .await
}

async fn answer(stores: &artifacts_runtime::nats::Stores, endpoint: Endpoint, message: &Message) -> Reply {
    let result = match endpoint {
        Endpoint::ImageGet => image(&stores.images, message).await,
        Endpoint::ComponentGet => component(&stores.components, message).await,
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

async fn component(components: &kv::Store, message: &Message) -> Result<Reply, RequestError> {
    let query: ComponentQuery = parse_json(&message.payload)?;
    Ok(match read_json::<ComponentRecord>(components, &query.record_key()).await? {
        Some(record) => Reply::ok(&ComponentLookupReply::found(&query, record)),
        None => Reply::with_code(404, &ComponentLookupReply::not_found(&query)),
    })
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
