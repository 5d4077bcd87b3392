//! The service's provenance key: loaded (or made) on first use from `provenance.key_file`, like the
//! secrets key. The build workers sign with it ([`artifacts_provenance`] makes the statements and
//! envelopes); the lookup function answers its public half on `<prefix>.provenance.key`.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use artifacts_provenance::{KeyInfo, SigningKey};
use artifacts_schemas::RequestError;

/// `$XDG_DATA_HOME/artifacts/provenance-key.pem`, else `~/.local/share/artifacts/provenance-key.pem`.
pub fn default_key_file() -> Option<PathBuf> {
    crate::secrets::default_key_file()
        .and_then(|secrets| Some(artifacts_provenance::default_key_file(secrets.parent()?)))
}

pub struct Signer {
    /// `provenance.key_file`; `None`: the default place.
    configured: Option<PathBuf>,
    key: OnceLock<Arc<SigningKey>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("configured", &self.configured).finish_non_exhaustive()
    }
}

impl Signer {
    pub fn new(configured: Option<PathBuf>) -> Self {
        Self { configured, key: OnceLock::new() }
    }

    /// The signing key, made in its file when there is none yet.
    pub fn key(&self) -> Result<Arc<SigningKey>, RequestError> {
        if let Some(key) = self.key.get() {
            return Ok(Arc::clone(key));
        }
        let file = self.configured.clone().or_else(default_key_file).ok_or_else(|| {
            RequestError::unavailable(
                "no provenance key: set provenance.key_file (ARTIFACTS__PROVENANCE__KEY_FILE), or HOME for the default place",
            )
        })?;
        let opened = SigningKey::load_or_create(&file).map_err(|err| RequestError::unavailable(err.to_string()))?;
        if opened.created {
            tracing::warn!(file = %file.display(), keyid = opened.key.keyid(), "made a new provenance signing key; every build worker and the lookup function must use this file (provenance.key_file)");
        }
        if opened.readable_by_others {
            tracing::warn!(file = %file.display(), "the provenance key file is readable by other users: chmod 600 it");
        }
        Ok(Arc::clone(self.key.get_or_init(|| Arc::new(opened.key))))
    }

    /// What `GET /provenance/key` answers.
    pub fn public(&self) -> Result<KeyInfo, RequestError> {
        Ok(KeyInfo::of(self.key()?.public_key()))
    }
}
