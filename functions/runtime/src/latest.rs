//! "Latest" records, the newest successful build of each target (`artifacts_images`,
//! `artifacts_components`), move only forward: a record replaces the one stored only if its build is
//! newer (build ids are UUIDv7, so they sort by creation), with a compare-and-set on the key's revision,
//! so a slow older build finishing after a newer one never takes the target back.

use async_nats::jetstream::kv;
use serde::de::DeserializeOwned;
use serde::Serialize;

use artifacts_schemas::{BuildId, ComponentRecord, ImageRecord, RequestError};

use crate::nats::{retry_unanswered, unavailable};

/// A record that names the build it came from.
pub trait FromBuild: Serialize + DeserializeOwned {
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
pub async fn move_forward<T: FromBuild>(store: &kv::Store, key: &str, record: &T) -> Result<Moved<T>, RequestError> {
    let bytes: bytes::Bytes = serde_json::to_vec(record).expect("records serialise").into();
    loop {
        let current = retry_unanswered(|| store.entry(key))
            .await
            .map_err(unavailable)?
            .filter(|e| e.operation == kv::Operation::Put);
        let Some(current) = current else {
            match retry_unanswered(|| store.create(key, bytes.clone())).await {
                Ok(_) => return Ok(Moved::Forward { replaced: None }),
                Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => continue,
                Err(err) => return Err(unavailable(err)),
            }
        };
        let existing: Option<T> = serde_json::from_slice(&current.value).ok();
        if let Some(newer) = existing.as_ref().map(FromBuild::build_id).filter(|id| *id > record.build_id()) {
            return Ok(Moved::Behind { newer: newer.clone() });
        }
        match retry_unanswered(|| store.update(key, bytes.clone(), current.revision)).await {
            Ok(_) => return Ok(Moved::Forward { replaced: existing }),
            Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
            Err(err) => return Err(unavailable(err)),
        }
    }
}
