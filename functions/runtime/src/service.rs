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

use artifacts_schemas::{Endpoint, Failure, RequestError, RequestedBy, Username};

use crate::nats::Nats;

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

/// The header that carries the id of the API key a request came with (set by the gateway).
pub const API_KEY_ID_HEADER: &str = "Artifacts-Api-Key-Id";

/// Identity headers of a request: `linux_username`, `github_username`, and the API key id.
pub fn requested_by(headers: Option<&HeaderMap>) -> Result<RequestedBy, RequestError> {
    let Some(headers) = headers else { return Ok(RequestedBy::default()) };
    let user = |name: &str| -> Result<Option<String>, RequestError> {
        headers
            .get(name)
            .map(|v| Username::parse(name, v.as_str()).map(Username::into_string))
            .transpose()
            .map_err(Into::into)
    };
    Ok(RequestedBy {
        linux_username: user("linux_username")?,
        github_username: user("github_username")?,
        api_key_id: headers.get(API_KEY_ID_HEADER).map(|v| v.as_str().to_owned()),
    })
}

/// The NATS headers that carry `requested_by`.
pub fn identity_headers(requested_by: &RequestedBy) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("linux_username", &requested_by.linux_username),
        ("github_username", &requested_by.github_username),
        (API_KEY_ID_HEADER, &requested_by.api_key_id),
    ] {
        if let Some(value) = value {
            headers.insert(name, value.as_str());
        }
    }
    headers
}

/// Calls an endpoint, with the connection's request timeout. The transport's own failures (nobody
/// serves the subject, no answer in time) come back as 503 replies naming the cause.
pub async fn call(nats: &Nats, endpoint: Endpoint, headers: HeaderMap, payload: Bytes) -> Reply {
    let subject = nats.subjects.endpoint(endpoint);
    match nats.client.request_with_headers(subject.clone(), headers, payload).await {
        Ok(message) => Reply::from_message(&message),
        Err(err) => {
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

/// What a micro service is called and says of itself.
pub struct ServiceSpec {
    pub name: &'static str,
    pub description: &'static str,
    pub endpoints: Vec<Endpoint>,
    /// Shown in `$SRV.INFO`, e.g. the architectures a build worker builds.
    pub metadata: std::collections::HashMap<String, String>,
}

/// Serves the endpoints until `shutdown`, handling each request in its own task. At shutdown the service
/// unregisters first (so no new request reaches it) and the requests in hand finish.
pub async fn serve<H, F>(nats: &Nats, spec: ServiceSpec, handler: H, shutdown: CancellationToken) -> anyhow::Result<()>
where
    H: Fn(Endpoint, Message) -> F + Send + Sync + 'static,
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
        let handler = Arc::clone(&handler);
        in_hand.spawn(async move {
            let reply = handler(endpoint, request.message.clone()).await;
            let headers = reply.headers();
            if let Err(err) = request.respond_with_headers(Ok(reply.body), headers).await {
                tracing::warn!(%err, endpoint = endpoint.suffix(), "could not send reply");
            }
        });
    }
    if let Err(err) = service.stop().await {
        tracing::warn!(%err, "could not unregister the service cleanly");
    }
    in_hand.close();
    in_hand.wait().await;
    Ok(())
}
