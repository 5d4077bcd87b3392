//! Who is asking, and what they may do: one authorization model for HTTP and NATS.
//!
//! Every request names its API key (`Authorization: Bearer <key>`, over HTTP also `X-API-Key`), and the
//! same [`Authenticator`] turns it into a [`Caller`] whether the gateway or a function received it:
//!
//! - the bootstrap admin key (`ARTIFACTS_ADMIN_KEY`, key id `admin`) may do everything;
//! - a managed key (`ak_<16 hex id>_<secret>`, stored as a SHA-256 in the `artifacts_keys` bucket) has
//!   scopes (`admin` ⊃ `build` ⊃ `read`), optional component patterns, an optional expiry and optional
//!   pinned identities.
//!
//! Keys are cached from a watch on the keys bucket, so a request costs no NATS round trip and a
//! revocation reaches every process within milliseconds. A key the cache does not hold is read from the
//! bucket (a key created a moment ago), so the cache can only be late to *accept*, never to *refuse*. A
//! record that cannot be read (overwritten with something that is not a key) leaves the cache and is
//! refused: its last readable version is never trusted.
//!
//! The [`Authenticator`] also keeps each key's request rate ([`KeyRateLimit`]), so a key has the same
//! limit over NATS as over HTTP.
//!
//! Identity (`linux_username`, `github_username`) and the key id recorded on a build come from the
//! authenticated caller and the request's identity headers, never from a payload.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use artifacts_schemas::messages::keys::{pattern_within, ApiKeyInfo, Scope, StoredKey};
use artifacts_schemas::{ComponentName, RequestError, RequestedBy, Timestamp, Username};

use crate::configuration::Settings;
use artifacts_store::{Store, StoredKeyEntry};

use crate::nats::Nats;
use crate::rate_limit::{KeyRateLimit, RateLimited};

/// The key id (and NATS user name) of the bootstrap admin key.
pub const ADMIN_KEY_ID: &str = "admin";

/// The identity headers, in the spelling NATS and HTTP share, then the `X-` spelling proxies keep.
pub const LINUX_USERNAME_HEADERS: [&str; 2] = ["linux_username", "x-linux-username"];
pub const GITHUB_USERNAME_HEADERS: [&str; 2] = ["github_username", "x-github-username"];

/// A managed key's id: `ak_<id>_<secret>`.
pub fn managed_key_id(key: &str) -> Option<&str> {
    let (id, secret) = key.strip_prefix("ak_")?.split_once('_')?;
    (is_key_id(id) && !secret.is_empty()).then_some(id)
}

/// Whether `id` has the form of a managed key's id (16 hex digits).
pub fn is_key_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The key id a presented key speaks for, as NATS user names have it: `admin` for anything that is not a
/// managed key.
pub fn key_id_of(key: &str) -> &str {
    managed_key_id(key).unwrap_or(ADMIN_KEY_ID)
}

pub fn sha256(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The key in an `Authorization: Bearer <key>` value.
pub fn bearer(value: &str) -> Option<&str> {
    let key = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer "))?.trim();
    (!key.is_empty()).then_some(key)
}

/// The message every missing or unknown key gets, so a caller learns nothing about which keys exist.
const NOT_VALID: &str = "the API key is not valid (unknown, revoked or expired)";

/// The keys this process accepts.
pub struct Authenticator {
    admin: Option<[u8; 32]>,
    rate: KeyRateLimit,
    store: Store,
    /// Managed keys by id; `None` while the watch is not caught up (then every key is read from the bucket).
    cache: Arc<RwLock<Option<HashMap<String, StoredKey>>>>,
}

impl Authenticator {
    /// Starts following the keys bucket; the watch stops with `shutdown`.
    pub fn start(settings: &Settings, nats: &Nats, shutdown: CancellationToken) -> Arc<Self> {
        let authenticator = Arc::new(Self {
            admin: settings.admin_key().map(sha256),
            rate: KeyRateLimit::new(settings.gateway.rate_limit_per_minute),
            store: nats.store.clone(),
            cache: Arc::default(),
        });
        let (store, cache) = (authenticator.store.clone(), Arc::clone(&authenticator.cache));
        tokio::spawn(async move {
            tokio::select! {
                _ = follow_keys(store, Arc::clone(&cache)) => {}
                _ = shutdown.cancelled() => {}
            }
        });
        authenticator
    }

    /// The caller a presented key stands for: 401 when it is unknown, revoked or expired.
    pub async fn authenticate(&self, presented: &str) -> Result<Caller, RequestError> {
        let digest = sha256(presented);
        if let Some(admin) = &self.admin {
            if bool::from(admin.ct_eq(&digest)) {
                return Ok(Caller::admin());
            }
        }
        let key_id = managed_key_id(presented).ok_or_else(|| RequestError::unauthorized(NOT_VALID))?;
        let cached = self.cache.read().unwrap_or_else(|p| p.into_inner()).as_ref().and_then(|c| c.get(key_id).cloned());
        let stored = match cached {
            Some(stored) => stored,
            None => match self.store.stored_key(key_id).await? {
                StoredKeyEntry::Key(stored) => stored,
                StoredKeyEntry::Absent | StoredKeyEntry::Unreadable(_) => {
                    return Err(RequestError::unauthorized(NOT_VALID))
                }
            },
        };
        if !bool::from(hex::encode(digest).as_bytes().ct_eq(stored.secret_sha256.as_bytes())) {
            return Err(RequestError::unauthorized(NOT_VALID));
        }
        if stored.info.expires_at.is_some_and(|at| at <= Timestamp::now()) {
            return Err(RequestError::unauthorized("the API key has expired"));
        }
        Ok(Caller::managed(stored.info))
    }

    /// Counts a request of `key_id` against its rate.
    pub fn admit(&self, key_id: &str) -> Result<(), RateLimited> {
        self.rate.admit(key_id)
    }

    /// Drops a key this process has just revoked, so that its next request is refused at once rather than
    /// when the watch brings the revocation.
    pub fn forget(&self, key_id: &str) {
        if let Some(keys) = self.cache.write().unwrap_or_else(|p| p.into_inner()).as_mut() {
            keys.remove(key_id);
        }
    }

    /// The caller of a NATS request, from its `Authorization` header.
    pub async fn authenticate_nats(&self, headers: Option<&async_nats::HeaderMap>) -> Result<Caller, RequestError> {
        let presented =
            headers.and_then(|h| h.get("Authorization")).and_then(|value| bearer(value.as_str())).ok_or_else(|| {
                RequestError::unauthorized(
                    "an API key is required: send the header `Authorization: Bearer <key>` with each request",
                )
            })?;
        self.authenticate(presented).await
    }
}

/// Keeps `cache` equal to the keys bucket, starting over whenever the watch breaks.
async fn follow_keys(store: Store, cache: Arc<RwLock<Option<HashMap<String, StoredKey>>>>) {
    loop {
        let set = |value| *cache.write().unwrap_or_else(|p| p.into_inner()) = value;
        match store.key_changes().await {
            Ok(changes) => {
                let mut changes = std::pin::pin!(changes);
                let mut keys = HashMap::new();
                let mut caught_up = false;
                while let Some(change) = changes.next().await {
                    match change.key {
                        Some(stored) => drop(keys.insert(change.key_id, stored)),
                        None => drop(keys.remove(&change.key_id)),
                    }
                    // An entry with nothing after it: everything stored so far has been seen.
                    caught_up |= change.caught_up;
                    if caught_up {
                        set(Some(keys.clone()));
                    }
                }
                tracing::warn!("the watch on API keys ended; following them again");
            }
            Err(err) => tracing::warn!(%err, "cannot watch API keys; reading them per request meanwhile"),
        }
        set(None);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: String,
    scope: Scope,
    /// The managed key's limits; none for the bootstrap admin key.
    key: Option<ApiKeyInfo>,
}

impl Caller {
    fn admin() -> Self {
        Self { key_id: ADMIN_KEY_ID.into(), scope: Scope::Admin, key: None }
    }

    /// The bootstrap admin, for tests of code that takes a caller.
    #[doc(hidden)]
    pub fn for_tests() -> Self {
        Self::admin()
    }

    fn managed(info: ApiKeyInfo) -> Self {
        Self { key_id: info.key_id.clone(), scope: info.scope().unwrap_or(Scope::Read), key: Some(info) }
    }

    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// The managed key's record (name, patterns, expiry, pinned identities); `None` for the bootstrap
    /// admin key.
    pub fn key_info(&self) -> Option<&ApiKeyInfo> {
        self.key.as_ref()
    }

    /// 403 unless the key carries `scope` (admin carries every scope, build carries read).
    pub fn require(&self, scope: Scope) -> Result<(), RequestError> {
        if self.scope >= scope {
            Ok(())
        } else {
            Err(RequestError::forbidden(format!("this API key lacks the {} scope", scope_name(scope))))
        }
    }

    /// Whether the key may touch `component` (a key without patterns touches every component).
    pub fn allows(&self, component: &str) -> bool {
        self.key.as_ref().is_none_or(|key| key.allows_component(component))
    }

    /// The key's component patterns; `None` for a key that touches every component.
    pub fn component_patterns(&self) -> Option<&[String]> {
        self.key.as_ref().and_then(|key| key.components.as_deref())
    }

    /// `require(scope)`, and 403 unless the key may touch `component`.
    pub fn require_for(&self, scope: Scope, component: &ComponentName) -> Result<(), RequestError> {
        self.require(scope)?;
        if self.allows(component.as_str()) {
            Ok(())
        } else {
            Err(RequestError::forbidden(format!(
                "this API key is limited to components matching {}, not {component}",
                self.component_patterns().unwrap_or_default().join(", ")
            )))
        }
    }

    /// Whether `scope` on `component` is granted (for answers that differ rather than fail).
    pub fn may(&self, scope: Scope, component: &ComponentName) -> bool {
        self.require_for(scope, component).is_ok()
    }

    /// The bootstrap admin key, or a managed admin key without limits.
    pub fn is_unlimited_admin(&self) -> bool {
        self.scope == Scope::Admin
            && self.key.as_ref().is_none_or(|key| {
                key.components.is_none()
                    && key.linux_username.is_none()
                    && key.github_username.is_none()
                    && key.expires_at.is_none()
            })
    }

    /// Who a request is from, given the identities it claims. A key pinned to an identity speaks for it
    /// alone: another claimed identity is refused (403), a missing one is filled in.
    pub fn requested_by(
        &self,
        linux_username: Option<Username>,
        github_username: Option<Username>,
    ) -> Result<RequestedBy, RequestError> {
        let pinned = |claimed: Option<Username>, pin: Option<&String>, header: &str| match (claimed, pin) {
            (Some(claimed), Some(pin)) if claimed.as_str() != pin => {
                Err(RequestError::forbidden(format!("this API key speaks for {header} {pin:?} only")))
            }
            (claimed, pin) => Ok(claimed.map(Username::into_string).or_else(|| pin.cloned())),
        };
        let key = self.key.as_ref();
        Ok(RequestedBy {
            linux_username: pinned(linux_username, key.and_then(|k| k.linux_username.as_ref()), "linux_username")?,
            github_username: pinned(github_username, key.and_then(|k| k.github_username.as_ref()), "github_username")?,
            api_key_id: Some(self.key_id.clone()),
        })
    }

    /// 403 unless `other` stays within this key's limits: scopes, component patterns, pinned identities
    /// and expiry. A key creates and revokes only keys it could have been given itself.
    pub fn require_within(&self, other: &ApiKeyInfo) -> Result<(), RequestError> {
        self.require(Scope::Admin)?;
        let Some(mine) = &self.key else { return Ok(()) };
        if other.scope().is_some_and(|scope| scope > self.scope) {
            return Err(RequestError::forbidden("a key may not hold a scope its creator lacks"));
        }
        if let Some(patterns) = &mine.components {
            let within = other
                .components
                .as_ref()
                .is_some_and(|theirs| theirs.iter().all(|p| patterns.iter().any(|outer| pattern_within(p, outer))));
            if !within {
                return Err(RequestError::forbidden(format!(
                    "this API key is limited to components matching {}: the key's `components` must stay within them",
                    patterns.join(", ")
                )));
            }
        }
        for (name, pin, theirs) in [
            ("linux_username", &mine.linux_username, &other.linux_username),
            ("github_username", &mine.github_username, &other.github_username),
        ] {
            if let Some(pin) = pin {
                if theirs.as_ref() != Some(pin) {
                    return Err(RequestError::forbidden(format!(
                        "this API key speaks for {name} {pin:?} only, and so must the keys it manages"
                    )));
                }
            }
        }
        if let Some(expiry) = mine.expires_at {
            if other.expires_at.is_none_or(|theirs| theirs > expiry) {
                return Err(RequestError::forbidden(format!(
                    "this API key expires at {expiry}: the keys it manages must expire no later"
                )));
            }
        }
        Ok(())
    }

    /// Fills in what a new key inherits from its creator when the request leaves it out: component
    /// patterns, pinned identities and expiry.
    pub fn inherit_limits(&self, new: &mut ApiKeyInfo) {
        let Some(mine) = &self.key else { return };
        if new.components.is_none() {
            new.components = mine.components.clone();
        }
        if new.linux_username.is_none() {
            new.linux_username = mine.linux_username.clone();
        }
        if new.github_username.is_none() {
            new.github_username = mine.github_username.clone();
        }
        if new.expires_at.is_none() {
            new.expires_at = mine.expires_at;
        }
    }
}

pub fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Read => "read",
        Scope::Build => "build",
        Scope::Admin => "admin",
    }
}

/// The identities a request claims, from headers found by `get` (first spelling wins), validated.
pub fn claimed_identity<'a>(
    get: impl Fn(&str) -> Option<&'a str>,
) -> Result<(Option<Username>, Option<Username>), RequestError> {
    let read = |names: [&str; 2]| -> Result<Option<Username>, RequestError> {
        names
            .iter()
            .find_map(|name| get(name))
            .map(|value| Username::parse(names[0], value))
            .transpose()
            .map_err(Into::into)
    };
    Ok((read(LINUX_USERNAME_HEADERS)?, read(GITHUB_USERNAME_HEADERS)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(scopes: &[Scope], components: Option<&[&str]>, linux: Option<&str>) -> ApiKeyInfo {
        ApiKeyInfo {
            key_id: "0123456789abcdef".into(),
            name: "k".into(),
            scopes: scopes.to_vec(),
            components: components.map(|c| c.iter().map(|p| p.to_string()).collect()),
            expires_at: None,
            linux_username: linux.map(str::to_owned),
            github_username: None,
            created_at: Timestamp::now(),
        }
    }

    #[test]
    fn a_limited_admin_manages_only_keys_within_its_limits() {
        let limited = Caller::managed(key(&[Scope::Admin], Some(&["team-a*"]), Some("alice")));
        assert!(limited.require_within(&key(&[Scope::Build], Some(&["team-a-x*"]), Some("alice"))).is_ok());
        for (why, other) in [
            ("unlimited components", key(&[Scope::Admin], None, Some("alice"))),
            ("wider pattern", key(&[Scope::Read], Some(&["team-*"]), Some("alice"))),
            ("another identity", key(&[Scope::Read], Some(&["team-a"]), Some("root"))),
            ("no identity", key(&[Scope::Read], Some(&["team-a"]), None)),
        ] {
            let err = limited.require_within(&other).unwrap_err();
            assert_eq!(err.failure, artifacts_schemas::Failure::Forbidden, "{why}");
        }
        let builder = Caller::managed(key(&[Scope::Build], None, None));
        assert!(builder.require_within(&key(&[Scope::Read], None, None)).is_err(), "managing keys needs admin");
        assert!(Caller::admin().require_within(&key(&[Scope::Admin], None, Some("root"))).is_ok());
    }

    #[test]
    fn pinned_identities_are_filled_in_and_enforced() {
        let pinned = Caller::managed(key(&[Scope::Build], None, Some("alice")));
        let by = pinned.requested_by(None, None).unwrap();
        assert_eq!(by.linux_username.as_deref(), Some("alice"));
        assert_eq!(by.api_key_id.as_deref(), Some("0123456789abcdef"));
        let root = Username::parse("linux_username", "root-impersonated").unwrap();
        assert!(pinned.requested_by(Some(root), None).is_err());
    }

    #[test]
    fn bearer_values_and_key_ids() {
        assert_eq!(bearer("Bearer abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(key_id_of("ak_0123456789abcdef_secret"), "0123456789abcdef");
        assert_eq!(key_id_of("anything-else"), ADMIN_KEY_ID);
    }
}
