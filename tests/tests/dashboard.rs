//! Issue 17: the dashboard at `/`, driven in headless Chromium through its WebDriver (Debian's `chromium`
//! and `chromium-driver`) against a real stack: signing in, a build submitted through the API appearing
//! and finishing live, its log, an image's pull command, a component's download, keys, and a key limited
//! to one component seeing only that one. Each page is saved as a screenshot under
//! `target/screenshots/`.

use fantoccini::Locator;
use serde_json::{json, Value};

use artifacts_tests::browser::Browser;
use artifacts_tests::{require_docker, unique_name, Registry, TestApp, ADMIN_KEY};

async fn submit_image(app: &TestApp, component: &str, dockerfile: &str) -> String {
    let body = json!({"dockerfile": dockerfile, "component": component, "branch": "main", "architecture": "amd64"});
    let answer = app.http.post(app.url("/api/v1/images")).bearer_auth(ADMIN_KEY).json(&body).send().await.unwrap();
    assert_eq!(answer.status(), 202);
    let accepted: Value = answer.json().await.unwrap();
    accepted["buildId"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_dashboard_shows_builds_live_their_logs_images_components_and_keys_in_a_real_browser() {
    require_docker().await;
    let registry = Registry::start().await;
    let address = registry.address.clone();
    let app = TestApp::spawn_with(|settings| settings.registry.address = address).await;
    let browser = Browser::start().await;
    let home = app.url("/");

    browser.go(&home).await;
    browser.wait_for("#key").await;
    browser.screenshot("sign-in").await;
    // A wrong key is refused on the page, and nothing is kept.
    browser.wait_for("#key").await.send_keys("ak_wrong_key").await.unwrap();
    browser.client.find(Locator::Css("#sign-in-form button")).await.unwrap().click().await.unwrap();
    browser.wait_for_text("#sign-in-error", "refused").await;
    assert_eq!(browser.script("return sessionStorage.length").await, json!(0));

    browser.sign_in(&home, ADMIN_KEY).await;
    // The page's own assets are small, and what the first paint took is printed (not asserted: timings
    // belong in BENCHMARKS.md).
    let assets = browser
        .script(
            "return performance.getEntriesByType('resource').filter((r) => r.name.includes('/ui/'))
               .reduce((sum, r) => sum + r.decodedBodySize, 0)
               + performance.getEntriesByType('navigation')[0].decodedBodySize",
        )
        .await;
    assert!(assets.as_u64().is_some_and(|size| size < 200 * 1024), "the dashboard's assets: {assets} bytes");
    let paint = browser.script("return performance.getEntriesByName('first-contentful-paint')[0]?.startTime").await;
    println!("dashboard: {assets} bytes of assets, first contentful paint at {paint} ms");
    // The key is in this tab's session storage, never in the address.
    assert_eq!(browser.script("return sessionStorage.getItem('artifacts.key')").await, json!(ADMIN_KEY));
    assert!(!browser.client.current_url().await.unwrap().as_str().contains(ADMIN_KEY));
    browser.wait_for_text(".live", "Live").await;

    // A build submitted through the API appears on the open page, and finishes there.
    let component = unique_name("dash");
    let build_id = submit_image(&app, &component, "FROM busybox\nRUN echo dashboard-says-hello && sleep 2\n").await;
    let row = format!("tr[data-build=\"{build_id}\"]");
    browser.wait_for(&row).await;
    browser.wait_for_text(&format!("{row} .status"), "succeeded").await;
    browser.screenshot("builds").await;

    // Its page: the record, the log from the first line, the result.
    browser.client.find(Locator::Css(&format!("{row} a"))).await.unwrap().click().await.unwrap();
    browser.wait_for_text("pre.log", "dashboard-says-hello").await;
    browser.wait_for_text(".live", "succeeded").await;
    let details = browser.wait_for_text("dl.record", &component).await;
    assert!(details.contains("docker pull"), "the build's page shows its pull command: {details}");
    browser.screenshot("build").await;

    // The image's page: per architecture, the pull command with a copy button.
    browser.go(&format!("{home}#/images/{component}/main")).await;
    let pull = browser.wait_for_text("code.pull", "docker pull").await;
    assert!(pull.contains(&format!("{component}-main-image")), "{pull}");
    assert!(browser.client.find(Locator::Css("button[aria-label='Copy pull command']")).await.is_ok());
    browser.screenshot("image").await;
    browser.go(&format!("{home}#/images")).await;
    browser.wait_for_text("table", &component).await;
    browser.screenshot("images").await;

    // A component, with its size, digest and a download that fetches the archive with the key.
    let library = unique_name("dashlib");
    let archive = b"not really a tarball, but bytes to download".to_vec();
    let record = app.store_archive(&library, "v1.0.0", &archive).await;
    browser.go(&format!("{home}#/components")).await;
    let listing = browser.wait_for_text("table", &library).await;
    assert!(listing.contains(&record.digest.trim_start_matches("sha256:")[..12]), "{listing}");
    browser.screenshot("components").await;
    browser.go(&format!("{home}#/components/{library}/v1.0.0/amd64")).await;
    browser.wait_for_text("dl.record", &record.digest).await;
    let fetched = browser
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch('/api/v1/components/' + arguments[0] + '/v1.0.0/amd64/archive',
                   {headers: {Authorization: 'Bearer ' + sessionStorage.getItem('artifacts.key')}})
               .then((r) => r.text()).then(done, (e) => done('error ' + e));",
            vec![json!(library)],
        )
        .await
        .unwrap();
    assert_eq!(fetched, json!(String::from_utf8(archive).unwrap()));
    browser.screenshot("component").await;

    // Keys: create one on the page (its secret shown once), see it listed, revoke it.
    browser.go(&format!("{home}#/keys")).await;
    browser.wait_for("#key-name").await.send_keys("made-on-the-page").await.unwrap();
    browser.client.find(Locator::Css(".key-form button")).await.unwrap().click().await.unwrap();
    let secret = browser.wait_for_text("#new-secret", "ak").await;
    browser.wait_for_text("table", "made-on-the-page").await;
    browser.screenshot("keys").await;
    let whoami = app.http.get(app.url("/api/v1/whoami")).bearer_auth(&secret).send().await.unwrap();
    assert_eq!(whoami.status(), 200, "the secret the page showed is a working key");

    // A key limited to the library sees only the library: no builds or images of the other component,
    // and no keys page.
    let (limited, _) =
        app.create_key(json!({"name": "library-reader", "scopes": ["read"], "components": [library]})).await;
    browser.sign_out().await;
    browser.sign_in(&home, &limited).await;
    browser.wait_for(".live").await;
    let rows = browser.texts("#view tbody tr").await;
    assert!(rows.iter().all(|row| !row.contains(&component)), "a build the key may not see: {rows:?}");
    assert!(browser.client.find(Locator::Css("#nav-keys[hidden]")).await.is_ok(), "the keys page is an admin's");
    browser.go(&format!("{home}#/components")).await;
    browser.wait_for_text("table", &library).await;
    browser.go(&format!("{home}#/images")).await;
    let images = browser.wait_for_text("#view", "No images").await;
    assert!(!images.contains(&component), "{images}");
    browser.screenshot("limited").await;

    // At a phone's width nothing runs off the side of the page.
    browser.client.set_window_size(390, 844).await.unwrap();
    browser.go(&format!("{home}#/components")).await;
    browser.wait_for_text("#view", &library).await;
    let overflow = browser.script("return document.documentElement.scrollWidth - window.innerWidth").await;
    assert!(overflow.as_i64().unwrap() <= 0, "the page is wider than the phone by {overflow}px");
    browser.screenshot("phone").await;
}
