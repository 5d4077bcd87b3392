//! Build secrets: `POST /secrets` (`<prefix>.secret.put`), `GET /secrets` (`<prefix>.secret.list`),
//! `DELETE /secrets/{name}` (`<prefix>.secret.delete`), admin scope. A secret's value goes in with a put
//! and never comes out of any answer: builds of the components its patterns match read it (component
//! builds at `/run/secrets/<name>`, image builds with `RUN --mount=type=secret,id=<name>`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::build::Timestamp;
use super::keys::check_pattern;
use crate::names::InvalidName;

/// The largest secret value, in bytes (of its UTF-8 text).
pub const MAX_SECRET_VALUE_BYTES: usize = 64 * 1024;

/// The longest secret name.
pub const MAX_SECRET_NAME_LEN: usize = 64;

/// Checks a secret name: 1 to 64 of `a-z`, `0-9`, `.`, `_`, `-`, and not `.` or `..` (it becomes a file
/// name, `/run/secrets/<name>`).
pub fn check_secret_name(name: &str) -> Result<(), InvalidName> {
    let ok = !name.is_empty()
        && name.len() <= MAX_SECRET_NAME_LEN
        && name.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        let shown: String = name.chars().take(80).collect();
        Err(InvalidName(format!(
            "secret name {shown:?} must be 1 to {MAX_SECRET_NAME_LEN} characters of a-z, 0-9, '.', '_' and '-' (not \".\" or \"..\")"
        )))
    }
}

/// `POST /secrets`, `<prefix>.secret.put`: creates or replaces a secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretPutRequest {
    /// `[a-z0-9._-]{1,64}`, not `.` or `..`.
    pub name: String,
    /// The value, at most 64 KiB of UTF-8; never answered, listed or logged.
    pub value: String,
    /// Component name patterns (`*` matches any run of characters) whose builds may read the secret; at
    /// least one.
    pub components: Vec<String>,
}

impl SecretPutRequest {
    /// Checks the name, the value's size and the patterns; the error says what to fix.
    pub fn check(&self) -> Result<(), InvalidName> {
        check_secret_name(&self.name)?;
        if self.value.len() > MAX_SECRET_VALUE_BYTES {
            return Err(InvalidName(format!(
                "the value of secret {} is {} bytes: a secret holds at most {MAX_SECRET_VALUE_BYTES} bytes (64 KiB)",
                self.name,
                self.value.len()
            )));
        }
        if self.components.is_empty() {
            return Err(InvalidName(format!(
                "components must list at least one component pattern (e.g. [\"my-app\"] or [\"team-a-*\"]) whose builds may read secret {}",
                self.name
            )));
        }
        for pattern in &self.components {
            check_pattern(pattern)?;
        }
        Ok(())
    }
}

/// The value never prints.
impl std::fmt::Debug for SecretPutRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretPutRequest")
            .field("name", &self.name)
            .field("value", &"[redacted]")
            .field("components", &self.components)
            .finish()
    }
}

/// `DELETE /secrets/{name}`, `<prefix>.secret.delete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretDeleteRequest {
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SecretStatus {
    /// A put that made a new secret (HTTP 201).
    Created,
    /// A put that replaced an existing secret's value and patterns (HTTP 200).
    Updated,
    Ok,
    Deleted,
}

/// A secret as listed: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretInfo {
    pub name: String,
    /// The component patterns whose builds may read it.
    pub components: Vec<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// The answer to a put: what is stored, without the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretStored {
    /// `created` or `updated`.
    pub status: SecretStatus,
    pub error_message: Option<String>,
    pub name: String,
    pub components: Vec<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// `GET /secrets`, `<prefix>.secret.list`: the secrets the key may manage, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretList {
    pub status: SecretStatus,
    pub error_message: Option<String>,
    pub secrets: Vec<SecretInfo>,
}

/// The answer to a deletion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretDeleted {
    /// `deleted`.
    pub status: SecretStatus,
    pub error_message: Option<String>,
    pub name: String,
}

/// A build secret as an input of a build: its name and a keyed fingerprint of the value the build reads,
/// never the value nor a plain hash of it. An image build's request lists the secrets its Dockerfile
/// mounts that its component may use, a component build's result those its `artifact.toml` lists: a
/// build is identical to an earlier one only if these are too, so a changed value builds anew while a
/// change to a secret the build does not read does not.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretInput {
    pub name: String,
    /// `hmac-sha256:<hex>`: HMAC-SHA256 of the name and value under a key derived from the stack's
    /// secrets key. It tells whether two builds read the same value, and nothing of the value to anyone
    /// without that key (a short value cannot be found by trying values).
    pub fingerprint: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(name: &str, value: &str, components: &[&str]) -> SecretPutRequest {
        SecretPutRequest {
            name: name.into(),
            value: value.into(),
            components: components.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn names_values_and_patterns_are_checked() {
        assert!(put("npm-token", "v", &["app"]).check().is_ok());
        assert!(put("a.b_c-9", "v", &["team-*"]).check().is_ok());
        assert!(put(&"x".repeat(64), "v", &["*"]).check().is_ok());
        for (request, says) in [
            (put("", "v", &["app"]), "secret name"),
            (put("Upper", "v", &["app"]), "secret name"),
            (put("..", "v", &["app"]), "secret name"),
            (put("a/b", "v", &["app"]), "secret name"),
            (put(&"x".repeat(65), "v", &["app"]), "secret name"),
            (put("tok", &"v".repeat(MAX_SECRET_VALUE_BYTES + 1), &["app"]), "at most 65536 bytes"),
            (put("tok", "v", &[]), "at least one component pattern"),
            (put("tok", "v", &["Bad"]), "component pattern"),
        ] {
            let err = request.check().unwrap_err();
            assert!(err.0.contains(says), "{request:?}: {}", err.0);
        }
        assert!(put("tok", &"v".repeat(MAX_SECRET_VALUE_BYTES), &["app"]).check().is_ok());
    }

    #[test]
    fn a_request_never_prints_its_value() {
        let shown = format!("{:?}", put("tok", "hunter2", &["app"]));
        assert!(!shown.contains("hunter2") && shown.contains("tok"), "{shown}");
    }
}
