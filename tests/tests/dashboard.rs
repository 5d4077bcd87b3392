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

// ---- issue 29: the rough edges a new user found ----------------------------------------------------------

/// Whether the first element matching `css` is shown (false when there is none).
async fn shown(browser: &Browser, css: &str) -> bool {
    match browser.client.find(Locator::Css(css)).await {
        Ok(element) => element.is_displayed().await.unwrap_or(false),
        Err(_) => false,
    }
}

/// A TestApp with a registry of its own, for tests that build images.
async fn app_with_registry() -> (TestApp, Registry) {
    require_docker().await;
    let registry = Registry::start().await;
    let address = registry.address.clone();
    let app = TestApp::spawn_with(|settings| settings.registry.address = address).await;
    (app, registry)
}

#[tokio::test]
async fn the_favicon_is_an_image() {
    let app = TestApp::spawn().await;
    let answer = app.get("/favicon.ico").await;
    assert_eq!(answer.status(), 200, "GET /favicon.ico");
    let kind = answer.headers()[reqwest::header::CONTENT_TYPE].to_str().unwrap().to_owned();
    assert!(kind.starts_with("image/"), "the favicon's content type: {kind}");
    assert!(!answer.bytes().await.unwrap().is_empty());
    let page = app.get("/").await.text().await.unwrap();
    assert!(page.contains("rel=\"icon\""), "the page names its icon: {page}");
}

#[tokio::test]
async fn nothing_of_the_signed_in_view_shows_before_sign_in() {
    let app = TestApp::spawn().await;
    let browser = Browser::start().await;
    let home = app.url("/");
    browser.go(&home).await;
    browser.wait_for("#key").await;
    assert!(!shown(&browser, "#nav").await, "the navigation shows while signed out");
    assert!(!shown(&browser, "#sign-out").await, "Sign out shows while signed out");
    assert!(!shown(&browser, "#nav a[href='#/builds']").await, "Builds link shows while signed out");
    browser.sign_in(&home, ADMIN_KEY).await;
    assert!(shown(&browser, "#nav").await && shown(&browser, "#sign-out").await, "signed in: navigation and sign out");
    browser.sign_out().await;
    assert!(!shown(&browser, "#nav").await && !shown(&browser, "#sign-out").await, "signed out again");
    assert!(!shown(&browser, "#view").await, "the signed-in view is gone");
    browser.screenshot("signed-out").await;
}

#[tokio::test]
async fn a_new_key_is_listed_even_when_the_first_reread_is_refused_with_503() {
    let app = TestApp::spawn().await;
    let browser = Browser::start().await;
    let home = app.url("/");
    browser.sign_in(&home, ADMIN_KEY).await;
    browser.go(&format!("{home}#/keys")).await;
    browser.wait_for("#key-name").await;
    // As the gateway answered while a key change paused JetStream: the first reading of the keys after a
    // creation is refused with a 503.
    browser
        .script(
            "const original = window.fetch;
             let armed = false;
             window.fetch = function (url, options) {
               const method = (options && options.method) || 'GET';
               if (String(url).endsWith('/api/v1/keys') && method === 'POST') armed = true;
               else if (armed && String(url).endsWith('/api/v1/keys') && method === 'GET') {
                 armed = false;
                 return Promise.resolve(new Response(JSON.stringify({status: 'error', errorMessage:
                   'watch failed: requested JetStream resource does not exist'}),
                   {status: 503, headers: {'Content-Type': 'application/json'}}));
               }
               return original.apply(this, arguments);
             };",
        )
        .await;
    browser.wait_for("#key-name").await.send_keys("made-after-a-503").await.unwrap();
    browser.client.find(Locator::Css(".key-form button")).await.unwrap().click().await.unwrap();
    browser.wait_for_text("#new-secret", "ak").await;
    browser.wait_for_text("#view table", "made-after-a-503").await;
    let view = browser.wait_for_text("#view", "made-after-a-503").await;
    assert!(!view.contains("JetStream"), "the list is not replaced by the error: {view}");
}

#[tokio::test]
async fn build_ids_are_shown_by_the_part_that_differs() {
    use artifacts_schemas::{BuildKind, BuildStatus};
    let app = TestApp::spawn().await;
    let component = unique_name("ids");
    let first = app.store_build(BuildKind::Image, BuildStatus::Succeeded, &component).await;
    let second = app.store_build(BuildKind::Image, BuildStatus::Failed, &component).await;
    let browser = Browser::start().await;
    let home = app.url("/");
    browser.sign_in(&home, ADMIN_KEY).await;
    let mut shown_ids = Vec::new();
    for id in [first.as_str(), second.as_str()] {
        let link = browser.wait_for(&format!("tr[data-build=\"{id}\"] a")).await;
        let text = link.text().await.unwrap();
        assert!(text.starts_with('…') && id.ends_with(text.trim_start_matches('…')), "{id} shown as {text:?}");
        assert_eq!(link.attr("title").await.unwrap().as_deref(), Some(id), "the full id in the tooltip");
        assert!(link.attr("href").await.unwrap().unwrap().ends_with(&format!("#/builds/{id}")));
        shown_ids.push(text);
    }
    assert_ne!(shown_ids[0], shown_ids[1], "two builds look alike");
    browser.go(&format!("{home}#/builds/{first}")).await;
    let title = browser.wait_for_text("#view h1", "Build").await;
    assert!(title.contains(&shown_ids[0]), "the build page's title: {title}");
}

#[tokio::test]
async fn at_390_pixels_the_pages_fit_and_show_status_and_download() {
    use artifacts_schemas::{BuildKind, BuildStatus};
    let app = TestApp::spawn().await;
    let component = unique_name("phone-component-with-a-long-name");
    app.store_build(BuildKind::Image, BuildStatus::Succeeded, &component).await;
    let build = app.store_build(BuildKind::Component, BuildStatus::Failed, &component).await;
    app.store_archive(&component, "v1.0.0-with-a-long-tag", b"bytes").await;
    app.create_key(
        json!({"name": "a-key-with-a-long-name-for-a-phone", "scopes": ["read"], "components": [component]}),
    )
    .await;
    let browser = Browser::start().await;
    let home = app.url("/");
    browser.sign_in(&home, ADMIN_KEY).await;
    browser.client.set_window_size(390, 844).await.unwrap();
    let width = browser.script("return window.innerWidth").await.as_i64().unwrap();
    assert!(width <= 390, "the window is {width}px wide");
    let fits = "const overflowing = [...document.querySelectorAll('#view *')]
                  .filter((e) => e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== 'visible'
                    && e.tagName !== 'PRE' && e.clientWidth > 1)
                  .map((e) => e.tagName + '.' + e.className);
                return [document.documentElement.scrollWidth, overflowing];";
    let inside = |css: &str| {
        format!(
            "const e = document.querySelector({css:?}); const r = e.getBoundingClientRect();
             return e.checkVisibility() && r.width > 0 && r.left >= 0 && r.right <= window.innerWidth;"
        )
    };
    let build_page = format!("#/builds/{build}");
    for (name, hash, wanted, visible) in [
        ("builds", "#/builds", component.as_str(), "tbody .status"),
        ("components", "#/components", component.as_str(), "tbody button"),
        ("keys", "#/keys", "Revoke", "tbody button"),
        ("build", build_page.as_str(), "Status", ".status"),
        ("new", "#/new", "Dockerfile", "#image-form button"),
    ] {
        browser.go(&format!("{home}{hash}")).await;
        browser.wait_for_text("#view", wanted).await;
        browser.wait_for(visible).await;
        let answer = browser.script(fits).await;
        assert!(answer[0].as_i64().unwrap() <= 390, "{name}: the page is {}px wide", answer[0]);
        assert_eq!(answer[1], json!([]), "{name}: these scroll sideways");
        assert_eq!(browser.script(&inside(visible)).await, json!(true), "{name}: {visible} is not in sight");
        browser.screenshot(&format!("phone-{name}")).await;
    }
}

#[tokio::test]
async fn a_failed_build_shows_its_reason_and_a_link_to_the_failing_log_line() {
    let (app, _registry) = app_with_registry().await;
    let component = unique_name("fails");
    let build_id = submit_image(&app, &component, "FROM busybox\nRUN echo about-to-fail && exit 3\n").await;
    let record = app.wait_for_build(&build_id).await;
    assert_eq!(record["status"], "failed", "{record}");
    let browser = Browser::start().await;
    let home = app.url("/");
    browser.sign_in(&home, ADMIN_KEY).await;
    browser.go(&format!("{home}#/builds/{build_id}")).await;
    let reason = browser.wait_for_text(".failure", "failed").await;
    assert!(!reason.contains("last log lines"), "the reason repeats the log: {reason}");
    assert!(reason.lines().count() <= 3, "the reason is a paragraph: {reason}");
    browser.wait_for_text("pre.log", "about-to-fail").await;
    browser.wait_for_text("#view", "The build failed.").await;
    let link = browser.wait_for(".failure a").await;
    link.click().await.unwrap();
    let line = browser.wait_for(".log .failing").await;
    let text = line.text().await.unwrap();
    assert!(text.contains("ERROR") && text.contains("exit code: 3"), "the failing line: {text}");
    let focused = browser.script("return document.activeElement.classList.contains('failing')").await;
    assert_eq!(focused, json!(true), "the link goes to the failing line");
    browser.screenshot("failed").await;
}

#[tokio::test]
async fn builds_start_and_repeat_from_the_page() {
    let (app, _registry) = app_with_registry().await;
    let browser = Browser::start().await;
    let home = app.url("/");
    browser.sign_in(&home, ADMIN_KEY).await;
    browser.go(&format!("{home}#/new")).await;
    let component = unique_name("from-page");
    browser.wait_for("#image-component").await.send_keys(&component).await.unwrap();
    let dockerfile = browser.wait_for("#image-dockerfile").await;
    dockerfile.clear().await.unwrap();
    dockerfile.send_keys("FROM busybox\nRUN echo hi\n").await.unwrap();
    // The component form is there too.
    for field in ["#component-url", "#component-component", "#component-tag", "#component-architecture"] {
        browser.wait_for(field).await;
    }
    browser.client.find(Locator::Css("#image-form button[type=submit]")).await.unwrap().click().await.unwrap();
    // The page goes to the new build, which succeeds; it is in the list of builds.
    browser.wait_for_text("dl.record", &component).await;
    browser.wait_for_text(".live", "succeeded").await;
    let first =
        browser.client.current_url().await.unwrap().fragment().unwrap().trim_start_matches("/builds/").to_owned();
    // The page checks the provenance itself (WebCrypto Ed25519 over DSSE's PAE).
    browser.wait_for_text("#provenance-status", "verifies").await;
    browser.go(&format!("{home}#/builds")).await;
    browser.wait_for_text(&format!("tr[data-build=\"{first}\"] .status"), "succeeded").await;
    let row = browser.wait_for_text(&format!("tr[data-build=\"{first}\"]"), &component).await;
    assert!(row.contains("main") && row.contains("amd64"), "{row}");

    // Rebuild: the same request again, forced, as a new build.
    browser.go(&format!("{home}#/builds/{first}")).await;
    browser.wait_for_text(".live", "succeeded").await;
    let second = rebuild(&browser, &first).await;
    let record = app.wait_for_build(&second).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    assert_eq!(record["request"]["component"], json!(component));
    browser.screenshot("rebuilt").await;
}

#[tokio::test]
async fn a_component_builds_and_rebuilds_from_the_page() {
    require_docker().await;
    let app = TestApp::spawn_with(artifacts_tests::allow_local_repositories).await;
    let repo = artifacts_tests::GitRepo::new().await;
    repo.commit_and_tag(
        &[("artifact.toml", &artifacts_tests::manifest("echo from-the-page > /out/page.txt", &[]), false)],
        "v1.0.0",
    )
    .await;
    let component = unique_name("page-lib");
    let browser = Browser::start().await;
    let home = app.url("/");
    browser.sign_in(&home, ADMIN_KEY).await;
    browser.client.find(Locator::Css("#nav-new a")).await.unwrap().click().await.unwrap();
    browser.wait_for("#component-url").await.send_keys(&repo.url()).await.unwrap();
    browser.wait_for("#component-component").await.send_keys(&component).await.unwrap();
    browser.wait_for("#component-tag").await.send_keys("v1.0.0").await.unwrap();
    browser.client.find(Locator::Css("#component-form button[type=submit]")).await.unwrap().click().await.unwrap();
    browser.wait_for_text("dl.record", &component).await;
    browser.wait_for_text(".live", "succeeded").await;
    let first =
        browser.client.current_url().await.unwrap().fragment().unwrap().trim_start_matches("/builds/").to_owned();
    // The page checks the provenance itself (WebCrypto Ed25519 over DSSE's PAE) and shows the commit.
    browser.wait_for_text("#provenance-status", "verifies").await;
    let commit = app.wait_for_build(&first).await["result"]["commit"].as_str().unwrap().to_owned();
    browser.wait_for_text(".provenance", &commit).await;

    // Rebuild submits the record's request again, forced: a new build of the same commit.
    let second = rebuild(&browser, &first).await;
    let (before, after) = (app.wait_for_build(&first).await, app.wait_for_build(&second).await);
    assert_eq!(after["status"], "succeeded", "{after}");
    assert_eq!(after["request"]["commit"], before["request"]["commit"]);
    assert_eq!(after["request"]["tag"], "v1.0.0");
}

/// Clicks Rebuild on build `first`'s page and answers the id of the new build the page goes to.
async fn rebuild(browser: &Browser, first: &str) -> String {
    browser.click_fresh("#rebuild").await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let fragment = browser.client.current_url().await.unwrap().fragment().unwrap_or("").to_owned();
        let id = fragment.trim_start_matches("/builds/").to_owned();
        if fragment.starts_with("/builds/") && id != first {
            return id;
        }
        assert!(tokio::time::Instant::now() < deadline, "Rebuild did not go to a new build");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
