//! What a successful build attests: its signed provenance (a DSSE envelope) and its SBOM (SPDX 2.3 JSON),
//! kept in the archives' object store beside the artifacts, by build id, and collected with the build.

use tokio::io::AsyncReadExt;

use artifacts_schemas::BuildId;

use crate::{ObjectReader, Objects, Store, StoreError};

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

    /// Its name in messages: `provenance`, `SBOM`.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Provenance => "provenance",
            Self::Sbom => "SBOM",
        }
    }

    /// Its route below `/api/v1/builds/{buildId}/` and what that answers it as.
    pub fn route(self) -> &'static str {
        match self {
            Self::Provenance => "provenance",
            Self::Sbom => "sbom",
        }
    }

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

    /// A build's attestation opened for reading, with its size, if it has one: an SBOM lists every file
    /// of an archive and may be large, so it is streamed rather than held.
    pub async fn open_attestation(
        &self,
        build_id: &BuildId,
        which: Attestation,
    ) -> Result<Option<(ObjectReader, u64)>, StoreError> {
        match self.object(Objects::Archives, &which.object(build_id)).await {
            Ok(reader) => {
                let size = reader.info().size as u64;
                Ok(Some((reader, size)))
            }
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// A build's attestation, if it has one and it is at most `limit` bytes (`Err(size)` past it, unread).
    pub async fn attestation(
        &self,
        build_id: &BuildId,
        which: Attestation,
        limit: u64,
    ) -> Result<Option<Result<Vec<u8>, u64>>, StoreError> {
        let Some((mut reader, size)) = self.open_attestation(build_id, which).await? else { return Ok(None) };
        if size > limit {
            return Ok(Some(Err(size)));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        reader.read_to_end(&mut bytes).await.map_err(StoreError::unavailable)?;
        Ok(Some(Ok(bytes)))
    }

    /// Removes a build's attestations (the collector, with the build).
    pub async fn remove_attestations(&self, build_id: &BuildId) -> Result<(), StoreError> {
        for which in Attestation::ALL {
            self.remove_object(Objects::Archives, &which.object(build_id)).await?;
        }
        Ok(())
    }
}
