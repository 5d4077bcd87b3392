//! `<prefix>.secret.put`, `<prefix>.secret.list`, `<prefix>.secret.delete` (admin): build secrets, stored
//! encrypted by [`artifacts_runtime::secrets`]. No answer holds a value.

use artifacts_runtime::auth::Caller;
use artifacts_runtime::secrets;
use artifacts_runtime::service::Reply;
use artifacts_runtime::Nats;
use artifacts_schemas::messages::secrets::{SecretDeleteRequest, SecretPutRequest};
use artifacts_schemas::{parse_json, RequestError};

/// 201 for a new secret, 200 for a replaced one.
pub async fn put(nats: &Nats, caller: &Caller, payload: &[u8]) -> Result<Reply, RequestError> {
    let request: SecretPutRequest = parse_json(payload)?;
    let (stored, created) = secrets::put(nats, caller, &request).await?;
    Ok(Reply::with_code(if created { 201 } else { 200 }, &stored))
}

pub async fn list(nats: &Nats, caller: &Caller) -> Result<Reply, RequestError> {
    Ok(Reply::ok(&secrets::list(nats, caller).await?))
}

pub async fn delete(nats: &Nats, caller: &Caller, payload: &[u8]) -> Result<Reply, RequestError> {
    let request: SecretDeleteRequest = parse_json(payload)?;
    Ok(Reply::ok(&secrets::delete(nats, caller, &request.name).await?))
}
