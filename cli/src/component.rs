//! `artifacts component build|get|ls`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context as _};
use futures::StreamExt as _;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use artifacts_runtime::archive::{for_each_entry, Limits};

use crate::builds::{follow, outcome};
use crate::client::{list_catalog, text, Client};
use crate::progress;

pub async fn build(
    client: &Client,
    url: &str,
    component: &str,
    tag: &str,
    architecture: &str,
    force: bool,
    detach: bool,
) -> anyhow::Result<ExitCode> {
    let body = json!({"url": url, "component": component, "tag": tag, "architecture": architecture, "force": force});
    let accepted = client.send(client.post("/components").json(&body), "the component build").await?;
    let build_id = text(&accepted["buildId"]);
    if detach {
        client.print(&accepted, |_| println!("{build_id}"));
        return Ok(ExitCode::SUCCESS);
    }
    let record = follow(client, &build_id).await?;
    Ok(outcome(client, &record))
}

/// Where `get` puts what it fetched.
pub enum Destination {
    File(Option<PathBuf>),
    Extract(PathBuf),
}

/// Downloads `component@tag` with a progress bar, resuming a `.part` file an interrupted download
/// left, checks its digest, and writes it to a file or extracts it (every entry checked first).
pub async fn get(client: &Client, reference: &str, architecture: &str, to: Destination) -> anyhow::Result<ExitCode> {
    let (component, tag) = reference
        .split_once('@')
        .ok_or_else(|| anyhow!("{reference:?}: name the component and tag as COMPONENT@TAG, e.g. libfoo@v1.2.0"))?;
    let query = [("component", component), ("tag", tag), ("architecture", architecture)];
    let what = format!("component {component}@{tag} for {architecture}");
    let response = client.get("/components").query(&query).send().await.map_err(|err| client.unreachable(err))?;
    let status = response.status().as_u16();
    let found: Value = response.json().await.unwrap_or(Value::Null);
    if status == 202 {
        return Err(anyhow!(
            "{what} is not stored yet: build {} makes it; try again when it has ended",
            text(&found["buildId"])
        ));
    }
    if status != 200 {
        return Err(client.refusal(status, &found, &what));
    }
    let digest = text(&found["digest"]);
    let size = found["size"].as_u64().unwrap_or(0);
    let url =
        found["downloadUrl"].as_str().or(found["component"].as_str()).ok_or_else(|| anyhow!("no download URL"))?;
    let default_name = format!("{component}-{}-{architecture}.tar.gz", tag.replace('/', "_"));
    let (file, extract_to) = match to {
        Destination::File(file) => (file.unwrap_or_else(|| PathBuf::from(&default_name)), None),
        Destination::Extract(dir) => (std::env::temp_dir().join(format!("artifacts-{}", default_name)), Some(dir)),
    };
    let resumed_from = download(client, url, &file, &digest, size).await?;
    let report = match extract_to {
        Some(dir) => {
            let (file_for_task, dir_for_task) = (file.clone(), dir.clone());
            let entries = tokio::task::spawn_blocking(move || extract(&file_for_task, &dir_for_task)).await?;
            let _ = std::fs::remove_file(&file);
            let entries = entries?;
            json!({"status": "extracted", "directory": dir, "entries": entries, "digest": digest, "size": size,
                   "resumedFrom": resumed_from})
        }
        None => {
            json!({"status": "downloaded", "file": file, "digest": digest, "size": size, "resumedFrom": resumed_from})
        }
    };
    client.print(&report, |report| match report["status"].as_str() {
        Some("extracted") => {
            println!("extracted {} entries into {} ({digest})", report["entries"], text(&report["directory"]))
        }
        _ => println!("downloaded {} ({size} bytes, {digest})", text(&report["file"])),
    });
    Ok(ExitCode::SUCCESS)
}

/// Fetches `url` into `file`, through `<file>.part`: a part already there is resumed with `Range`
/// (and `If-Range`, so a part of another version starts over). The whole file's digest must be
/// `digest`, else nothing is kept. Answers the offset it resumed from (0: from the start).
async fn download(client: &Client, url: &str, file: &Path, digest: &str, size: u64) -> anyhow::Result<u64> {
    let part = PathBuf::from(format!("{}.part", file.display()));
    let mut hasher = Sha256::new();
    let mut have = 0u64;
    if let Ok(existing) = tokio::fs::read(&part).await {
        have = existing.len() as u64;
        hasher.update(&existing);
    }
    // The key goes only to the gateway it belongs to.
    if !url.starts_with(&format!("{}/", client.url)) {
        return Err(anyhow!("the gateway answered a download URL elsewhere ({url}): not sending the key there"));
    }
    let mut request = client.authorize(client.http.get(url));
    if have > 0 {
        request = request.header("Range", format!("bytes={have}-")).header("If-Range", format!("\"{digest}\""));
    }
    let response = request.send().await.map_err(|err| client.unreachable(err))?;
    let status = response.status().as_u16();
    if status == 416 || status == 200 {
        // Nothing of the part is usable (complete already, or another version): from the start.
        hasher = Sha256::new();
        have = 0;
    } else if status != 206 {
        let body: Value = response.json().await.unwrap_or(Value::Null);
        return Err(client.refusal(status, &body, "the download"));
    }
    if status == 416 {
        let _ = tokio::fs::remove_file(&part).await;
        return Box::pin(download(client, url, file, digest, size)).await;
    }
    let mut file_out = std::fs::OpenOptions::new();
    file_out.create(true).write(true).append(have > 0).truncate(have == 0);
    let file_out = file_out.open(&part).with_context(|| format!("cannot write {}", part.display()))?;
    let bar = progress::bar(size, &format!("downloading {}", file.display()));
    bar.set_position(have);
    let resumed_from = have;
    // Hashing and writing run on a thread of their own, so the network is read meanwhile; a short queue
    // (chunks are up to a few hundred KiB) keeps memory flat when the disk is the slower side.
    let (chunks, mut received) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<Sha256> {
        use std::io::Write as _;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file_out);
        while let Some(chunk) = received.blocking_recv() {
            hasher.update(&chunk);
            out.write_all(&chunk)?;
        }
        out.flush()?;
        Ok(hasher)
    });
    let mut body = response.bytes_stream();
    let mut broke_off = None;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) => {
                bar.inc(chunk.len() as u64);
                if chunks.send(chunk).await.is_err() {
                    break;
                }
            }
            Err(err) => {
                broke_off = Some(err);
                break;
            }
        }
    }
    drop(chunks);
    let hasher = writer.await?.with_context(|| format!("cannot write {}", part.display()))?;
    bar.finish_and_clear();
    if let Some(err) = broke_off {
        return Err(anyhow!(
            "the download broke off at byte {}: {err}; run the same command to resume",
            bar.position()
        ));
    }
    let got = format!("sha256:{}", hex::encode(hasher.finalize()));
    if got != digest {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(anyhow!("digest mismatch: the download is {got}, the gateway says {digest}; nothing was kept"));
    }
    tokio::fs::rename(&part, file).await.with_context(|| format!("cannot move the download to {}", file.display()))?;
    Ok(resumed_from)
}

/// Extracts a checked archive into `dir` (created if missing): no entry may leave it.
fn extract(archive: &Path, dir: &Path) -> anyhow::Result<u64> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let limits = Limits { max_bytes: 64 << 30, max_entries: 1_000_000 };
    let input = std::fs::File::open(archive)?;
    // Checked whole before anything is written: a bad entry late in the archive leaves nothing behind.
    for_each_entry(std::fs::File::open(archive)?, limits, 0, |_, _| Ok(()))?;
    let entries = for_each_entry(input, limits, 0, |path, entry| {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        entry.unpack(&target).map(drop)
    })?;
    Ok(entries)
}

pub async fn list(client: &Client, component: Option<String>) -> anyhow::Result<ExitCode> {
    let columns = [
        ("component", "component"),
        ("tag", "tag"),
        ("architecture", "architecture"),
        ("bytes", "size"),
        ("digest", "digest"),
        ("built", "builtAt"),
    ];
    list_catalog(client, "/catalog/components", component, &columns).await
}
