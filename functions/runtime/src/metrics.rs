//! Prometheus metrics of every process, recorded through the `metrics` facade into
//! `metrics-exporter-prometheus`'s recorder.
//!
//! Each process records its own. None listens on a port of its own: each answers requests on
//! `<prefix>.metrics` with its exposition text ([`answer_scrapes`]), and the gateway's `/metrics` merges
//! what every process answered ([`gather`]). Every series carries the labels `process` (e.g.
//! `artifacts-build-image`) and `instance` (host and process id), so two workers of one kind never
//! collide.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures::StreamExt;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use artifacts_schemas::{BuildKind, BuildStatus};

use crate::nats::Nats;

/// When the process started (seconds since 1970), one series per process: shows which answered a scrape.
pub const PROCESS_START_TIME: &str = "artifacts_process_start_time_seconds";
/// Requests answered by the gateway, by method, route template and status.
pub const HTTP_REQUESTS: &str = "artifacts_http_requests_total";
/// Time to answer, by method, route template and status.
pub const HTTP_REQUEST_DURATION: &str = "artifacts_http_request_duration_seconds";
/// Builds ended, by kind and result.
pub const BUILDS: &str = "artifacts_builds_total";
/// Time spent in each stage of a build (clone, build, push, store), by kind and stage.
pub const BUILD_STAGE_DURATION: &str = "artifacts_build_stage_duration_seconds";
/// Bytes of build output stored (component tarballs), by kind.
pub const STORED_BYTES: &str = "artifacts_stored_bytes_total";

/// The header naming the process instance that answered a scrape.
const INSTANCE_HEADER: &str = "Artifacts-Instance";

struct Installed {
    handle: PrometheusHandle,
    instance: String,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// Installs the recorder once per process (tests run several processes' work in one; the first name
/// stays) and keeps its histograms drained.
pub fn install(process: &str) -> &'static PrometheusHandle {
    let installed = INSTALLED.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let instance = format!("{}:{}", host.trim(), std::process::id());
        let recorder = PrometheusBuilder::new()
            .add_global_label("process", process)
            .add_global_label("instance", &instance)
            .set_buckets_for_metric(
                Matcher::Full(HTTP_REQUEST_DURATION.into()),
                &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0],
            )
            .and_then(|builder| {
                builder.set_buckets_for_metric(
                    Matcher::Full(BUILD_STAGE_DURATION.into()),
                    &[0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0],
                )
            })
            .expect("bucket lists are not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed: this process's metrics are not exported");
        }
        let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        metrics::gauge!(PROCESS_START_TIME).set(started.as_secs_f64());
        Installed { handle, instance }
    });
    &installed.handle
}

/// Drains histogram samples into their buckets now and then, so memory stays flat when nobody scrapes.
pub async fn keep_up(shutdown: CancellationToken) {
    let Some(installed) = INSTALLED.get() else { return };
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = every.tick() => installed.handle.run_upkeep(),
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Answers scrapes on `<prefix>.metrics` with this process's exposition text until `shutdown`.
pub async fn answer_scrapes(nats: Nats, shutdown: CancellationToken) {
    let Some(installed) = INSTALLED.get() else { return };
    let mut requests = match nats.client.subscribe(nats.subjects.metrics()).await {
        Ok(requests) => requests,
        Err(err) => return tracing::warn!(%err, "cannot answer metrics scrapes"),
    };
    loop {
        let request = tokio::select! {
            request = requests.next() => match request { Some(request) => request, None => return },
            _ = shutdown.cancelled() => return,
        };
        let Some(reply) = crate::service::allowed_reply(&request) else { continue };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(INSTANCE_HEADER, installed.instance.as_str());
        let text = installed.handle.render();
        if let Err(err) = nats.client.publish_with_headers(reply, headers, text.into()).await {
            tracing::debug!(%err, "cannot answer a metrics scrape");
        }
    }
}

/// This process's metrics merged with those of every other process that answers within `wait`: one
/// `# HELP`/`# TYPE` header per metric family, then every process's series of it.
pub async fn gather(nats: &Nats, wait: Duration) -> String {
    let Some(installed) = INSTALLED.get() else { return String::new() };
    let mut texts = vec![installed.handle.render()];
    let inbox = nats.client.new_inbox();
    if let Ok(mut replies) = nats.client.subscribe(inbox.clone()).await {
        if nats.client.publish_with_reply(nats.subjects.metrics(), inbox, "".into()).await.is_ok() {
            let deadline = tokio::time::sleep(wait);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    reply = replies.next() => match reply {
                        Some(reply) => {
                            // This very process answers too: its text is there already.
                            let from = reply.headers.as_ref().and_then(|h| h.get(INSTANCE_HEADER)).map(|v| v.as_str());
                            if from != Some(installed.instance.as_str()) {
                                texts.push(String::from_utf8_lossy(&reply.payload).into_owned());
                            }
                        }
                        None => break,
                    },
                    _ = &mut deadline => break,
                }
            }
        }
    }
    merge(&texts)
}

/// Groups the lines of several exposition texts by metric family.
fn merge(texts: &[String]) -> String {
    let mut families: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
    for text in texts {
        let mut family = String::new();
        for line in text.lines().filter(|line| !line.trim().is_empty()) {
            if let Some(header) = line.strip_prefix("# HELP ").or_else(|| line.strip_prefix("# TYPE ")) {
                family = header.split(' ').next().unwrap_or_default().to_owned();
                let (headers, _) = families.entry(family.clone()).or_default();
                if !headers.iter().any(|seen| seen == line) {
                    headers.push(line.to_owned());
                }
            } else {
                families.entry(family.clone()).or_default().1.push(line.to_owned());
            }
        }
    }
    let mut out = String::new();
    for (headers, series) in families.values() {
        for line in headers.iter().chain(series) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Counts a build that ended.
pub fn count_build(kind: BuildKind, status: BuildStatus) {
    metrics::counter!(BUILDS, "kind" => kind.as_str(), "result" => status.as_str()).increment(1);
}

/// Counts a build a push asked for and the submission refused (`why`: `moved_tag`, `refused`).
pub fn count_push_refused(why: &'static str) {
    metrics::counter!("artifacts_push_builds_refused_total", "why" => why).increment(1);
}

/// Counts bytes of build output stored.
pub fn count_stored(kind: BuildKind, bytes: u64) {
    metrics::counter!(STORED_BYTES, "kind" => kind.as_str()).increment(bytes);
}

/// Records how long one stage of a build (`clone`, `build`, `push`, `store`) took.
pub fn record_stage(kind: BuildKind, stage: &'static str, took: Duration) {
    metrics::histogram!(BUILD_STAGE_DURATION, "kind" => kind.as_str(), "stage" => stage).record(took);
}

/// Runs one stage of a build and records how long it took.
pub async fn timed<T>(kind: BuildKind, stage: &'static str, work: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let output = work.await;
    record_stage(kind, stage, started.elapsed());
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_merged_across_processes() {
        let a = "# HELP x_total X.\n# TYPE x_total counter\nx_total{process=\"a\"} 1\n\n# TYPE y gauge\ny 2\n";
        let b = "# HELP x_total X.\n# TYPE x_total counter\nx_total{process=\"b\"} 3\n";
        let merged = merge(&[a.into(), b.into()]);
        assert_eq!(
            merged,
            "# HELP x_total X.\n# TYPE x_total counter\nx_total{process=\"a\"} 1\nx_total{process=\"b\"} 3\n# TYPE y gauge\ny 2\n"
        );
    }
}
