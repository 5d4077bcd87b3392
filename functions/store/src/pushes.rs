//! Pushes the git trigger has handled, and the latest build it started per target.

use artifacts_schemas::BuildId;

use crate::access::{read_bytes, retry_unanswered};
use crate::{Store, StoreError};

impl Store {
    /// Whether the push at `key` ([`crate::keys::push_handled`]) was handled.
    pub async fn push_handled(&self, key: &str) -> Result<bool, StoreError> {
        Ok(read_bytes(&self.buckets.pushes, key).await?.is_some())
    }

    /// Marks the push at `key` handled, with what it did.
    pub async fn mark_push_handled(&self, key: &str, summary: Vec<u8>) -> Result<(), StoreError> {
        retry_unanswered(|| self.buckets.pushes.put(key, summary.clone().into()))
            .await
            .map_err(StoreError::unavailable)
            .map(drop)
    }

    /// The build a push started last for `target` ([`crate::keys::push_target`]).
    pub async fn pushed_build(&self, target: &str) -> Result<Option<BuildId>, StoreError> {
        let bytes = read_bytes(&self.buckets.pushes, target).await?;
        Ok(bytes.and_then(|b| std::str::from_utf8(&b).ok().and_then(|id| BuildId::parse(id).ok())))
    }

    /// Records `build_id` as the build a push started last for `target`.
    pub async fn set_pushed_build(&self, target: &str, build_id: &BuildId) -> Result<(), StoreError> {
        retry_unanswered(|| self.buckets.pushes.put(target, build_id.as_str().to_owned().into()))
            .await
            .map_err(StoreError::unavailable)
            .map(drop)
    }
}
