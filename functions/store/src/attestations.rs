//! What a successful build attests: its signed provenance (a DSSE envelope) and its SBOM (SPDX 2.3 JSON),
//! kept in the archives' object store beside the artifacts, by build id, and collected with the build.

use tokio::io::AsyncReadExt;

use artifacts_schemas::BuildId;

use crate::{Objects, Store, StoreError};

/// One of a build's attestations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attestation {
    /// The DSSE envelope of its in-toto statement.
    Provenance,
    /// Its SPDX document.
    Sbom,
}

impl Attestation {
    pub const ALL: [Attestation; 2] = [Attestation::Provenance, Attestation::Sbom];

    fn object(self, build_id: &BuildId) -> String {
        match self {
            Self::Provenance => format!("attestations/{build_id}/provenance.intoto.json"),
            Self::Sbom => format!("attestations/{build_id}/sbom.spdx.json"),
        }
    }
}

impl Store {
    /// Stores a build's attestation (replacing one a crashed attempt left).
    pub async fn put_attestation(
        &self,
        build_id: &BuildId,
        which: Attestation,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        self.put_object(Objects::Archives, &which.object(build_id), &mut &bytes[..]).await.map(drop)
    }

    /// A build's attestation, if it has one.
    pub async fn attestation(&self, build_id: &BuildId, which: Attestation) -> Result<Option<Vec<u8>>, StoreError> {
        let mut reader = match self.object(Objects::Archives, &which.object(build_id)).await {
            Ok(reader) => reader,
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(err) => return Err(err),
        };
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).await.map_err(StoreError::unavailable)?;
        Ok(Some(bytes))
    }

    /// Removes a build's attestations (the collector, with the build).
    pub async fn remove_attestations(&self, build_id: &BuildId) -> Result<(), StoreError> {
        for which in Attestation::ALL {
            self.remove_object(Objects::Archives, &which.object(build_id)).await?;
        }
        Ok(())
    }
}
