//! The gateway's own behaviour: authentication, input validation, docs, health and metrics.

use serde_json::{json, Value};

use artifacts_tests::{TestApp, ADMIN_KEY};

const IMAGE_QUERY: &str = "/api/v1/images?component=libfoo&branch=main&architecture=amd64";

async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("every answer is JSON");
    assert!(body["status"].is_string(), "{body}");
    assert!(body["errorMessage"].is_string(), "{body}");
    (status, body)
}

#[tokio::test]
async fn api_keys_are_required_and_checked() {
    let app = TestApp::spawn().await;
    let (status, body) = error_of(app.http.get(app.url(IMAGE_QUERY)).send().await.unwrap()).await;
    assert_eq!(status, 401);
    assert_eq!(body["status"], "unauthorized");

    let wrong = app.http.get(app.url(IMAGE_QUERY)).bearer_auth("nope").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(wrong.headers()["www-authenticate"], "Bearer");

    let by_header = app.http.get(app.url(IMAGE_QUERY)).header("X-API-Key", ADMIN_KEY).send().await.unwrap();
    assert_eq!(by_header.status(), 404);
    let by_bearer = app.http.get(app.url(IMAGE_QUERY)).bearer_auth(ADMIN_KEY).send().await.unwrap();
    assert_eq!(by_bearer.status(), 404);

    let open_routes = [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/openapi.json",
        "/docs/",
        "/docs",
        "/api/v1/healthz",
        "/api/v1/readyz",
        "/api/v1/metrics",
        "/api/v1/docs",
        "/openapi.json",
    ];
    for open in open_routes {
        let response = app.http.get(app.url(open)).send().await.unwrap();
        // Readiness is 503 here (this stack has no registry), but it needs no key either.
        let expected = if open.ends_with("readyz") { 503 } else { 200 };
        assert_eq!(response.status(), expected, "{open}");
    }
}

#[tokio::test]
async fn bad_names_answer_400_with_the_rule() {
    let app = TestApp::spawn().await;
    for (query, rule) in [
        ("component=Lib_Foo&branch=main&architecture=amd64", "^[a-z0-9][a-z0-9._-]{0,63}$"),
        ("component=libfoo&branch=-rf&architecture=amd64", "must not start with '-'"),
        ("component=libfoo&branch=a..b&architecture=amd64", "must not contain '..'"),
        ("component=libfoo&branch=main&architecture=sparc", "amd64, x86_64, arm64, aarch64, arm/v7, armv7l, 386, i686"),
        ("component=libfoo&branch=main", "missing field `architecture`"),
    ] {
        let (status, body) = error_of(app.get(&format!("/api/v1/images?{query}")).await).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(body["status"], "invalid");
        assert!(body["errorMessage"].as_str().unwrap().contains(rule), "{query}: {body}");
    }
    let (status, _) = error_of(app.get("/api/v1/components?component=libfoo&tag=v1&architecture=mips").await).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn submissions_are_validated_before_anything_else() {
    let app = TestApp::spawn().await;
    let post_json = |path: &str, body: Value| {
        app.http.post(app.url(path)).bearer_auth(ADMIN_KEY).header("linux_username", "alice").json(&body).send()
    };

    let (status, body) = error_of(
        post_json(
            "/api/v1/images",
            json!({"dockerfile": "FROM busybox", "component": "x", "branch": "main", "architecture": "vax"}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body["errorMessage"].as_str().unwrap().contains("architecture"), "{body}");

    let form = reqwest::multipart::Form::new()
        .part("dockerfile", reqwest::multipart::Part::bytes(b"FROM busybox\n".to_vec()).file_name("Dockerfile"))
        .text("component", "libfoo")
        .text("branch", "main");
    let (status, body) =
        error_of(app.http.post(app.url("/api/v1/images")).bearer_auth(ADMIN_KEY).multipart(form).send().await.unwrap())
            .await;
    assert_eq!(status, 400);
    assert!(body["errorMessage"].as_str().unwrap().contains("architecture"), "{body}");

    let big = reqwest::multipart::Form::new()
        .part("dockerfile", reqwest::multipart::Part::bytes(vec![b'#'; 1024 * 1024 + 1]).file_name("Dockerfile"))
        .text("component", "libfoo")
        .text("branch", "main")
        .text("architecture", "amd64");
    let (status, _) =
        error_of(app.http.post(app.url("/api/v1/images")).bearer_auth(ADMIN_KEY).multipart(big).send().await.unwrap())
            .await;
    assert_eq!(status, 413);

    for url in ["-uhttps://x/y", "ext::sh -c touch% /tmp/pwned", "ssh://-oProxyCommand=touch/r", "file:///etc"] {
        let (status, body) = error_of(
            post_json(
                "/api/v1/components",
                json!({"url": url, "component": "libfoo", "tag": "v1", "architecture": "amd64"}),
            )
            .await
            .unwrap(),
        )
        .await;
        assert_eq!(status, 400, "{url}: {body}");
    }

    let (status, body) = error_of(
        app.http
            .post(app.url("/api/v1/images"))
            .bearer_auth(ADMIN_KEY)
            .header("X-Linux-Username", "alice; rm -rf /")
            .json(&json!({"dockerfile": "FROM busybox", "component": "x", "branch": "main", "architecture": "amd64"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body["errorMessage"].as_str().unwrap().contains("linux_username"), "{body}");

    let (status, _) = error_of(
        app.http.post(app.url("/api/v1/images")).bearer_auth(ADMIN_KEY).body("FROM busybox").send().await.unwrap(),
    )
    .await;
    assert_eq!(status, 400, "no content type");
}

#[tokio::test]
async fn hooks_without_a_secret_do_not_exist() {
    let app = TestApp::spawn().await;
    for forge in ["github", "gitlab", "gitea", "bitbucket"] {
        let (status, _) =
            error_of(app.http.post(app.url(&format!("/api/v1/hooks/{forge}"))).body("{}").send().await.unwrap()).await;
        assert_eq!(status, 404, "{forge}");
    }
}

#[tokio::test]
async fn openapi_documents_every_route_and_swagger_ui_needs_no_network() {
    let app = TestApp::spawn().await;
    let doc: Value = app.http.get(app.url("/api/v1/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/v1/images", "post"),
        ("/api/v1/images", "get"),
        ("/api/v1/components", "post"),
        ("/api/v1/components", "get"),
        ("/api/v1/components/{component}/{tag}/{architecture}/archive", "get"),
        ("/api/v1/builds/{build_id}", "get"),
        ("/api/v1/builds", "get"),
        ("/api/v1/builds/{build_id}/logs", "get"),
        ("/api/v1/hooks/{forge}", "post"),
        ("/api/v1/keys", "post"),
        ("/api/v1/keys", "get"),
        ("/api/v1/keys/{key_id}", "delete"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ] {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} is not documented");
    }

    let html = app.http.get(app.url("/docs/")).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(!html.contains("https://") && !html.contains("http://"), "Swagger UI must not load from a CDN");
    let config = app.http.get(app.url("/docs/swagger-initializer.js")).send().await.unwrap();
    assert_eq!(config.status(), 200);
    assert!(config.text().await.unwrap().contains("/api/v1/openapi.json"));
    let bundle = app.http.get(app.url("/docs/swagger-ui-bundle.js")).send().await.unwrap();
    assert_eq!(bundle.status(), 200);
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = TestApp::spawn().await;
    let health: Value = app.http.get(app.url("/healthz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "nothing answers at the registry address of this stack");
    let ready: Value = ready.json().await.unwrap();
    let message = ready["errorMessage"].as_str().unwrap();
    assert!(message.contains("registry at 127.0.0.1:5000"), "{message}");

    let registry = artifacts_tests::Registry::start().await;
    let address = registry.address.clone();
    let with_registry = TestApp::spawn_with(|s| s.registry.address = address).await;
    let ready = with_registry.http.get(with_registry.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());

    app.get(IMAGE_QUERY).await;
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.lines().any(|line| line.starts_with("artifacts_http_requests_total{")
            && line.contains(r#"method="GET",route="/api/v1/images",status="404"}"#)),
        "{metrics}"
    );
}

#[tokio::test]
async fn unknown_routes_answer_json() {
    let app = TestApp::spawn().await;
    let (status, _) = error_of(app.get("/api/v1/nothing").await).await;
    assert_eq!(status, 404);
}

/// Issue 14: `/` answered a JSON 404 and a wrong method a 400 without `Allow`.
#[tokio::test]
async fn the_root_is_a_page_and_a_wrong_method_is_405_with_allow() {
    let app = TestApp::spawn().await;
    let home = app.http.get(app.url("/")).send().await.unwrap();
    assert_eq!(home.status(), 200);
    assert!(home.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let page = home.text().await.unwrap();
    assert!(page.contains("href=\"/docs/\"") && page.contains("lang=\"en\""), "{page}");

    let wrong = app.http.put(app.url("/api/v1/images")).bearer_auth(ADMIN_KEY).send().await.unwrap();
    assert_eq!(wrong.status(), 405);
    let allow = wrong.headers().get("allow").expect("an Allow header").to_str().unwrap().to_owned();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    let (_, body) = error_of(wrong).await;
    assert_eq!(body["status"], "method_not_allowed", "{body}");
    assert!(body["errorMessage"].as_str().unwrap().contains("Allow"), "{body}");

    // Swagger UI can upload a Dockerfile: POST /images documents the multipart form beside JSON.
    let doc: Value = app.http.get(app.url("/api/v1/openapi.json")).send().await.unwrap().json().await.unwrap();
    let body = &doc["paths"]["/api/v1/images"]["post"]["requestBody"]["content"];
    assert!(body["multipart/form-data"]["schema"].is_object(), "{body}");
    assert!(body["application/json"]["schema"].is_object(), "{body}");
    let upload = &doc["components"]["schemas"]["ImageUpload"]["properties"];
    assert_eq!(upload["dockerfile"]["format"], "binary", "{upload}");
    assert!(upload["buildArgs"].is_object(), "{upload}");
    // A build record's `request` and `result` are documented by kind, not as strings.
    let work = serde_json::to_string(&doc["components"]["schemas"]["BuildWork"]).unwrap();
    assert!(work.contains("ImageBuildSummary") && work.contains("ComponentRecord"), "{work}");
    let record = serde_json::to_string(&doc["components"]["schemas"]["BuildRecord"]).unwrap();
    assert!(record.contains("BuildWork"), "{record}");
}

#[tokio::test]
async fn lookups_answer_503_when_nats_is_down() {
    let mut app = TestApp::spawn().await;
    app.nats_server.stop().await;
    let (status, body) = error_of(app.get(IMAGE_QUERY).await).await;
    assert_eq!(status, 503, "{body}");
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert!(ready["errorMessage"].as_str().unwrap().contains("NATS connection"), "{ready}");
}
