//! An image's attestation in the registry, as cosign stores it (cosign's `specs/ATTESTATION_SPEC.md`, and
//! what `cosign attest` pushes): beside the image, under the tag `sha256-<hex of the image's manifest
//! digest>.att`, an OCI image manifest whose one layer (media type `application/vnd.dsse.envelope.v1+json`)
//! is the envelope, and whose config is the image configuration go-containerregistry makes for such a
//! manifest. Pure functions: the blobs and the manifest with their digests; pushing them is the caller's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::dsse::{Envelope, ENVELOPE_MEDIA_TYPE};
use crate::statement::{sha256_hex, DigestError, SLSA_PROVENANCE_V1};

pub const OCI_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// The annotation cosign puts on every signature layer; empty for an attestation, whose signature is in
/// the envelope.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The annotation `cosign attest` puts on an attestation layer.
pub const PREDICATE_TYPE_ANNOTATION: &str = "predicateType";

/// A blob to push: its bytes, `sha256:<hex>` digest and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub media_type: String,
    pub bytes: Vec<u8>,
    pub digest: String,
    pub size: u64,
}

impl Blob {
    fn new(media_type: &str, bytes: Vec<u8>) -> Self {
        Self {
            media_type: media_type.to_owned(),
            digest: format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
            size: bytes.len() as u64,
            bytes,
        }
    }

    fn descriptor(&self, annotations: BTreeMap<String, String>) -> Descriptor {
        Descriptor { media_type: self.media_type.clone(), size: self.size, digest: self.digest.clone(), annotations }
    }
}

/// What to push for an image's attestation: the config and layer blobs, then the manifest under `tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attestation {
    /// `sha256-<hex>.att`.
    pub tag: String,
    pub config: Blob,
    /// The envelope's JSON.
    pub layer: Blob,
    /// The manifest (media type [`OCI_MANIFEST_MEDIA_TYPE`]).
    pub manifest: Blob,
}

/// An OCI image manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub size: u64,
    pub digest: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The tag cosign gives an image's attestation: `sha256-<hex>.att` for manifest digest `sha256:<hex>`.
pub fn attestation_tag(image_digest: &str) -> Result<String, DigestError> {
    Ok(format!("sha256-{}.att", sha256_hex(image_digest)?))
}

/// The config go-containerregistry writes for a manifest of these layers with no image behind it (what
/// cosign pushes): an empty image configuration whose `rootfs.diff_ids` are the layers' digests.
pub fn config_for_layers(layer_digests: &[&str]) -> Vec<u8> {
    let diff_ids: Vec<String> = layer_digests.iter().map(|digest| format!("\"{digest}\"")).collect();
    format!(
        "{{\"architecture\":\"\",\"created\":\"0001-01-01T00:00:00Z\",\"history\":[{{\"created\":\"0001-01-01T00:00:00Z\"}}],\"os\":\"\",\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[{}]}},\"config\":{{}}}}",
        diff_ids.join(",")
    )
    .into_bytes()
}

/// The attestation of the image whose manifest digest is `image_digest`, holding `envelope` (whose
/// payload should be a statement about that digest; its predicate type goes into the layer's annotation).
pub fn attestation(image_digest: &str, envelope: &Envelope) -> Result<Attestation, DigestError> {
    let tag = attestation_tag(image_digest)?;
    let predicate_type = envelope
        .payload_bytes()
        .ok()
        .and_then(|payload| serde_json::from_slice::<serde_json::Value>(&payload).ok())
        .and_then(|statement| statement.get("predicateType").and_then(|value| value.as_str()).map(str::to_owned))
        .unwrap_or_else(|| SLSA_PROVENANCE_V1.to_owned());
    let layer = Blob::new(ENVELOPE_MEDIA_TYPE, envelope.to_json());
    let config = Blob::new(OCI_CONFIG_MEDIA_TYPE, config_for_layers(&[&layer.digest]));
    let annotations = BTreeMap::from([
        (SIGNATURE_ANNOTATION.to_owned(), String::new()),
        (PREDICATE_TYPE_ANNOTATION.to_owned(), predicate_type),
    ]);
    let manifest = Manifest {
        schema_version: 2,
        media_type: OCI_MANIFEST_MEDIA_TYPE.to_owned(),
        config: config.descriptor(BTreeMap::new()),
        layers: vec![layer.descriptor(annotations)],
    };
    let manifest =
        Blob::new(OCI_MANIFEST_MEDIA_TYPE, serde_json::to_vec(&manifest).expect("a manifest always serializes"));
    Ok(Attestation { tag, config, layer, manifest })
}

/// The envelopes in an attestation manifest's layers, given a way to fetch a blob by digest: what a
/// verifier reads back from the registry. Layers of other media types are passed over.
pub fn envelopes_in<E>(
    manifest: &[u8],
    mut fetch: impl FnMut(&str) -> Result<Vec<u8>, E>,
) -> Result<Vec<Result<Envelope, String>>, E> {
    let Ok(manifest) = serde_json::from_slice::<Manifest>(manifest) else {
        return Ok(Vec::new());
    };
    let mut envelopes = Vec::new();
    for layer in manifest.layers.iter().filter(|layer| layer.media_type == ENVELOPE_MEDIA_TYPE) {
        let bytes = fetch(&layer.digest)?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        envelopes.push(if digest != layer.digest {
            Err(format!("the layer {} has digest {digest}", layer.digest))
        } else {
            Envelope::from_json(&bytes).map_err(|err| err.to_string())
        });
    }
    Ok(envelopes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::SigningKey;

    /// The example manifest of cosign's `specs/ATTESTATION_SPEC.md`: its config of 233 bytes with digest
    /// `sha256:83bd5f...` is the config made for its layer `sha256:ed3ad0...`.
    #[test]
    fn config_is_what_cosign_pushes() {
        let config = config_for_layers(&["sha256:ed3ad03d3b87843b5419d7dce9d50a3e0f45554b2ba93bf378611cae6b450cff"]);
        assert_eq!(config.len(), 233);
        assert_eq!(
            hex::encode(Sha256::digest(&config)),
            "83bd5fb5b39f65f28e50a86d48fa79c07880befc292d92eebdc18531054b070c"
        );
    }

    #[test]
    fn attestation_manifest() {
        let key = SigningKey::generate();
        let envelope = Envelope::sign(
            &key,
            crate::dsse::IN_TOTO_PAYLOAD_TYPE,
            br#"{"_type":"https://in-toto.io/Statement/v1","predicateType":"https://slsa.dev/provenance/v1"}"#,
        );
        let digest = format!("sha256:{}", "AB".repeat(32));
        let attestation = attestation(&digest, &envelope).unwrap();
        assert_eq!(attestation.tag, format!("sha256-{}.att", "ab".repeat(32)));
        assert_eq!(attestation.layer.bytes, envelope.to_json());
        let manifest: serde_json::Value = serde_json::from_slice(&attestation.manifest.bytes).unwrap();
        assert_eq!(
            manifest,
            serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "size": attestation.config.size,
                    "digest": attestation.config.digest,
                },
                "layers": [{
                    "mediaType": "application/vnd.dsse.envelope.v1+json",
                    "size": attestation.layer.size,
                    "digest": attestation.layer.digest,
                    "annotations": {
                        "dev.cosignproject.cosign/signature": "",
                        "predicateType": "https://slsa.dev/provenance/v1",
                    },
                }],
            })
        );
        assert_eq!(
            attestation.manifest.digest,
            format!("sha256:{}", hex::encode(Sha256::digest(&attestation.manifest.bytes)))
        );
        assert!(String::from_utf8(attestation.config.bytes.clone()).unwrap().contains(&attestation.layer.digest));

        // Read back.
        let blobs = [(attestation.layer.digest.clone(), attestation.layer.bytes.clone())];
        let fetch = |digest: &str| Ok::<_, ()>(blobs.iter().find(|(d, _)| d == digest).unwrap().1.clone());
        let found = envelopes_in(&attestation.manifest.bytes, fetch).unwrap();
        assert_eq!(found, vec![Ok(envelope.clone())]);
        let swapped = |_: &str| Ok::<_, ()>(b"{}".to_vec());
        assert!(envelopes_in(&attestation.manifest.bytes, swapped).unwrap()[0].is_err());

        assert!(attestation_tag("latest").is_err());
    }
}
