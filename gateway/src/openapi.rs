//! The OpenAPI 3 document, generated from the handlers and message types, served at
//! `/api/v1/openapi.json` with Swagger UI at `/docs` (its assets are compiled in: no CDN).

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(title = "artifact storage", description = "Builds Docker images and components, and stores them."),
    paths(
        routes::images::post_image,
        routes::images::get_image,
        routes::components::post_component,
        routes::components::get_component,
        routes::components::get_archive,
        routes::builds::get_build,
        routes::builds::list_builds,
        routes::builds::build_events,
        routes::builds::build_logs,
        routes::provenance::key,
        routes::provenance::provenance,
        routes::provenance::sbom,
        routes::hooks::receive,
        routes::keys::create,
        routes::keys::list,
        routes::keys::revoke,
        routes::keys::whoami,
        routes::secrets::put,
        routes::secrets::list,
        routes::secrets::delete,
        routes::registry::token,
        routes::info::info,
        routes::manage::cancel,
        routes::manage::pin,
        routes::manage::unpin,
        routes::manage::delete_image,
        routes::manage::delete_component,
        routes::manage::images,
        routes::manage::components,
        routes::manage::gc,
        routes::health::healthz,
        routes::health::readyz,
        routes::health::metrics,
    ),
    modifiers(&Security)
)]
pub struct ApiDoc;

struct Security;

/// The answers every authenticated route may give, whatever the route.
const AUTHENTICATED_FAILURES: [(&str, &str); 5] = [
    ("400", "Bad input"),
    ("401", "No, unknown, revoked or expired API key"),
    ("403", "The key lacks the scope, or may not touch that component, or claims another identity"),
    ("429", "Too many requests for this key: see Retry-After"),
    ("503", "NATS or a function is unavailable"),
];

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme("apiKey", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))));
        // The registry token endpoint: the API key as the Basic password, as `docker login` sends it.
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
        let error = || ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorReply"))).build();
        for item in openapi.paths.paths.values_mut() {
            for operation in [&mut item.get, &mut item.post, &mut item.delete].into_iter().flatten() {
                if operation.security.is_none() {
                    continue;
                }
                for (code, description) in AUTHENTICATED_FAILURES {
                    operation.responses.responses.entry(code.to_owned()).or_insert_with(|| {
                        ResponseBuilder::new().description(description).content("application/json", error()).into()
                    });
                }
            }
        }
    }
}
