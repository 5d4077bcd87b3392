//! Who may use an uploaded build context: the key that uploaded it, and the component it was uploaded
//! for (a digest alone, visible in build records, must not let another caller build with it).

use artifacts_schemas::ComponentName;

use crate::access::{read_bytes, retry_unanswered};
use crate::{keys, Store, StoreError};

impl Store {
    /// Grants the context's use to `key_id` and to builds of `component`.
    pub async fn grant_upload(
        &self,
        context_hex: &str,
        key_id: &str,
        component: &ComponentName,
    ) -> Result<(), StoreError> {
        let grants = &self.buckets.upload_grants;
        for key in keys::upload_grants(context_hex, key_id, component) {
            retry_unanswered(|| grants.put(&key, key_id.to_owned().into())).await.map_err(StoreError::unavailable)?;
        }
        Ok(())
    }

    /// Whether `key_id` uploaded the context, or it was uploaded for `component`.
    pub async fn upload_granted(
        &self,
        context_hex: &str,
        key_id: &str,
        component: &ComponentName,
    ) -> Result<bool, StoreError> {
        for key in keys::upload_grants(context_hex, key_id, component) {
            if read_bytes(&self.buckets.upload_grants, &key).await?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
