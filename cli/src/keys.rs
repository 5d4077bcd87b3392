//! `artifacts keys create|list|revoke`: API key management through the gateway's `/api/v1/keys`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use artifacts_runtime::Settings;

#[derive(Debug, Args)]
pub struct KeysArgs {
    /// The gateway's API base (default: http://<gateway.listen>/api/v1).
    #[arg(long, global = true)]
    url: Option<String>,
    /// An admin key (default: ARTIFACTS_ADMIN_KEY, else the one `artifacts up` saved in --data-dir).
    #[arg(long, global = true, env = "ARTIFACTS_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    #[arg(long, global = true, default_value = "./.artifacts", value_name = "DIR")]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key; its secret is printed once.
    Create {
        #[arg(long)]
        name: String,
        /// read, build or admin (repeatable).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Limit the key to components matching this pattern (`*` wildcard; repeatable).
        #[arg(long = "component")]
        components: Vec<String>,
        /// RFC 3339 expiry, e.g. 2027-01-01T00:00:00Z.
        #[arg(long)]
        expires_at: Option<String>,
        /// The only linux_username the key may claim.
        #[arg(long)]
        linux_username: Option<String>,
        /// The only github_username the key may claim.
        #[arg(long)]
        github_username: Option<String>,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke a key by id.
    Revoke { key_id: String },
}

pub async fn run(config: Option<PathBuf>, args: KeysArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(config.as_deref())?;
    let base = args.url.unwrap_or_else(|| format!("http://{}/api/v1", settings.gateway.listen));
    let admin_key = match args.admin_key {
        Some(key) => key,
        None => std::fs::read_to_string(args.data_dir.join("admin-key"))
            .map(|k| k.trim().to_owned())
            .map_err(|_| anyhow::anyhow!("no admin key: pass --admin-key, set ARTIFACTS_ADMIN_KEY, or run from where `artifacts up` keeps .artifacts/"))?,
    };
    let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build()?;
    let request = match args.command {
        KeysCommand::Create { name, scopes, components, expires_at, linux_username, github_username } => {
            let body = json!({
                "name": name,
                "scopes": scopes,
                "components": (!components.is_empty()).then_some(components),
                "expiresAt": expires_at,
                "linuxUsername": linux_username,
                "githubUsername": github_username,
            });
            http.post(format!("{base}/keys")).json(&body)
        }
        KeysCommand::List => http.get(format!("{base}/keys")),
        KeysCommand::Revoke { key_id } => http.delete(format!("{base}/keys/{key_id}")),
    };
    let response = request
        .bearer_auth(admin_key)
        .send()
        .await
        .map_err(|err| anyhow::anyhow!("cannot reach the gateway at {base}: {err}"))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(if status.is_success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
