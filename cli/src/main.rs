//! `artifacts`: the command-line program of artifact storage.
//!
//! `artifacts up` runs the whole stack in the foreground (see [`up`]); `artifacts keys` manages API keys
//! through the gateway (see [`keys`]). The everyday client commands (`login`, `whoami`, `image`,
//! `component`, `builds`, `secret`, `gc`) talk to a gateway over its HTTP API ([`client`]), print tables for
//! people or the gateway's JSON with `--json`, and exit 0 on success, 1 when the build or request
//! failed (saying why), 2 on a usage error.

mod account;
mod builds;
mod client;
mod component;
mod image;
mod keys;
mod pipe;
mod progress;
mod registry;
mod secrets;
mod up;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "artifacts", version, about = "Self-hosted build and artifact service")]
struct Cli {
    /// A TOML configuration file (default: `ARTIFACTS_CONFIG`, else none).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the gateway's JSON answers instead of tables (for scripts).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start NATS, the registry, the gateway and every function, each as its own process, until Ctrl-C.
    Up {
        /// Where NATS, the registry and the admin key keep their data.
        #[arg(long, default_value = "./.artifacts", value_name = "DIR")]
        data_dir: PathBuf,
        /// Run a NATS cluster of this many nodes here (3 or 5) instead of one server, on the port of
        /// nats.url and the ones after it, every stream with 3 replicas: for trying a clustered stack on
        /// one machine.
        #[arg(long, value_name = "NODES", value_parser = clap::builder::PossibleValuesParser::new(["3", "5"]))]
        nats_cluster: Option<String>,
        /// Show every process's log here, each line prefixed by its name (they are always kept in
        /// <data dir>/logs/<process>.log; without this only warnings and errors are shown).
        #[arg(long, short)]
        verbose: bool,
        /// For trying things out: components may also be built from file:// repositories under the
        /// system's temporary directory and the data directory (adds `file` to git.allowed_schemes and
        /// both to git.file_roots, for every process).
        #[arg(long)]
        dev: bool,
    },
    /// Create, list and revoke API keys (needs an admin key).
    Keys(keys::KeysArgs),
    /// Check a key against a gateway and save both for the other commands (the key is read from
    /// standard input unless --key or ARTIFACTS_KEY gives it).
    Login {
        /// The gateway, e.g. http://build-host:8080 (default http://127.0.0.1:8080).
        url: Option<String>,
        /// The API key (visible in the process list: prefer standard input or ARTIFACTS_KEY).
        #[arg(long)]
        key: Option<String>,
    },
    /// Show the key in use: its id, scope, component patterns and expiry.
    Whoami,
    /// Build, look up and list images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Build, fetch and list components.
    #[command(subcommand)]
    Component(ComponentCommand),
    /// List, show, follow and cancel builds.
    #[command(subcommand)]
    Builds(BuildsCommand),
    /// Set, list and remove build secrets (admin keys); a value is read from standard input.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Check an artifact against its signed provenance and SBOM (exit 1 when a check fails).
    #[command(subcommand)]
    Verify(VerifyCommand),
    /// Log the Docker engine in to the stack's registry with the key in use (`registry login`).
    Registry(registry::RegistryArgs),
    /// Run the collector now (admin keys).
    Gc {
        /// Say what would be removed, and remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print a shell completion script: `artifacts completions bash > /etc/bash_completion.d/artifacts`.
    Completions { shell: clap_complete::Shell },
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Upload a Dockerfile and its context (honouring .dockerignore), then follow the build's log.
    Build {
        /// The build context directory.
        #[arg(default_value = ".")]
        context: PathBuf,
        /// The Dockerfile (default: CONTEXT/Dockerfile).
        #[arg(short = 'f', long)]
        file: Option<PathBuf>,
        #[arg(long)]
        component: String,
        #[arg(long)]
        branch: String,
        /// Architectures to build (repeatable; default amd64).
        #[arg(long = "arch")]
        architectures: Vec<String>,
        /// NAME=VALUE (repeatable).
        #[arg(long = "build-arg")]
        build_args: Vec<String>,
        /// Build again even if an identical build succeeded.
        #[arg(long)]
        force: bool,
        /// Print the build id and return without following.
        #[arg(long, short = 'd')]
        detach: bool,
    },
    /// Print an image's name, digest and pull command.
    Get {
        component: String,
        #[arg(long)]
        branch: String,
        #[arg(long = "arch", default_value = "amd64")]
        architecture: String,
    },
    /// List the stored images (of one component).
    Ls { component: Option<String> },
}

#[derive(Debug, Subcommand)]
enum ComponentCommand {
    /// Build a component from a git repository and follow the build's log.
    Build {
        url: String,
        #[arg(long)]
        component: String,
        #[arg(long)]
        tag: String,
        #[arg(long = "arch", default_value = "amd64")]
        architecture: String,
        #[arg(long)]
        force: bool,
        #[arg(long, short = 'd')]
        detach: bool,
    },
    /// Download COMPONENT@TAG (resuming an interrupted download, checking its digest).
    Get {
        reference: String,
        #[arg(long = "arch", default_value = "amd64")]
        architecture: String,
        /// Where to write the .tar.gz (default COMPONENT-TAG-ARCH.tar.gz).
        #[arg(short = 'o', long, conflicts_with = "extract")]
        output: Option<PathBuf>,
        /// Extract into this directory instead (every entry is checked first).
        #[arg(short = 'x', long)]
        extract: Option<PathBuf>,
    },
    /// List the stored components (of one component).
    Ls { component: Option<String> },
}

#[derive(Debug, Subcommand)]
enum VerifyCommand {
    /// Download COMPONENT at TAG and check it: signature, subject digest, build, every file against the SBOM.
    Component {
        component: String,
        tag: String,
        #[arg(long, default_value = "amd64")]
        architecture: String,
        /// Check with this public key (PEM, as GET /api/v1/provenance/key serves it) instead of the one the
        /// gateway serves: pin it once, and a swapped key is caught.
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
    },
    /// Check the image COMPONENT built from BRANCH: signature, subject (its manifest digest), build.
    Image {
        component: String,
        branch: String,
        #[arg(long, default_value = "amd64")]
        architecture: String,
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum SecretCommand {
    /// Create or replace a secret, its value read from standard input (one trailing line break dropped):
    /// `artifacts secret set npm-token --component web-* < token.txt`.
    Set {
        /// [a-z0-9._-], at most 64 characters: the file /run/secrets/<name> in builds.
        name: String,
        /// A component pattern (`*` wildcard) whose builds may read the secret (repeatable; at least one).
        #[arg(long = "component", required = true)]
        components: Vec<String>,
    },
    /// List secrets: names, component patterns, last change (never values).
    Ls,
    /// Remove a secret: builds no longer get it.
    Rm { name: String },
}

#[derive(Debug, Subcommand)]
enum BuildsCommand {
    /// List builds, newest first.
    Ls {
        #[arg(long)]
        component: Option<String>,
        /// image or component.
        #[arg(long)]
        kind: Option<String>,
        /// queued, running, succeeded, failed or cancelled.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Show a build's record.
    Show { build_id: String },
    /// Print a build's log; with -f, follow it to the build's end (exit status as the build's).
    Logs {
        build_id: String,
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Cancel a queued or running build.
    Cancel { build_id: String },
}

#[tokio::main]
async fn main() -> ExitCode {
    pipe::quiet_on_closed_output();
    let cli = Cli::parse();
    let result = run(cli).await;
    match result {
        Ok(code) => code,
        Err(err) => {
            pipe::exit_if_closed_output(&err);
            eprintln!("artifacts: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let json = cli.json;
    let client = || client::Client::from_environment(json);
    match cli.command {
        Command::Up { data_dir, nats_cluster, verbose, dev } => {
            let nodes = nats_cluster.map_or(1, |nodes| nodes.parse().expect("3 or 5"));
            up::run(cli.config, data_dir, nodes, up::Options { verbose, dev }).await
        }
        Command::Keys(args) => keys::run(cli.config, args, json).await,
        Command::Registry(args) => registry::run(&client()?, args).await,
        Command::Verify(VerifyCommand::Component { component, tag, architecture, key }) => {
            verify::component(&client()?, verify::Target { component, version: tag, architecture, key }).await
        }
        Command::Verify(VerifyCommand::Image { component, branch, architecture, key }) => {
            verify::image(&client()?, verify::Target { component, version: branch, architecture, key }).await
        }
        Command::Login { url, key } => account::login(url, key, json).await,
        Command::Whoami => account::whoami(&client()?).await,
        Command::Image(ImageCommand::Build {
            context,
            file,
            component,
            branch,
            architectures,
            build_args,
            force,
            detach,
        }) => {
            let args = image::BuildArgs {
                context,
                dockerfile: file,
                component,
                branch,
                architectures,
                build_args,
                force,
                detach,
            };
            image::build(&client()?, args).await
        }
        Command::Image(ImageCommand::Get { component, branch, architecture }) => {
            image::get(&client()?, &component, &branch, &architecture).await
        }
        Command::Image(ImageCommand::Ls { component }) => image::list(&client()?, component).await,
        Command::Component(ComponentCommand::Build { url, component, tag, architecture, force, detach }) => {
            component::build(&client()?, &url, &component, &tag, &architecture, force, detach).await
        }
        Command::Component(ComponentCommand::Get { reference, architecture, output, extract }) => {
            let to = match extract {
                Some(dir) => component::Destination::Extract(dir),
                None => component::Destination::File(output),
            };
            component::get(&client()?, &reference, &architecture, to).await
        }
        Command::Component(ComponentCommand::Ls { component }) => component::list(&client()?, component).await,
        Command::Builds(BuildsCommand::Ls { component, kind, status, limit }) => {
            builds::list(&client()?, component, kind, status, limit).await
        }
        Command::Builds(BuildsCommand::Show { build_id }) => builds::show(&client()?, &build_id).await,
        Command::Builds(BuildsCommand::Logs { build_id, follow }) => builds::logs(&client()?, &build_id, follow).await,
        Command::Builds(BuildsCommand::Cancel { build_id }) => builds::cancel(&client()?, &build_id).await,
        Command::Secret(SecretCommand::Set { name, components }) => secrets::set(&client()?, &name, components).await,
        Command::Secret(SecretCommand::Ls) => secrets::list(&client()?).await,
        Command::Secret(SecretCommand::Rm { name }) => secrets::remove(&client()?, &name).await,
        Command::Gc { dry_run } => builds::gc(&client()?, dry_run).await,
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "artifacts", &mut script);
            std::io::Write::write_all(&mut std::io::stdout().lock(), &script)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
