//! How a failed request answers: its status code and `{status, errorMessage}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use artifacts_schemas::{Failure, RequestError};

/// A failed request; every handler and extractor fails with this, so no failure answers without JSON.
#[derive(Debug)]
pub struct ApiError(pub RequestError);

impl ApiError {
    pub fn new(failure: Failure, message: impl Into<String>) -> Self {
        Self(RequestError::new(failure, message))
    }
}

impl<E: Into<RequestError>> From<E> for ApiError {
    fn from(err: E) -> Self {
        Self(err.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.failure.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(self.0.reply())).into_response();
        if self.0.failure == Failure::Unauthorized {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
