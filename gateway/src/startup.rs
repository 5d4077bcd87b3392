//! Builds the gateway and binds its listener, so callers (and tests, with port 0) learn the port before
//! it serves.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::response::Redirect;
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use artifacts_runtime::auth::Authenticator;
use artifacts_runtime::{Nats, Settings};
use artifacts_schemas::{Failure, RequestError};

use crate::auth::Keys;
use crate::error::ApiError;
use crate::metrics;
use crate::openapi::ApiDoc;
use crate::request_id;
use crate::routes::registry::{self, TokenSigner};
use crate::routes::{builds, components, dashboard, health, hooks, images, info, keys, manage, provenance, secrets};
use crate::serve::{serve, ConnectionLimits};
use crate::state::AppState;
use crate::webhook_body::Budgets;

pub struct Application {
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    /// Stops what serving needs in the background (the watch on API keys) once serving stops.
    stopped: CancellationToken,
}

impl Application {
    pub async fn build(settings: Settings, nats: Nats) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(settings.gateway.listen)
            .await
            .map_err(|err| anyhow::anyhow!("cannot listen on {}: {err}", settings.gateway.listen))?;
        if settings.admin_key.is_none() {
            tracing::warn!("no admin key is set (ARTIFACTS_ADMIN_KEY): every authenticated route will answer 401");
        }
        // Already installed when the gateway runs as its own process; tests build gateways in theirs.
        artifacts_runtime::metrics::install("artifacts-gateway");
        let stopped = CancellationToken::new();
        let authenticator = Authenticator::start(&settings, &nats, stopped.clone());
        let registry_tokens = TokenSigner::load(&settings)?.map(Arc::new);
        let limits = ConnectionLimits {
            header_timeout: Duration::from_secs(settings.gateway.header_timeout_secs),
            max_connections: settings.gateway.max_connections,
        };
        let state = AppState {
            registry_tokens,
            keys: Arc::new(Keys::new(authenticator)),
            webhook_bodies: Arc::new(Budgets::new(settings.gateway.max_webhook_bytes)),
            nats: Arc::new(nats),
            settings: Arc::new(settings),
        };
        Ok(Self { listener, router: router(state), limits, stopped })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|addr| addr.port()).unwrap_or(0)
    }

    /// Serves until `shutdown`, then lets requests in flight finish.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        tracing::info!(address = %self.listener.local_addr()?, "gateway listening");
        let _stop_background = self.stopped.drop_guard();
        serve(self.listener, self.router, self.limits, shutdown).await;
        Ok(())
    }
}

pub fn router(state: AppState) -> Router {
    let max_body = state.settings.gateway.max_body_bytes;
    let api = Router::new()
        .route("/images", post(images::post_image).get(images::get_image))
        .route("/components", post(components::post_component).get(components::get_component))
        .route("/components/{component}/{tag}/{architecture}/archive", get(components::get_archive))
        .route("/builds", get(builds::list_builds))
        .route("/builds/events", get(builds::build_events))
        .route("/builds/{build_id}", get(builds::get_build))
        .route("/builds/{build_id}/logs", get(builds::build_logs))
        .route("/builds/{build_id}/provenance", get(provenance::provenance))
        .route("/builds/{build_id}/sbom", get(provenance::sbom))
        .route("/provenance/key", get(provenance::key))
        .route("/builds/{build_id}/cancel", post(manage::cancel))
        .route("/builds/{build_id}/pin", post(manage::pin).delete(manage::unpin))
        .route("/images/{component}/{branch}/{architecture}", axum::routing::delete(manage::delete_image))
        .route("/components/{component}/{tag}/{architecture}", axum::routing::delete(manage::delete_component))
        .route("/catalog/images", get(manage::images))
        .route("/catalog/components", get(manage::components))
        .route("/gc", post(manage::gc))
        .route("/hooks/{forge}", post(hooks::receive))
        .route("/keys", post(keys::create).get(keys::list))
        .route("/keys/{key_id}", axum::routing::delete(keys::revoke))
        .route("/whoami", get(keys::whoami))
        .route("/secrets", post(secrets::put).get(secrets::list))
        .route("/secrets/{name}", axum::routing::delete(secrets::delete))
        .route("/registry/token", get(registry::token))
        .route("/info", get(info::info));
    // Docs, health and metrics answer at the root and, since the contract lists them under the API's base
    // path, below `/api/v1` too.
    let open = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics));
    let api = api
        .merge(open.clone())
        .route("/docs", get(|| async { Redirect::permanent("/docs/") }))
        .route("/docs/", get(|| async { Redirect::permanent("/docs/") }));
    Router::new()
        .route("/", get(dashboard::index))
        .route("/ui/app.js", get(dashboard::script))
        .route("/ui/app.css", get(dashboard::style))
        .route("/ui/favicon.svg", get(dashboard::favicon))
        .route("/favicon.ico", get(dashboard::favicon))
        .nest("/api/v1", api)
        .merge(open)
        .merge(SwaggerUi::new("/docs").url("/api/v1/openapi.json", ApiDoc::openapi()))
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .fallback(|| async { ApiError::from(RequestError::not_found("no such route: see /docs")) })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                Failure::MethodNotAllowed,
                "this route does not take that method (Allow lists those it takes): see /docs",
            )
        })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(metrics::track))
        .layer(middleware::from_fn(request_id::track))
        .with_state(state)
}
