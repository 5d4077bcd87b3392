//! Request/reply over NATS, both sides: functions serve endpoints as a NATS micro service
//! (`$SRV.PING`, `$SRV.INFO`, `$SRV.STATS`), and the gateway (or any Rust client) calls them.
//!
//! A reply is the contract's JSON body plus, when the request failed, the micro-service error headers
//! `Nats-Service-Error` (the message) and `Nats-Service-Error-Code` (the HTTP status). The JSON body rides
//! along with the headers so that a client reading only the payload still gets `status` and
//! `errorMessage`.

use std::future::Future;
use std::sync::Arc;

use async_nats::service::{ServiceExt, NATS_SERVICE_ERROR, NATS_SERVICE_ERROR_CODE};
use async_nats::{HeaderMap, Message};
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use artifacts_schemas::{Endpoint, Failure, RequestError, RequestedBy};

use crate::auth::{
    bearer, claimed_identity, key_id_of, Authenticator, Caller, GITHUB_USERNAME_HEADERS, LINUX_USERNAME_HEADERS,
};
use crate::nats::{Nats, SERVICE_INBOX_PREFIX};
use crate::nats_users::SERVICE_USER;
use crate::telemetry::{add_request_id, in_request, RequestId};

/// Whether the stack may publish its answer to a request on `reply`: only on an inbox, never on a
/// subject a stream, bucket or job listens to. A request's reply subject is whatever the requester
/// wrote, and the stack's user may publish anywhere, so this is checked before every answer.
///
/// Allowed: `_R_.…` (a client's request imported from the CLIENTS account, whose reply the server itself
/// rewrote: see [`crate::nats_users`]), `_INBOX_service.…` (the stack's own processes), `_INBOX_<key id>.…`
/// for the key the request presents, and `_INBOX.…` (the default inbox, on a server without accounts).
pub fn reply_allowed(reply: &str, presented_key_id: Option<&str>) -> bool {
    let Some((first, rest)) = reply.split_once('.') else { return false };
    if rest.is_empty() || rest.split('.').any(|token| token.is_empty() || token.starts_with('$')) {
        return false;
    }
    match first {
        "_R_" | "_INBOX" => true,
        _ => {
            first.strip_prefix("_INBOX_").is_some_and(|owner| owner == SERVICE_USER || presented_key_id == Some(owner))
        }
    }
}

/// The reply subject of `message` if the stack may answer there; a refused one is counted and logged.
pub fn allowed_reply(message: &Message) -> Option<async_nats::Subject> {
    let reply = message.reply.clone()?;
    let presented = message
        .headers
        .as_ref()
        .and_then(|h| h.get("Authorization"))
        .and_then(|value| bearer(value.as_str()))
        .map(key_id_of);
    if reply_allowed(&reply, presented) {
        return Some(reply);
    }
    metrics::counter!("artifacts_nats_replies_refused_total").increment(1);
    tracing::warn!(subject = %message.subject, %reply, "not answering: the reply subject is not an inbox");
    None
}

/// An answer: the HTTP status it stands for and its JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub body: Bytes,
}

impl Reply {
    pub fn ok(body: &impl Serialize) -> Self {
        Self::with_code(200, body)
    }

    /// A reply that is a failure (`code` >= 400) but carries a body other than the plain error reply,
    /// such as a lookup's `not_found` answer.
    pub fn with_code(code: u16, body: &impl Serialize) -> Self {
        let body = serde_json::to_vec(body).expect("message types always serialise");
        Self { code, body: body.into() }
    }

    pub fn is_failure(&self) -> bool {
        self.code >= 400
    }

    /// A failure with JetStream's `error` object beside `status` and `errorMessage`.
    fn with_jetstream_error(self) -> Self {
        if !self.is_failure() {
            return self;
        }
        let description = self.error_message();
        let mut body: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_default();
        body["error"] = serde_json::json!({"code": self.code, "description": description});
        Self::with_code(self.code, &body)
    }

    /// The `errorMessage` of the body, for the `Nats-Service-Error` header.
    fn error_message(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|body| body.get("errorMessage").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or_else(|| "request failed".into())
    }

    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if self.is_failure() {
            // Header values cannot hold line breaks.
            headers.insert(NATS_SERVICE_ERROR, self.error_message().replace(['\r', '\n'], " ").as_str());
            headers.insert(NATS_SERVICE_ERROR_CODE, self.code.to_string().as_str());
        }
        headers
    }

    fn from_message(message: &Message) -> Self {
        let code = message
            .headers
            .as_ref()
            .and_then(|h| h.get(NATS_SERVICE_ERROR_CODE))
            .and_then(|v| v.as_str().parse().ok())
            .unwrap_or(200);
        Self { code, body: message.payload.clone() }
    }
}

impl Reply {
    /// The answer as its message, or the failure it stands for.
    pub fn into_result<T: serde::de::DeserializeOwned>(self) -> Result<T, RequestError> {
        if self.is_failure() {
            return Err(RequestError::new(Failure::from_code(self.code), self.error_message()));
        }
        artifacts_schemas::parse_json(&self.body)
    }
}

impl From<RequestError> for Reply {
    fn from(err: RequestError) -> Self {
        Self::with_code(err.failure.code(), &err.reply())
    }
}

impl<T: Serialize> From<Result<T, RequestError>> for Reply {
    fn from(result: Result<T, RequestError>) -> Self {
        match result {
            Ok(body) => Reply::ok(&body),
            Err(err) => err.into(),
        }
    }
}

/// The headers that carry a request's key and claimed identity to a function: `Authorization` and the
/// identity headers. The function authenticates the key itself.
pub fn caller_headers(key: &str, requested_by: &RequestedBy) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("Authorization", format!("Bearer {key}").as_str());
    for (name, value) in [
        (LINUX_USERNAME_HEADERS[0], &requested_by.linux_username),
        (GITHUB_USERNAME_HEADERS[0], &requested_by.github_username),
    ] {
        if let Some(value) = value {
            headers.insert(name, value.as_str());
        }
    }
    headers
}

/// Set by the lookup on the builds it asks for: they do not run again an identical build that failed. (A
/// client that sets it only makes its own request more cautious.)
pub const LOOKUP_HEADER: &str = "Artifacts-Lookup";

/// A request to an endpoint, from an authenticated caller holding the endpoint's scope.
pub struct Request {
    pub endpoint: Endpoint,
    pub message: Message,
    pub caller: Caller,
    /// Who the request is from: the caller's key id and the identities it claims (checked against the
    /// key's pins).
    pub requested_by: RequestedBy,
}

impl Request {
    async fn authorize(
        authenticator: &Authenticator,
        endpoint: Endpoint,
        message: Message,
    ) -> Result<Self, RequestError> {
        let headers = message.headers.as_ref();
        let caller = authenticator.authenticate_nats(headers).await?;
        // A client's own request counts against its key's rate; one the gateway relays counted there.
        if !message.reply.as_ref().is_some_and(|reply| reply.starts_with(&format!("{SERVICE_INBOX_PREFIX}."))) {
            authenticator.admit(&caller.key_id)?;
        }
        caller.require(endpoint.scope())?;
        let (linux, github) = claimed_identity(|name| headers.and_then(|h| h.get(name)).map(|v| v.as_str()))?;
        let requested_by = caller.requested_by(linux, github)?;
        Ok(Self { endpoint, message, caller, requested_by })
    }
}

/// Calls an endpoint, with the connection's request timeout. The transport's own failures (nobody
/// serves the subject, no answer in time) come back as 503 replies naming the cause. Made during a
/// request's work, the call carries that request's id ([`crate::telemetry::add_request_id`]).
///
/// A lost NATS node is a pause, not a timeout: when the connection drops while the request is in flight,
/// the request is sent again as soon as the client has reconnected (to the next node listed), for the
/// endpoints where a second copy is harmless ([`resend`]: reads, and submissions, which are deduplicated
/// by content); the others answer 503 at once, since whether they were done is unknown. A request that
/// reached no one ("no responders": the function's own connection is coming back, or its process is
/// restarting) is sent again for every endpoint, for [`NO_RESPONDERS_WAIT`] at most. A point read with no
/// answer after [`HEDGE_AFTER`] (its function died with the request in hand) is sent once more, and the
/// first answer of the two is taken. All of it within the one request timeout.
pub async fn call(nats: &Nats, endpoint: Endpoint, headers: HeaderMap, payload: Bytes) -> Reply {
    let subject = nats.subjects.endpoint(endpoint);
    call_subject(nats, &subject, resend(endpoint), headers, payload, nats.link.request_timeout).await
}

/// Calls a stack-only subject ([`serve_stack_only`]) within `timeout`, sent again on a lost connection
/// ([`Resend::OnLoss`]: what is served there must be harmless twice, as submissions are).
pub async fn call_stack_only(nats: &Nats, subject: &str, payload: Bytes, timeout: std::time::Duration) -> Reply {
    call_subject(nats, subject, Resend::OnLoss, HeaderMap::new(), payload, timeout).await
}

async fn call_subject(
    nats: &Nats,
    subject: &str,
    resend: Resend,
    mut headers: HeaderMap,
    payload: Bytes,
    timeout: std::time::Duration,
) -> Reply {
    add_request_id(&mut headers);
    match request(nats, subject, resend, headers, payload, timeout).await {
        Ok(message) => Reply::from_message(&message),
        Err(Unanswered::Lost) => RequestError::unavailable(format!(
            "the connection to NATS was lost while {subject} was in flight; it may or may not have been done"
        ))
        .into(),
        Err(Unanswered::Nats(err)) => {
            use async_nats::RequestErrorKind::*;
            let message = match err.kind() {
                NoResponders => {
                    format!("no service answers {subject}: is the function that serves it running?")
                }
                TimedOut => format!("{subject} did not answer in time"),
                MaxPayloadExceeded => {
                    return RequestError::new(Failure::TooLarge, "the request is larger than NATS accepts").into()
                }
                _ => format!("NATS is unavailable: {err}"),
            };
            RequestError::unavailable(message).into()
        }
    }
}

/// How long a request that reached no one is sent again, in pauses of [`NO_RESPONDERS_PAUSES_MS`], then
/// of 250 ms.
pub const NO_RESPONDERS_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
const NO_RESPONDERS_PAUSES_MS: [u64; 5] = [10, 25, 50, 100, 200];

/// When a point read without an answer is sent a second time (half the request timeout at most).
pub const HEDGE_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// What may be done with a request whose answer may have been lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resend {
    /// Nothing: a second copy could act twice (a delete would answer 404, a cancel 409).
    Never,
    /// Sent again on a lost connection: listings, and submissions (deduplicated by content).
    OnLoss,
    /// Also sent a second time when it has no answer after [`HEDGE_AFTER`]: point reads.
    Hedged,
}

/// Which endpoints may be sent twice.
pub fn resend(endpoint: Endpoint) -> Resend {
    use Endpoint::*;
    match endpoint {
        ImageGet | ComponentGet | ComponentArchive | BuildGet | ProvenanceKey | BuildProvenance | BuildSbom => {
            Resend::Hedged
        }
        BuildList | CatalogImages | CatalogComponents | SecretList | ImageBuild | ComponentBuild | GitPush | GcRun
        | SecretPut => Resend::OnLoss,
        BuildCancel | BuildPin | ImageDelete | ComponentDelete | SecretDelete => Resend::Never,
    }
}

/// Why a request has no answer.
enum Unanswered {
    Nats(async_nats::RequestError),
    /// The connection dropped with a request in flight that must not be sent twice.
    Lost,
}

/// Sends the request, again on a lost connection or when it reached no one (see [`call`]).
async fn request(
    nats: &Nats,
    subject: &str,
    resend: Resend,
    headers: HeaderMap,
    payload: Bytes,
    timeout: std::time::Duration,
) -> Result<Message, Unanswered> {
    use async_nats::RequestErrorKind;
    use tokio::time::Instant;
    let started = Instant::now();
    let deadline = started + timeout;
    let send = |deadline: Instant| {
        let request = async_nats::Request::new()
            .headers(headers.clone())
            .payload(payload.clone())
            .timeout(Some(deadline.saturating_duration_since(Instant::now())));
        nats.client.send_request(subject.to_owned(), request)
    };
    let mut link = nats.link.state.clone();
    let mut pauses = NO_RESPONDERS_PAUSES_MS.into_iter().chain(std::iter::repeat(250));
    loop {
        let losses = link.borrow_and_update().losses;
        if Instant::now() >= deadline {
            return Err(Unanswered::Nats(RequestErrorKind::TimedOut.into()));
        }
        let answer = async {
            match resend {
                Resend::Hedged => {
                    let after = HEDGE_AFTER.min(timeout / 2);
                    let second = || reaching_someone(|| send(deadline), deadline);
                    hedged(send(deadline), Instant::now() + after, second, subject).await
                }
                _ => send(deadline).await,
            }
        };
        let answer = tokio::select! {
            answer = answer => answer,
            () = lost(&mut link, losses) => {
                if resend == Resend::Never {
                    return Err(Unanswered::Lost);
                }
                tracing::info!(%subject, "the NATS connection dropped with the request in flight: sending it again once reconnected");
                metrics::counter!("artifacts_nats_requests_resent_total", "why" => "connection_lost").increment(1);
                let reconnected = tokio::time::timeout_at(deadline, link.wait_for(|state| state.connected)).await;
                if !reconnected.is_ok_and(|watching| watching.is_ok()) {
                    return Err(Unanswered::Nats(RequestErrorKind::TimedOut.into()));
                }
                continue;
            }
        };
        match answer {
            Err(err) if err.kind() == RequestErrorKind::NoResponders => {
                let pause = std::time::Duration::from_millis(pauses.next().unwrap_or(250));
                let until = (started + NO_RESPONDERS_WAIT).min(deadline);
                if Instant::now() + pause >= until {
                    return Err(Unanswered::Nats(err));
                }
                metrics::counter!("artifacts_nats_requests_resent_total", "why" => "no_responders").increment(1);
                tokio::time::sleep(pause).await;
            }
            answer => return answer.map_err(Unanswered::Nats),
        }
    }
}

/// The first answer of `first` and, if it has none by `second_at` (2 s after it was sent), of a second
/// copy as well.
async fn hedged<F, S>(
    first: F,
    second_at: tokio::time::Instant,
    second: impl FnOnce() -> S,
    subject: &str,
) -> Result<Message, async_nats::RequestError>
where
    F: Future<Output = Result<Message, async_nats::RequestError>>,
    S: Future<Output = Result<Message, async_nats::RequestError>>,
{
    tokio::pin!(first);
    tokio::select! {
        biased;
        answer = &mut first => return answer,
        () = tokio::time::sleep_until(second_at) => {}
    }
    tracing::info!(%subject, "no answer yet: sending the read a second time");
    metrics::counter!("artifacts_nats_requests_resent_total", "why" => "no_answer_yet").increment(1);
    let second = second();
    tokio::pin!(second);
    tokio::select! {
        answer = &mut first => match answer {
            Ok(message) => Ok(message),
            Err(_) => second.await,
        },
        answer = &mut second => match answer {
            Ok(message) => Ok(message),
            Err(_) => first.await,
        },
    }
}

/// Sends until the request reaches someone or `deadline` is near: the second copy of a hedged read, while
/// the first still waits (the function that had it died, and its new process is starting).
async fn reaching_someone<F, S>(send: F, deadline: tokio::time::Instant) -> Result<Message, async_nats::RequestError>
where
    F: Fn() -> S,
    S: Future<Output = Result<Message, async_nats::RequestError>>,
{
    let mut pause = std::time::Duration::from_millis(10);
    loop {
        match send().await {
            Err(err)
                if err.kind() == async_nats::RequestErrorKind::NoResponders
                    && tokio::time::Instant::now() + pause < deadline =>
            {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_millis(250));
            }
            answer => return answer,
        }
    }
}

/// Resolves once the connection has dropped `losses` times or more.
async fn lost(link: &mut tokio::sync::watch::Receiver<LinkState>, losses: u64) {
    loop {
        if link.borrow_and_update().losses != losses {
            return;
        }
        if link.changed().await.is_err() {
            // The client is gone: the request ends on its own.
            return std::future::pending().await;
        }
    }
}

/// The NATS connection as [`call`] watches it, from the client's events ([`crate::nats::connect`]).
#[derive(Clone)]
pub struct Link {
    state: tokio::sync::watch::Receiver<LinkState>,
    /// `nats.request_timeout_secs`: the whole time a [`call`] may take, resends included.
    pub request_timeout: std::time::Duration,
}

#[derive(Debug, Clone, Copy)]
struct LinkState {
    /// How many times the connection has dropped.
    losses: u64,
    connected: bool,
}

impl Link {
    /// The link, and the callback for `ConnectOptions::event_callback` that keeps it.
    pub fn new(
        request_timeout: std::time::Duration,
    ) -> (Self, impl Fn(async_nats::Event) -> std::future::Ready<()> + Clone + Send + Sync + 'static) {
        let (sender, state) = tokio::sync::watch::channel(LinkState { losses: 0, connected: true });
        let sender = Arc::new(sender);
        let on_event = move |event: async_nats::Event| {
            match event {
                async_nats::Event::Disconnected => {
                    tracing::warn!("the connection to NATS dropped; reconnecting");
                    sender.send_modify(|state| {
                        state.losses += 1;
                        state.connected = false;
                    });
                }
                async_nats::Event::Connected => {
                    if sender.borrow().losses > 0 {
                        tracing::info!("reconnected to NATS");
                    }
                    sender.send_modify(|state| state.connected = true);
                }
                _ => {}
            }
            std::future::ready(())
        };
        (Self { state, request_timeout }, on_event)
    }

    /// Whether the client is connected now.
    pub fn connected(&self) -> bool {
        self.state.borrow().connected
    }
}

/// The micro services of the stack's functions, as `$SRV.PING` names them.
pub const LOOKUP_SERVICE: &str = "artifacts-lookup";
pub const BUILD_IMAGE_SERVICE: &str = "artifacts-build-image";
pub const BUILD_COMPONENT_SERVICE: &str = "artifacts-build-component";
pub const GIT_TRIGGER_SERVICE: &str = "artifacts-git-trigger";
pub const GC_SERVICE: &str = "artifacts-gc";
pub const FUNCTION_SERVICES: [&str; 5] =
    [LOOKUP_SERVICE, BUILD_IMAGE_SERVICE, BUILD_COMPONENT_SERVICE, GIT_TRIGGER_SERVICE, GC_SERVICE];

/// The function services that do not answer `$SRV.PING.<name>` within a second, in that order.
pub async fn unanswered_services(nats: &Nats) -> Vec<&'static str> {
    let pings = FUNCTION_SERVICES.map(|name| async move {
        let ping = nats.client.request(format!("$SRV.PING.{name}"), Bytes::new());
        match tokio::time::timeout(std::time::Duration::from_secs(1), ping).await {
            Ok(Ok(_)) => None,
            _ => Some(name),
        }
    });
    futures::future::join_all(pings).await.into_iter().flatten().collect()
}

/// What a micro service is called and says of itself.
pub struct ServiceSpec {
    pub name: &'static str,
    pub description: &'static str,
    pub endpoints: Vec<Endpoint>,
    /// Shown in `$SRV.INFO`, e.g. the architectures a build worker builds.
    pub metadata: std::collections::HashMap<String, String>,
}

/// Serves the endpoints until `shutdown`, handling each request in its own task. Every request is
/// authenticated and checked for its endpoint's scope before `handler` sees it (401 and 403 otherwise).
/// At shutdown the service unregisters first (so no new request reaches it) and the requests in hand
/// finish.
pub async fn serve<H, F>(
    nats: &Nats,
    spec: ServiceSpec,
    authenticator: Arc<Authenticator>,
    handler: H,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    H: Fn(Request) -> F + Send + Sync + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    let service = nats
        .client
        .service_builder()
        .description(spec.description)
        .metadata(spec.metadata)
        .start(spec.name, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|err| anyhow::anyhow!("cannot register NATS service {}: {err}", spec.name))?;
    let group = service.group(nats.subjects.prefix());
    let mut streams = Vec::new();
    for &endpoint in &spec.endpoints {
        let stream = group
            .endpoint_builder()
            .name(endpoint.name())
            .add(endpoint.suffix())
            .await
            .map_err(|err| anyhow::anyhow!("cannot add endpoint {}: {err}", endpoint.suffix()))?;
        streams.push(stream.map(move |request| (endpoint, request)));
    }
    tracing::info!(service = spec.name, endpoints = spec.endpoints.len(), "serving");
    let mut requests = futures::stream::select_all(streams);
    let handler = Arc::new(handler);
    let in_hand = tokio_util::task::TaskTracker::new();
    loop {
        let (endpoint, request) = tokio::select! {
            _ = shutdown.cancelled() => break,
            next = requests.next() => match next {
                Some(next) => next,
                None => break,
            },
        };
        if allowed_reply(&request.message).is_none() {
            continue;
        }
        let (handler, authenticator) = (Arc::clone(&handler), Arc::clone(&authenticator));
        // The caller's request id (the gateway's, or a NATS client's own), else one made here; the span
        // is at error level so that every line of the request carries the id whatever the log filter.
        let request_id = RequestId::from_headers(request.message.headers.as_ref()).unwrap_or_default();
        let span = tracing::error_span!("request", request_id = %request_id, endpoint = endpoint.suffix());
        let work = async move {
            let started = std::time::Instant::now();
            let reply = match Request::authorize(&authenticator, endpoint, request.message.clone()).await {
                Ok(authorized) => handler(authorized).await,
                Err(err) => err.into(),
            };
            // `git.push` stands where a JetStream publish used to: answer failures as JetStream does too,
            // so a client's `js.publish` raises with the reason.
            let reply = if endpoint == Endpoint::GitPush { reply.with_jetstream_error() } else { reply };
            let took_ms = started.elapsed().as_secs_f64() * 1e3;
            tracing::info!(code = reply.code, took_ms, "answered");
            let mut headers = reply.headers();
            add_request_id(&mut headers);
            if let Err(err) = request.respond_with_headers(Ok(reply.body), headers).await {
                tracing::warn!(%err, "could not send reply");
            }
        };
        in_hand.spawn(in_request(request_id, span, work));
    }
    if let Err(err) = service.stop().await {
        tracing::warn!(%err, "could not unregister the service cleanly");
    }
    in_hand.close();
    in_hand.wait().await;
    Ok(())
}

/// Serves a stack-only subject (one no client account imports, such as
/// [`Subjects::triggered_builds`](artifacts_schemas::Subjects::triggered_builds)): only the stack's own
/// processes can send there, so no key is presented or checked, and an answer goes only to the stack's
/// inbox. The instances of a function share the requests; at shutdown, those in hand are answered.
pub async fn serve_stack_only<H, F>(
    nats: &Nats,
    subject: String,
    handler: H,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    H: Fn(Message) -> F + Send + Sync + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    let mut requests = nats
        .client
        .queue_subscribe(subject.clone(), subject.clone())
        .await
        .map_err(|err| anyhow::anyhow!("cannot subscribe to {subject}: {err}"))?;
    let handler = Arc::new(handler);
    let in_hand = tokio_util::task::TaskTracker::new();
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => break,
            next = requests.next() => match next {
                Some(message) => message,
                None => break,
            },
        };
        let Some(reply_to) =
            message.reply.clone().filter(|reply| reply.starts_with(&format!("{SERVICE_INBOX_PREFIX}.")))
        else {
            metrics::counter!("artifacts_nats_replies_refused_total").increment(1);
            tracing::warn!(%subject, reply = ?message.reply, "not answering: the reply subject is not the stack's inbox");
            continue;
        };
        let request_id = RequestId::from_headers(message.headers.as_ref()).unwrap_or_default();
        let span = tracing::error_span!("request", request_id = %request_id, subject = %subject);
        let (handler, client) = (Arc::clone(&handler), nats.client.clone());
        let work = async move {
            let reply = handler(message).await;
            tracing::info!(code = reply.code, "answered");
            let mut headers = reply.headers();
            add_request_id(&mut headers);
            if let Err(err) = client.publish_with_headers(reply_to, headers, reply.body).await {
                tracing::warn!(%err, "could not send reply");
            }
        };
        in_hand.spawn(in_request(request_id, span, work));
    }
    in_hand.close();
    in_hand.wait().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::reply_allowed;

    #[test]
    fn answers_go_to_inboxes_only() {
        for allowed in ["_R_.AbCd.xyz", "_INBOX.abc.1", "_INBOX_service.abc.2", "_INBOX_00000000000000aa.x"] {
            assert!(reply_allowed(allowed, Some("00000000000000aa")), "{allowed}");
        }
        for refused in [
            "$KV.artifacts_keys.00000000000000aa",
            "$O.artifacts_archives.C.x",
            "$JS.API.STREAM.PURGE.ARTIFACTS_JOBS",
            "artifacts.jobs.image.amd64",
            "_INBOX_00000000000000bb.x",
            "_INBOX",
            "_INBOX.",
            "_R_",
            "_INBOX.$KV",
        ] {
            assert!(!reply_allowed(refused, Some("00000000000000aa")), "{refused}");
        }
        assert!(!reply_allowed("_INBOX_00000000000000aa.x", None), "a key's inbox needs that key");
    }
}
