//! The gateway as the everyday commands reach it: its URL and the key to send, from `ARTIFACTS_URL` and
//! `ARTIFACTS_KEY`, else from what `artifacts login` saved (a file only its owner may read), and
//! answers turned into errors that say what to do.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What `login` saves.
#[derive(Clone, Serialize, Deserialize)]
pub struct Login {
    pub url: String,
    pub key: String,
}

/// The key is a secret: `Debug` shows the URL only.
impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login").field("url", &self.url).field("key", &"[redacted]").finish()
    }
}

/// Where `login` keeps the URL and key: `$XDG_CONFIG_HOME/artifacts/login.json`, else
/// `~/.config/artifacts/login.json`.
pub fn login_file() -> anyhow::Result<PathBuf> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))
        .ok_or_else(|| {
            anyhow!("neither XDG_CONFIG_HOME nor HOME is set: set ARTIFACTS_URL and ARTIFACTS_KEY instead")
        })?;
    Ok(config.join("artifacts").join("login.json"))
}

/// Saves `login`, readable and writable by its owner only.
pub fn save_login(login: &Login) -> anyhow::Result<PathBuf> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    use std::os::unix::fs::PermissionsExt as _;
    let file = login_file()?;
    let dir = file.parent().expect("a file in a directory");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&file)
        .with_context(|| format!("cannot write {}", file.display()))?;
    // An older file keeps its mode on open: make sure.
    out.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    out.write_all(serde_json::to_string_pretty(login)?.as_bytes())?;
    Ok(file)
}

/// What `login` saved, if it did (and the file reads).
pub fn saved_login() -> Option<Login> {
    login_file()
        .ok()
        .and_then(|file| std::fs::read_to_string(file).ok())
        .and_then(|text| serde_json::from_str(&text).ok())
}

/// A variable of the environment, unless unset or empty.
pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

/// The gateway (normalized) and key the environment names: `ARTIFACTS_URL` and `ARTIFACTS_KEY`, each
/// else from the saved login. The saved key goes only with the saved URL: with `ARTIFACTS_URL` naming
/// another gateway, only `ARTIFACTS_KEY` is sent there.
pub fn environment_login() -> (Option<String>, Option<String>) {
    let saved = saved_login();
    let url = env("ARTIFACTS_URL").map(|url| normalize_url(&url));
    let saved_url = saved.as_ref().map(|login| normalize_url(&login.url));
    let key = env("ARTIFACTS_KEY").or_else(|| {
        let same_gateway = url.is_none() || url == saved_url;
        saved.filter(|_| same_gateway).map(|login| login.key)
    });
    (url.or(saved_url), key)
}

/// The gateway and key the commands use, with how they print.
pub struct Client {
    /// Where the gateway is, without a trailing `/` (e.g. `http://127.0.0.1:8080`).
    pub url: String,
    key: String,
    pub http: reqwest::Client,
    /// `--json`: print the gateway's JSON answers as they are.
    pub json: bool,
}

impl Client {
    /// From `ARTIFACTS_URL` / `ARTIFACTS_KEY`, each else from the saved login.
    pub fn from_environment(json: bool) -> anyhow::Result<Self> {
        let (url, key) = environment_login();
        let (Some(url), Some(key)) = (url, key) else {
            return Err(anyhow!(
                "not logged in: run `artifacts login http://<gateway>:8080` (or set ARTIFACTS_URL and ARTIFACTS_KEY)"
            ));
        };
        Self::new(&url, key, json)
    }

    pub fn new(url: &str, key: String, json: bool) -> anyhow::Result<Self> {
        let url = normalize_url(url);
        // No overall timeout: downloads and log streams last as long as they flow; connecting and
        // reading each have their own bound.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .build()?;
        Ok(Self { url, key, http, json })
    }

    /// The key sent (for `registry login`, which hands it to Docker).
    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn api(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.url)
    }

    /// A request with the key.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.authorize(self.http.request(method, self.api(path)))
    }

    pub fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request.bearer_auth(&self.key)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::GET, path)
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::POST, path)
    }

    /// Sends `request` and reads its JSON answer; a failure says what to do (`what`: what was asked
    /// for, for a 404).
    pub async fn send(&self, request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
        let response = request.send().await.map_err(|err| self.unreachable(err))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        Err(self.refusal(status.as_u16(), &body, what))
    }

    pub fn unreachable(&self, err: reqwest::Error) -> anyhow::Error {
        anyhow!("cannot reach the gateway at {}: {err} (is the stack up? is the URL right?)", self.url)
    }

    /// An answer's failure as advice.
    pub fn refusal(&self, status: u16, body: &Value, what: &str) -> anyhow::Error {
        let message = body["errorMessage"].as_str().unwrap_or("no reason given").to_owned();
        match status {
            401 => anyhow!(
                "the gateway refused the key ({message}): log in again with `artifacts login {}`, or set ARTIFACTS_KEY",
                self.url
            ),
            403 => anyhow!("{message}: this key may not do that (`artifacts whoami` shows its scope and patterns)"),
            404 => anyhow!("{what}: {message}"),
            _ => anyhow!("{what}: {message} (HTTP {status})"),
        }
    }

    /// Prints `value` as JSON (with `--json`) or with `human`.
    pub fn print(&self, value: &Value, human: impl FnOnce(&Value)) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value).expect("JSON prints"));
        } else {
            human(value);
        }
    }
}

/// `host:port` or a URL, as a URL without a trailing `/` or `/api/v1`.
pub fn normalize_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    let url = url.strip_suffix("/api/v1").unwrap_or(url);
    if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    }
}

/// A value of a JSON answer as text (`-` when absent or null).
pub fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Lists every item of a catalog (`/catalog/images` or `/catalog/components`), page after page: as a
/// table of `columns` (heading, field), or with `--json` as one answer holding them all.
pub async fn list_catalog(
    client: &Client,
    path: &str,
    component: Option<String>,
    columns: &[(&str, &str)],
) -> anyhow::Result<std::process::ExitCode> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![("limit", "500".to_owned())];
        query.extend(component.clone().map(|c| ("component", c)));
        query.extend(cursor.clone().map(|c| ("cursor", c)));
        let page = client.send(client.get(path).query(&query), "the catalog").await?;
        items.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    client.print(&serde_json::json!({"status": "ok", "items": items}), |_| {
        let headings: Vec<&str> = columns.iter().map(|(heading, _)| *heading).collect();
        let rows = items.iter().map(|item| columns.iter().map(|(_, field)| text(&item[*field])).collect()).collect();
        table(&headings, rows);
    });
    Ok(std::process::ExitCode::SUCCESS)
}

/// Prints rows as aligned columns under `headings`.
pub fn table(headings: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headings.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headings.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        line(row);
    }
}

/// A build status, coloured when stdout is a terminal (and `NO_COLOR` is not set).
pub fn status_text(status: &str) -> String {
    let colour = match status {
        "succeeded" => "32",
        "failed" | "cancelled" => "31",
        "running" => "33",
        _ => return status.to_owned(),
    };
    if std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
        format!("\u{1b}[{colour}m{status}\u{1b}[0m")
    } else {
        status.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalized() {
        assert_eq!(normalize_url("127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(normalize_url("http://h:1/api/v1/"), "http://h:1");
        assert_eq!(normalize_url("https://h"), "https://h");
    }

    #[test]
    fn a_login_never_shows_its_key() {
        let login = Login { url: "http://h".into(), key: "ak_secret".into() };
        assert!(!format!("{login:?}").contains("secret"));
    }
}
