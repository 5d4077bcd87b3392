//! API keys and the identity headers.
//!
//! A key arrives as `Authorization: Bearer <key>` or `X-API-Key: <key>`. Only a SHA-256 hash of each
//! secret is held, and hashes are compared in constant time, so neither memory nor timing gives a
//! secret away. The bootstrap admin key comes from `ARTIFACTS_ADMIN_KEY` (`artifacts up` generates one).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use artifacts_schemas::{Failure, RequestError, RequestedBy, Username};

use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Build,
    Admin,
}

/// The keys this gateway accepts.
pub struct Keys {
    bootstrap_admin: Option<[u8; 32]>,
}

pub const BOOTSTRAP_ADMIN_KEY_ID: &str = "bootstrap-admin";

impl Keys {
    pub fn new(bootstrap_admin: Option<&str>) -> Self {
        Self { bootstrap_admin: bootstrap_admin.map(hash) }
    }

    fn authenticate(&self, presented: &str) -> Option<Caller> {
        let presented = hash(presented);
        let admin = self.bootstrap_admin.as_ref()?;
        bool::from(admin.ct_eq(&presented))
            .then(|| Caller { key_id: BOOTSTRAP_ADMIN_KEY_ID.into(), scope: Scope::Admin })
    }
}

fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: String,
    scope: Scope,
}

impl Caller {
    /// 403 unless the key carries `scope` (admin carries every scope, build carries read).
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scope >= scope {
            Ok(())
        } else {
            Err(ApiError::new(Failure::Forbidden, format!("this API key lacks the {scope:?} scope").to_lowercase()))
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
        state.keys.authenticate(presented).ok_or_else(|| {
            ApiError::new(Failure::Unauthorized, "the API key is not valid (unknown, revoked or expired)")
        })
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
    pub fn requested_by(self, caller: &Caller) -> RequestedBy {
        RequestedBy {
            linux_username: self.linux_username,
            github_username: self.github_username,
            api_key_id: Some(caller.key_id.clone()),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Identity {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let read = |names: [&'static str; 2]| -> Result<Option<String>, ApiError> {
            let Some(value) = names.iter().find_map(|name| parts.headers.get(*name)) else {
                return Ok(None);
            };
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
