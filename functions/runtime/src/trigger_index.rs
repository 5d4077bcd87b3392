//! What a push reaches, without reading every record.
//!
//! A push asks two questions: which components are built from the pushed repository, and for which
//! architectures; and, once one of them is rebuilt, which stored components depend on that version. Each
//! answer is one record of the `<prefix>_trigger_index` bucket, kept by the component builder, so a
//! push costs the same few reads whether the history holds a thousand records or a million:
//!
//! - `repository-<hash of the normalized URL>`: `{component: [architecture, ...]}`;
//! - `dependants-<hash of component, tag, architecture>`: `[[component, tag], ...]` built on it.
//!
//! Entries may be stale (a component moved to another repository, a dependant rebuilt without that
//! dependency, a component deleted): readers check each against the record it names, and writers drop
//! what they replace.

use std::collections::{BTreeMap, BTreeSet};

use async_nats::jetstream::kv;
use futures::TryStreamExt;

use artifacts_schemas::names::slug_with_hash;
use artifacts_schemas::{
    normalize_repository, Architecture, ComponentName, ComponentQuery, ComponentRecord, ComponentSource, RequestError,
    TagName,
};

use crate::nats::{key_hash as hash, read_json, unavailable, update_json, Stores};

type Built = BTreeMap<ComponentName, BTreeSet<Architecture>>;

/// The components built from `url`'s repository (by their recorded source), each with the architectures
/// stored so far.
pub async fn built_from(
    stores: &Stores,
    url: &str,
) -> Result<Vec<(ComponentSource, BTreeSet<Architecture>)>, RequestError> {
    let built: Built = read_json(&stores.trigger_index, &repository_key(url)).await?.unwrap_or_default();
    let repository = normalize_repository(url);
    let mut found = Vec::new();
    for (component, architectures) in built {
        let source: Option<ComponentSource> = read_json(&stores.sources, &slug_with_hash(component.as_str())).await?;
        if let Some(source) = source.filter(|s| normalize_repository(&s.url) == repository) {
            found.push((source, architectures));
        }
    }
    Ok(found)
}

/// Records that `component` is built from `url` (for `architecture` too, when one is given).
pub async fn add_component(
    store: &kv::Store,
    url: &str,
    component: &ComponentName,
    architecture: Option<Architecture>,
) -> Result<(), RequestError> {
    update_json(store, &repository_key(url), |built: &mut Built| match built.get_mut(component) {
        Some(architectures) => architecture.is_some_and(|a| architectures.insert(a)),
        None => {
            built.insert(component.clone(), architecture.into_iter().collect());
            true
        }
    })
    .await
    .map(drop)
}

/// `component` is no longer built from `url`.
pub async fn remove_component(store: &kv::Store, url: &str, component: &ComponentName) -> Result<(), RequestError> {
    update_json(store, &repository_key(url), |built: &mut Built| built.remove(component).is_some()).await.map(drop)
}

/// The stored components built on `component@tag` for `architecture`.
pub async fn dependants_of(
    stores: &Stores,
    component: &ComponentName,
    tag: &TagName,
    architecture: Architecture,
) -> Result<Vec<ComponentRecord>, RequestError> {
    let recorded: BTreeSet<(ComponentName, TagName)> =
        read_json(&stores.trigger_index, &dependants_key(component, tag, architecture)).await?.unwrap_or_default();
    let mut found = Vec::new();
    for (dependant, dependant_tag) in recorded {
        let query = ComponentQuery { component: dependant, tag: dependant_tag, architecture, url: None };
        let record: Option<ComponentRecord> = read_json(&stores.components, &query.record_key()).await?;
        if let Some(record) =
            record.filter(|r| r.dependencies.iter().any(|d| d.component == *component && d.tag == *tag))
        {
            found.push(record);
        }
    }
    Ok(found)
}

/// Keeps the dependants lists in step with a stored component: `stored` is now recorded on each of its
/// dependencies, and dropped from those of `replaced` (the record it replaced, or the one deleted when
/// `stored` is `None`) that it no longer uses.
pub async fn record_dependencies(
    store: &kv::Store,
    stored: Option<&ComponentRecord>,
    replaced: Option<&ComponentRecord>,
) -> Result<(), RequestError> {
    let Some(record) = stored.or(replaced) else { return Ok(()) };
    let dependant = (record.component.clone(), record.tag.clone());
    let uses = |record: Option<&ComponentRecord>| -> BTreeSet<String> {
        record
            .into_iter()
            .flat_map(|r| r.dependencies.iter().map(|d| dependants_key(&d.component, &d.tag, r.architecture)))
            .collect()
    };
    let (now, before) = (uses(stored), uses(replaced));
    for key in &now {
        update_json(store, key, |set: &mut BTreeSet<(ComponentName, TagName)>| set.insert(dependant.clone())).await?;
    }
    for key in before.difference(&now) {
        update_json(store, key, |set: &mut BTreeSet<(ComponentName, TagName)>| set.remove(&dependant)).await?;
    }
    Ok(())
}

/// Indexes the sources and components recorded before this index existed: once per deployment (the
/// key `backfilled` says it is done), before the trigger takes pushes.
pub async fn backfill(stores: &Stores) -> Result<(), RequestError> {
    const DONE: &str = "backfilled";
    let index = &stores.trigger_index;
    if index.get(DONE).await.map_err(unavailable)?.is_some() {
        return Ok(());
    }
    let keys = |store: &kv::Store| {
        let store = store.clone();
        async move {
            let keys = store.keys().await.map_err(unavailable)?;
            keys.try_collect::<Vec<String>>().await.map_err(unavailable)
        }
    };
    for key in keys(&stores.sources).await? {
        if let Some(source) = read_json::<ComponentSource>(&stores.sources, &key).await? {
            add_component(index, &source.url, &source.component, None).await?;
        }
    }
    for key in keys(&stores.components).await? {
        if let Some(record) = read_json::<ComponentRecord>(&stores.components, &key).await? {
            add_component(index, &record.url, &record.component, Some(record.architecture)).await?;
            record_dependencies(index, Some(&record), None).await?;
        }
    }
    index.put(DONE, "1".into()).await.map_err(unavailable)?;
    Ok(())
}

fn repository_key(url: &str) -> String {
    format!("repository-{}", hash(&[&normalize_repository(url)]))
}

fn dependants_key(component: &ComponentName, tag: &TagName, architecture: Architecture) -> String {
    format!("dependants-{}", hash(&[component.as_str(), tag.as_str(), architecture.short()]))
}
