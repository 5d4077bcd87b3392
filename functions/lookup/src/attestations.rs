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

/// The attestation of a build the caller may see.
pub async fn of_build(nats: &Nats, caller: &Caller, payload: &[u8], which: Attestation) -> Result<Reply, RequestError> {
    let query: BuildQuery = parse_json(payload)?;
    let bytes = visible(nats, caller, &query, which).await?;
    // The server's payload limit: a larger SBOM is read over HTTP, which streams from the object store.
    let limit = nats.client.server_info().max_payload.saturating_sub(4096);
    if bytes.len() > limit {
        return Err(RequestError::new(
            artifacts_schemas::Failure::TooLarge,
            format!(
                "the SBOM of build {} is {} bytes, more than a NATS message carries here: read it over HTTP (GET /api/v1/builds/{}/sbom)",
                query.build_id,
                bytes.len(),
                query.build_id
            ),
        ));
    }
    Ok(Reply { code: 200, body: bytes.into() })
}

/// A build's attestation, if the caller may see the build: 404 when the build or its attestation is
/// missing (only successful builds attest), 403 when the key may not see its component.
pub async fn visible(
    nats: &Nats,
    caller: &Caller,
    query: &BuildQuery,
    which: Attestation,
) -> Result<Vec<u8>, RequestError> {
    let build_id = &query.build_id;
    let Some(record) = nats.store.build(build_id).await? else {
        return Err(RequestError::not_found(format!("no build has id {build_id}")));
    };
    if !caller.allows(record.work.component().as_str()) {
        return Err(RequestError::forbidden("this API key may not see builds of that component"));
    }
    let what = match which {
        Attestation::Provenance => "provenance",
        Attestation::Sbom => "SBOM",
    };
    nats.store.attestation(build_id, which).await?.ok_or_else(|| {
        RequestError::not_found(format!(
            "build {build_id} has no {what}: only a build that succeeded has one (this one is {})",
            record.status.as_str()
        ))
    })
}
