//! Request input for the lookup routes: the query string, or (as in the original design page) the same
//! fields as a JSON body. Either way the fields parse into the validated message types of `schemas`,
//! and a bad value is a 400 that states the rule.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap};
use http_body_util::LengthLimitError;
use serde::de::DeserializeOwned;

use artifacts_schemas::{parse_json, Failure, RequestError};

use crate::error::ApiError;

pub struct QueryOrJson<T>(pub T);

/// The cap of bodies that are small JSON documents (lookups, component submissions, key requests): a
/// few hundred bytes each.
pub const SMALL_JSON_BODY_BYTES: usize = 64 * 1024;

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for QueryOrJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        let query = req.uri().query().unwrap_or("").to_owned();
        if !query.is_empty() {
            return parse_query(&query).map(QueryOrJson);
        }
        let body = body_bytes(req, SMALL_JSON_BODY_BYTES).await?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return parse_query("").map(QueryOrJson);
        }
        Ok(QueryOrJson(parse_json(&body)?))
    }
}

pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    serde_urlencoded::from_str(query).map_err(|err| RequestError::invalid(format!("invalid query: {err}")).into())
}

/// The body's length as its `Content-Length` declares it.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok())
}

/// The whole body, at most `limit` bytes: 413 past it, at once when `Content-Length` says so.
pub async fn body_bytes(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    let declared = declared_length(req.headers());
    let too_large = |size: Option<u64>| {
        let size = size.map_or_else(|| "is ".to_owned(), |size| format!("is {size} bytes, "));
        ApiError::new(
            Failure::TooLarge,
            format!("the request body {size}larger than the {limit} bytes this route accepts"),
        )
    };
    if let Some(length) = declared.filter(|length| *length > limit as u64) {
        return Err(too_large(Some(length)));
    }
    axum::body::to_bytes(req.into_body(), limit).await.map_err(|err| {
        let err = err.into_inner();
        if err.is::<LengthLimitError>() {
            too_large(None)
        } else {
            ApiError::new(Failure::Invalid, format!("cannot read the request body: {err}"))
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
