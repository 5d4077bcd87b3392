//! `artifacts registry login`: gives the Docker engine the logged-in key for the stack's registry, as
//! `gcloud auth configure-docker` does, so `docker pull <registry>/<image>` works with no more steps. The
//! registry's address comes from the gateway (`GET /api/v1/info`); the registry sends Docker to the
//! gateway for tokens, where the key (the password; any user name) is checked.

use std::path::PathBuf;
use std::process::{ExitCode, Stdio};

use anyhow::{anyhow, Context as _};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt as _;

use crate::client::Client;

/// The user name given to `docker login` (the registry's token endpoint checks only the key).
const USER: &str = "artifacts";

#[derive(Debug, Args)]
pub struct RegistryArgs {
    #[command(subcommand)]
    command: RegistryCommand,
}

#[derive(Debug, Subcommand)]
enum RegistryCommand {
    /// Save the key in the Docker engine's credentials for the stack's registry (`docker login`), so
    /// `docker pull` of its images works.
    Login {
        /// The registry's host:port (default: the one the gateway names).
        #[arg(long)]
        registry: Option<String>,
        /// Write DOCKER_CONFIG/config.json (default ~/.docker/config.json) directly instead of running
        /// `docker login` (done anyway when there is no docker command).
        #[arg(long)]
        write_config: bool,
    },
}

pub async fn run(client: &Client, args: RegistryArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        RegistryCommand::Login { registry, write_config } => login(client, registry, write_config).await,
    }
}

async fn login(client: &Client, registry: Option<String>, write_config: bool) -> anyhow::Result<ExitCode> {
    let info = client.send(client.get("/info"), "the gateway's registry").await?;
    let registry = match registry {
        Some(registry) => registry,
        None => info["registry"]["address"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("the gateway names no registry: pass --registry HOST:PORT"))?,
    };
    let guarded = info["registry"]["tokenAuthentication"].as_bool().unwrap_or(false);
    let docker = !write_config && which("docker").is_some();
    let method = if docker {
        docker_login(client, &registry).await?;
        "docker login"
    } else {
        let file = write_docker_config(&registry, client.key())?;
        eprintln!("no docker command: wrote the credentials to {}", file.display());
        "config.json"
    };
    let report = json!({"status": "ok", "registry": registry, "tokenAuthentication": guarded, "method": method});
    client.print(&report, |_| {
        println!("the Docker engine now logs in to {registry} with the key of {}", client.url);
        if !guarded {
            println!("(this registry takes no key: it is open to whoever reaches it)");
        }
        println!("`artifacts image get COMPONENT --branch BRANCH` prints an image's pull command");
    });
    Ok(ExitCode::SUCCESS)
}

/// `docker login <registry> -u artifacts --password-stdin`, the key on its standard input (never in
/// the process list).
async fn docker_login(client: &Client, registry: &str) -> anyhow::Result<()> {
    let mut child = tokio::process::Command::new("docker")
        .args(["login", registry, "--username", USER, "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run docker")?;
    let mut input = child.stdin.take().expect("piped");
    input.write_all(client.key().as_bytes()).await?;
    drop(input);
    let output = child.wait_with_output().await?;
    if !output.status.success() {
        let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        return Err(anyhow!("docker login {registry} failed: {}", said.trim()));
    }
    Ok(())
}

/// Adds `registry`'s credentials to Docker's configuration file (`$DOCKER_CONFIG/config.json`, else
/// `~/.docker/config.json`), keeping what else it holds; only its owner may read it.
fn write_docker_config(registry: &str, key: &str) -> anyhow::Result<PathBuf> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = match std::env::var_os("DOCKER_CONFIG").filter(|dir| !dir.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").ok_or_else(|| anyhow!("HOME is not set"))?).join(".docker"),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let file = dir.join("config.json");
    let mut config: Value = match std::fs::read_to_string(&file) {
        Ok(text) => serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?,
        Err(_) => json!({}),
    };
    if !config.is_object() {
        return Err(anyhow!("{} is not a JSON object", file.display()));
    }
    let auth = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{key}"))
    };
    config["auths"][registry] = json!({"auth": auth});
    let temporary = dir.join(".config.json.artifacts");
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    out.write_all(serde_json::to_string_pretty(&config)?.as_bytes())?;
    drop(out);
    std::fs::rename(&temporary, &file).with_context(|| format!("cannot write {}", file.display()))?;
    Ok(file)
}

/// The first `name` on `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file()))
}
