//! The OpenAPI document's examples work as given (issue 29): Swagger UI fills "Try it out" with them, and
//! the example of `POST /images` once answered 400 (`context must name an uploaded object`) while both
//! forms offered `force: true`.

use serde_json::Value;

use artifacts_tests::{TestApp, ADMIN_KEY};

#[tokio::test]
async fn the_examples_of_the_build_requests_are_accepted_as_given_and_force_is_false() {
    let app = TestApp::spawn().await;
    let document: Value = app.get("/api/v1/openapi.json").await.json().await.unwrap();
    let schemas = &document["components"]["schemas"];

    let image = schemas["ImageBuildRequest"]["example"].clone();
    assert!(image.is_object(), "ImageBuildRequest has an example: {}", schemas["ImageBuildRequest"]);
    let answer = app.http.post(app.url("/api/v1/images")).bearer_auth(ADMIN_KEY).json(&image).send().await.unwrap();
    let status = answer.status().as_u16();
    let body: Value = answer.json().await.unwrap();
    assert!(matches!(status, 200 | 202), "the example of POST /images is accepted as given: {status} {body}");

    let component = &schemas["ComponentBuildRequest"]["example"];
    for field in ["url", "component", "tag", "architecture"] {
        assert!(component[field].is_string(), "ComponentBuildRequest's example names {field}: {component}");
    }
    for schema in ["ImageBuildRequest", "ComponentBuildRequest", "ImageUpload"] {
        let force = &schemas[schema]["properties"]["force"];
        assert!(force.is_object(), "{schema} has force: {}", schemas[schema]);
        // Without an example, Swagger UI offers `true` for a boolean.
        assert_eq!(force["example"], false, "{schema}.force's example is false: {force}");
        assert_eq!(force["default"], false, "{schema}.force defaults to false: {force}");
    }
}
