//! Build secrets: values an admin stores for the builds of some components, which nothing answers,
//! lists, logs or records.
//!
//! - At rest each secret is a record in the key-value bucket `<prefix>_secrets` (key: the hex of its
//!   name) whose value is encrypted with XChaCha20-Poly1305: a random 192-bit nonce per write, the
//!   secret's name as associated data (a record copied under another name does not decrypt), the key's
//!   id beside it so a process given another key says so instead of failing obscurely.
//! - The key is 32 random bytes, hex, in `secrets.key_file` (env `ARTIFACTS__SECRETS__KEY_FILE`;
//!   `artifacts up` uses `<data dir>/secrets.key`), made with mode 0600 on first use when missing. Only
//!   the processes that store secrets (the gc function, which serves `secret.put|list|delete`) and that
//!   read them (the build workers) load it, and only when they first need it.
//! - Managing secrets takes the admin scope. A key limited to component patterns manages only secrets
//!   whose every pattern is within its own (as it manages only keys within its limits): it cannot list,
//!   replace or delete a secret that reaches components beyond its patterns, nor make one.
//! - [`for_component`] gives a build of component C every secret whose patterns match C (image builds
//!   hand them to BuildKit's secrets provider); [`for_build`] gives a component build the ones its
//!   `artifact.toml` lists, failing with the name of any that C may not use.
//! - [`fingerprints`] says which values a build reads without saying what they are: HMAC-SHA256 of
//!   the name and value under a key derived from the secrets key (never a plain hash, which would let
//!   anyone who reads a build record test guesses of a short value). Identical builds share one build
//!   only while these are equal too (see SECURITY.md, "Build secrets").

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use artifacts_schemas::messages::keys::{glob_matches, pattern_within};
use artifacts_schemas::messages::secrets::{
    check_secret_name, SecretDeleted, SecretInfo, SecretInput, SecretList, SecretPutRequest, SecretStatus, SecretStored,
};
use artifacts_schemas::{ComponentName, RequestError, Timestamp};

use crate::auth::Caller;
use crate::nats::Nats;

/// The key that encrypts secrets, loaded (or made) on first use from `secrets.key_file`.
pub struct Keyring {
    /// `secrets.key_file`; `None`: the default place ([`default_key_file`]).
    configured: Option<PathBuf>,
    key: OnceLock<Arc<SecretsKey>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").field("configured", &self.configured).finish_non_exhaustive()
    }
}

impl Keyring {
    pub fn new(configured: Option<PathBuf>) -> Self {
        Self { configured, key: OnceLock::new() }
    }

    /// The key file this process uses.
    pub fn file(&self) -> Result<PathBuf, RequestError> {
        match &self.configured {
            Some(file) => Ok(file.clone()),
            None => default_key_file().ok_or_else(|| {
                RequestError::unavailable(
                    "no key for build secrets: set secrets.key_file (ARTIFACTS__SECRETS__KEY_FILE), or HOME for the default place",
                )
            }),
        }
    }

    fn key(&self) -> Result<Arc<SecretsKey>, RequestError> {
        if let Some(key) = self.key.get() {
            return Ok(Arc::clone(key));
        }
        let file = self.file()?;
        let (key, made) = load_key(&file).map_err(RequestError::unavailable)?;
        if made {
            if self.configured.is_some() {
                tracing::info!(file = %file.display(), "made a new key for build secrets");
            } else {
                tracing::warn!(
                    file = %file.display(),
                    "secrets.key_file is not set: made a new key for build secrets here; every process that stores or reads secrets (gc, build workers) must use this file (ARTIFACTS__SECRETS__KEY_FILE)"
                );
            }
        }
        Ok(Arc::clone(self.key.get_or_init(|| Arc::new(key))))
    }
}

/// `$XDG_DATA_HOME/artifacts/secrets.key`, else `~/.local/share/artifacts/secrets.key`.
pub fn default_key_file() -> Option<PathBuf> {
    let data = std::env::var_os("XDG_DATA_HOME").filter(|dir| !dir.is_empty()).map(PathBuf::from).or_else(|| {
        std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".local/share"))
    })?;
    Some(data.join("artifacts").join("secrets.key"))
}

struct SecretsKey {
    cipher: XChaCha20Poly1305,
    /// The first 16 hex digits of a hash of the key: which key a record was sealed with.
    id: String,
    /// HMAC-SHA256 of a fixed label under the key: the key of values' fingerprints, so that a
    /// fingerprint is no function of the value alone and the key itself is used for nothing but sealing.
    fingerprint_key: zeroize::Zeroizing<[u8; 32]>,
}

/// Makes the key file `file` unless it exists (as `artifacts up` does before starting the stack), and
/// checks that it holds a key; the flag says whether it was made.
pub fn ensure_key_file(file: &Path) -> Result<bool, String> {
    load_key(file).map(|(_, made)| made)
}

fn load_key(file: &Path) -> Result<(SecretsKey, bool), String> {
    load_or_make_key(file).map(|(bytes, made)| (bytes.into(), made))
}

/// Reads the key in `file`, or makes one there (mode 0600, in a directory made 0700) when there is none;
/// the flag says whether it was made. Two processes making it at once end with the same key: the file is
/// written aside and linked into place, and the one that loses reads the winner's.
fn load_or_make_key(file: &Path) -> Result<(SecretsKeyBytes, bool), String> {
    let shown = file.display();
    let mut made = false;
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            made = make_key_file(file).map_err(|err| format!("cannot make the secrets key file {shown}: {err}"))?;
            std::fs::read_to_string(file).map_err(|err| format!("cannot read the secrets key file {shown}: {err}"))?
        }
        Err(err) => return Err(format!("cannot read the secrets key file {shown}: {err}")),
    };
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(file) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(file = %shown, "the secrets key file is readable by others than its owner: chmod 600 it");
            }
        }
    }
    let bytes = hex::decode(text.trim())
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| format!("the secrets key file {shown} does not hold a key (64 hex digits)"))?;
    Ok((SecretsKeyBytes(bytes), made))
}

/// A key's bytes, wiped when dropped.
struct SecretsKeyBytes([u8; 32]);

impl Drop for SecretsKeyBytes {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl From<SecretsKeyBytes> for SecretsKey {
    fn from(bytes: SecretsKeyBytes) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"artifacts secrets key id\0");
        hasher.update(bytes.0);
        let id = hex::encode(&hasher.finalize()[..8]);
        let mut derive = <Hmac<Sha256> as Mac>::new_from_slice(&bytes.0).expect("HMAC takes any key length");
        derive.update(b"artifacts secret fingerprint key v1");
        let fingerprint_key = zeroize::Zeroizing::new(derive.finalize().into_bytes().into());
        Self { cipher: XChaCha20Poly1305::new((&bytes.0).into()), id, fingerprint_key }
    }
}

fn make_key_file(file: &Path) -> std::io::Result<bool> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    if let Some(dir) = file.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let aside = file.with_extension(format!("new-{}-{}", std::process::id(), hex::encode(rand::random::<[u8; 4]>())));
    let mut key = hex::encode(rand::random::<[u8; 32]>());
    key.push('\n');
    let written = (|| {
        let mut out = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&aside)?;
        out.write_all(key.as_bytes())?;
        out.sync_all()
    })();
    zeroize::Zeroize::zeroize(&mut key);
    let linked = written.and_then(|()| std::fs::hard_link(&aside, file));
    let _ = std::fs::remove_file(&aside);
    match linked {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(err) => Err(err),
    }
}

/// A secret's record in the bucket.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredSecret {
    name: String,
    components: Vec<String>,
    created_at: Timestamp,
    updated_at: Timestamp,
    /// The id of the key that sealed it.
    key_id: String,
    /// Base64 of the 24-byte nonce.
    nonce: String,
    /// Base64 of the sealed value (with its 16-byte tag).
    sealed: String,
}

impl std::fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSecret")
            .field("name", &self.name)
            .field("components", &self.components)
            .finish_non_exhaustive()
    }
}

impl StoredSecret {
    fn info(&self) -> SecretInfo {
        SecretInfo {
            name: self.name.clone(),
            components: self.components.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }

    fn matches(&self, component: &str) -> bool {
        self.components.iter().any(|pattern| glob_matches(pattern, component))
    }
}

/// What the associated data says: the record's name, under a version tag.
fn associated_data(name: &str) -> Vec<u8> {
    format!("artifacts secret v1\0{name}").into_bytes()
}

fn seal(key: &SecretsKey, name: &str, value: &[u8]) -> Result<(String, String), RequestError> {
    let nonce_bytes: [u8; 24] = rand::random();
    let aad = associated_data(name);
    let sealed = key
        .cipher
        .encrypt(XNonce::from_slice(&nonce_bytes), Payload { msg: value, aad: &aad })
        .map_err(|_| RequestError::internal("the secret could not be encrypted"))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok((b64.encode(nonce_bytes), b64.encode(sealed)))
}

fn open(key: &SecretsKey, record: &StoredSecret, file: &Path) -> Result<Vec<u8>, RequestError> {
    if record.key_id != key.id {
        return Err(RequestError::unavailable(format!(
            "secret {} was encrypted with another key (id {}) than the one in {} (id {}): give every process of the stack the same secrets.key_file",
            record.name,
            record.key_id,
            file.display(),
            key.id
        )));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let unreadable =
        || RequestError::internal(format!("the record of secret {} is damaged: set it again", record.name));
    let nonce = b64.decode(&record.nonce).ok().filter(|n| n.len() == 24).ok_or_else(unreadable)?;
    let sealed = b64.decode(&record.sealed).map_err(|_| unreadable())?;
    let aad = associated_data(&record.name);
    key.cipher.decrypt(XNonce::from_slice(&nonce), Payload { msg: &sealed, aad: &aad }).map_err(|_| unreadable())
}

async fn read_record(nats: &Nats, name: &str) -> Result<Option<(StoredSecret, u64)>, RequestError> {
    Ok(nats.store.secret_record(name).await?)
}

async fn all_records(nats: &Nats) -> Result<Vec<StoredSecret>, RequestError> {
    let mut records: Vec<StoredSecret> = nats.store.all_secret_records().await?;
    records.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(records)
}

/// 403 unless `caller` is an admin whose component patterns (if any) hold every one of `patterns`.
fn require_within(caller: &Caller, patterns: &[String], name: &str) -> Result<(), RequestError> {
    caller.require(artifacts_schemas::messages::keys::Scope::Admin)?;
    let Some(mine) = caller.component_patterns() else { return Ok(()) };
    let within = patterns.iter().all(|p| mine.iter().any(|outer| pattern_within(p, outer)));
    if within {
        Ok(())
    } else {
        Err(RequestError::forbidden(format!(
            "this API key is limited to components matching {}: secret {name}'s patterns ({}) must stay within them",
            mine.join(", "),
            patterns.join(", ")
        )))
    }
}

/// Stores a secret (new or replacing one of that name): the answer, and whether it was made.
pub async fn put(
    nats: &Nats,
    caller: &Caller,
    request: &SecretPutRequest,
) -> Result<(SecretStored, bool), RequestError> {
    request.check()?;
    require_within(caller, &request.components, &request.name)?;
    let key = nats.secrets.key()?;
    for _ in 0..5 {
        let existing = read_record(nats, &request.name).await?;
        if let Some((record, _)) = &existing {
            // A limited admin may not take over a secret that reaches beyond its patterns.
            require_within(caller, &record.components, &record.name)?;
        }
        let now = Timestamp::now();
        let (nonce, sealed) = seal(&key, &request.name, request.value.as_bytes())?;
        let record = StoredSecret {
            name: request.name.clone(),
            components: request.components.clone(),
            created_at: existing.as_ref().map_or(now, |(record, _)| record.created_at),
            updated_at: now,
            key_id: key.id.clone(),
            nonce,
            sealed,
        };
        let revision = existing.as_ref().map(|(_, revision)| *revision);
        match nats.store.write_secret_record(&request.name, &record, revision).await {
            Ok(true) => {
                let created = existing.is_none();
                tracing::info!(name = %record.name, by = %caller.key_id, created, "build secret stored");
                let status = if created { SecretStatus::Created } else { SecretStatus::Updated };
                let info = record.info();
                return Ok((
                    SecretStored {
                        status,
                        error_message: None,
                        name: info.name,
                        components: info.components,
                        created_at: info.created_at,
                        updated_at: info.updated_at,
                    },
                    created,
                ));
            }
            // Another put of the same name came between: read again.
            Ok(false) => tracing::debug!(name = %request.name, "a secret changed while being stored; again"),
            Err(err) => return Err(err.into()),
        }
    }
    Err(RequestError::new(
        artifacts_schemas::Failure::Conflict,
        format!("secret {} is being changed by others at the same time: try again", request.name),
    ))
}

/// The secrets `caller` may manage, by name, without values.
pub async fn list(nats: &Nats, caller: &Caller) -> Result<SecretList, RequestError> {
    caller.require(artifacts_schemas::messages::keys::Scope::Admin)?;
    let secrets = all_records(nats)
        .await?
        .into_iter()
        .filter(|record| require_within(caller, &record.components, &record.name).is_ok())
        .map(|record| record.info())
        .collect();
    Ok(SecretList { status: SecretStatus::Ok, error_message: None, secrets })
}

/// Deletes a secret: builds no longer get it.
pub async fn delete(nats: &Nats, caller: &Caller, name: &str) -> Result<SecretDeleted, RequestError> {
    caller.require(artifacts_schemas::messages::keys::Scope::Admin)?;
    check_secret_name(name)?;
    let Some((record, _)) = read_record(nats, name).await? else {
        return Err(RequestError::not_found(format!("no secret is named {name}")));
    };
    require_within(caller, &record.components, name)?;
    nats.store.remove_secret(name).await?;
    tracing::info!(%name, by = %caller.key_id, "build secret deleted");
    Ok(SecretDeleted { status: SecretStatus::Deleted, error_message: None, name: name.to_owned() })
}

/// The name and value of every secret whose `components` patterns match `component`, by name: what an
/// image build of `component` may mount (`RUN --mount=type=secret,id=<name>`).
pub async fn for_component(nats: &Nats, component: &ComponentName) -> Result<Vec<(String, Vec<u8>)>, RequestError> {
    let records: Vec<StoredSecret> =
        all_records(nats).await?.into_iter().filter(|record| record.matches(component.as_str())).collect();
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let key = nats.secrets.key()?;
    let file = nats.secrets.file()?;
    records.iter().map(|record| Ok((record.name.clone(), open(&key, record, &file)?))).collect()
}

/// The named secrets for a build of `component` (a component build's `[build] secrets`), in the order
/// given. A name that is not a secret, or a secret whose patterns do not match `component`, fails with a
/// message naming it (the same message for both: a build's key learns nothing of secrets it may not use).
pub async fn for_build(
    nats: &Nats,
    component: &ComponentName,
    names: &[String],
) -> Result<Vec<(String, Vec<u8>)>, RequestError> {
    let mut found = Vec::new();
    for name in names {
        check_secret_name(name)?;
        let record = read_record(nats, name)
            .await?
            .map(|(record, _)| record)
            .filter(|record| record.matches(component.as_str()));
        let Some(record) = record else {
            return Err(RequestError::forbidden(format!(
                "secret {name} is not available to component {component}: no secret of that name has a pattern matching {component} (an admin sets it with `artifacts secret set {name} --component {component}`)"
            )));
        };
        found.push(record);
    }
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let key = nats.secrets.key()?;
    let file = nats.secrets.file()?;
    found.iter().map(|record| Ok((record.name.clone(), open(&key, record, &file)?))).collect()
}

/// A value's fingerprint: `hmac-sha256:<hex>` of the name, a zero byte and the value.
fn fingerprint(key: &SecretsKey, name: &str, value: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.fingerprint_key.as_slice()).expect("any key length");
    mac.update(name.as_bytes());
    mac.update(&[0]);
    mac.update(value);
    format!("hmac-sha256:{}", hex::encode(mac.finalize().into_bytes()))
}

/// What a build of `component` that reads the secrets `names` (every secret it may use when `None`)
/// would read, as build inputs: the name and fingerprint of each secret that exists and whose patterns
/// match `component`, by name. A name that is no secret, or one `component` may not use, is left out,
/// as the build finds it absent. The key is loaded only when there is a value to fingerprint.
pub async fn fingerprints(
    nats: &Nats,
    component: &ComponentName,
    names: Option<&[String]>,
) -> Result<Vec<SecretInput>, RequestError> {
    let records: Vec<StoredSecret> = match names {
        None => all_records(nats).await?,
        Some(names) => {
            let mut wanted: Vec<&String> = names.iter().filter(|name| check_secret_name(name).is_ok()).collect();
            wanted.sort();
            wanted.dedup();
            let mut found = Vec::new();
            for name in wanted {
                found.extend(read_record(nats, name).await?.map(|(record, _)| record));
            }
            found
        }
    };
    let records: Vec<StoredSecret> = records.into_iter().filter(|record| record.matches(component.as_str())).collect();
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let key = nats.secrets.key()?;
    let file = nats.secrets.file()?;
    let mut inputs = records
        .iter()
        .map(|record| {
            let value = zeroize::Zeroizing::new(open(&key, record, &file)?);
            Ok(SecretInput { name: record.name.clone(), fingerprint: fingerprint(&key, &record.name, &value) })
        })
        .collect::<Result<Vec<_>, RequestError>>()?;
    inputs.sort();
    Ok(inputs)
}

/// The fingerprints of values a build has read (`for_build`'s answer), in the order given.
pub fn fingerprints_of(nats: &Nats, secrets: &[(String, Vec<u8>)]) -> Result<Vec<SecretInput>, RequestError> {
    if secrets.is_empty() {
        return Ok(Vec::new());
    }
    let key = nats.secrets.key()?;
    Ok(secrets
        .iter()
        .map(|(name, value)| SecretInput { name: name.clone(), fingerprint: fingerprint(&key, name, value) })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_in(dir: &Path) -> SecretsKey {
        load_key(&dir.join("secrets.key")).unwrap().0
    }

    #[test]
    fn a_key_file_is_made_once_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("artifacts-secrets-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let file = dir.join("sub").join("secrets.key");
        let (first, made) = load_key(&file).unwrap();
        assert!(made);
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        let (again, made) = load_key(&file).unwrap();
        assert!(!made);
        assert_eq!(first.id, again.id);
        // Many makers at once agree on one key.
        let racing = dir.join("race.key");
        let ids: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8).map(|_| scope.spawn(|| load_key(&racing).unwrap().0.id)).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
        std::fs::write(dir.join("bad.key"), "not hex").unwrap();
        assert!(load_key(&dir.join("bad.key")).err().unwrap().contains("64 hex digits"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sealed_values_open_under_their_name_and_key_only() {
        let dir = std::env::temp_dir().join(format!("artifacts-secrets-seal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let key = key_in(&dir);
        let (nonce, sealed) = seal(&key, "tok", b"hunter2").unwrap();
        let record = |name: &str| StoredSecret {
            name: name.into(),
            components: vec!["app".into()],
            created_at: Timestamp::now(),
            updated_at: Timestamp::now(),
            key_id: key.id.clone(),
            nonce: nonce.clone(),
            sealed: sealed.clone(),
        };
        assert!(!sealed.contains("hunter2"));
        assert_eq!(open(&key, &record("tok"), &dir).unwrap(), b"hunter2");
        assert!(open(&key, &record("other"), &dir).is_err(), "the name is authenticated");
        let other = key_in(&dir.join("elsewhere"));
        let mut moved = record("tok");
        moved.key_id = other.id.clone();
        assert!(open(&other, &moved, &dir).is_err(), "another key opens nothing");
        assert!(open(&other, &record("tok"), &dir).err().unwrap().message.contains("another key"));
        // Two seals of one value differ (random nonces).
        assert_ne!(seal(&key, "tok", b"hunter2").unwrap().1, sealed);
        assert!(!format!("{:?}", record("tok")).contains(&sealed));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn fingerprints_are_keyed_and_name_bound() {
        let dir = std::env::temp_dir().join(format!("artifacts-secrets-fingerprint-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let key = key_in(&dir);
        let shown = fingerprint(&key, "tok", b"1234");
        assert!(shown.starts_with("hmac-sha256:") && shown.len() == "hmac-sha256:".len() + 64, "{shown}");
        assert_eq!(fingerprint(&key, "tok", b"1234"), shown, "the same value, the same fingerprint");
        assert_ne!(fingerprint(&key, "tok", b"1235"), shown);
        assert_ne!(fingerprint(&key, "other", b"1234"), shown, "bound to the name");
        let plain = hex::encode(Sha256::digest(b"1234"));
        assert!(!shown.contains(&plain), "not a plain hash of the value");
        let other = key_in(&dir.join("elsewhere"));
        assert_ne!(fingerprint(&other, "tok", b"1234"), shown, "another stack's key, another fingerprint");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
