//! `GET /`, `/ui/...` and `/favicon.ico`: the dashboard, a page for people. Its files are compiled into the
//! gateway, so it needs no build step and no network; it reads everything through the API below `/api/v1`
//! with the key a person signs in with (see `dashboard/app.js`).

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// Scripts and styles from this origin only, never inline, and the page never framed: what an attacker
/// gets into a build log or a component name cannot run as script.
const SECURITY_HEADERS: [(header::HeaderName, &str); 5] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::X_FRAME_OPTIONS, "DENY"),
    // The files change with the gateway, and are small: fetched again each time.
    (header::CACHE_CONTROL, "no-cache"),
];

pub async fn index() -> Response {
    asset("text/html; charset=utf-8", include_str!("../../dashboard/index.html"))
}

pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("../../dashboard/app.js"))
}

pub async fn style() -> Response {
    asset("text/css; charset=utf-8", include_str!("../../dashboard/app.css"))
}

/// The icon, an SVG: at `/ui/favicon.svg`, which the page names, and at `/favicon.ico`, where browsers
/// and other tools look without being told.
pub async fn favicon() -> Response {
    asset("image/svg+xml", include_str!("../../dashboard/favicon.svg"))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (SECURITY_HEADERS, [(header::CONTENT_TYPE, content_type)], body).into_response()
}
