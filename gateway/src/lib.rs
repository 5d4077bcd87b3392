//! The HTTP gateway.
//!
//! It owns no data and does no build work: it authenticates a request ([`auth`]), parses its input into
//! the validated types of `artifacts-schemas` ([`input`], [`routes`]), sends it to the NATS subject of
//! the contract, and answers with the reply ([`relay`]). Lookups are NATS request/reply to the `lookup`
//! function; component archives stream straight from the JetStream object store.
//! [`startup::Application`] binds the listener first, so tests run it on port 0.

pub mod auth;
pub mod error;
pub mod input;
pub mod metrics;
pub mod openapi;
pub mod relay;
pub mod request_id;
pub mod routes;
pub mod serve;
pub mod startup;
pub mod state;
pub mod webhook;
pub mod webhook_body;

use artifacts_runtime::{Nats, Settings, Work};
use tokio_util::sync::CancellationToken;

/// The gateway process's work: serve until `shutdown` (boxed here: see [`artifacts_runtime::Work`]).
pub fn run(settings: Settings, nats: Nats, shutdown: CancellationToken) -> Work {
    Box::pin(async move {
        let app = startup::Application::build(settings, nats).await?;
        app.run_until_stopped(shutdown).await?;
        Ok(())
    })
}
