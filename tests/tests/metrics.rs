//! Metrics labels stay bounded whatever clients send. Alone in its test binary: the metrics recorder is
//! one per process, and other tests' requests would add series while this one counts them.

use artifacts_tests::TestApp;

#[tokio::test]
async fn made_up_methods_and_paths_add_no_metric_series() {
    let app = TestApp::spawn().await;
    let series = |text: &str| text.lines().filter(|line| !line.starts_with('#')).count();
    let request = |method: String, path: &str| {
        app.http.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), app.url(path)).send()
    };
    // Once each, so every folded value has its series before counting.
    request("MADEUP".into(), "/made-up").await.unwrap();
    request("GET".into(), "/made-up").await.unwrap();
    app.http.get(app.url("/metrics")).send().await.unwrap();
    let before = series(&app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap());
    for i in 0..5_000 {
        request(format!("M{i}"), &format!("/made-up/{i}")).await.unwrap();
    }
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(series(&metrics), before, "{metrics}");
    assert!(metrics.contains(r#"method="other""#), "{metrics}");
    assert!(metrics.contains(r#"route="unmatched""#), "{metrics}");
    assert!(metrics.contains("artifacts_http_request_duration_seconds_bucket"), "{metrics}");
}
