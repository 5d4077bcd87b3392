//! Request input for the lookup routes: the query string, or (as in the original design page) the same
//! fields as a JSON body. Either way the fields parse into the validated message types of `schemas`,
//! and a bad value is a 400 that states the rule.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use artifacts_schemas::{parse_json, Failure, RequestError};

use crate::error::ApiError;

pub struct QueryOrJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for QueryOrJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let query = req.uri().query().unwrap_or("").to_owned();
        if !query.is_empty() {
            return parse_query(&query).map(QueryOrJson);
        }
        let body = body_bytes(req, state).await?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return parse_query("").map(QueryOrJson);
        }
        Ok(QueryOrJson(parse_json(&body)?))
    }
}

pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    serde_urlencoded::from_str(query).map_err(|err| RequestError::invalid(format!("invalid query: {err}")).into())
}

/// The whole body, within the configured limit (413 past it).
pub async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                Failure::TooLarge,
                "the request body is larger than this gateway accepts (gateway.max_body_bytes)",
            )
        } else {
            ApiError::new(Failure::Invalid, format!("cannot read the request body: {rejection}"))
        }
    })
}

/// Path parameters, with a JSON 400 when they cannot be read (e.g. invalid percent-encoding).
pub struct PathParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> axum::extract::FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| PathParams(value))
            .map_err(|rejection| RequestError::invalid(format!("invalid path: {}", rejection.body_text())).into())
    }
}
