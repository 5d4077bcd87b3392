//! Benchmark: the dashboard's builds page with 100,000 build records, in headless Chromium: the first
//! contentful paint, the time until its first 50 rows show, and each "Older" page, against the raw
//! `GET /api/v1/builds?limit=50` the page makes, timed with an HTTP client in the same run. One
//! nats-server, the gateway and functions in this process. Prints Markdown rows for BENCHMARKS.md.
//!
//!     cargo run --release -p artifacts-tests --bin bench-dashboard [-- RECORDS]

use std::time::{Duration, Instant};

use fantoccini::Locator;

use artifacts_schemas::{BuildKind, BuildStatus};
use artifacts_tests::browser::Browser;
use artifacts_tests::{TestApp, ADMIN_KEY};

const SAMPLES: usize = 20;

fn p50(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() {
    let records: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let app = TestApp::spawn_with(|settings| settings.gateway.rate_limit_per_minute = 0).await;
    let filling = Instant::now();
    for n in 0..records {
        app.store_build(BuildKind::Image, BuildStatus::Succeeded, &format!("team-{}", n % 100)).await;
    }
    eprintln!("stored {records} build records ({:.1}s)", filling.elapsed().as_secs_f64());

    let mut raw = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let started = Instant::now();
        let list: serde_json::Value = app.get("/api/v1/builds?limit=50").await.json().await.expect("a list");
        assert_eq!(list["builds"].as_array().map(Vec::len), Some(50));
        raw.push(started.elapsed());
    }
    let raw = p50(raw);

    let browser = Browser::start().await;
    let home = app.url("/");
    browser.sign_in(&home, ADMIN_KEY).await;
    let (mut paints, mut rows, mut older) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..SAMPLES {
        // A fresh load of the page (the key stays in the tab), timed by the browser itself.
        browser.client.refresh().await.expect("a reload");
        browser.wait_for("#view tbody tr:nth-child(50)").await;
        let timings = browser
            .script(
                "return [performance.getEntriesByName('first-contentful-paint')[0].startTime,
                         performance.now()]",
            )
            .await;
        paints.push(Duration::from_secs_f64(timings[0].as_f64().expect("a paint time") / 1e3));
        rows.push(Duration::from_secs_f64(timings[1].as_f64().expect("a time") / 1e3));
        // Read in the page, in one step: the rows are replaced while they are polled.
        let first_row = "return document.querySelector('#view tbody tr:first-child td:first-child')?.textContent";
        let first = browser.script(first_row).await;
        let started = Instant::now();
        browser
            .client
            .find(Locator::XPath("//div[@class='pager']/button[text()='Older']"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        while browser.script(first_row).await == first {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        older.push(started.elapsed());
    }
    let pages = browser.script("return document.querySelectorAll('#view tbody tr').length").await;
    let (paint, rows, older) = (p50(paints), p50(rows), p50(older));
    println!("| {records} build records | p50 ms | vs raw GET /builds?limit=50 ({:.2} ms) |", ms(raw));
    println!("|---|---|---|");
    println!("| first contentful paint | {:.1} | {:.1}x |", ms(paint), ms(paint) / ms(raw));
    println!("| 50 rows shown (from navigation start) | {:.1} | {:.1}x |", ms(rows), ms(rows) / ms(raw));
    println!("| next (older) page shown | {:.1} | {:.1}x |", ms(older), ms(older) / ms(raw));
    println!("\nrows in the page after paging: {pages} (never more than one page is loaded)");
}
