//! Who may use an uploaded build context.
//!
//! Contexts are stored by content (`contexts/<sha256 hex>` in `artifacts_uploads`), and their digests
//! are visible in build records; a digest alone must not let another caller build with a context it
//! never had. When the gateway stores a context it grants its use to the uploading key and to the
//! component it was uploaded for; a submission naming a context needs one of the two grants.

use artifacts_schemas::{ComponentName, RequestError};

use crate::auth::Caller;
use crate::nats::Nats;

/// Grants the context's use to `caller` and to builds of `component`.
pub async fn grant(
    nats: &Nats,
    context_hex: &str,
    caller: &Caller,
    component: &ComponentName,
) -> Result<(), RequestError> {
    Ok(nats.store.grant_upload(context_hex, &caller.key_id, component).await?)
}

/// 403 unless `caller` uploaded the context, or it was uploaded for `component`.
pub async fn require_grant(
    nats: &Nats,
    context_hex: &str,
    caller: &Caller,
    component: &ComponentName,
) -> Result<(), RequestError> {
    if nats.store.upload_granted(context_hex, &caller.key_id, component).await? {
        return Ok(());
    }
    Err(RequestError::forbidden(format!(
        "context contexts/{context_hex} was not uploaded by this API key nor for component {component}: upload it with the build"
    )))
}
