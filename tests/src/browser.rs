//! Headless Chromium through chromedriver (Debian's `chromium` and `chromium-driver`), for the dashboard's
//! test and benchmark.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use tokio::process::{Child, Command};

use crate::{free_port, repo_root, require_program};

/// How long the page may take to show what it is waited for.
const PATIENCE: Duration = Duration::from_secs(60);

/// chromedriver on a free port, and a headless Chromium session through it.
pub struct Browser {
    pub client: Client,
    _driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start() -> Self {
        let chromium = require_program("chromium", "chromium");
        let chromedriver = require_program("chromedriver", "chromium-driver");
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().expect("a profile directory");
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,900", format!("--user-data-dir={}", profile.path().display()),
                ],
            }
        });
        let capabilities = capabilities.as_object().expect("an object").clone();
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let webdriver = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            let mut builder = ClientBuilder::new(connector.clone());
            if let Ok(client) = builder.capabilities(capabilities.clone()).connect(&webdriver).await {
                return Self { client, _driver: driver, _profile: profile };
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("chromedriver did not start a Chromium session");
    }

    /// The first element matching `css` once it exists.
    /// Clicks `css` once it is there, finding it again when the page re-rendered it in between (live
    /// pages replace their elements as records change).
    pub async fn click_fresh(&self, css: &str) {
        for _ in 0..20 {
            match self.wait_for(css).await.click().await {
                Ok(()) => return,
                Err(fantoccini::error::CmdError::Standard(err))
                    if err.error == fantoccini::error::ErrorStatus::StaleElementReference =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(err) => panic!("cannot click {css}: {err}"),
            }
        }
        panic!("{css} kept being replaced before it could be clicked");
    }

    pub async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|err| panic!("the page never showed {css}: {err}"))
    }

    /// Waits until the text of the first element matching `css` contains `wanted`; answers that text.
    pub async fn wait_for_text(&self, css: &str, wanted: &str) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut last = String::new();
        while tokio::time::Instant::now() < deadline {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                if let Ok(text) = element.text().await {
                    if text.contains(wanted) {
                        return text;
                    }
                    last = text;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{css} never said {wanted:?}; it said {last:?}");
    }

    pub async fn texts(&self, css: &str) -> Vec<String> {
        let mut texts = Vec::new();
        for element in self.client.find_all(Locator::Css(css)).await.expect("a query") {
            texts.push(element.text().await.expect("its text"));
        }
        texts
    }

    pub async fn sign_in(&self, url: &str, key: &str) {
        self.client.goto(url).await.expect("the dashboard loads");
        let field = self.wait_for("#key").await;
        field.send_keys(key).await.expect("typing");
        self.client.find(Locator::Css("#sign-in-form button")).await.unwrap().click().await.unwrap();
        self.wait_for_text("#view h1", "Builds").await;
    }

    pub async fn sign_out(&self) {
        self.client.find(Locator::Css("#sign-out")).await.unwrap().click().await.unwrap();
        self.wait_for("#key").await;
    }

    pub async fn go(&self, url: &str) {
        self.client.goto(url).await.expect("navigation");
    }

    pub async fn screenshot(&self, name: &str) {
        let dir = screenshots();
        std::fs::create_dir_all(&dir).expect("the screenshot directory");
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::write(dir.join(format!("dashboard-{name}.png")), png).expect("saved");
    }

    pub async fn script(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.expect("the script runs")
    }
}

pub fn screenshots() -> PathBuf {
    repo_root().join("target/screenshots")
}
