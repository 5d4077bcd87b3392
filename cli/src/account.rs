//! `artifacts login [URL]` and `artifacts whoami`.

use std::io::{BufRead as _, IsTerminal as _};
use std::process::ExitCode;

use crate::client::{normalize_url, save_login, text, Client, Login};
use anyhow::anyhow;

/// Checks the key against the gateway at `url` and saves both for the other commands. The key comes
/// from `--key`, else `ARTIFACTS_KEY`, else one line on standard input (so it stays out of the shell's
/// history and the process list).
pub async fn login(url: Option<String>, key: Option<String>, json: bool) -> anyhow::Result<ExitCode> {
    let url = normalize_url(&url.unwrap_or_else(|| "http://127.0.0.1:8080".into()));
    let key = match key.or_else(|| std::env::var("ARTIFACTS_KEY").ok().filter(|k| !k.is_empty())) {
        Some(key) => key,
        None => {
            if std::io::stdin().is_terminal() {
                eprint!("API key for {url}: ");
            }
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line.trim().to_owned()
        }
    };
    if key.is_empty() {
        return Err(anyhow!("no key given: pass --key, set ARTIFACTS_KEY, or type it when asked"));
    }
    let client = Client::new(&url, key.clone(), json)?;
    let me = client.send(client.get("/whoami"), "the key").await?;
    let file = save_login(&Login { url: url.clone(), key })?;
    client.print(&me, |me| {
        println!(
            "logged in to {url} as key {} ({}); saved in {}",
            text(&me["keyId"]),
            text(&me["scope"]),
            file.display()
        )
    });
    Ok(ExitCode::SUCCESS)
}

pub async fn whoami(client: &Client) -> anyhow::Result<ExitCode> {
    let me = client.send(client.get("/whoami"), "the key").await?;
    client.print(&me, |me| {
        let key = &me["key"];
        let patterns = match key["components"].as_array() {
            Some(patterns) => patterns.iter().map(text).collect::<Vec<_>>().join(", "),
            None => "every component".into(),
        };
        let identity = |field: &str| if key[field].is_null() { "any".to_owned() } else { text(&key[field]) };
        let rows = vec![
            vec!["gateway".into(), client.url.clone()],
            vec!["key id".into(), text(&me["keyId"])],
            vec!["name".into(), if key.is_null() { "the bootstrap admin key".into() } else { text(&key["name"]) }],
            vec!["scope".into(), text(&me["scope"])],
            vec!["components".into(), patterns],
            vec!["expires".into(), if key["expiresAt"].is_null() { "never".into() } else { text(&key["expiresAt"]) }],
            vec!["linux_username".into(), identity("linuxUsername")],
            vec!["github_username".into(), identity("githubUsername")],
        ];
        for row in rows {
            println!("{:<16}{}", row[0], row[1]);
        }
    });
    Ok(ExitCode::SUCCESS)
}
