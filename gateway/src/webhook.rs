//! Push webhooks of GitHub, GitLab and Gitea: the headers are checked before the body is read (a
//! delivery to an unconfigured forge, without its signature, or with a wrong GitLab token, costs its
//! sender nothing but the head), the body's signature as it streams in, then the delivery is normalised
//! into the `<prefix>.git.push` event, checked as one sent over NATS is.
//!
//! GitHub signs the raw body with HMAC-SHA256 (`X-Hub-Signature-256: sha256=<hex>`), Gitea likewise
//! (`X-Gitea-Signature: <hex>`), GitLab sends a shared token (`X-Gitlab-Token`). Every comparison is in
//! constant time.

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use artifacts_runtime::configuration::HookSettings;
use artifacts_schemas::{Failure, GitPushEvent, RequestError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    GitHub,
    GitLab,
    Gitea,
}

/// What a verified delivery asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    Ping,
    Push(GitPushEvent),
    /// Another event: acknowledged and ignored.
    Ignored(String),
}

impl Forge {
    pub fn parse(name: &str) -> Result<Self, RequestError> {
        match name {
            "github" => Ok(Self::GitHub),
            "gitlab" => Ok(Self::GitLab),
            "gitea" => Ok(Self::Gitea),
            _ => Err(RequestError::not_found(format!("no webhook for {name:?}: use github, gitlab or gitea"))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::GitHub => "github",
            Self::GitLab => "gitlab",
            Self::Gitea => "gitea",
        }
    }

    /// Checks what can be checked before the body is read: the forge is configured, and the delivery
    /// carries its signature, or (GitLab) the right token. A forge with no secret has no hook (404).
    pub fn check_headers(self, hooks: &HookSettings, headers: &HeaderMap) -> Result<Signature, RequestError> {
        let unconfigured = |setting: &str| {
            RequestError::not_found(format!("the {} webhook is not configured: set {setting}", self.name()))
        };
        let unauthorized = |why: &str| RequestError::new(Failure::Unauthorized, why.to_owned());
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        match self {
            Self::GitHub | Self::Gitea => {
                let (secret, setting) = match self {
                    Self::GitHub => (&hooks.github.secret, "hooks.github.secret"),
                    _ => (&hooks.gitea.secret, "hooks.gitea.secret"),
                };
                let secret = secret.clone().ok_or_else(|| unconfigured(setting))?;
                let signature = match self {
                    Self::GitHub => header("x-hub-signature-256").and_then(|s| s.strip_prefix("sha256=")),
                    _ => header("x-gitea-signature")
                        .or_else(|| header("x-hub-signature-256").and_then(|s| s.strip_prefix("sha256="))),
                }
                .ok_or_else(|| unauthorized("the delivery is not signed"))?
                .trim()
                .to_ascii_lowercase();
                if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(unauthorized("the delivery's signature is not a SHA-256 digest in hex"));
                }
                let mac =
                    Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()).expect("HMAC takes keys of any length");
                Ok(Signature::Hmac { mac: Box::new(mac), presented: signature })
            }
            Self::GitLab => {
                let token = hooks.gitlab.token.as_ref().ok_or_else(|| unconfigured("hooks.gitlab.token"))?;
                let presented =
                    header("x-gitlab-token").ok_or_else(|| unauthorized("the delivery carries no X-Gitlab-Token"))?;
                if bool::from(token.expose().as_bytes().ct_eq(presented.as_bytes())) {
                    Ok(Signature::Checked)
                } else {
                    Err(unauthorized("the delivery's X-Gitlab-Token does not match the configured token"))
                }
            }
        }
    }

    /// Reads a verified delivery.
    pub fn read(self, headers: &HeaderMap, body: &[u8]) -> Result<Delivery, RequestError> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let event = match self {
            Self::GitHub => header("x-github-event"),
            Self::GitLab => header("x-gitlab-event"),
            Self::Gitea => header("x-gitea-event").or_else(|| header("x-forgejo-event")),
        }
        .unwrap_or_default();
        let is_push = match self {
            Self::GitHub | Self::Gitea => event == "push",
            Self::GitLab => event == "Push Hook" || event == "Tag Push Hook",
        };
        if self == Self::GitHub && event == "ping" {
            return Ok(Delivery::Ping);
        }
        if !is_push {
            return Ok(Delivery::Ignored(event));
        }
        let json: Value = serde_json::from_slice(body)
            .map_err(|err| RequestError::invalid(format!("the webhook body is not JSON: {err}")))?;
        let text = |value: &Value| value.as_str().map(str::to_owned);
        let field = |name: &str| {
            text(&json[name]).ok_or_else(|| RequestError::invalid(format!("the push payload has no {name:?}")))
        };
        let repository = match self {
            Self::GitLab => {
                text(&json["project"]["git_http_url"]).or_else(|| text(&json["repository"]["git_http_url"]))
            }
            _ => text(&json["repository"]["clone_url"]),
        }
        .ok_or_else(|| RequestError::invalid("the push payload names no repository clone URL"))?;
        let pusher = match self {
            Self::GitLab => text(&json["user_username"]),
            Self::GitHub => text(&json["pusher"]["name"]),
            Self::Gitea => text(&json["pusher"]["login"]).or_else(|| text(&json["pusher"]["username"])),
        };
        let delivery_id = match self {
            Self::GitHub => header("x-github-delivery"),
            Self::GitLab => header("idempotency-key").or_else(|| header("x-gitlab-event-uuid")),
            Self::Gitea => header("x-gitea-delivery").or_else(|| header("x-forgejo-delivery")),
        };
        let event = GitPushEvent {
            repository,
            git_ref: field("ref")?,
            after: field("after")?,
            deleted: json["deleted"].as_bool().unwrap_or(false),
            forge: Some(self.name().to_owned()),
            delivery_id,
            pusher,
            api_key_id: None,
        };
        // The same checks as a push event sent over NATS: a full ref and a commit id.
        event.check()?;
        Ok(Delivery::Push(event))
    }
}

/// What is left to check once the body is read: the HMAC is computed as the body streams in
/// ([`Signature::update`]), so no body is held whole before its signature is known.
pub enum Signature {
    /// Nothing: the token in the headers was the proof.
    Checked,
    /// The body's HMAC-SHA256 under the forge's secret must equal the presented hex digest.
    Hmac { mac: Box<Hmac<Sha256>>, presented: String },
}

impl Signature {
    /// Feeds the next bytes of the body.
    pub fn update(&mut self, bytes: &[u8]) {
        if let Self::Hmac { mac, .. } = self {
            mac.update(bytes);
        }
    }

    /// Whether the bytes fed so far are what the forge signed.
    pub fn finish(self) -> Result<(), RequestError> {
        let Self::Hmac { mac, presented } = self else { return Ok(()) };
        let expected = hex::encode(mac.finalize().into_bytes());
        if bool::from(expected.as_bytes().ct_eq(presented.as_bytes())) {
            Ok(())
        } else {
            Err(RequestError::new(
                Failure::Unauthorized,
                "the delivery's signature does not match the configured secret".to_owned(),
            ))
        }
    }

    /// `body` is what the forge signed (the whole body at once).
    pub fn verify(&self, body: &[u8]) -> Result<(), RequestError> {
        let mut signature = match self {
            Self::Checked => Self::Checked,
            Self::Hmac { mac, presented } => Self::Hmac { mac: mac.clone(), presented: presented.clone() },
        };
        signature.update(body);
        signature.finish()
    }
}

#[cfg(test)]
fn hmac_sha256(key: &[u8], body: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use artifacts_runtime::configuration::{HmacHook, Secret};

    #[test]
    fn githubs_published_test_vector() {
        let signature = hex::encode(hmac_sha256(b"It's a Secret to Everybody", b"Hello, World!"));
        assert_eq!(signature, "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17");

        let hooks = HookSettings {
            github: HmacHook { secret: Some(Secret::new("It's a Secret to Everybody")) },
            ..Default::default()
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-hub-signature-256", format!("sha256={signature}").parse().unwrap());
        let signature = Forge::GitHub.check_headers(&hooks, &headers).unwrap();
        assert!(signature.verify(b"Hello, World!").is_ok());
        assert!(signature.verify(b"Hello, World?").is_err());
        assert_eq!(Forge::Gitea.check_headers(&hooks, &headers).err().unwrap().failure, Failure::NotFound);
        assert_eq!(
            Forge::GitHub.check_headers(&hooks, &HeaderMap::new()).err().unwrap().failure,
            Failure::Unauthorized
        );
    }
}
