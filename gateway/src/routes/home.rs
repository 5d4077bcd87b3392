//! `GET /`: a page for people who open the gateway's address in a browser.

use axum::response::Html;

pub async fn home() -> Html<&'static str> {
    Html(include_str!("home.html"))
}
