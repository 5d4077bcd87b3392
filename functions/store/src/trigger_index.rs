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

use artifacts_schemas::{
    normalize_repository, Architecture, ComponentName, ComponentQuery, ComponentRecord, ComponentSource, TagName,
};

use crate::access::{read_bytes, read_json, retry_unanswered, update_json};
use crate::keys::{self, built_from as repository_key, dependants as dependants_key};
use crate::{Store, StoreError};

type Built = BTreeMap<ComponentName, BTreeSet<Architecture>>;

impl Store {
    /// The components built from `url`'s repository (by their recorded source), each with the
    /// architectures stored so far.
    pub async fn built_from(&self, url: &str) -> Result<Vec<(ComponentSource, BTreeSet<Architecture>)>, StoreError> {
        let built: Built = read_json(&self.buckets.trigger_index, &repository_key(url)).await?.unwrap_or_default();
        let repository = normalize_repository(url);
        let mut found = Vec::new();
        for (component, architectures) in built {
            if let Some(source) = self.source(&component).await?.filter(|s| normalize_repository(&s.url) == repository)
            {
                found.push((source, architectures));
            }
        }
        Ok(found)
    }

    /// Records that `component` is built from `url` (for `architecture` too, when one is given).
    pub(crate) async fn add_built_from(
        &self,
        url: &str,
        component: &ComponentName,
        architecture: Option<Architecture>,
    ) -> Result<(), StoreError> {
        update_json(&self.buckets.trigger_index, &repository_key(url), |built: &mut Built| {
            match built.get_mut(component) {
                Some(architectures) => architecture.is_some_and(|a| architectures.insert(a)),
                None => {
                    built.insert(component.clone(), architecture.into_iter().collect());
                    true
                }
            }
        })
        .await
        .map(drop)
    }

    /// `component` is no longer built from `url`.
    pub(crate) async fn remove_built_from(&self, url: &str, component: &ComponentName) -> Result<(), StoreError> {
        update_json(&self.buckets.trigger_index, &repository_key(url), |built: &mut Built| {
            built.remove(component).is_some()
        })
        .await
        .map(drop)
    }

    /// The stored components built on `component@tag` for `architecture`.
    pub async fn dependants_of(
        &self,
        component: &ComponentName,
        tag: &TagName,
        architecture: Architecture,
    ) -> Result<Vec<ComponentRecord>, StoreError> {
        let recorded: BTreeSet<(ComponentName, TagName)> =
            read_json(&self.buckets.trigger_index, &dependants_key(component, tag, architecture))
                .await?
                .unwrap_or_default();
        let mut found = Vec::new();
        for (dependant, dependant_tag) in recorded {
            let query = ComponentQuery { component: dependant, tag: dependant_tag, architecture, url: None };
            if let Some(record) = self
                .component(&query)
                .await?
                .filter(|r| r.dependencies.iter().any(|d| d.component == *component && d.tag == *tag))
            {
                found.push(record);
            }
        }
        Ok(found)
    }

    /// Keeps the dependants lists in step with a stored component: `stored` is now recorded on each of
    /// its dependencies, and dropped from those of `replaced` (the record it replaced, or the one deleted
    /// when `stored` is `None`) that it no longer uses.
    pub(crate) async fn record_dependencies(
        &self,
        stored: Option<&ComponentRecord>,
        replaced: Option<&ComponentRecord>,
    ) -> Result<(), StoreError> {
        let Some(record) = stored.or(replaced) else { return Ok(()) };
        let index = &self.buckets.trigger_index;
        let dependant = (record.component.clone(), record.tag.clone());
        let uses = |record: Option<&ComponentRecord>| -> BTreeSet<String> {
            record
                .into_iter()
                .flat_map(|r| r.dependencies.iter().map(|d| dependants_key(&d.component, &d.tag, r.architecture)))
                .collect()
        };
        let (now, before) = (uses(stored), uses(replaced));
        for key in &now {
            update_json(index, key, |set: &mut BTreeSet<(ComponentName, TagName)>| set.insert(dependant.clone()))
                .await?;
        }
        for key in before.difference(&now) {
            update_json(index, key, |set: &mut BTreeSet<(ComponentName, TagName)>| set.remove(&dependant)).await?;
        }
        Ok(())
    }

    /// Indexes the sources and components recorded before this index existed: once per deployment (the
    /// key `backfilled` says it is done), before the trigger takes pushes.
    pub async fn backfill_trigger_index(&self) -> Result<(), StoreError> {
        let index = &self.buckets.trigger_index;
        if read_bytes(index, keys::TRIGGER_INDEX_BACKFILLED).await?.is_some() {
            return Ok(());
        }
        for source in self.all_sources().await? {
            self.add_built_from(&source.url, &source.component, None).await?;
        }
        for record in self.all_components().await? {
            self.add_built_from(&record.url, &record.component, Some(record.architecture)).await?;
            self.record_dependencies(Some(&record), None).await?;
        }
        retry_unanswered(|| index.put(keys::TRIGGER_INDEX_BACKFILLED, "1".into()))
            .await
            .map_err(StoreError::unavailable)?;
        Ok(())
    }
}
