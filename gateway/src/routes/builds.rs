//! `GET /api/v1/builds/{buildId}`, `GET /api/v1/builds`, `GET /api/v1/builds/events`,
//! `GET /api/v1/builds/{buildId}/logs`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, pull::Ordered, DeliverPolicy};
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};

use artifacts_runtime::logs::END_HEADER;
use artifacts_runtime::nats::unavailable;
use artifacts_runtime::service::Reply;
use artifacts_runtime::Nats;
use artifacts_schemas::{
    BuildId, BuildKind, BuildList, BuildListQuery, BuildQuery, BuildRecord, ComponentName, Endpoint, ErrorReply,
    RequestError, RequestedBy,
};

use super::{forward, request};
use artifacts_schemas::messages::keys::Scope;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::input::{PathParams, QueryOrJson};
use crate::relay::relay;
use crate::state::AppState;

/// A build's record.
#[utoipa::path(
    get, path = "/api/v1/builds/{build_id}", tag = "builds",
    params(("build_id" = String, Path, description = "Build id")),
    responses(
        (status = 200, description = "The build", body = BuildRecord),
        (status = 400, description = "Not a build id", body = ErrorReply),
        (status = 403, description = "The key may not see that component", body = ErrorReply),
        (status = 404, description = "No such build", body = ErrorReply),
    ),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn get_build(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(build_id): PathParams<String>,
) -> Result<Response, ApiError> {
    Ok(relay(visible_build(&state, &caller, &build_id).await?))
}

/// The build record's reply; the lookup answers 403 when the key may not see the build's component.
pub(super) async fn visible_build(state: &AppState, caller: &Caller, build_id: &str) -> Result<Reply, ApiError> {
    caller.require(Scope::Read)?;
    let query = BuildQuery { build_id: BuildId::parse(build_id)? };
    Ok(request(state, caller, &RequestedBy::default(), Endpoint::BuildGet, &query).await)
}

/// Build history, newest first.
#[utoipa::path(
    get, path = "/api/v1/builds", tag = "builds",
    params(
        ("component" = Option<String>, Query, description = "Only this component"),
        ("kind" = Option<String>, Query, description = "image or component"),
        ("status" = Option<String>, Query, description = "queued, running, succeeded, failed or cancelled"),
        ("limit" = Option<u32>, Query, description = "At most this many (default 50, at most 500)"),
        ("cursor" = Option<String>, Query, description = "The nextCursor of the previous page: go on from there"),
    ),
    responses(
        (status = 200, description = "Builds, newest first, and nextCursor while older ones remain", body = BuildList),
        (status = 400, description = "Bad input", body = ErrorReply),
    ),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn list_builds(
    State(state): State<AppState>,
    caller: Caller,
    QueryOrJson(query): QueryOrJson<BuildListQuery>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    Ok(forward(&state, &caller, Endpoint::BuildList, &query).await)
}

/// Every change of state of every build the key may see, live: one `build` event per change, whose data
/// is the build record (as `GET /builds/{buildId}` answers it). The stream ends when the key is revoked
/// or expires.
#[utoipa::path(
    get, path = "/api/v1/builds/events", tag = "builds",
    params(
        ("component" = Option<String>, Query, description = "Only this component"),
        ("kind" = Option<String>, Query, description = "image or component"),
    ),
    responses(
        (status = 200, description = "Build records as they change, from now on: each event's data is a build record", content_type = "text/event-stream", body = ServerSentEvent),
        (status = 400, description = "Bad input", body = ErrorReply),
    ),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn build_events(
    State(state): State<AppState>,
    caller: Caller,
    QueryOrJson(filter): QueryOrJson<BuildEventsQuery>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let subject = state.nats.subjects.build_events_wildcard();
    let changes = state.nats.client.subscribe(subject).await.map_err(unavailable)?;
    let key = caller.key().to_owned();
    let events = while_key_valid(state, key, changes)
        .filter_map(move |checked| {
            let shown = checked.ok().and_then(|(current, message)| {
                let record: BuildRecord = serde_json::from_slice(&message.payload).ok()?;
                let component = record.work.component();
                let shown = current.may(Scope::Read, component)
                    && filter.component.as_ref().is_none_or(|wanted| wanted == component)
                    && filter.kind.is_none_or(|kind| kind == record.work.kind());
                shown.then_some(record)
            });
            std::future::ready(shown.and_then(|record| Event::default().event("build").json_data(record).ok()))
        })
        .map(Ok::<_, Infallible>);
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

/// How often a stream that outlives its request checks its key while it has nothing to send.
const KEY_RECHECK: Duration = Duration::from_secs(1);

/// Why a stream stopped before its end.
#[derive(Debug)]
struct KeyGone;

impl std::fmt::Display for KeyGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the API key that opened this stream was revoked or has expired")
    }
}

/// `items` for as long as `key` stays valid, each with the key's caller as it is when the item comes: the
/// key is checked ([`Keys::current`](crate::auth::Keys::current)) at every item, and every [`KEY_RECHECK`]
/// while none comes; the first check that finds it revoked or expired ends the stream with `Err(KeyGone)`.
/// One server-sent event of the streams, as the OpenAPI document describes each: `event` (`message`
/// for a log line or a record, `end` with the build's final status, `error` when the stream stops early)
/// and its `data`.
#[derive(utoipa::ToSchema)]
pub struct ServerSentEvent {
    #[schema(example = "message")]
    pub event: Option<String>,
    pub data: String,
}

/// For every stream that outlives the request that opened it (`/builds/events`, `/builds/{id}/logs`).
fn while_key_valid<S>(
    state: AppState,
    key: String,
    items: S,
) -> impl Stream<Item = Result<(artifacts_runtime::auth::Caller, S::Item), KeyGone>>
where
    S: Stream + Send + 'static,
{
    futures::stream::unfold(Some((state, key, Box::pin(items))), |held| async move {
        let (state, key, mut items) = held?;
        loop {
            // Cancel-safe: a pending item stays in the stream for the next turn.
            let next = tokio::time::timeout(KEY_RECHECK, items.next()).await;
            let Some(caller) = state.keys.current(&key).await else {
                return Some((Err(KeyGone), None));
            };
            match next {
                Ok(Some(item)) => return Some((Ok((caller, item)), Some((state, key, items)))),
                Ok(None) => return None,
                Err(_quiet) => {}
            }
        }
    })
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildEventsQuery {
    component: Option<ComponentName>,
    kind: Option<BuildKind>,
}

/// A build's log as server-sent events: every line from the start, then live lines until it ends. A
/// stream ends early, after an `error` event, when its key is revoked or expires.
#[utoipa::path(
    get, path = "/api/v1/builds/{build_id}/logs", tag = "builds",
    params(
        ("build_id" = String, Path, description = "Build id"),
        ("format" = Option<String>, Query, description = "`events` (the default): server-sent events, `data` per line and a last `end` event whose data is the status; `text`: plain lines, the last one `build <status>`"),
    ),
    responses(
        (status = 200, description = "Log lines, from the first, then live until the build ends", content_type = "text/event-stream", body = ServerSentEvent),
        (status = 400, description = "Not a build id, or an unknown format", body = ErrorReply),
        (status = 403, description = "The key may not see that component", body = ErrorReply),
        (status = 404, description = "No such build", body = ErrorReply),
    ),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn build_logs(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(build_id): PathParams<String>,
    QueryOrJson(query): QueryOrJson<LogQuery>,
) -> Result<Response, ApiError> {
    let text = match query.format.as_deref() {
        None | Some("events") => false,
        Some("text") => true,
        Some(other) => {
            return Err(RequestError::invalid(format!("format {other:?} is not known: use events or text")).into())
        }
    };
    let reply = visible_build(&state, &caller, &build_id).await?;
    if reply.is_failure() {
        return Ok(relay(reply));
    }
    let build_id = BuildId::parse(&build_id)?;
    let lines = log_lines(&state.nats, &build_id).await?;
    let log = log_stream(state.nats.clone(), build_id, lines);
    // A live log is read for as long as the build runs: it ends when its key is revoked or expires.
    let log = while_key_valid(state, caller.key().to_owned(), log).map(|checked| match checked {
        Ok((_, line)) => line,
        Err(gone) => LogLine::Error(gone.to_string()),
    });
    if text {
        let body = log.map(|line| {
            Ok::<_, Infallible>(match line {
                LogLine::Text(text) => format!("{text}\n"),
                LogLine::End(status) => format!("build {status}\n"),
                LogLine::Error(error) => format!("the log stopped: {error}\n"),
            })
        });
        let headers = [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")];
        return Ok((headers, axum::body::Body::from_stream(body)).into_response());
    }
    let events = log.map(|line| {
        Ok::<_, Infallible>(match line {
            LogLine::Text(text) => Event::default().data(text),
            LogLine::End(status) => Event::default().event("end").data(status),
            LogLine::Error(error) => Event::default().event("error").data(error),
        })
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

#[derive(Debug, serde::Deserialize)]
pub struct LogQuery {
    format: Option<String>,
}

/// Every line of the build's log from the first, then live lines: an ordered consumer on its subject.
/// JetStream answers "no responders" for a moment while nats-server reloads its users (at every key
/// change under `artifacts up`), so creating the consumer is tried again for a few seconds.
async fn log_lines(nats: &Nats, build_id: &BuildId) -> Result<Ordered, ApiError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        match try_log_lines(nats, build_id).await {
            Ok(lines) => return Ok(lines),
            Err(err) if tokio::time::Instant::now() >= deadline => {
                return Err(RequestError::unavailable(format!("build logs are unavailable: {err}")).into())
            }
            Err(err) => {
                tracing::debug!(%err, %build_id, "the log consumer cannot be made yet; trying again");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn try_log_lines(nats: &Nats, build_id: &BuildId) -> Result<Ordered, async_nats::Error> {
    let stream = nats.jetstream.get_stream(nats.store.streams().logs_stream()).await?;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: nats.subjects.build_log(build_id),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await?;
    Ok(consumer.messages().await?)
}

/// How long the log may stay silent before the build record is checked for its end (a build that ended
/// without writing the end of its log, such as one refused before it started).
const SILENCE_CHECK: Duration = Duration::from_secs(5);

/// What a log stream carries: lines, then the build's final status (or why the log stopped).
enum LogLine {
    Text(String),
    End(String),
    Error(String),
}

/// The log's lines, then its end.
fn log_stream(nats: Arc<Nats>, build_id: BuildId, lines: Ordered) -> impl Stream<Item = LogLine> {
    futures::stream::unfold(Some((nats, build_id, lines)), |state| async move {
        let (nats, build_id, mut lines) = state?;
        loop {
            let next = tokio::time::timeout(SILENCE_CHECK, lines.next()).await;
            match next {
                Ok(Some(Ok(message))) => {
                    let text = String::from_utf8_lossy(&message.payload).into_owned();
                    let end = message.headers.as_ref().and_then(|h| h.get(END_HEADER)).map(|v| v.as_str().to_owned());
                    return Some(match end {
                        Some(status) => (LogLine::End(status), None),
                        None => (LogLine::Text(text), Some((nats, build_id, lines))),
                    });
                }
                Ok(Some(Err(err))) => {
                    tracing::warn!(%err, %build_id, "log consumer error");
                    return Some((LogLine::Error(err.to_string()), None));
                }
                Ok(None) => return None,
                Err(_silence) => {
                    if let Ok(Some(record)) = nats.store.build(&build_id).await {
                        if record.status.is_finished() {
                            return Some((LogLine::End(record.status.as_str().to_owned()), None));
                        }
                    }
                }
            }
        }
    })
}
