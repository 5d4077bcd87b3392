//! API keys: `POST /keys`, `GET /keys`, `DELETE /keys/{keyId}` (admin scope). A key's secret is shown
//! once, at creation; only its SHA-256 is stored (key-value bucket `artifacts_keys`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::build::Timestamp;
use crate::names::InvalidName;

/// What a key may do. `admin` includes `build`, which includes `read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Read,
    Build,
    Admin,
}

/// `POST /keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyCreateRequest {
    pub name: String,
    pub scopes: Vec<Scope>,
    /// Component name patterns the key is limited to (`*` matches any run of characters); all when absent.
    #[serde(default)]
    pub components: Option<Vec<String>>,
    pub expires_at: Option<Timestamp>,
    /// The only `linux_username` requests with this key may claim.
    #[serde(default)]
    pub linux_username: Option<String>,
    /// The only `github_username` requests with this key may claim.
    #[serde(default)]
    pub github_username: Option<String>,
}

/// A key as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyInfo {
    pub key_id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub components: Option<Vec<String>>,
    pub expires_at: Option<Timestamp>,
    pub linux_username: Option<String>,
    pub github_username: Option<String>,
    pub created_at: Timestamp,
}

impl ApiKeyInfo {
    /// The highest scope the key carries.
    pub fn scope(&self) -> Option<Scope> {
        self.scopes.iter().copied().max()
    }

    /// Whether the key may touch `component`.
    pub fn allows_component(&self, component: &str) -> bool {
        self.components.as_ref().is_none_or(|patterns| patterns.iter().any(|p| glob_matches(p, component)))
    }
}

/// Whether every name `inner` matches is also matched by `outer`. Sound for `*` globs: `outer`'s `*` may
/// stand for any run of `inner`'s text, `*`s included, while `outer`'s other characters must meet the same
/// literal characters in `inner` (component names never hold `*`).
pub fn pattern_within(inner: &str, outer: &str) -> bool {
    glob_matches(outer, inner)
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            let Some(tail) = name.strip_prefix(head) else { return false };
            (0..=tail.len()).filter(|&i| tail.is_char_boundary(i)).any(|i| glob_matches(rest, &tail[i..]))
        }
    }
}

/// Checks a component pattern: the component name characters and `*`.
pub fn check_pattern(pattern: &str) -> Result<(), InvalidName> {
    let ok = !pattern.is_empty()
        && pattern.len() <= 64
        && pattern.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' | b'*'));
    if ok {
        Ok(())
    } else {
        Err(InvalidName(format!("component pattern {pattern:?} may hold only a-z, 0-9, '.', '_', '-' and '*'")))
    }
}

/// Stored in `artifacts_keys`, by key id.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredKey {
    pub info: ApiKeyInfo,
    /// Hex SHA-256 of the whole key.
    pub secret_sha256: String,
    /// bcrypt of the whole key: the NATS user's password hash (nats-server checks bcrypt itself, and a
    /// users file must never hold the secret). Absent for keys made before keys were NATS users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_password_bcrypt: Option<String>,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey").field("info", &self.info).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    Created,
    Ok,
    Revoked,
}

/// The answer to `POST /keys`: the only time the secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyCreated {
    pub status: KeyStatus,
    pub error_message: Option<String>,
    pub key_id: String,
    /// The API key to send as `Authorization: Bearer <secret>`.
    pub secret: String,
    pub key: ApiKeyInfo,
}

/// `GET /keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyList {
    pub status: KeyStatus,
    pub error_message: Option<String>,
    pub keys: Vec<ApiKeyInfo>,
}

/// `DELETE /keys/{keyId}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyRevoked {
    pub status: KeyStatus,
    pub error_message: Option<String>,
    pub key_id: String,
}

/// `GET /whoami`: the key a request presented.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WhoAmI {
    pub status: KeyStatus,
    pub error_message: Option<String>,
    /// `admin` for the bootstrap admin key.
    pub key_id: String,
    /// The highest scope the key carries (`admin` carries build and read, `build` carries read).
    pub scope: Scope,
    /// The managed key's record; null for the bootstrap admin key, which has no limits.
    pub key: Option<ApiKeyInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_matches("lib*", "libfoo"));
        assert!(glob_matches("*", "anything"));
        assert!(glob_matches("a*b*c", "axxbyyc"));
        assert!(glob_matches("exact", "exact"));
        assert!(!glob_matches("lib*", "app"));
        assert!(!glob_matches("a*b", "ab-c"));
        assert!(check_pattern("lib*").is_ok());
        assert!(pattern_within("team-a-x*", "team-a*"));
        assert!(pattern_within("team-a", "team-a*"));
        assert!(!pattern_within("team-*", "team-a*"));
        assert!(!pattern_within("*", "team-a*"));
        assert!(pattern_within("a*b*", "a*"));
        assert!(check_pattern("../x").is_err());
    }
}
