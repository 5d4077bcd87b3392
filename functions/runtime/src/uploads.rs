//! Who may use an uploaded build context.
//!
//! Contexts are stored by content (`contexts/<sha256 hex>` in `artifacts_uploads`), and their digests
//! are visible in build records; a digest alone must not let another caller build with a context it
//! never had. When the gateway stores a context it grants its use to the uploading key and to the
//! component it was uploaded for; a submission naming a context needs one of the two grants.

use artifacts_schemas::names::slug_with_hash;
use artifacts_schemas::{ComponentName, RequestError};

use crate::auth::Caller;
use crate::nats::{retry_unanswered, unavailable, Nats};

/// The two grants of a context: to a key, and to a component.
fn grants(context_hex: &str, caller: &Caller, component: &ComponentName) -> [String; 2] {
    [
        format!("{context_hex}/key/{}", caller.key_id),
        format!("{context_hex}/component/{}", slug_with_hash(component.as_str())),
    ]
}

/// Grants the context's use to `caller` and to builds of `component`.
pub async fn grant(
    nats: &Nats,
    context_hex: &str,
    caller: &Caller,
    component: &ComponentName,
) -> Result<(), RequestError> {
    for key in grants(context_hex, caller, component) {
        retry_unanswered(|| nats.stores.upload_grants.put(&key, caller.key_id.clone().into()))
            .await
            .map_err(unavailable)?;
    }
    Ok(())
}

/// 403 unless `caller` uploaded the context, or it was uploaded for `component`.
pub async fn require_grant(
    nats: &Nats,
    context_hex: &str,
    caller: &Caller,
    component: &ComponentName,
) -> Result<(), RequestError> {
    for key in grants(context_hex, caller, component) {
        if retry_unanswered(|| nats.stores.upload_grants.get(&key)).await.map_err(unavailable)?.is_some() {
            return Ok(());
        }
    }
    Err(RequestError::forbidden(format!(
        "context contexts/{context_hex} was not uploaded by this API key nor for component {component}: upload it with the build"
    )))
}
