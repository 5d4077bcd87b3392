//! `artifacts image build|get|ls`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context as _};
use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use reqwest::multipart::{Form, Part};
use serde_json::Value;

use artifacts_schemas::messages::image::body_too_large;

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
    let entries = std::sync::Arc::new(walk_context(&args.context, &ignore)?);
    let size = packed_size(&entries)?;
    refuse_too_large(client, size + dockerfile.len() as u64).await?;
    let architectures =
        if args.architectures.is_empty() { vec!["amd64".to_owned()] } else { args.architectures.clone() };
    let mut worst = ExitCode::SUCCESS;
    for architecture in &architectures {
        // Packed anew for each upload, while it is sent: no temporary copy, and the upload starts at once.
        let (chunks, packer) = pack_context(args.context.clone(), std::sync::Arc::clone(&entries));
        let bar = progress::bar(size, &format!("uploading the context for {architecture}"));
        let counted = bar.clone();
        let stream = chunks.inspect(move |chunk| {
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

/// Refuses before uploading a body (the context and the Dockerfile, `size` bytes) the gateway would
/// refuse, with the gateway's own message: its limit comes from `GET /api/v1/info` (a gateway without it
/// answers 413 itself).
async fn refuse_too_large(client: &Client, size: u64) -> anyhow::Result<()> {
    let Ok(info) = client.send(client.get("/info"), "the gateway's limits").await else {
        return Ok(());
    };
    match info["limits"]["maxBodyBytes"].as_u64() {
        Some(limit) if size > limit => {
            Err(anyhow!("the image build: {} (HTTP 413, before uploading)", body_too_large(Some(size), limit)))
        }
        _ => Ok(()),
    }
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

/// One path of the context to pack, as it was when the context was walked.
struct Entry {
    relative: PathBuf,
    path: PathBuf,
    metadata: std::fs::Metadata,
}

/// The paths of the context that are packed, parents before children, in a stable order: walked once,
/// so that the length announced and the tar sent agree.
fn walk_context(context: &Path, ignore: &Gitignore) -> anyhow::Result<Vec<Entry>> {
    let walk = || -> std::io::Result<Vec<Entry>> {
        let mut found = Vec::new();
        let mut pending = vec![context.to_path_buf()];
        while let Some(dir) = pending.pop() {
            let mut entries: Vec<_> = std::fs::read_dir(&dir)?.collect::<Result<_, _>>()?;
            entries.sort_by_key(|entry| entry.file_name());
            for entry in entries {
                let path = entry.path();
                let relative = path.strip_prefix(context).expect("under the context").to_path_buf();
                let metadata = std::fs::symlink_metadata(&path)?;
                if ignore.matched_path_or_any_parents(&relative, metadata.is_dir()).is_ignore() {
                    continue;
                }
                if metadata.is_dir() {
                    pending.push(path.clone());
                }
                found.push(Entry { relative, path, metadata });
            }
        }
        Ok(found)
    };
    walk().with_context(|| format!("cannot read the build context {}", context.display()))
}

/// Appends `entry`'s header (with a long name's extra entry) to `tar`, and, unless `data` is false, its
/// contents; a regular file's contents are read straight into the upload's chunks ([`ChunkWriter`]):
/// `tar` would copy them 8 KiB at a time through a buffer of its own.
fn append_entry<W: PackedBytes>(tar: &mut tar::Builder<W>, entry: &Entry) -> std::io::Result<()> {
    if entry.metadata.is_dir() {
        return tar.append_dir(&entry.relative, &entry.path);
    }
    if !entry.metadata.is_file() {
        return tar.append_path_with_name(&entry.path, &entry.relative);
    }
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(&entry.metadata, tar::HeaderMode::Complete);
    tar.append_data(&mut header, &entry.relative, std::io::empty())?;
    tar.get_mut().append_file_data(&entry.path, entry.metadata.len())
}

/// Where a packed tar goes: the upload, or a count of its bytes.
trait PackedBytes: std::io::Write {
    /// `size` bytes of the file at `path`, padded to tar's 512-byte blocks.
    fn append_file_data(&mut self, path: &Path, size: u64) -> std::io::Result<()>;
}

/// The exact length of the tar of `entries`: the request announces it, as a client sending a file does.
fn packed_size(entries: &[Entry]) -> anyhow::Result<u64> {
    let mut tar = tar_builder(ByteCount(0));
    for entry in entries {
        append_entry(&mut tar, entry).with_context(|| format!("cannot read {}", entry.path.display()))?;
    }
    Ok(tar.into_inner()?.0)
}

/// Links go in as links, not what they point to.
fn tar_builder<W: std::io::Write>(writer: W) -> tar::Builder<W> {
    let mut tar = tar::Builder::new(writer);
    tar.follow_symlinks(false);
    tar
}

struct ByteCount(u64);

impl std::io::Write for ByteCount {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0 += data.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl PackedBytes for ByteCount {
    fn append_file_data(&mut self, _: &Path, size: u64) -> std::io::Result<()> {
        self.0 += size.next_multiple_of(BLOCK as u64);
        Ok(())
    }
}

/// The context as a tar stream, packed on a blocking thread no further ahead of the upload than a few
/// chunks; the thread's result says why the stream broke off, if it did.
fn pack_context(
    context: PathBuf,
    entries: std::sync::Arc<Vec<Entry>>,
) -> (impl futures::Stream<Item = std::io::Result<Bytes>>, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    let packer = tokio::task::spawn_blocking(move || {
        let writer = ChunkWriter { sender: sender.clone(), pending: BytesMut::with_capacity(CHUNK) };
        let mut tar = tar_builder(writer);
        let packed = entries
            .iter()
            .try_for_each(|entry| append_entry(&mut tar, entry))
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

/// tar's unit: headers and data are padded to it.
const BLOCK: usize = 512;

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
}

impl PackedBytes for ChunkWriter {
    /// Reads the file straight into the chunk being filled, as much at once as it has room for.
    /// Exactly `size` bytes, as walked: a file that grew since is cut there, one that shrank is an
    /// error, so the tar is always the length announced.
    fn append_file_data(&mut self, path: &Path, size: u64) -> std::io::Result<()> {
        use std::io::Read as _;
        let mut file = std::fs::File::open(path)?;
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
                    format!("{} got shorter while it was packed", path.display()),
                ));
            }
            left -= read as u64;
            if self.pending.len() >= CHUNK {
                self.flush_chunk()?;
                self.pending.reserve(CHUNK);
            }
        }
        let padding = size.next_multiple_of(BLOCK as u64) - size;
        self.pending.extend_from_slice(&[0; BLOCK][..padding as usize]);
        Ok(())
    }
}

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
