//! Scoped API keys: creation, scopes, component patterns, expiry, revocation, pinned identities, rate
//! limits, and the `artifacts keys` command.

use std::time::Duration;

use serde_json::{json, Value};

use artifacts_tests::{workspace_binary, TestApp, ADMIN_KEY};

async fn create_key(app: &TestApp, body: Value) -> Value {
    let response = app.http.post(app.url("/api/v1/keys")).bearer_auth(ADMIN_KEY).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

async fn status_with(
    app: &TestApp,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = app.http.request(method, app.url(path)).bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

const LOOKUP: &str = "/api/v1/images?component=libfoo&branch=main&architecture=amd64";

#[tokio::test]
async fn scopes_patterns_expiry_and_revocation() {
    let app = TestApp::spawn().await;
    let reader = create_key(&app, json!({"name": "ci reader", "scopes": ["read"], "components": ["lib*"]})).await;
    let secret = reader["secret"].as_str().unwrap();
    assert_eq!(reader["status"], "created");

    let (status, _) = status_with(&app, secret, reqwest::Method::GET, LOOKUP, None).await;
    assert_eq!(status, 404, "a read key looks up");
    let (status, body) = status_with(
        &app,
        secret,
        reqwest::Method::GET,
        "/api/v1/images?component=app&branch=main&architecture=amd64",
        None,
    )
    .await;
    assert_eq!(status, 403, "outside its component patterns: {body}");
    assert!(body["errorMessage"].as_str().unwrap().contains("lib*"));
    let build =
        json!({"dockerfile": "FROM busybox\n", "component": "libfoo", "branch": "main", "architecture": "amd64"});
    let (status, body) = status_with(&app, secret, reqwest::Method::POST, "/api/v1/images", Some(build)).await;
    assert_eq!(status, 403, "a read key cannot build: {body}");
    assert!(body["errorMessage"].as_str().unwrap().contains("build scope"));
    let (status, _) = status_with(&app, secret, reqwest::Method::GET, "/api/v1/keys", None).await;
    assert_eq!(status, 403, "nor manage keys");

    // Listing never shows a secret.
    let listing =
        app.http.get(app.url("/api/v1/keys")).bearer_auth(ADMIN_KEY).send().await.unwrap().text().await.unwrap();
    assert!(listing.contains(reader["keyId"].as_str().unwrap()));
    assert!(!listing.contains(secret) && !listing.contains(&secret[20..]), "{listing}");

    // Revoked: refused on the very next request.
    let path = format!("/api/v1/keys/{}", reader["keyId"].as_str().unwrap());
    let (status, body) = status_with(&app, ADMIN_KEY, reqwest::Method::DELETE, &path, None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("revoked")));
    let (status, _) = status_with(&app, secret, reqwest::Method::GET, LOOKUP, None).await;
    assert_eq!(status, 401);
    let (status, _) = status_with(&app, ADMIN_KEY, reqwest::Method::DELETE, &path, None).await;
    assert_eq!(status, 404);

    // Expired: accepted until the instant it expires, refused by the first request after it (no margin:
    // the test waits for the expiry instant itself, not for a guessed time past it).
    let expires = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let soon = expires.format(&time::format_description::well_known::Rfc3339).unwrap();
    let expiring = create_key(&app, json!({"name": "short", "scopes": ["read"], "expiresAt": soon})).await;
    let secret = expiring["secret"].as_str().unwrap();
    let (status, _) = status_with(&app, secret, reqwest::Method::GET, LOOKUP, None).await;
    assert_eq!(status, 404);
    let until = |at: time::OffsetDateTime| Duration::try_from(at - time::OffsetDateTime::now_utc()).unwrap_or_default();
    tokio::time::sleep(until(expires - time::Duration::milliseconds(300))).await;
    let (status, body) = status_with(&app, secret, reqwest::Method::GET, LOOKUP, None).await;
    assert_eq!(status, 404, "still valid just before it expires: {body}");
    tokio::time::sleep(until(expires)).await;
    let (status, body) = status_with(&app, secret, reqwest::Method::GET, LOOKUP, None).await;
    assert_eq!(status, 401, "refused from the instant it expires: {body}");
    assert!(body["errorMessage"].as_str().unwrap().contains("expired"), "{body}");

    for bad in [
        json!({"name": "x", "scopes": []}),
        json!({"name": "", "scopes": ["read"]}),
        json!({"name": "x", "scopes": ["root"]}),
        json!({"name": "x", "scopes": ["read"], "components": ["../*"]}),
    ] {
        let (status, _) = status_with(&app, ADMIN_KEY, reqwest::Method::POST, "/api/v1/keys", Some(bad.clone())).await;
        assert_eq!(status, 400, "{bad}");
    }
}

#[tokio::test]
async fn a_key_pinned_to_an_identity_cannot_claim_another() {
    let app = TestApp::spawn().await;
    let key = create_key(&app, json!({"name": "alice's", "scopes": ["build"], "linuxUsername": "alice"})).await;
    let secret = key["secret"].as_str().unwrap();
    let build = json!({"dockerfile": "FROM busybox\nRUN true\n", "component": "pinned", "branch": "main", "architecture": "amd64"});
    let response = app
        .http
        .post(app.url("/api/v1/images"))
        .bearer_auth(secret)
        .header("linux_username", "mallory")
        .json(&build)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert!(body["errorMessage"].as_str().unwrap().contains("alice"), "{body}");

    let response = app.http.post(app.url("/api/v1/images")).bearer_auth(secret).json(&build).send().await.unwrap();
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    let record: Value =
        app.get(&format!("/api/v1/builds/{}", accepted["buildId"].as_str().unwrap())).await.json().await.unwrap();
    assert_eq!(record["requestedBy"]["linuxUsername"], "alice");
    assert_eq!(record["requestedBy"]["apiKeyId"], key["keyId"]);
}

#[tokio::test]
async fn each_key_is_rate_limited_with_retry_after() {
    let app = TestApp::spawn_with(|s| s.gateway.rate_limit_per_minute = 5).await;
    for _ in 0..5 {
        assert_eq!(app.get(LOOKUP).await.status(), 404);
    }
    let limited = app.get(LOOKUP).await;
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after));
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["status"], "rate_limited");
}

#[tokio::test]
async fn the_cli_manages_keys() {
    let app = TestApp::spawn().await;
    let url = app.url("/api/v1");
    let cli = |args: &[&str]| {
        tokio::process::Command::new(workspace_binary("artifacts"))
            .arg("keys")
            .args(args)
            .args(["--url", &url, "--json"])
            .env("ARTIFACTS_ADMIN_KEY", ADMIN_KEY)
            .output()
    };
    let created = cli(&["create", "--name", "from the cli", "--scope", "read", "--component", "lib*"]).await.unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let created: Value = serde_json::from_slice(&created.stdout).unwrap();
    let key_id = created["keyId"].as_str().unwrap();
    let listed = cli(&["list"]).await.unwrap();
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert!(listed["keys"].as_array().unwrap().iter().any(|k| k["keyId"] == key_id));
    assert!(cli(&["revoke", key_id]).await.unwrap().status.success());
    assert!(!cli(&["revoke", key_id]).await.unwrap().status.success());
}

#[tokio::test]
async fn a_key_limited_to_components_sees_only_their_builds() {
    use artifacts_schemas::{BuildKind, BuildStatus};
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for component in ["libx", "app"] {
        ids.push(app.store_build(BuildKind::Image, BuildStatus::Succeeded, component).await);
    }
    let key = create_key(&app, json!({"name": "libs", "scopes": ["read"], "components": ["lib*"]})).await;
    let secret = key["secret"].as_str().unwrap();
    let (status, _) =
        status_with(&app, secret, reqwest::Method::GET, &format!("/api/v1/builds/{}", ids[0]), None).await;
    assert_eq!(status, 200);
    let (status, _) =
        status_with(&app, secret, reqwest::Method::GET, &format!("/api/v1/builds/{}", ids[1]), None).await;
    assert_eq!(status, 403);
    let (status, _) =
        status_with(&app, secret, reqwest::Method::GET, &format!("/api/v1/builds/{}/logs", ids[1]), None).await;
    assert_eq!(status, 403);
    let (_, list) = status_with(&app, secret, reqwest::Method::GET, "/api/v1/builds", None).await;
    let seen: Vec<&str> =
        list["builds"].as_array().unwrap().iter().map(|b| b["request"]["component"].as_str().unwrap()).collect();
    assert_eq!(seen, vec!["libx"]);
}
