//! The envelope every answer shares, `{status, errorMessage, ...}`, and the failures a request can meet.
//!
//! A NATS endpoint and the gateway answer the same JSON. A failure travels over NATS as that JSON body
//! plus the micro-service headers `Nats-Service-Error` and `Nats-Service-Error-Code`, whose code is the
//! HTTP status the gateway answers with; so the gateway relays replies without rewriting them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What went wrong, with the HTTP status (and NATS service error code) that goes with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// 400: the request is malformed or breaks a naming rule.
    Invalid,
    /// 401: no API key, an unknown or revoked key, or a bad webhook signature.
    Unauthorized,
    /// 403: the key lacks the scope.
    Forbidden,
    /// 404: nothing of that name.
    NotFound,
    /// 405: the route does not take that method (`Allow` lists those it takes).
    MethodNotAllowed,
    /// 409: the request contradicts what is recorded (e.g. another source for an existing component).
    Conflict,
    /// 413: the request body is too large.
    TooLarge,
    /// 429: the API key made too many requests; `Retry-After` says when to try again.
    RateLimited,
    /// 503: a backing service (NATS, Docker, registry) or capability is unavailable.
    Unavailable,
    /// 500: a fault of the service itself, never of the input.
    Internal,
}

impl Failure {
    pub fn code(self) -> u16 {
        match self {
            Self::Invalid => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::Conflict => 409,
            Self::TooLarge => 413,
            Self::RateLimited => 429,
            Self::Unavailable => 503,
            Self::Internal => 500,
        }
    }

    pub fn from_code(code: u16) -> Self {
        match code {
            400 => Self::Invalid,
            401 => Self::Unauthorized,
            403 => Self::Forbidden,
            404 => Self::NotFound,
            405 => Self::MethodNotAllowed,
            409 => Self::Conflict,
            413 => Self::TooLarge,
            429 => Self::RateLimited,
            503 => Self::Unavailable,
            _ => Self::Internal,
        }
    }
}

/// The body of every failed request: `status` names the failure, `errorMessage` says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorReply {
    pub status: Failure,
    pub error_message: String,
}

/// A failed request: what went wrong and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    pub failure: Failure,
    pub message: String,
}

impl RequestError {
    pub fn new(failure: Failure, message: impl Into<String>) -> Self {
        Self { failure, message: message.into() }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Failure::Invalid, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Failure::NotFound, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(Failure::Forbidden, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(Failure::Unauthorized, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Failure::Unavailable, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Failure::Internal, message)
    }

    pub fn reply(&self) -> ErrorReply {
        ErrorReply { status: self.failure, error_message: self.message.clone() }
    }
}

impl From<crate::names::InvalidName> for RequestError {
    fn from(err: crate::names::InvalidName) -> Self {
        Self::invalid(err.0)
    }
}

/// Parses a JSON request body into a message type, turning serde's error into a message a client can act
/// on (without serde's line and column, which mean nothing for a one-line message).
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, RequestError> {
    serde_json::from_slice(body).map_err(|err| {
        let text = err.to_string();
        let text = match text.rfind(" at line ") {
            Some(at) => &text[..at],
            None => &text,
        };
        RequestError::invalid(format!("invalid request body: {text}"))
    })
}
