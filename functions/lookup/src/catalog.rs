//! `<prefix>.catalog.images` and `<prefix>.catalog.components`: the latest image of each target and the
//! stored component versions, a page at a time. The bucket keys are `<component slug>/<branch or tag
//! slug>/<arch>`, so one component's entries are one key prefix, and the cursor is the last key of a page
//! (keys are listed in order; only the page's records are read).

use serde::de::DeserializeOwned;

use artifacts_runtime::auth::Caller;
use artifacts_runtime::service::Reply;
use artifacts_schemas::messages::build::ListStatus;
use artifacts_schemas::messages::keys::Scope;
use artifacts_schemas::messages::manage::{Catalog, CatalogQuery, ComponentCatalogItem};
use artifacts_schemas::{parse_json, ComponentName, ComponentRecord, ImageRecord, RequestError};
use artifacts_store::{Catalog as Bucket, Store};

pub async fn images(store: &Store, bucket: Bucket, caller: &Caller, payload: &[u8]) -> Result<Reply, RequestError> {
    page(store, bucket, caller, payload, |record: ImageRecord| (record.component.clone(), record)).await
}

pub async fn components(store: &Store, bucket: Bucket, caller: &Caller, payload: &[u8]) -> Result<Reply, RequestError> {
    page(store, bucket, caller, payload, |record: ComponentRecord| {
        let item = ComponentCatalogItem {
            component: record.component,
            tag: record.tag,
            architecture: record.architecture,
            digest: record.digest,
            size: record.size,
            build_id: record.build_id,
            built_at: record.built_at,
        };
        (item.component.clone(), item)
    })
    .await
}

/// One page of a bucket's records that the caller may read, as items.
async fn page<R, T>(
    store: &Store,
    bucket: Bucket,
    caller: &Caller,
    payload: &[u8],
    item: impl Fn(R) -> (ComponentName, T),
) -> Result<Reply, RequestError>
where
    R: DeserializeOwned,
    T: serde::Serialize,
{
    let query: CatalogQuery = if payload.is_empty() { CatalogQuery::default() } else { parse_json(payload)? };
    caller.require(Scope::Read)?;
    if let Some(component) = &query.component {
        caller.require_for(Scope::Read, component)?;
    }
    let keys = store.catalog_keys(bucket, query.component.as_ref(), query.cursor.as_deref()).await?;
    let limit = query.limit();
    let mut items = Vec::new();
    let (mut last_read, mut more) = (None, false);
    for key in &keys {
        if items.len() == limit {
            more = true;
            break;
        }
        last_read = Some(key.clone());
        let Some(record) = store.catalog_record::<R>(bucket, key).await? else { continue };
        let (component, item) = item(record);
        if caller.allows(component.as_str()) {
            items.push(item);
        }
    }
    let next_cursor = if more { last_read } else { None };
    Ok(Reply::ok(&Catalog { status: ListStatus::Ok, items, next_cursor }))
}
