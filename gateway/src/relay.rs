//! Answers an HTTP request with what a NATS endpoint replied: the same JSON, the status it names.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use artifacts_runtime::service::Reply;

pub fn relay(reply: Reply) -> Response {
    let status = StatusCode::from_u16(reply.code).unwrap_or(StatusCode::BAD_GATEWAY);
    (status, [(header::CONTENT_TYPE, "application/json")], reply.body).into_response()
}
