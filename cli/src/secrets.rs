//! `artifacts secret set|ls|rm`: build secrets through the gateway's `/api/v1/secrets` (admin keys). The
//! value of `set` is read from standard input, never from the command line (which the process list and
//! shell history show); one trailing line break is dropped, as `echo` and editors add one.

use std::io::{IsTerminal, Read};
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::json;

use crate::client::{table, text, Client};

pub async fn set(client: &Client, name: &str, components: Vec<String>) -> anyhow::Result<ExitCode> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("type the value of secret {name}, then Ctrl-D (it is not shown back)");
    }
    let mut bytes = Vec::new();
    stdin.lock().read_to_end(&mut bytes).context("cannot read the value from standard input")?;
    let mut value = String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("the value must be UTF-8 text"))?;
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    if value.is_empty() {
        anyhow::bail!("the value is empty: pipe it in, e.g. `artifacts secret set {name} --component app < token.txt`");
    }
    let body = json!({"name": name, "value": value, "components": components});
    let answer = client.send(client.post("/secrets").json(&body), &format!("secret {name}")).await?;
    client.print(&answer, |answer| {
        println!(
            "secret {} {} for components {}",
            text(&answer["name"]),
            text(&answer["status"]),
            answer["components"]
                .as_array()
                .map(|c| c.iter().map(text).collect::<Vec<_>>().join(", "))
                .unwrap_or_default()
        );
    });
    Ok(ExitCode::SUCCESS)
}

pub async fn list(client: &Client) -> anyhow::Result<ExitCode> {
    let answer = client.send(client.get("/secrets"), "the secrets").await?;
    client.print(&answer, |answer| {
        let rows = answer["secrets"]
            .as_array()
            .map(|secrets| {
                secrets
                    .iter()
                    .map(|secret| {
                        let patterns = secret["components"].as_array().map(|c| c.iter().map(text).collect::<Vec<_>>());
                        vec![text(&secret["name"]), patterns.unwrap_or_default().join(","), text(&secret["updatedAt"])]
                    })
                    .collect()
            })
            .unwrap_or_default();
        table(&["name", "components", "updated"], rows);
    });
    Ok(ExitCode::SUCCESS)
}

pub async fn remove(client: &Client, name: &str) -> anyhow::Result<ExitCode> {
    let answer = client
        .send(client.request(reqwest::Method::DELETE, &format!("/secrets/{name}")), &format!("secret {name}"))
        .await?;
    client.print(&answer, |_| println!("secret {name} deleted"));
    Ok(ExitCode::SUCCESS)
}
