//! Managed API keys by key id: hashes, never secrets.

use async_nats::jetstream::kv;
use futures::{Stream, StreamExt};

use artifacts_schemas::messages::keys::StoredKey;

use crate::access::{all_keys, put_json, read_bytes, retry_unanswered};
use crate::{Store, StoreError};

/// A key's record as stored.
pub enum StoredKeyEntry {
    Absent,
    /// Bytes that are not a key record: never a valid key, and removable by any admin.
    Unreadable(String),
    Key(StoredKey),
}

/// One change of the keys, as a watch brings it.
pub struct KeyChange {
    pub key_id: String,
    /// The key as it now stands; `None` once it is revoked (or its record cannot be read: refused too).
    pub key: Option<StoredKey>,
    /// Whether every key stored when the watch began has been seen.
    pub caught_up: bool,
}

impl Store {
    /// Stores a new key's record.
    pub async fn put_key(&self, stored: &StoredKey) -> Result<(), StoreError> {
        put_json(&self.buckets.keys, &stored.info.key_id, stored).await.map(drop)
    }

    /// Key `key_id`'s record.
    pub async fn stored_key(&self, key_id: &str) -> Result<StoredKeyEntry, StoreError> {
        let Some(bytes) = read_bytes(&self.buckets.keys, key_id).await? else { return Ok(StoredKeyEntry::Absent) };
        Ok(match serde_json::from_slice::<StoredKey>(&bytes) {
            Ok(stored) => StoredKeyEntry::Key(stored),
            Err(err) => {
                tracing::warn!(%key_id, %err, "an unreadable key record is refused");
                StoredKeyEntry::Unreadable(err.to_string())
            }
        })
    }

    /// Every readable key record (an unreadable one is no key: revoking its id removes it).
    pub async fn all_api_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let mut keys = Vec::new();
        for key_id in all_keys(&self.buckets.keys).await? {
            if let StoredKeyEntry::Key(stored) = self.stored_key(&key_id).await? {
                keys.push(stored);
            }
        }
        Ok(keys)
    }

    /// Removes key `key_id`'s record.
    pub async fn remove_key(&self, key_id: &str) -> Result<(), StoreError> {
        retry_unanswered(|| self.buckets.keys.purge(key_id)).await.map_err(StoreError::unavailable)
    }

    /// Every key stored, then every change, until the watch breaks (then watch again).
    pub async fn key_changes(&self) -> Result<impl Stream<Item = KeyChange> + Send + 'static, StoreError> {
        let watch = self.buckets.keys.watch_with_history(">").await.map_err(StoreError::unavailable)?;
        Ok(watch.take_while(|entry| std::future::ready(entry.is_ok())).filter_map(|entry| async move {
            let entry = entry.ok()?;
            let caught_up = entry.delta == 0 || entry.seen_current;
            let key = match entry.operation {
                kv::Operation::Put => match serde_json::from_slice::<StoredKey>(&entry.value) {
                    Ok(stored) => Some(stored),
                    Err(err) => {
                        tracing::warn!(key = %entry.key, %err, "an unreadable key record is refused");
                        None
                    }
                },
                kv::Operation::Delete | kv::Operation::Purge => None,
            };
            Some(KeyChange { key_id: entry.key, key, caught_up })
        }))
    }
}
