//! `artifacts image build|get|ls`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context as _};
use futures::StreamExt as _;
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use tokio_util::io::ReaderStream;

use crate::builds::{follow, outcome};
use crate::client::{list_catalog, text, Client};
use crate::progress;

pub struct BuildArgs {
    pub context: PathBuf,
    pub dockerfile: Option<PathBuf>,
    pub component: String,
    pub branch: String,
    pub architectures: Vec<String>,
    pub build_args: Vec<String>,
    pub force: bool,
    pub detach: bool,
}

/// Packs the context (less what `.dockerignore` leaves out), uploads it with the Dockerfile once per
/// architecture, and follows each build to its end.
pub async fn build(client: &Client, args: BuildArgs) -> anyhow::Result<ExitCode> {
    let dockerfile_path = args.dockerfile.clone().unwrap_or_else(|| args.context.join("Dockerfile"));
    let dockerfile = std::fs::read(&dockerfile_path)
        .with_context(|| format!("cannot read the Dockerfile {} (name another with -f)", dockerfile_path.display()))?;
    let mut build_args = serde_json::Map::new();
    for pair in &args.build_args {
        let (name, value) = pair.split_once('=').ok_or_else(|| anyhow!("--build-arg {pair:?}: write it NAME=VALUE"))?;
        build_args.insert(name.to_owned(), Value::String(value.to_owned()));
    }
    let context = args.context.clone();
    let packed = tokio::task::spawn_blocking(move || pack_context(&context)).await??;
    let size = packed.as_file().metadata()?.len();
    let architectures =
        if args.architectures.is_empty() { vec!["amd64".to_owned()] } else { args.architectures.clone() };
    let mut worst = ExitCode::SUCCESS;
    for architecture in &architectures {
        let file = tokio::fs::File::open(packed.path()).await?;
        let bar = progress::bar(size, &format!("uploading the context for {architecture}"));
        let counted = bar.clone();
        let stream = ReaderStream::with_capacity(file, 256 * 1024).inspect(move |chunk| {
            if let Ok(chunk) = chunk {
                counted.inc(chunk.len() as u64);
            }
        });
        let context = Part::stream_with_length(reqwest::Body::wrap_stream(stream), size)
            .file_name("context.tar")
            .mime_str("application/x-tar")?;
        let mut form = Form::new()
            .part("dockerfile", Part::bytes(dockerfile.clone()).file_name("Dockerfile"))
            .part("context", context)
            .text("component", args.component.clone())
            .text("branch", args.branch.clone())
            .text("architecture", architecture.clone());
        if !build_args.is_empty() {
            form = form.text("buildArgs", Value::Object(build_args.clone()).to_string());
        }
        if args.force {
            form = form.text("force", "true");
        }
        let accepted = client.send(client.post("/images").multipart(form), "the image build").await;
        bar.finish_and_clear();
        let accepted = accepted?;
        let build_id = text(&accepted["buildId"]);
        if args.detach {
            client.print(&accepted, |accepted| println!("{build_id} {}", text(&accepted["imageName"])));
            continue;
        }
        let record = follow(client, &build_id).await?;
        if outcome(client, &record) != ExitCode::SUCCESS {
            worst = ExitCode::FAILURE;
        }
    }
    Ok(worst)
}

/// The context as a tar file, with what `.dockerignore` names left out (its patterns as Docker reads
/// them: relative to the context, `!` to take back, `**` for any depth).
fn pack_context(context: &Path) -> anyhow::Result<tempfile::NamedTempFile> {
    if !context.is_dir() {
        return Err(anyhow!("the build context {} is not a directory", context.display()));
    }
    let mut ignore = ignore::gitignore::GitignoreBuilder::new(context);
    if let Ok(text) = std::fs::read_to_string(context.join(".dockerignore")) {
        for line in text.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#')) {
            // Docker's patterns are anchored at the context's root.
            let (negated, pattern) = match line.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, line),
            };
            let anchored = format!("{}/{}", if negated { "!" } else { "" }, pattern.trim_start_matches('/'));
            ignore.add_line(None, &anchored).map_err(|err| anyhow!(".dockerignore: {line:?}: {err}"))?;
        }
    }
    let ignore = ignore.build()?;
    let packed = tempfile::NamedTempFile::new()?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(packed.reopen()?));
    tar.follow_symlinks(false);
    let mut pending = vec![context.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            let path = entry.path();
            let relative = path.strip_prefix(context).expect("under the context");
            let is_dir = entry.file_type()?.is_dir();
            if ignore.matched_path_or_any_parents(relative, is_dir).is_ignore() {
                continue;
            }
            if is_dir {
                tar.append_dir(relative, &path)?;
                pending.push(path);
            } else {
                tar.append_path_with_name(&path, relative)?;
            }
        }
    }
    tar.into_inner()?.into_inner().map_err(|err| err.into_error())?.sync_all()?;
    Ok(packed)
}

pub async fn get(client: &Client, component: &str, branch: &str, architecture: &str) -> anyhow::Result<ExitCode> {
    let query = [("component", component), ("branch", branch), ("architecture", architecture)];
    let what = format!("image of {component} on {branch} for {architecture}");
    let found = client.send(client.get("/images").query(&query), &what).await?;
    client.print(&found, |found| {
        println!("{:<8}{}", "image", text(&found["imageName"]));
        println!("{:<8}{}", "digest", text(&found["digest"]));
        println!("{:<8}{}", "build", text(&found["buildId"]));
        println!("{:<8}{}", "login", text(&found["loginCommand"]));
        println!("{:<8}{}", "pull", text(&found["pullCommand"]));
    });
    Ok(ExitCode::SUCCESS)
}

pub async fn list(client: &Client, component: Option<String>) -> anyhow::Result<ExitCode> {
    let columns = [
        ("component", "component"),
        ("branch", "branch"),
        ("architecture", "architecture"),
        ("image", "imageName"),
        ("digest", "digest"),
        ("built", "builtAt"),
    ];
    list_catalog(client, "/catalog/images", component, &columns).await
}
