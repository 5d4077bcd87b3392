//! The service's signing key: Ed25519 (RFC 8032), kept as a PKCS#8 PEM file (`-----BEGIN PRIVATE KEY-----`,
//! as `openssl genpkey -algorithm ed25519` writes it) and published as an SPKI PEM public key
//! (`-----BEGIN PUBLIC KEY-----`), which OpenSSL, Python's `cryptography` and cosign read as they are.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _, EncodePublicKey as _};
use ed25519_dalek::Signer as _;
use sha2::{Digest as _, Sha256};

/// The algorithm name the contract answers (`GET /provenance/key`).
pub const ALGORITHM: &str = "ed25519";

/// The file name of the key in the data directory, when `provenance.key_file` is not set.
pub const DEFAULT_KEY_FILE_NAME: &str = "provenance-key.pem";

/// Why a key could not be loaded, made or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the provenance key file {file}: {source}")]
    Io { file: PathBuf, source: std::io::Error },
    #[error("the provenance key file {file} holds no Ed25519 private key (PKCS#8 PEM, `-----BEGIN PRIVATE KEY-----`): {reason}")]
    NotAKey { file: PathBuf, reason: String },
    #[error("not an Ed25519 public key (SPKI PEM, `-----BEGIN PUBLIC KEY-----`): {0}")]
    PublicKey(String),
}

/// The private key that signs provenance. Its secret bytes are wiped when it is dropped.
pub struct SigningKey {
    key: ed25519_dalek::SigningKey,
    public: PublicKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("keyid", &self.public.keyid).finish_non_exhaustive()
    }
}

/// What [`SigningKey::load_or_create`] found.
#[derive(Debug)]
pub struct OpenedKey {
    pub key: SigningKey,
    /// The file did not exist: this process made it.
    pub created: bool,
    /// The file may be read by others than its owner (group or other permission bits): worth a warning.
    pub readable_by_others: bool,
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> Self {
        let mut secret: [u8; 32] = rand::random();
        let key = Self::from_secret(&secret);
        zeroize::Zeroize::zeroize(&mut secret);
        key
    }

    /// The key whose 32-byte Ed25519 secret (seed) this is.
    pub fn from_secret(secret: &[u8; 32]) -> Self {
        Self::from_dalek(ed25519_dalek::SigningKey::from_bytes(secret))
    }

    fn from_dalek(key: ed25519_dalek::SigningKey) -> Self {
        let public = PublicKey::from_dalek(key.verifying_key());
        Self { key, public }
    }

    /// The key in a PKCS#8 PEM text (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, String> {
        ed25519_dalek::SigningKey::from_pkcs8_pem(pem).map(Self::from_dalek).map_err(|err| err.to_string())
    }

    /// The key as PKCS#8 PEM, wiped when dropped.
    pub fn to_pkcs8_pem(&self) -> zeroize::Zeroizing<String> {
        self.key
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .expect("an Ed25519 key always encodes as PKCS#8")
    }

    /// Reads the key from `file` (PKCS#8 PEM).
    pub fn load(file: &Path) -> Result<Self, KeyError> {
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(file).map_err(|source| KeyError::Io { file: file.to_owned(), source })?,
        );
        Self::from_pkcs8_pem(&text).map_err(|reason| KeyError::NotAKey { file: file.to_owned(), reason })
    }

    /// Reads the key from `file`, or, when there is none, makes one there first: mode 0600, its directory
    /// (if missing) 0700. Making it is atomic: the key is written whole to a file of its own and then
    /// hard-linked to `file`, which fails if `file` exists, so processes starting together all end up with
    /// the one key that was linked first, and none ever reads a half-written file.
    pub fn load_or_create(file: &Path) -> Result<OpenedKey, KeyError> {
        let io = |source| KeyError::Io { file: file.to_owned(), source };
        let created = match std::fs::symlink_metadata(file) {
            Ok(_) => false,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => make_key_file(file).map_err(io)?,
            Err(err) => return Err(io(err)),
        };
        let key = Self::load(file)?;
        let mode = std::fs::metadata(file).map_err(io)?.permissions().mode();
        Ok(OpenedKey { key, created, readable_by_others: mode & 0o077 != 0 })
    }

    /// Signs `message` (for DSSE: the PAE of the payload, see [`crate::dsse::pae`]).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// See [`PublicKey::keyid`].
    pub fn keyid(&self) -> &str {
        &self.public.keyid
    }

    /// `"ed25519"`.
    pub fn algorithm(&self) -> &'static str {
        ALGORITHM
    }

    /// See [`PublicKey::pem`].
    pub fn public_key_pem(&self) -> &str {
        &self.public.pem
    }
}

/// A public key that verifies envelopes.
#[derive(Clone)]
pub struct PublicKey {
    key: ed25519_dalek::VerifyingKey,
    keyid: String,
    pem: String,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey").field("keyid", &self.keyid).finish_non_exhaustive()
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for PublicKey {}

impl PublicKey {
    fn from_dalek(key: ed25519_dalek::VerifyingKey) -> Self {
        let der = key.to_public_key_der().expect("an Ed25519 key always encodes as SPKI");
        let keyid = hex::encode(Sha256::digest(der.as_bytes()));
        let pem = key
            .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .expect("an Ed25519 key always encodes as SPKI");
        Self { key, keyid, pem }
    }

    /// The key in an SPKI PEM text (`-----BEGIN PUBLIC KEY-----`), as `GET /provenance/key` answers it.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        ed25519_dalek::VerifyingKey::from_public_key_pem(pem.trim())
            .map(Self::from_dalek)
            .map_err(|err| KeyError::PublicKey(err.to_string()))
    }

    /// The key's id: the lowercase hex SHA-256 of its DER SubjectPublicKeyInfo (what
    /// `openssl pkey -pubin -outform DER | sha256sum` prints for the PEM), 64 digits.
    pub fn keyid(&self) -> &str {
        &self.keyid
    }

    /// `"ed25519"`.
    pub fn algorithm(&self) -> &'static str {
        ALGORITHM
    }

    /// SPKI PEM, ending with a newline.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// Whether `signature` is this key's signature of `message` (strict RFC 8032 verification: canonical
    /// encodings only, no small-order keys).
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = ed25519_dalek::Signature::from_slice(signature) else {
            return false;
        };
        self.key.verify_strict(message, &signature).is_ok()
    }
}

/// Writes a new key to a file of its own, then links it to `file`. True if this call made `file`, false if
/// another process linked its key first.
fn make_key_file(file: &Path) -> std::io::Result<bool> {
    if let Some(dir) = file.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".new-{}-{}", std::process::id(), hex::encode(rand::random::<[u8; 4]>())));
    let aside = file.with_file_name(name);
    let pem = SigningKey::generate().to_pkcs8_pem();
    let written = (|| {
        let mut out = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&aside)?;
        out.write_all(pem.as_bytes())?;
        out.sync_all()
    })();
    let linked = written.and_then(|()| std::fs::hard_link(&aside, file));
    let _ = std::fs::remove_file(&aside);
    match linked {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_with_mode_0600_then_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub").join(DEFAULT_KEY_FILE_NAME);
        let first = SigningKey::load_or_create(&file).unwrap();
        assert!(first.created);
        assert!(!first.readable_by_others);
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(file.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{text}");
        let second = SigningKey::load_or_create(&file).unwrap();
        assert!(!second.created);
        assert_eq!(first.key.public_key(), second.key.public_key());
        // Nothing left beside it.
        assert_eq!(std::fs::read_dir(file.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn processes_starting_together_share_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(DEFAULT_KEY_FILE_NAME);
        let opened: Vec<OpenedKey> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8).map(|_| scope.spawn(|| SigningKey::load_or_create(&file).unwrap())).collect();
            handles.into_iter().map(|handle| handle.join().unwrap()).collect()
        });
        assert_eq!(opened.iter().filter(|opened| opened.created).count(), 1);
        let keyid = opened[0].key.keyid().to_owned();
        assert!(opened.iter().all(|opened| opened.key.keyid() == keyid));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn loose_permissions_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key.pem");
        std::fs::write(&file, SigningKey::generate().to_pkcs8_pem().as_bytes()).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let opened = SigningKey::load_or_create(&file).unwrap();
        assert!(!opened.created);
        assert!(opened.readable_by_others);
    }

    #[test]
    fn a_file_without_a_key_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key.pem");
        std::fs::write(&file, "not a key\n").unwrap();
        let err = SigningKey::load_or_create(&file).unwrap_err();
        assert!(matches!(err, KeyError::NotAKey { .. }), "{err}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a key\n");
    }

    /// RFC 8032, 7.1, TEST 1: the secret, its public key and the signature of the empty message.
    #[test]
    fn rfc_8032_test_vector() {
        let secret: [u8; 32] = hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
            .unwrap()
            .try_into()
            .unwrap();
        let key = SigningKey::from_secret(&secret);
        assert_eq!(
            hex::encode(key.key.verifying_key().as_bytes()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        assert_eq!(
            hex::encode(key.sign(b"")),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
        // The SPKI: 12 bytes of algorithm header, then the 32 key bytes.
        let der = key.key.verifying_key().to_public_key_der().unwrap();
        assert_eq!(
            hex::encode(der.as_bytes()),
            format!("302a300506032b6570032100{}", hex::encode(key.key.verifying_key().as_bytes()))
        );
        assert_eq!(key.keyid(), hex::encode(Sha256::digest(der.as_bytes())));
        assert!(key.public_key_pem().starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert_eq!(PublicKey::from_pem(key.public_key_pem()).unwrap(), *key.public_key());
        assert_eq!(SigningKey::from_pkcs8_pem(&key.to_pkcs8_pem()).unwrap().keyid(), key.keyid());
    }
}
