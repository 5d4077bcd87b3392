//! One id per request, from the edge to the workers: taken from the client's `X-Request-Id` when it is
//! a safe one (see [`RequestId::parse`]), made here otherwise. The request's work runs in a span with
//! the id, so every log line of it carries `request_id`; the NATS calls and publishes it makes carry the
//! id on in the same header, to the functions and the workers; and the answer names it in
//! `X-Request-Id`. Each request ends with one `answered` line: method, path (never the query), status
//! and time taken.

use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

use artifacts_runtime::telemetry::{in_request, RequestId, REQUEST_ID_HEADER};

/// Middleware: runs the request as its id's and names the id in the answer.
pub async fn track(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(RequestId::parse)
        .unwrap_or_default();
    // At error level so that every line of the request carries the id whatever the log filter.
    let span =
        tracing::error_span!("request", request_id = %id, method = %request.method(), path = request.uri().path());
    let header = HeaderValue::from_str(id.as_str()).expect("request ids are visible ASCII");
    let started = Instant::now();
    let mut response = in_request(id, span, async move {
        let response = next.run(request).await;
        let took_ms = started.elapsed().as_secs_f64() * 1e3;
        tracing::info!(status = response.status().as_u16(), took_ms, "answered");
        response
    })
    .await;
    response.headers_mut().insert(REQUEST_ID_HEADER, header);
    response
}
