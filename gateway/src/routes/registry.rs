//! `GET /api/v1/registry/token`: Docker's registry token endpoint. The registry sends clients here; the
//! API key comes as the Basic password (any user name), as `docker login <registry> -p <key>` sends it.
//! The token grants no more than asked and allowed: `pull` on the repositories of components the key may
//! read; `push` and `delete` (`*`) only to admin keys and the image workers' own identity; the catalog
//! only to those too. See `artifacts_runtime::registry_auth`.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use artifacts_runtime::auth::Caller;
use artifacts_runtime::configuration::Settings;
use artifacts_runtime::registry_auth::{builder_password, BUILDER_USER, ISSUER, SERVICE};
use artifacts_schemas::messages::keys::Scope;
use artifacts_schemas::{Failure, RequestError};

use crate::auth::authenticate;
use crate::error::ApiError;
use crate::state::AppState;

/// How long a token lasts: a revoked key gets no new one, and an old one soon runs out.
const TOKEN_LIFETIME: Duration = Duration::from_secs(300);

/// The key that signs tokens and the certificate the registry trusts, loaded once at start.
pub struct TokenSigner {
    key: jsonwebtoken::EncodingKey,
    /// The certificate, base64 DER, sent in each token's `x5c` header so the registry finds the key.
    certificate: String,
}

impl TokenSigner {
    /// `None` when `registry.token_key_file` is unset (the endpoint answers 404).
    pub fn load(settings: &Settings) -> anyhow::Result<Option<Self>> {
        let (Some(key), Some(certificate)) =
            (&settings.registry.token_key_file, &settings.registry.token_certificate_file)
        else {
            return Ok(None);
        };
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|err| anyhow::anyhow!("cannot read {}: {err}", path.display()))
        };
        let key = jsonwebtoken::EncodingKey::from_ec_pem(&read(key)?)
            .map_err(|err| anyhow::anyhow!("registry.token_key_file is not a PEM EC private key: {err}"))?;
        let pem = String::from_utf8(read(certificate)?)?;
        let body: String = pem.lines().filter(|line| !line.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(&body)
            .map_err(|_| anyhow::anyhow!("registry.token_certificate_file is not a PEM certificate"))?;
        Ok(Some(Self { key, certificate: body }))
    }

    fn sign(&self, subject: &str, access: Vec<Access>) -> Result<String, ApiError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = Claims {
            iss: ISSUER,
            sub: subject.to_owned(),
            aud: SERVICE,
            exp: now + TOKEN_LIFETIME.as_secs() as i64,
            nbf: now - 10,
            iat: now,
            jti: uuid::Uuid::now_v7().to_string(),
            access,
        };
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.x5c = Some(vec![self.certificate.clone()]);
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|err| RequestError::internal(format!("cannot sign a registry token: {err}")).into())
    }
}

#[derive(Serialize)]
struct Claims {
    iss: &'static str,
    sub: String,
    aud: &'static str,
    exp: i64,
    nbf: i64,
    iat: i64,
    jti: String,
    access: Vec<Access>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
struct Access {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    actions: Vec<String>,
}

#[derive(Deserialize)]
struct TokenQuery {
    service: Option<String>,
}

/// A registry token.
#[derive(Serialize, ToSchema)]
pub struct RegistryToken {
    token: String,
    /// The same token, as OAuth 2 clients read it.
    access_token: String,
    /// Seconds the token is valid for.
    expires_in: u64,
    /// RFC 3339.
    issued_at: String,
}

/// Who asks for a token.
enum Requester {
    /// The image workers: every action on every repository.
    Builder,
    Key(Box<Caller>),
}

/// A Docker registry token for the API key given as the Basic password.
#[utoipa::path(
    get,
    path = "/api/v1/registry/token",
    tag = "registry",
    params(
        ("service" = Option<String>, Query, description = "The registry's name (`artifacts-registry`)"),
        ("scope" = Option<String>, Query, description = "`repository:<name>:<actions>`, repeatable; actions `pull`, `push`, `delete`, `*`"),
    ),
    responses(
        (status = 200, description = "A token granting what was asked and is allowed (possibly nothing)", body = RegistryToken),
        (status = 401, description = "No key, or a wrong, expired or revoked one", body = artifacts_schemas::ErrorReply),
        (status = 404, description = "Registry token authentication is not configured", body = artifacts_schemas::ErrorReply),
    ),
    security(("basic" = []))
)]
pub async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Response, ApiError> {
    let Some(signer) = state.registry_tokens.as_deref() else {
        return Err(ApiError::new(
            Failure::NotFound,
            "this gateway signs no registry tokens: set registry.token_key_file and registry.token_certificate_file",
        ));
    };
    let query = query.unwrap_or_default();
    let service: TokenQuery = serde_urlencoded::from_str(&query).unwrap_or(TokenQuery { service: None });
    if service.service.as_deref().is_some_and(|s| s != SERVICE) {
        return Err(RequestError::invalid(format!("service must be {SERVICE}")).into());
    }
    let Some(requester) = requester(&state, &headers).await else {
        let error = RequestError::unauthorized(
            "log in with an API key as the password: docker login <registry> --username <anything> --password-stdin",
        );
        let mut response = (axum::http::StatusCode::UNAUTHORIZED, Json(error.reply())).into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Basic realm=\"artifacts\""));
        return Ok(response);
    };
    let mut access = Vec::new();
    for scope in form_values(&query, "scope") {
        if let Some(granted) = grant(&state, &requester, &scope).await? {
            access.push(granted);
        }
    }
    let subject = match &requester {
        Requester::Builder => BUILDER_USER.to_owned(),
        Requester::Key(caller) => caller.key_id.clone(),
    };
    let token = signer.sign(&subject, access)?;
    let issued_at =
        time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let answer = RegistryToken { access_token: token.clone(), token, expires_in: TOKEN_LIFETIME.as_secs(), issued_at };
    Ok(Json(answer).into_response())
}

/// The Basic credentials: the workers' identity, or a valid API key as the password; `None` otherwise.
async fn requester(state: &AppState, headers: &HeaderMap) -> Option<Requester> {
    let encoded = headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    if user == BUILDER_USER {
        let expected = builder_password(state.settings.admin_key()?);
        return constant_time_eq(expected.expose().as_bytes(), password.as_bytes()).then_some(Requester::Builder);
    }
    authenticate(state, password).await.ok().map(|caller| Requester::Key(Box::new(caller)))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What of one requested scope the requester gets; `None` for nothing.
async fn grant(state: &AppState, requester: &Requester, scope: &str) -> Result<Option<Access>, ApiError> {
    let mut parts = scope.splitn(3, ':');
    let (Some(kind), Some(name), Some(actions)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(RequestError::invalid(format!("scope {scope:?} is not `repository:<name>:<actions>`")).into());
    };
    let asked: BTreeSet<&str> = actions.split(',').filter(|a| !a.is_empty()).collect();
    let everything = |kind: &str| Access {
        kind: kind.to_owned(),
        name: name.to_owned(),
        actions: asked.iter().map(|a| (*a).to_owned()).collect(),
    };
    let caller = match requester {
        Requester::Builder => return Ok(Some(everything(kind))),
        Requester::Key(caller) => caller,
    };
    if caller.scope() == Scope::Admin && caller.is_unlimited_admin() {
        return Ok(Some(everything(kind)));
    }
    if kind != "repository" {
        return Ok(None);
    }
    let component = repository_component(state, name).await?;
    let may_read =
        component.as_deref().is_some_and(|component| caller.allows(component)) && caller.require(Scope::Read).is_ok();
    let granted: Vec<String> = asked.iter().filter(|a| **a == "pull" && may_read).map(|a| (*a).to_owned()).collect();
    Ok((!granted.is_empty()).then(|| Access { kind: kind.to_owned(), name: name.to_owned(), actions: granted }))
}

/// The component a repository holds images of: its recorded owner (see `image_access`), whose pair alone
/// may build into it, so no key gains rights through a colliding name.
async fn repository_component(state: &AppState, repository: &str) -> Result<Option<String>, ApiError> {
    let owner = state.nats.store.repository_owner(repository).await?;
    Ok(owner.map(|owner| owner.component.as_str().to_owned()))
}

/// Every value of `name` in a query string (`scope` may repeat).
fn form_values(query: &str, name: &str) -> Vec<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .unwrap_or_default()
        .into_iter()
        .filter(|(key, _)| key == name)
        .map(|(_, value)| value)
        .collect()
}
