//! `artifacts builds ls|show|logs|cancel`, `artifacts gc`, and following a build to its end, which
//! `image build` and `component build` share.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::anyhow;
use futures::StreamExt as _;
use serde_json::{json, Value};

use crate::client::{status_text, table, text, Client};

/// Prints the build's log from its first line as it is written, until the build ends; then answers
/// its final record. With `--json` the log goes to standard error, so standard output holds the
/// record alone.
pub async fn follow(client: &Client, build_id: &str) -> anyhow::Result<Value> {
    print_log(client, build_id, None).await?;
    client.send(client.get(&format!("/builds/{build_id}")), &format!("build {build_id}")).await
}

/// The exit status a finished build stands for: 0 succeeded, 1 otherwise (with its reason).
pub fn outcome(client: &Client, record: &Value) -> ExitCode {
    client.print(record, |record| {
        let status = text(&record["status"]);
        match status.as_str() {
            "succeeded" => println!("build {} {}", text(&record["buildId"]), status_text(&status)),
            _ => eprintln!(
                "build {} {}: {}",
                text(&record["buildId"]),
                status_text(&status),
                record["errorMessage"].as_str().unwrap_or("no reason recorded")
            ),
        }
    });
    if record["status"] == "succeeded" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Streams the text log; with `quiet_after`, stops once the log has been silent that long (for a log
/// read without following a running build).
async fn print_log(client: &Client, build_id: &str, quiet_after: Option<Duration>) -> anyhow::Result<()> {
    let response = client
        .get(&format!("/builds/{build_id}/logs?format=text"))
        .send()
        .await
        .map_err(|err| client.unreachable(err))?;
    if !response.status().is_success() {
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        return Err(client.refusal(status, &body, &format!("build {build_id}")));
    }
    let mut out: Box<dyn std::io::Write> =
        if client.json { Box::new(std::io::stderr()) } else { Box::new(std::io::stdout()) };
    let mut body = response.bytes_stream();
    loop {
        let next = match quiet_after {
            Some(limit) => match tokio::time::timeout(limit, body.next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
            None => body.next().await,
        };
        match next {
            Some(chunk) => {
                out.write_all(&chunk.map_err(|err| anyhow!("the log stream broke off: {err}"))?)?;
                out.flush()?;
            }
            None => break,
        }
    }
    Ok(())
}

pub async fn list(
    client: &Client,
    component: Option<String>,
    kind: Option<String>,
    status: Option<String>,
    limit: u32,
) -> anyhow::Result<ExitCode> {
    let mut query = vec![("limit", limit.to_string())];
    query.extend(component.map(|c| ("component", c)));
    query.extend(kind.map(|k| ("kind", k)));
    query.extend(status.map(|s| ("status", s)));
    let answer = client.send(client.get("/builds").query(&query), "builds").await?;
    client.print(&answer, |answer| {
        let rows = answer["builds"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|build| {
                let request = &build["request"];
                let target = if build["kind"] == "image" { &request["branch"] } else { &request["tag"] };
                vec![
                    text(&build["buildId"]),
                    text(&build["kind"]),
                    text(&request["component"]),
                    text(target),
                    text(&request["architecture"]),
                    status_text(&text(&build["status"])),
                    text(&build["createdAt"]),
                ]
            })
            .collect();
        table(&["build", "kind", "component", "branch/tag", "architecture", "status", "created"], rows);
    });
    Ok(ExitCode::SUCCESS)
}

/// A full build id is 36 characters: 8-4-4-4-12 hex digits.
const BUILD_ID_LENGTH: usize = 36;

/// The most builds read (newest first) while looking for a prefix.
const MAX_BUILDS_SEARCHED: usize = 20_000;

/// The build `given` names: a whole build id as it is, any unique prefix of one, or (written `…` then
/// the end of an id, as the dashboard shows ids, e.g. `…9f3c2a1b`) any unique ending, found in the builds
/// listing the key may see. None: not found; several: an error listing them.
pub async fn resolve(client: &Client, given: &str) -> anyhow::Result<String> {
    let trimmed = given.trim();
    let (part, by_end) = match trimmed.strip_prefix('…').or_else(|| trimmed.strip_prefix("...")) {
        Some(end) => (end.to_ascii_lowercase(), true),
        None => (trimmed.to_ascii_lowercase(), false),
    };
    if part.is_empty() || !part.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(anyhow!(
            "{given:?} is not a build id: expected a build id, the start of one (01a24e73-fa27) or its end as the dashboard shows it (…9f3c2a1b)"
        ));
    }
    if part.len() >= BUILD_ID_LENGTH {
        return Ok(part);
    }
    let prefix = part;
    let matches = |id: &str| if by_end { id.ends_with(&prefix) } else { id.starts_with(&prefix) };
    let (begins, begin) = if by_end { ("end with", "ends") } else { ("begin with", "begins") };
    let mut found: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut searched = 0;
    loop {
        let mut query = vec![("limit", "500".to_owned())];
        query.extend(cursor.clone().map(|c| ("cursor", c)));
        let page = client.send(client.get("/builds").query(&query), "builds").await?;
        let builds = page["builds"].as_array().cloned().unwrap_or_default();
        searched += builds.len();
        found.extend(builds.iter().filter(|b| b["buildId"].as_str().is_some_and(matches)).cloned());
        // Build ids begin with their creation time (UUID v7) and the listing is newest first: once a
        // page ends before the prefix, no older build can match.
        // Compared on the time part (the first 13 characters) only, as ids of one millisecond are in no order.
        let time = prefix.len().min(13);
        let passed = !by_end
            && builds
                .last()
                .and_then(|b| b["buildId"].as_str())
                .is_some_and(|oldest| oldest.get(..time).is_some_and(|start| start < &prefix[..time]));
        match page["nextCursor"].as_str() {
            Some(next) if !passed && searched < MAX_BUILDS_SEARCHED => cursor = Some(next.to_owned()),
            _ => break,
        }
    }
    match found.as_slice() {
        [] => Err(anyhow!(
            "build {given}: no build id the key may see {begin} with {prefix:?} (`artifacts builds ls` lists them)"
        )),
        [one] => Ok(text(&one["buildId"])),
        several => {
            let candidates: Vec<String> = several
                .iter()
                .map(|b| {
                    let target = if b["kind"] == "image" { &b["request"]["branch"] } else { &b["request"]["tag"] };
                    format!(
                        "  {}  {} {} {}",
                        text(&b["buildId"]),
                        text(&b["kind"]),
                        text(&b["request"]["component"]),
                        text(target)
                    )
                })
                .collect();
            Err(anyhow!(
                "build id {given:?} is ambiguous: {} builds {begins} it (give more of the id):\n{}",
                several.len(),
                candidates.join("\n")
            ))
        }
    }
}

pub async fn show(client: &Client, build_id: &str) -> anyhow::Result<ExitCode> {
    let build_id = &resolve(client, build_id).await?;
    let record = client.send(client.get(&format!("/builds/{build_id}")), &format!("build {build_id}")).await?;
    client.print(&record, |record| {
        let request = &record["request"];
        for (name, value) in [
            ("build", &record["buildId"]),
            ("kind", &record["kind"]),
            ("component", &request["component"]),
            ("branch", &request["branch"]),
            ("tag", &request["tag"]),
            ("architecture", &request["architecture"]),
            ("created", &record["createdAt"]),
            ("started", &record["startedAt"]),
            ("finished", &record["finishedAt"]),
            ("attempts", &record["attempts"]),
            ("pinned", &record["pinned"]),
            ("error", &record["errorMessage"]),
            ("image", &record["result"]["imageName"]),
            ("pull", &record["result"]["pullCommand"]),
            ("digest", &record["result"]["digest"]),
        ] {
            if !value.is_null() {
                println!("{name:<14}{}", text(value));
            }
        }
        println!("{:<14}{}", "status", status_text(&text(&record["status"])));
    });
    Ok(ExitCode::SUCCESS)
}

/// The log so far; with `follow`, until the build ends (exit status as the build's).
pub async fn logs(client: &Client, build_id: &str, follow_it: bool) -> anyhow::Result<ExitCode> {
    let build_id = &resolve(client, build_id).await?;
    if follow_it {
        let record = follow(client, build_id).await?;
        return Ok(if record["status"] == "succeeded" { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    let record = client.send(client.get(&format!("/builds/{build_id}")), &format!("build {build_id}")).await?;
    let finished = matches!(record["status"].as_str(), Some("succeeded" | "failed" | "cancelled"));
    print_log(client, build_id, (!finished).then_some(Duration::from_secs(1))).await?;
    Ok(ExitCode::SUCCESS)
}

pub async fn cancel(client: &Client, build_id: &str) -> anyhow::Result<ExitCode> {
    let build_id = &resolve(client, build_id).await?;
    let record = client.send(client.post(&format!("/builds/{build_id}/cancel")), &format!("build {build_id}")).await?;
    client.print(&record, |record| {
        println!("build {} {}", text(&record["buildId"]), status_text(&text(&record["status"])))
    });
    Ok(ExitCode::SUCCESS)
}

pub async fn gc(client: &Client, dry_run: bool) -> anyhow::Result<ExitCode> {
    let report = client.send(client.post("/gc").json(&json!({"dryRun": dry_run})), "the collection").await?;
    client.print(&report, |report| {
        let removed = &report["removed"];
        let verb = if dry_run { "would remove" } else { "removed" };
        println!(
            "{verb} {} builds ({} images, {} components), {} uploads, {} registry blobs: {} bytes",
            text(&removed["builds"]),
            text(&removed["images"]),
            text(&removed["components"]),
            text(&removed["uploads"]),
            text(&removed["blobs"]),
            text(&removed["bytes"])
        );
    });
    Ok(ExitCode::SUCCESS)
}
