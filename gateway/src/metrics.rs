//! Prometheus metrics of the gateway, through `artifacts_runtime::metrics`: requests and their duration
//! by method, route and status, and at each scrape what JetStream holds (jobs waiting per kind and
//! architecture, bytes per stream).
//!
//! Labels are bounded whatever clients send: the route is the template (`/api/v1/builds/{build_id}`),
//! never the raw path, and a path that matches no route is `unmatched`; a method outside HTTP's
//! registered few is `other`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use futures::TryStreamExt;

use artifacts_runtime::metrics::{gather, HTTP_REQUESTS, HTTP_REQUEST_DURATION};
use artifacts_runtime::Nats;
use artifacts_schemas::{Architecture, BuildKind};

/// Jobs waiting in the jobs stream, by kind and architecture.
const QUEUE_DEPTH: &str = "artifacts_queue_depth";
/// Bytes each JetStream stream holds (build logs, archives, uploads, ...).
const STREAM_BYTES: &str = "artifacts_stream_bytes";

/// How long a scrape waits for the other processes' answers.
const SCRAPE_WAIT: Duration = Duration::from_millis(250);

/// Middleware: counts and times every answer.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_str().to_owned();
    let labels = [("method", method.to_owned()), ("route", route), ("status", status)];
    metrics::counter!(HTTP_REQUESTS, &labels).increment(1);
    metrics::histogram!(HTTP_REQUEST_DURATION, &labels).record(started.elapsed());
    response
}

fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    KNOWN.iter().find(|known| *known == method).map_or("other", |known| known.as_str())
}

/// The text of `/metrics`: JetStream's figures as of now, then every process's metrics.
pub async fn render(nats: &Nats) -> String {
    if let Err(err) = record_jetstream(nats).await {
        tracing::debug!(%err, "JetStream figures are missing from this scrape");
    }
    gather(nats, SCRAPE_WAIT).await
}

async fn record_jetstream(nats: &Nats) -> Result<(), async_nats::Error> {
    let names = nats.store.streams();
    let jobs = nats.jetstream.get_stream(names.jobs_stream()).await?;
    // Only subjects holding jobs are listed: every other queue is empty, and its gauge says 0.
    let waiting: HashMap<String, usize> =
        jobs.info_with_subjects(nats.subjects.jobs_wildcard()).await?.try_collect().await?;
    for kind in [BuildKind::Image, BuildKind::Component] {
        for architecture in Architecture::ALL {
            let count = waiting.get(&nats.subjects.jobs(kind, architecture)).copied().unwrap_or(0);
            metrics::gauge!(QUEUE_DEPTH, "kind" => kind.as_str(), "architecture" => architecture.short())
                .set(count as f64);
        }
    }
    let mut streams = nats.jetstream.stream_names();
    while let Some(name) = streams.try_next().await? {
        if let Ok(stream) = nats.jetstream.get_stream(&name).await {
            let bytes = stream.cached_info().state.bytes;
            metrics::gauge!(STREAM_BYTES, "stream" => name).set(bytes as f64);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_methods_fold_into_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"MADEUP").unwrap()), "other");
    }
}
