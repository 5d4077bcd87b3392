//! `artifacts image build|get|ls`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context as _};
use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use reqwest::multipart::{Form, Part};
use serde_json::Value;

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
    let ignore = dockerignore(&args.context)?;
    let estimate = estimated_size(&args.context, &ignore)?;
    let architectures =
        if args.architectures.is_empty() { vec!["amd64".to_owned()] } else { args.architectures.clone() };
    let mut worst = ExitCode::SUCCESS;
    for architecture in &architectures {
        // Packed anew for each upload, while it is sent: no temporary copy, and the upload starts at once.
        let (chunks, packer) = pack_context(args.context.clone(), ignore.clone());
        let bar = progress::bar(estimate, &format!("uploading the context for {architecture}"));
        let counted = bar.clone();
        let stream = chunks.inspect(move |chunk| {
            if let Ok(chunk) = chunk {
                counted.inc(chunk.len() as u64);
            }
        });
        let context =
            Part::stream(reqwest::Body::wrap_stream(stream)).file_name("context.tar").mime_str("application/x-tar")?;
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
        // A failure to read the context also breaks the upload; its own error says more.
        packer.await.context("the packing thread")??;
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

/// What `.dockerignore` leaves out of the context, its patterns as Docker reads them: relative to the
/// context, `!` to take back, `**` for any depth.
fn dockerignore(context: &Path) -> anyhow::Result<Gitignore> {
    if !context.is_dir() {
        return Err(anyhow!("the build context {} is not a directory", context.display()));
    }
    let mut ignore = GitignoreBuilder::new(context);
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
    Ok(ignore.build()?)
}

/// Calls `visit` with each path of the context that is packed (relative, absolute, whether a
/// directory), parents before children, in a stable order.
fn walk_context(
    context: &Path,
    ignore: &Gitignore,
    mut visit: impl FnMut(&Path, &Path, bool) -> std::io::Result<()>,
) -> std::io::Result<()> {
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
            visit(relative, &path, is_dir)?;
            if is_dir {
                pending.push(path);
            }
        }
    }
    Ok(())
}

/// The tar's size near enough for a progress bar: the files' bytes and a header for each entry
/// (long names and padding make the real one a little larger).
fn estimated_size(context: &Path, ignore: &Gitignore) -> anyhow::Result<u64> {
    let mut size = 1024;
    walk_context(context, ignore, |_, path, _| {
        size += 512 + std::fs::symlink_metadata(path)?.len();
        Ok(())
    })
    .with_context(|| format!("cannot read the build context {}", context.display()))?;
    Ok(size)
}

/// The context as a tar stream, packed on a blocking thread no further ahead of the upload than a few
/// chunks; the thread's result says why the stream broke off, if it did.
fn pack_context(
    context: PathBuf,
    ignore: Gitignore,
) -> (impl futures::Stream<Item = std::io::Result<Bytes>>, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    let packer = tokio::task::spawn_blocking(move || {
        let writer = ChunkWriter { sender: sender.clone(), pending: BytesMut::with_capacity(CHUNK) };
        let mut tar = tar::Builder::new(writer);
        tar.follow_symlinks(false);
        let packed = walk_context(&context, &ignore, |relative, path, is_dir| {
            if is_dir {
                return tar.append_dir(relative, path);
            }
            let metadata = std::fs::symlink_metadata(path)?;
            if !metadata.is_file() {
                return tar.append_path_with_name(path, relative);
            }
            let mut file = std::fs::File::open(path)?;
            let mut header = tar::Header::new_gnu();
            header.set_metadata_in_mode(&metadata, tar::HeaderMode::Complete);
            // The header alone (with a long name's extra entry): `tar` would copy the data 8 KiB at a
            // time through a buffer of its own, a tenth of the upload's rate on a large context.
            tar.append_data(&mut header, relative, std::io::empty())?;
            tar.get_mut().append_file_data(&mut file, metadata.len())
        })
        .and_then(|()| tar.into_inner())
        .and_then(|mut writer| writer.flush_chunk());
        match &packed {
            // The request ended first; its answer says why.
            Err(_) if sender.is_closed() => return Ok(()),
            // Breaks the upload off, so that the gateway never takes a truncated context.
            Err(err) => {
                let _ = sender.blocking_send(Err(std::io::Error::new(err.kind(), err.to_string())));
            }
            Ok(()) => {}
        }
        packed.with_context(|| format!("cannot pack the build context {}", context.display()))
    });
    let chunks = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    });
    (chunks, packer)
}

const CHUNK: usize = 1024 * 1024;

/// Hands what the tar builder writes to the upload in chunks of [`CHUNK`] bytes.
struct ChunkWriter {
    sender: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    pending: BytesMut,
}

impl ChunkWriter {
    fn flush_chunk(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let chunk = self.pending.split().freeze();
        self.sender
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the upload stopped"))
    }

    /// Reads `size` bytes of `file` straight into the chunk being filled, as much at once as it has
    /// room for, then pads them to tar's 512-byte blocks. Exactly `size`: a file that grows meanwhile
    /// is cut where its header says, one that shrinks is an error, so the tar stays whole.
    fn append_file_data(&mut self, file: &mut std::fs::File, size: u64) -> std::io::Result<()> {
        use std::io::Read as _;
        let mut left = size;
        while left > 0 {
            let filled = self.pending.len();
            let room = CHUNK.saturating_sub(filled).max(BLOCK);
            let wanted = usize::try_from(left).map_or(room, |left| left.min(room));
            self.pending.resize(filled + wanted, 0);
            let read = file.read(&mut self.pending[filled..])?;
            self.pending.truncate(filled + read);
            if read == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "a file got shorter while it was packed",
                ));
            }
            left -= read as u64;
            if self.pending.len() >= CHUNK {
                self.flush_chunk()?;
                self.pending.reserve(CHUNK);
            }
        }
        let padding = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
        self.pending.extend_from_slice(&[0; BLOCK][..padding as usize]);
        Ok(())
    }
}

/// tar's unit: headers and data are padded to it.
const BLOCK: usize = 512;

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(data);
        if self.pending.len() >= CHUNK {
            self.flush_chunk()?;
            self.pending.reserve(CHUNK);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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
