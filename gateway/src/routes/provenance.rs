//! `GET /api/v1/provenance/key`, `GET /api/v1/builds/{buildId}/provenance`,
//! `GET /api/v1/builds/{buildId}/sbom`: what anyone needs to check an artifact of this service.
//!
//! The key needs no API key: it is public, and a verifier pins it. A build's attestations are shown to
//! keys that may see the build (the lookup function says so, as for `GET /builds/{buildId}`), then read
//! from the store as the worker wrote them, byte for byte: an SBOM may be larger than a NATS message.

use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use tokio_util::io::ReaderStream;
use utoipa::ToSchema;

use artifacts_schemas::{BuildId, ErrorReply, RequestError};
use artifacts_store::Attestation;

use super::builds::visible_build;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::input::PathParams;
use crate::relay::relay;
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProvenanceKey {
    /// Always `ok`.
    status: &'static str,
    /// Hex SHA-256 of the DER public key: envelopes' `signatures[].keyid`.
    keyid: String,
    /// `ed25519`.
    algorithm: String,
    /// The public key, PEM (SubjectPublicKeyInfo).
    public_key_pem: String,
}

/// The public key that verifies every build's provenance.
#[utoipa::path(get, path = "/api/v1/provenance/key", tag = "provenance",
    responses(
        (status = 200, description = "The service's public key", body = ProvenanceKey),
        (status = 503, description = "The key file cannot be read or made", body = ErrorReply),
    ))]
pub async fn key(State(state): State<AppState>) -> Result<Json<ProvenanceKey>, ApiError> {
    let info = state.nats.provenance.public()?;
    Ok(Json(ProvenanceKey {
        status: "ok",
        keyid: info.keyid,
        algorithm: info.algorithm,
        public_key_pem: info.public_key_pem,
    }))
}

/// A successful build's provenance: a DSSE envelope of an in-toto statement (SLSA provenance v1).
#[utoipa::path(get, path = "/api/v1/builds/{build_id}/provenance", tag = "provenance",
    params(("build_id" = String, Path, description = "Build id")),
    responses(
        (status = 200, description = "The envelope: {payloadType, payload (base64), signatures: [{keyid, sig}]}", content_type = "application/json"),
        (status = 403, description = "The key may not see that component", body = ErrorReply),
        (status = 404, description = "No such build, or it did not succeed", body = ErrorReply),
    ),
    security(("bearer" = []), ("apiKey" = [])))]
pub async fn provenance(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(build_id): PathParams<String>,
) -> Result<Response, ApiError> {
    attestation(&state, &caller, &build_id, Attestation::Provenance, "application/json").await
}

/// A successful build's SBOM (SPDX 2.3 JSON).
#[utoipa::path(get, path = "/api/v1/builds/{build_id}/sbom", tag = "provenance",
    params(("build_id" = String, Path, description = "Build id")),
    responses(
        (status = 200, description = "The SPDX 2.3 document", content_type = "application/spdx+json"),
        (status = 403, description = "The key may not see that component", body = ErrorReply),
        (status = 404, description = "No such build, or it did not succeed", body = ErrorReply),
    ),
    security(("bearer" = []), ("apiKey" = [])))]
pub async fn sbom(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(build_id): PathParams<String>,
) -> Result<Response, ApiError> {
    attestation(&state, &caller, &build_id, Attestation::Sbom, "application/spdx+json").await
}

async fn attestation(
    state: &AppState,
    caller: &Caller,
    build_id: &str,
    which: Attestation,
    content_type: &'static str,
) -> Result<Response, ApiError> {
    let seen = visible_build(state, caller, build_id).await?;
    if seen.is_failure() {
        return Ok(relay(seen));
    }
    let build_id = BuildId::parse(build_id)?;
    let Some((reader, size)) = state.nats.store.open_attestation(&build_id, which).await? else {
        return Err(RequestError::not_found(format!(
            "build {build_id} has no {}: only a build that succeeded has one",
            which.describe()
        ))
        .into());
    };
    // Streamed: an SBOM lists every file of an archive and is not held in memory.
    let body = Body::from_stream(ReaderStream::with_capacity(reader, 64 * 1024));
    Ok(([(CONTENT_TYPE, content_type.to_owned()), (CONTENT_LENGTH, size.to_string())], body).into_response())
}
