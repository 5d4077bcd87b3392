//! `artifacts keys create|list|revoke`: API key management through the gateway's `/api/v1/keys`, with
//! the saved login as every other command (an admin key's), tables for people and JSON with `--json`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::anyhow;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use artifacts_runtime::Settings;

use crate::client::{env, environment_login, normalize_url, table, text, Client};

#[derive(Debug, Args)]
pub struct KeysArgs {
    /// The gateway, e.g. http://build-host:8080 (its API base `.../api/v1` also works; default:
    /// ARTIFACTS_URL, else the one `artifacts login` saved, else http://<gateway.listen>).
    #[arg(long, global = true)]
    url: Option<String>,
    /// An admin key (default: ARTIFACTS_ADMIN_KEY, else ARTIFACTS_KEY or the key `artifacts login` saved,
    /// else the one `artifacts up` saved in --data-dir).
    #[arg(long, global = true, env = "ARTIFACTS_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    /// Where `artifacts up` keeps its data (its admin key is the last resort).
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
    #[command(visible_alias = "ls")]
    List,
    /// Revoke a key by id.
    Revoke { key_id: String },
}

/// The gateway and the key for `keys`: the flags, else the environment and saved login as for every
/// command, else this machine's stack (`gateway.listen` and the admin key `artifacts up` saved).
fn client(config: Option<PathBuf>, args: &KeysArgs, json: bool) -> anyhow::Result<Client> {
    let (login_url, login_key) = environment_login();
    let url = match (&args.url, &login_url) {
        (Some(url), _) => normalize_url(url),
        (None, Some(url)) => url.clone(),
        (None, None) => normalize_url(&Settings::load(config.as_deref())?.gateway.listen.to_string()),
    };
    // The login's key goes only to the gateway it was saved (or set) for.
    let login_key = login_key.filter(|_| login_url.as_deref() == Some(url.as_str()) || env("ARTIFACTS_KEY").is_some());
    let data_dir_key =
        || std::fs::read_to_string(args.data_dir.join("admin-key")).ok().map(|key| key.trim().to_owned());
    let key = args.admin_key.clone().or(login_key).or_else(data_dir_key).ok_or_else(|| {
        anyhow!(
            "no key for {url}: run `artifacts login {url}` with an admin key, pass --admin-key, or set ARTIFACTS_ADMIN_KEY"
        )
    })?;
    Client::new(&url, key, json)
}

pub async fn run(config: Option<PathBuf>, args: KeysArgs, json: bool) -> anyhow::Result<ExitCode> {
    let client = client(config, &args, json)?;
    match args.command {
        KeysCommand::Create { name, scopes, components, expires_at, linux_username, github_username } => {
            let body = json!({
                "name": name,
                "scopes": scopes,
                "components": (!components.is_empty()).then_some(components),
                "expiresAt": expires_at,
                "linuxUsername": linux_username,
                "githubUsername": github_username,
            });
            let created = client.send(client.post("/keys").json(&body), "the key").await?;
            client.print(&created, |created| {
                eprintln!(
                    "created key {} ({}, {}); its secret, shown this once:",
                    text(&created["keyId"]),
                    text(&created["key"]["name"]),
                    scopes_text(&created["key"])
                );
                println!("{}", text(&created["secret"]));
            });
        }
        KeysCommand::List => {
            let listed = client.send(client.get("/keys"), "the keys").await?;
            client.print(&listed, |listed| {
                let rows = listed["keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|key| {
                        let optional =
                            |field: &str| if key[field].is_null() { "-".to_owned() } else { text(&key[field]) };
                        vec![
                            text(&key["keyId"]),
                            text(&key["name"]),
                            scopes_text(key),
                            components_text(key),
                            if key["expiresAt"].is_null() { "never".into() } else { text(&key["expiresAt"]) },
                            optional("linuxUsername"),
                            optional("githubUsername"),
                            text(&key["createdAt"]),
                        ]
                    })
                    .collect();
                table(&["key", "name", "scopes", "components", "expires", "linux", "github", "created"], rows);
            });
        }
        KeysCommand::Revoke { key_id } => {
            let revoked = client
                .send(client.request(reqwest::Method::DELETE, &format!("/keys/{key_id}")), &format!("key {key_id}"))
                .await?;
            client.print(&revoked, |revoked| println!("revoked key {}", text(&revoked["keyId"])));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn scopes_text(key: &Value) -> String {
    key["scopes"].as_array().map_or_else(|| "-".into(), |s| s.iter().map(text).collect::<Vec<_>>().join(","))
}

fn components_text(key: &Value) -> String {
    key["components"].as_array().map_or_else(|| "*".into(), |c| c.iter().map(text).collect::<Vec<_>>().join(","))
}
