//! Build secrets' records by name. The store keeps them as given: sealed by the runtime's keyring,
//! never plaintext.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::access::{all_keys, live_entry, read_json, retry_unanswered, to_bytes, write_if_unchanged, Round};
use crate::{keys, Store, StoreError};

impl Store {
    /// Secret `name`'s sealed record, with the revision a later write must find unchanged.
    pub async fn secret_record<T: DeserializeOwned>(&self, name: &str) -> Result<Option<(T, u64)>, StoreError> {
        let Some(entry) = live_entry(&self.buckets.secrets, &keys::secret(name)).await? else { return Ok(None) };
        let record = serde_json::from_slice(&entry.value).map_err(|_| {
            StoreError::Corrupt(format!("the record of secret {name} is damaged: delete it and set it again"))
        })?;
        Ok(Some((record, entry.revision)))
    }

    /// Writes secret `name`'s record if it is still at `revision` (absent when `None`); whether it was.
    pub async fn write_secret_record<T: Serialize>(
        &self,
        name: &str,
        record: &T,
        revision: Option<u64>,
    ) -> Result<bool, StoreError> {
        let written =
            write_if_unchanged(&self.buckets.secrets, &keys::secret(name), revision, to_bytes(record)).await?;
        Ok(matches!(written, Round::Done(_)))
    }

    /// Every readable secret record (one that cannot be read is skipped, with a warning).
    pub async fn all_secret_records<T: DeserializeOwned>(&self) -> Result<Vec<T>, StoreError> {
        let mut records = Vec::new();
        for key in all_keys(&self.buckets.secrets).await? {
            match read_json(&self.buckets.secrets, &key).await {
                Ok(Some(record)) => records.push(record),
                Ok(None) => {}
                Err(err) => tracing::warn!(%key, %err, "an unreadable secret record is skipped"),
            }
        }
        Ok(records)
    }

    /// Removes secret `name`.
    pub async fn remove_secret(&self, name: &str) -> Result<(), StoreError> {
        retry_unanswered(|| self.buckets.secrets.purge(keys::secret(name))).await.map_err(StoreError::unavailable)
    }
}
