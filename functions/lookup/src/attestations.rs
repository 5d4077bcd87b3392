//! `<prefix>.provenance.key`, `<prefix>.build.provenance` and `<prefix>.build.sbom`: the service's public
//! key, and what a successful build attests, as the build workers stored it (the envelope and the
//! document are answered byte for byte as signed and written).

use artifacts_runtime::auth::Caller;
use artifacts_runtime::service::Reply;
use artifacts_runtime::Nats;
use artifacts_schemas::{parse_json, BuildQuery, RequestError};
use artifacts_store::Attestation;

/// `{status: "ok", keyid, algorithm, publicKeyPem}`.
pub fn key(nats: &Nats) -> Result<Reply, RequestError> {
    let info = nats.provenance.public()?;
    let mut body = serde_json::to_value(&info).expect("key info serialises");
    body["status"] = "ok".into();
    Ok(Reply::ok(&body))
}

/// The attestation of a build the caller may see: 404 when the build or its attestation is missing (only
/// successful builds attest), 403 when the key may not see its component, 413 when it is larger than a
/// NATS message carries (over HTTP it streams from the object store).
pub async fn of_build(nats: &Nats, caller: &Caller, payload: &[u8], which: Attestation) -> Result<Reply, RequestError> {
    let query: BuildQuery = parse_json(payload)?;
    let build_id = &query.build_id;
    let Some(record) = nats.store.build(build_id).await? else {
        return Err(RequestError::not_found(format!("no build has id {build_id}")));
    };
    if !caller.allows(record.work.component().as_str()) {
        return Err(RequestError::forbidden("this API key may not see builds of that component"));
    }
    let limit = nats.client.server_info().max_payload.saturating_sub(4096) as u64;
    match nats.store.attestation(build_id, which, limit).await? {
        Some(Ok(bytes)) => Ok(Reply { code: 200, body: bytes.into() }),
        Some(Err(size)) => Err(RequestError::new(
            artifacts_schemas::Failure::TooLarge,
            format!(
                "the {} of build {build_id} is {size} bytes, more than a NATS message carries here: read it over HTTP (GET /api/v1/builds/{build_id}/{})",
                which.describe(),
                which.route()
            ),
        )),
        None => Err(RequestError::not_found(format!(
            "build {build_id} has no {}: only a build that succeeded has one (this one is {})",
            which.describe(),
            record.status.as_str()
        ))),
    }
}
