//! `<prefix>.git.push`: a push to a git repository, published to JetStream by the gateway's webhooks or
//! straight by any CI system.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A push event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitPushEvent {
    /// The repository's clone URL (any of `https://host/o/r`, `https://host/o/r.git`, `git@host:o/r.git`).
    pub repository: String,
    /// The full ref pushed, e.g. `refs/heads/main` or `refs/tags/v1.2.0`.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// The commit the ref points at after the push (40 zeros when deleted).
    pub after: String,
    /// Whether the push deleted the ref.
    #[serde(default)]
    pub deleted: bool,
    /// Where the event came from: `github`, `gitlab`, `gitea`, or any name a CI system gives itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forge: Option<String>,
    /// The forge's delivery id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    /// Who pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pusher: Option<String>,
    /// The API key a push sent over NATS came with (set by the service, never taken from the payload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_id: Option<String>,
}

/// The all-zero commit a forge sends for a deleted ref.
pub const NULL_COMMIT: &str = "0000000000000000000000000000000000000000";

impl GitPushEvent {
    /// A deleted ref builds nothing.
    pub fn is_deletion(&self) -> bool {
        self.deleted || self.after.bytes().all(|b| b == b'0')
    }

    /// What a push must hold to be worth storing, whichever door it came in by (a webhook or
    /// `<prefix>.git.push`): a repository, a full ref, and a commit id.
    pub fn check(&self) -> Result<(), crate::RequestError> {
        use crate::RequestError;
        if self.repository.trim().is_empty() || self.repository.len() > 2048 {
            return Err(RequestError::invalid(
                "repository must be the repository's clone URL (at most 2048 characters)",
            ));
        }
        if !self.git_ref.starts_with("refs/") || self.git_ref.len() > 300 {
            return Err(RequestError::invalid("ref must be a full ref such as refs/heads/main or refs/tags/v1.2.0"));
        }
        let hex = self.after.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex || !matches!(self.after.len(), 40 | 64) {
            return Err(RequestError::invalid("after must be the commit id the ref points at (40 or 64 hex digits)"));
        }
        Ok(())
    }

    pub fn trigger(&self) -> Trigger {
        Trigger {
            forge: self.forge.clone().unwrap_or_else(|| "nats".into()),
            delivery_id: self.delivery_id.clone(),
            pusher: self.pusher.clone(),
            api_key_id: self.api_key_id.clone(),
            repository: self.repository.clone(),
            git_ref: self.git_ref.clone(),
            commit: self.after.clone(),
        }
    }
}

/// What triggered a build that nobody asked for directly: a push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    pub forge: String,
    pub delivery_id: Option<String>,
    pub pusher: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_id: Option<String>,
    pub repository: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub commit: String,
}

/// A repository URL reduced to `host/owner/name`, so that `https://host/o/r`, `https://host/o/r.git`,
/// `git@host:o/r.git`, `ssh://git@host/o/r`, trailing slashes and the host's case all compare equal.
pub fn normalize_repository(url: &str) -> String {
    let url = url.trim();
    let (host, path) = match url.split_once("://") {
        Some((_, rest)) => {
            let rest = rest.rsplit_once('@').filter(|(userinfo, _)| !userinfo.contains('/')).map_or(rest, |(_, r)| r);
            rest.split_once('/').unwrap_or((rest, ""))
        }
        None => {
            let rest = url.split_once('@').map_or(url, |(_, r)| r);
            rest.split_once(':').unwrap_or(("", rest))
        }
    };
    let host =
        host.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h);
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path).trim_end_matches('/');
    format!("{}/{}", host.to_ascii_lowercase(), path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_urls_normalise() {
        let expected = "github.com/octo/repo";
        for url in [
            "https://github.com/octo/repo",
            "https://github.com/octo/repo.git",
            "https://GitHub.com/octo/repo/",
            "http://github.com/octo/repo.git/",
            "git@github.com:octo/repo.git",
            "ssh://git@github.com/octo/repo.git",
            "https://user:token@github.com/octo/repo.git",
            "https://github.com:443/octo/repo",
        ] {
            assert_eq!(normalize_repository(url), expected, "{url}");
        }
        assert_ne!(normalize_repository("https://github.com/octo/other"), expected);
        assert_eq!(normalize_repository("file:///tmp/x/repo/"), "/tmp/x/repo");
    }
}
