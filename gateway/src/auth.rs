//! API keys over HTTP: `Authorization: Bearer <key>` or `X-API-Key: <key>`, and the identity headers.
//!
//! Authentication and every rule of who may do what are `artifacts_runtime::auth`'s, shared with the
//! NATS endpoints, and so is the per-key rate limit; the gateway forwards the key with each request it
//! relays, so the function that answers checks it again.

use std::ops::Deref;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};

use artifacts_runtime::auth::{self, bearer, claimed_identity, Authenticator};
use artifacts_schemas::{RequestError, RequestedBy, Username};

use crate::error::ApiError;
use crate::state::AppState;

/// The keys this gateway accepts.
pub struct Keys {
    authenticator: Arc<Authenticator>,
}

impl Keys {
    pub fn new(authenticator: Arc<Authenticator>) -> Self {
        Self { authenticator }
    }

    /// The key's caller as it is now, without counting a request: for streams that outlive the request
    /// that opened them, which end when their key is revoked or expires.
    pub async fn current(&self, key: &str) -> Option<auth::Caller> {
        self.authenticator.authenticate(key).await.ok()
    }

    /// See [`Authenticator::forget`].
    pub fn forget(&self, key_id: &str) {
        self.authenticator.forget(key_id);
    }

    /// The key's rate (`gateway.rate_limit_per_minute`), the same one its NATS requests are held to.
    fn admit(&self, key_id: &str) -> Result<(), ApiError> {
        self.authenticator.admit(key_id).map_err(|limited| {
            let retry_after = limited.retry_after_secs();
            ApiError::from(RequestError::from(limited)).retry_after(retry_after)
        })
    }
}

/// An authenticated caller, and the key it presented (forwarded with relayed requests).
#[derive(Clone)]
pub struct Caller {
    caller: auth::Caller,
    key: String,
}

/// The key is a secret: `Debug` shows the caller only.
impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller").field("caller", &self.caller).field("key", &"[redacted]").finish()
    }
}

impl Caller {
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Deref for Caller {
    type Target = auth::Caller;

    fn deref(&self) -> &auth::Caller {
        &self.caller
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let presented = presented_key(&parts.headers).ok_or_else(|| {
            RequestError::unauthorized(
                "an API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
            )
        })?;
        let caller = authenticate(state, presented).await?;
        Ok(Self { caller, key: presented.to_owned() })
    }
}

/// Authenticates a key presented another way than the API's headers (as the registry's Basic password),
/// with the same rate limit.
pub async fn authenticate(state: &AppState, key: &str) -> Result<auth::Caller, ApiError> {
    let caller = state.keys.authenticator.authenticate(key).await?;
    state.keys.admit(&caller.key_id)?;
    Ok(caller)
}

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let value = |name| headers.get(name).and_then(|v: &header::HeaderValue| v.to_str().ok());
    value(header::AUTHORIZATION.as_str())
        .and_then(bearer)
        .or_else(|| value("x-api-key").map(str::trim).filter(|key| !key.is_empty()))
}

/// The identity headers, validated: `linux_username` / `X-Linux-Username` and `github_username` /
/// `X-Github-Username`.
pub struct Identity {
    linux_username: Option<Username>,
    github_username: Option<Username>,
}

impl Identity {
    /// Who the request is from (403 when the key is pinned to another identity).
    pub fn requested_by(self, caller: &Caller) -> Result<RequestedBy, ApiError> {
        Ok(caller.requested_by(self.linux_username, self.github_username)?)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Identity {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        for name in auth::LINUX_USERNAME_HEADERS.iter().chain(&auth::GITHUB_USERNAME_HEADERS) {
            if parts.headers.get(*name).is_some_and(|v| v.to_str().is_err()) {
                return Err(RequestError::invalid(format!("{name} must be plain ASCII")).into());
            }
        }
        let (linux_username, github_username) =
            claimed_identity(|name| parts.headers.get(name).and_then(|v| v.to_str().ok()))?;
        Ok(Self { linux_username, github_username })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let presented = "ak_0123456789abcdef_supersecret";
        let caller = Caller { caller: auth::Caller::for_tests(), key: presented.to_owned() };
        assert!(!format!("{caller:?}").contains("supersecret"));
    }
}
