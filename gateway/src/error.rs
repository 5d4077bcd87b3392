//! How a failed request answers: its status code and `{status, errorMessage}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use artifacts_schemas::{Failure, RequestError};

/// A failed request; every handler and extractor fails with this, so no failure answers without JSON.
#[derive(Debug)]
pub struct ApiError {
    error: RequestError,
    /// Seconds for `Retry-After` (429).
    retry_after: Option<u64>,
    /// A status the failure's own does not say (408 for a body sent too slowly).
    status: Option<StatusCode>,
}

impl ApiError {
    pub fn new(failure: Failure, message: impl Into<String>) -> Self {
        RequestError::new(failure, message).into()
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// Answers with `status` rather than the failure's own code.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }
}

impl<E: Into<RequestError>> From<E> for ApiError {
    fn from(err: E) -> Self {
        Self { error: err.into(), retry_after: None, status: None }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status.unwrap_or_else(|| {
            StatusCode::from_u16(self.error.failure.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        });
        let mut response = (status, Json(self.error.reply())).into_response();
        if self.error.failure == Failure::Unauthorized {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
