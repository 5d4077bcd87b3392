//! Signed provenance and SBOMs of builds (issue 31, CONTRACT "Signed provenance and SBOM"):
//!
//! - [`key`]: the service's Ed25519 signing key, made on first start in a PEM file (0600, atomically) and
//!   loaded after; its `keyid` (hex SHA-256 of the DER public key), `algorithm` (`ed25519`) and public PEM,
//!   as `GET /provenance/key` answers them.
//! - [`dsse`]: DSSE v1 envelopes, signed over the specification's PAE, and their verification, which says
//!   which check failed.
//! - [`statement`]: the in-toto Statement v1 with its SLSA provenance v1 predicate.
//! - [`spdx`]: SPDX 2.3 documents of component archives and images, and the check of an archive against
//!   its document.
//! - [`cosign`]: an image's attestation as cosign stores it in a registry (`sha256-<hex>.att`).
//!
//! Nothing here talks to NATS, a registry or an engine: the build functions pass in what they used and push
//! or store what comes out.

pub mod cosign;
pub mod dsse;
pub mod image;
pub mod key;
pub mod spdx;
pub mod statement;
pub mod verify;

pub use dsse::{Envelope, VerifyError};
pub use key::{PublicKey, SigningKey};
pub use spdx::{ArchiveFiles, Document};
pub use statement::Statement;

/// What `GET /provenance/key` answers (with `status: "ok"`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyInfo {
    pub keyid: String,
    pub algorithm: String,
    pub public_key_pem: String,
}

impl KeyInfo {
    pub fn of(key: &PublicKey) -> Self {
        Self {
            keyid: key.keyid().to_owned(),
            algorithm: key.algorithm().to_owned(),
            public_key_pem: key.pem().to_owned(),
        }
    }

    /// The public key, checked against the `keyid` and `algorithm` given beside it.
    pub fn public_key(&self) -> Result<PublicKey, VerifyError> {
        let key = PublicKey::from_pem(&self.public_key_pem).map_err(|err| VerifyError::PublicKey(err.to_string()))?;
        if self.algorithm != key.algorithm() {
            return Err(VerifyError::PublicKey(format!(
                "the algorithm is {:?}, the key is {}",
                self.algorithm,
                key.algorithm()
            )));
        }
        if self.keyid != key.keyid() {
            return Err(VerifyError::PublicKey(format!(
                "the keyid {} is not the key's id {}",
                self.keyid,
                key.keyid()
            )));
        }
        Ok(key)
    }
}

/// The default key file in a data directory (`<data dir>/provenance-key.pem`) when `provenance.key_file`
/// is not set.
pub fn default_key_file(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join(key::DEFAULT_KEY_FILE_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_info_round_trip() {
        let key = SigningKey::generate();
        let info = KeyInfo::of(key.public_key());
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["algorithm"], "ed25519");
        assert_eq!(json["keyid"], key.keyid());
        assert!(json["publicKeyPem"].as_str().unwrap().starts_with("-----BEGIN PUBLIC KEY-----"));
        assert_eq!(info.public_key().unwrap(), *key.public_key());
        let mut lying = info.clone();
        lying.keyid = SigningKey::generate().keyid().to_owned();
        assert!(lying.public_key().is_err());
    }
}
