//! API keys, their scopes, and the identity headers.
//!
//! A key arrives as `Authorization: Bearer <key>` or `X-API-Key: <key>`. The bootstrap admin key comes
//! from `ARTIFACTS_ADMIN_KEY` (`artifacts up` generates one); managed keys (`ak_<id>_<secret>`) are
//! created through `/api/v1/keys` and stored in the `artifacts_keys` bucket as SHA-256 hashes, never as
//! secrets. Hashes are compared in constant time. A managed key is read from the bucket on every request,
//! so a revocation holds from the next request on, on every gateway.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use artifacts_runtime::nats::read_json;
use artifacts_schemas::messages::keys::{ApiKeyInfo, Scope, StoredKey};

use artifacts_schemas::{ComponentName, Failure, RequestError, RequestedBy, Timestamp, Username};

use crate::error::ApiError;
use crate::state::AppState;

pub const BOOTSTRAP_ADMIN_KEY_ID: &str = "bootstrap-admin";

/// The keys this gateway accepts, and how often each has been used this minute.
pub struct Keys {
    bootstrap_admin: Option<[u8; 32]>,
    store: kv::Store,
    per_minute: u32,
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

/// A managed key's id: `ak_<id>_<secret>`.
pub fn managed_key_id(key: &str) -> Option<&str> {
    let (id, secret) = key.strip_prefix("ak_")?.split_once('_')?;
    (id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) && !secret.is_empty()).then_some(id)
}

pub fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

const WINDOW: Duration = Duration::from_secs(60);

impl Keys {
    pub fn new(bootstrap_admin: Option<&str>, store: kv::Store, per_minute: u32) -> Self {
        Self { bootstrap_admin: bootstrap_admin.map(hash), store, per_minute, windows: Mutex::default() }
    }

    async fn authenticate(&self, presented: &str) -> Result<Caller, ApiError> {
        let invalid = || ApiError::new(Failure::Unauthorized, "the API key is not valid (unknown, revoked or expired)");
        let digest = hash(presented);
        if let Some(admin) = &self.bootstrap_admin {
            if bool::from(admin.ct_eq(&digest)) {
                return Ok(Caller::bootstrap());
            }
        }
        let key_id = managed_key_id(presented).ok_or_else(invalid)?;
        let stored: StoredKey = read_json(&self.store, key_id).await?.ok_or_else(invalid)?;
        if !bool::from(hex::encode(digest).as_bytes().ct_eq(stored.secret_sha256.as_bytes())) {
            return Err(invalid());
        }
        if stored.info.expires_at.is_some_and(|at| at <= Timestamp::now()) {
            return Err(ApiError::new(Failure::Unauthorized, "the API key has expired"));
        }
        Ok(Caller { key_id: stored.info.key_id.clone(), scope: stored.info.scope(), key: Some(stored.info) })
    }

    /// A fixed one-minute window per key (per gateway).
    fn admit(&self, key_id: &str) -> Result<(), ApiError> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let mut windows = self.windows.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        let (started, used) = windows.entry(key_id.to_owned()).or_insert((now, 0));
        if now.duration_since(*started) >= WINDOW {
            (*started, *used) = (now, 0);
        }
        *used += 1;
        if *used > self.per_minute {
            let retry_after = (WINDOW - now.duration_since(*started)).as_secs().max(1);
            let message = format!(
                "this API key made more than {} requests this minute: retry in {retry_after}s",
                self.per_minute
            );
            return Err(ApiError::new(Failure::RateLimited, message).retry_after(retry_after));
        }
        Ok(())
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: String,
    scope: Option<Scope>,
    /// The managed key's limits; none for the bootstrap admin key.
    key: Option<ApiKeyInfo>,
}

impl Caller {
    fn bootstrap() -> Self {
        Self { key_id: BOOTSTRAP_ADMIN_KEY_ID.into(), scope: Some(Scope::Admin), key: None }
    }

    /// 403 unless the key carries `scope` (admin carries every scope, build carries read).
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scope.is_some_and(|held| held >= scope) {
            Ok(())
        } else {
            let name = serde_json::to_value(scope).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
            Err(ApiError::new(Failure::Forbidden, format!("this API key lacks the {name} scope")))
        }
    }

    /// Whether the key may see `component` (a key without patterns sees every component).
    pub fn allows(&self, component: &str) -> bool {
        self.key.as_ref().is_none_or(|key| key.allows_component(component))
    }

    /// Whether the key is limited to some components.
    pub fn is_limited(&self) -> bool {
        self.key.as_ref().is_some_and(|key| key.components.is_some())
    }

    /// `require(scope)`, and 403 unless the key may touch `component`.
    pub fn require_for(&self, scope: Scope, component: &ComponentName) -> Result<(), ApiError> {
        self.require(scope)?;
        match &self.key {
            Some(key) if !key.allows_component(component.as_str()) => Err(ApiError::new(
                Failure::Forbidden,
                format!(
                    "this API key is limited to components matching {}",
                    key.components.as_deref().unwrap_or_default().join(", ")
                ),
            )),
            _ => Ok(()),
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let presented = presented_key(&parts.headers).ok_or_else(|| {
            ApiError::new(
                Failure::Unauthorized,
                "an API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
            )
        })?;
        let caller = state.keys.authenticate(presented).await?;
        state.keys.admit(&caller.key_id)?;
        Ok(caller)
    }
}

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    bearer
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|key| !key.is_empty())
}

/// The identity headers, validated: `linux_username` / `X-Linux-Username` and `github_username` /
/// `X-Github-Username`.
pub struct Identity {
    pub linux_username: Option<String>,
    pub github_username: Option<String>,
}

impl Identity {
    /// Who the request is from. A key pinned to an identity speaks for it alone: another claimed identity
    /// is refused (403), and a missing one is filled in.
    pub fn requested_by(self, caller: &Caller) -> Result<RequestedBy, ApiError> {
        let pinned = |claimed: Option<String>, pin: Option<&String>, header: &str| match (claimed, pin) {
            (Some(claimed), Some(pin)) if &claimed != pin => {
                Err(ApiError::new(Failure::Forbidden, format!("this API key speaks for {header} {pin:?} only")))
            }
            (claimed, pin) => Ok(claimed.or_else(|| pin.cloned())),
        };
        let key = caller.key.as_ref();
        Ok(RequestedBy {
            linux_username: pinned(self.linux_username, key.and_then(|k| k.linux_username.as_ref()), "linux_username")?,
            github_username: pinned(
                self.github_username,
                key.and_then(|k| k.github_username.as_ref()),
                "github_username",
            )?,
            api_key_id: Some(caller.key_id.clone()),
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Identity {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let read = |names: [&'static str; 2]| -> Result<Option<String>, ApiError> {
            let Some(value) = names.iter().find_map(|name| parts.headers.get(*name)) else { return Ok(None) };
            let value =
                value.to_str().map_err(|_| RequestError::invalid(format!("{} must be plain ASCII", names[0])))?;
            Ok(Some(Username::parse(names[0], value)?.into_string()))
        };
        Ok(Self {
            linux_username: read(["linux_username", "x-linux-username"])?,
            github_username: read(["github_username", "x-github-username"])?,
        })
    }
}
