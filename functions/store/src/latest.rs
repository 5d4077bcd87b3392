//! "Latest" records, the newest successful build of each target (`artifacts_images`,
//! `artifacts_components`), move only forward: a record replaces the one stored only if its build is
//! newer (build ids are UUIDv7, so they sort by creation), with a compare-and-set on the key's revision,
//! so a slow older build finishing after a newer one never takes the target back.

use async_nats::jetstream::kv;
use serde::de::DeserializeOwned;
use serde::Serialize;

use artifacts_schemas::names::slug_with_hash;
use artifacts_schemas::{BuildId, ComponentName, ComponentQuery, ComponentRecord, ImageQuery, ImageRecord};

use crate::access::{
    all_keys, all_values, live_entry, read_json, retry_unanswered, to_bytes, until_won, write_if_unchanged, Round,
};
use crate::{keys, Store, StoreError};

/// A record that names the build it came from.
trait FromBuild: Serialize + DeserializeOwned {
    fn build_id(&self) -> &BuildId;
}

impl FromBuild for ImageRecord {
    fn build_id(&self) -> &BuildId {
        &self.build_id
    }
}

impl FromBuild for ComponentRecord {
    fn build_id(&self) -> &BuildId {
        &self.build_id
    }
}

/// What storing a record as the latest did.
#[derive(Debug)]
pub enum Moved<T> {
    /// It is the latest now; `replaced` is the record it took the place of.
    Forward { replaced: Option<T> },
    /// A newer build is the latest already; nothing changed.
    Behind { newer: BuildId },
}

/// Stores `record` under `key` unless a newer build's record is there.
async fn move_forward<T: FromBuild>(bucket: &kv::Store, key: &str, record: &T) -> Result<Moved<T>, StoreError> {
    let bytes = to_bytes(record);
    until_won(key, || {
        let bytes = bytes.clone();
        async move {
            let current = live_entry(bucket, key).await?;
            let existing: Option<T> = current.as_ref().and_then(|c| serde_json::from_slice(&c.value).ok());
            if let Some(newer) = existing.as_ref().map(FromBuild::build_id).filter(|id| *id > record.build_id()) {
                return Ok(Round::Done(Moved::Behind { newer: newer.clone() }));
            }
            Ok(match write_if_unchanged(bucket, key, current.map(|c| c.revision), bytes).await? {
                Round::Done(_) => Round::Done(Moved::Forward { replaced: existing }),
                Round::Lost => Round::Lost,
            })
        }
    })
    .await
}

/// Which "latest" records a catalog lists.
#[derive(Debug, Clone, Copy)]
pub enum Catalog {
    Images,
    Components,
}

impl Store {
    /// The latest image of a component, branch and architecture.
    pub async fn image(&self, query: &ImageQuery) -> Result<Option<ImageRecord>, StoreError> {
        read_json(&self.buckets.images, &keys::image(query)).await
    }

    /// The latest stored component of a component, tag and architecture.
    pub async fn component(&self, query: &ComponentQuery) -> Result<Option<ComponentRecord>, StoreError> {
        read_json(&self.buckets.components, &keys::component(query)).await
    }

    /// Stores a built image as the latest of its target, unless a newer build's is there.
    pub async fn store_image(
        &self,
        query: &ImageQuery,
        record: &ImageRecord,
    ) -> Result<Moved<ImageRecord>, StoreError> {
        move_forward(&self.buckets.images, &keys::image(query), record).await
    }

    /// Stores a built component as the latest of its version, unless a newer build's is there, and keeps
    /// the trigger index in step (the repository it is built from, the dependencies it is built on).
    pub async fn store_component(
        &self,
        query: &ComponentQuery,
        record: &ComponentRecord,
    ) -> Result<Moved<ComponentRecord>, StoreError> {
        let moved = move_forward(&self.buckets.components, &keys::component(query), record).await?;
        if let Moved::Forward { replaced } = &moved {
            self.add_built_from(&record.url, &record.component, Some(record.architecture)).await?;
            self.record_dependencies(Some(record), replaced.as_ref()).await?;
        }
        Ok(moved)
    }

    /// Removes the latest image record of a target; whether there was one.
    pub async fn remove_image(&self, query: &ImageQuery) -> Result<bool, StoreError> {
        let key = keys::image(query);
        if read_json::<ImageRecord>(&self.buckets.images, &key).await?.is_none() {
            return Ok(false);
        }
        retry_unanswered(|| self.buckets.images.purge(&key)).await.map_err(StoreError::unavailable)?;
        Ok(true)
    }

    /// Removes a stored component version: its record, its place in the trigger index and its archive.
    pub async fn remove_component(&self, query: &ComponentQuery) -> Result<Option<ComponentRecord>, StoreError> {
        let key = keys::component(query);
        let Some(record) = read_json::<ComponentRecord>(&self.buckets.components, &key).await? else {
            return Ok(None);
        };
        retry_unanswered(|| self.buckets.components.purge(&key)).await.map_err(StoreError::unavailable)?;
        self.record_dependencies(None, Some(&record)).await?;
        self.remove_archive(&record.object).await?;
        Ok(Some(record))
    }

    /// Every latest image record.
    pub async fn all_images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        all_values(&self.buckets.images).await
    }

    /// Every stored component record.
    pub async fn all_components(&self) -> Result<Vec<ComponentRecord>, StoreError> {
        all_values(&self.buckets.components).await
    }

    /// The keys of a catalog's records, in order: of one component's only, when one is given, and after
    /// `after` (the last key of an earlier page).
    pub async fn catalog_keys(
        &self,
        catalog: Catalog,
        component: Option<&ComponentName>,
        after: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let prefix = component.map(|c| format!("{}/", slug_with_hash(c.as_str())));
        let mut keys: Vec<String> = all_keys(self.catalog(catalog))
            .await?
            .into_iter()
            .filter(|key| {
                prefix.as_ref().is_none_or(|p| key.starts_with(p.as_str()))
                    && after.is_none_or(|after| key.as_str() > after)
            })
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// A catalog's record at `key` (from [`Store::catalog_keys`]).
    pub async fn catalog_record<R: DeserializeOwned>(
        &self,
        catalog: Catalog,
        key: &str,
    ) -> Result<Option<R>, StoreError> {
        read_json(self.catalog(catalog), key).await
    }

    fn catalog(&self, catalog: Catalog) -> &kv::Store {
        match catalog {
            Catalog::Images => &self.buckets.images,
            Catalog::Components => &self.buckets.components,
        }
    }
}
