//! Logging with `tracing`: readable text on a terminal, one JSON object per line otherwise.

use std::io::{IsTerminal, Write};

use tracing_subscriber::{fmt, EnvFilter};

use crate::configuration::{LogFormat, LogSettings};

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `log.filter`.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match settings.format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = fmt().with_env_filter(filter).with_writer(|| Stderr).with_ansi(std::io::stderr().is_terminal());
    // A second init (tests run many apps in one process) keeps the first subscriber.
    let _ = if json { builder.json().flatten_event(true).try_init() } else { builder.compact().try_init() };
}

/// Standard error that never reports a failed write. Under `artifacts up` it is a pipe that closes when
/// `up` dies; tracing-subscriber reports a failed write with `eprintln!`, which then panics the task that
/// logged (the shutdown task among them, so an orphaned process never stopped).
struct Stderr;

impl Write for Stderr {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// The header that carries a request's id: on HTTP requests and answers, and on every NATS message the
/// request causes (a call to a function, a job, a push event).
pub const REQUEST_ID_HEADER: &str = "X-Request-Id";

/// The longest request id taken from a client; a longer one is replaced.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// The id that follows one request through the gateway, the functions and the workers: every log line
/// of its work carries it as the field `request_id` of its span ([`in_request`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

tokio::task_local! {
    static CURRENT: RequestId;
}

impl RequestId {
    /// A fresh id: 32 random hex digits.
    pub fn new() -> Self {
        Self(format!("{:032x}", rand::random::<u128>()))
    }

    /// A client's id, if it is safe to log and to pass on: 1 to [`MAX_REQUEST_ID_LEN`] ASCII letters,
    /// digits and `-`, `_`, `.`, `:`, `@`, `+`, `/`, `=` (a UUID, a base64 token, a proxy's trace id).
    pub fn parse(text: &str) -> Option<Self> {
        let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@' | '+' | '/' | '=');
        (!text.is_empty() && text.len() <= MAX_REQUEST_ID_LEN && text.chars().all(safe)).then(|| Self(text.to_owned()))
    }

    /// The id a NATS message carries, if it carries a valid one.
    pub fn from_headers(headers: Option<&async_nats::HeaderMap>) -> Option<Self> {
        headers.and_then(|h| h.get(REQUEST_ID_HEADER)).and_then(|value| Self::parse(value.as_str()))
    }

    /// The id of the request whose work the current task is doing ([`in_request`]).
    pub fn current() -> Option<Self> {
        CURRENT.try_with(Clone::clone).ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Runs `work` as request `id`'s, inside `span` (which should have a `request_id` field): its log lines
/// carry the id, and the NATS calls and publishes it makes pass the id on ([`add_request_id`]). Tasks it
/// spawns are not covered.
pub async fn in_request<F: std::future::Future>(id: RequestId, span: tracing::Span, work: F) -> F::Output {
    use tracing::Instrument;
    CURRENT.scope(id, work.instrument(span)).await
}

/// Adds the current request's id ([`RequestId::current`]) to a NATS message's headers, unless they
/// already name one.
pub fn add_request_id(headers: &mut async_nats::HeaderMap) {
    if headers.get(REQUEST_ID_HEADER).is_none() {
        if let Some(id) = RequestId::current() {
            headers.insert(REQUEST_ID_HEADER, id.as_str());
        }
    }
}

/// New NATS headers that carry the current request's id, for a message the request causes.
pub fn request_headers() -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    add_request_id(&mut headers);
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_from_clients_are_bounded_and_safe() {
        for good in ["test-1234", "0f3c9a2e-7f1b-4c55-9d2e-1a2b3c4d5e6f", "a", "Root=1-5759e988:abc", "x/y+z=="] {
            assert_eq!(RequestId::parse(good).map(|id| id.0), Some(good.to_owned()), "{good}");
        }
        let long = "a".repeat(MAX_REQUEST_ID_LEN + 1);
        for bad in ["", "a b", "a\nb", "a\"b", "é", "{x}", "a;b", long.as_str()] {
            assert_eq!(RequestId::parse(bad), None, "{bad:?}");
        }
        let fresh = RequestId::new();
        assert_eq!(RequestId::parse(fresh.as_str()), Some(fresh.clone()));
        assert_ne!(fresh, RequestId::new());
    }

    #[tokio::test]
    async fn the_current_id_rides_on_nats_headers() {
        let mut outside = async_nats::HeaderMap::new();
        add_request_id(&mut outside);
        assert!(outside.get(REQUEST_ID_HEADER).is_none());
        let id = RequestId::parse("test-42").unwrap();
        let headers = in_request(id, tracing::Span::none(), async {
            let mut headers = async_nats::HeaderMap::new();
            add_request_id(&mut headers);
            headers
        })
        .await;
        assert_eq!(RequestId::from_headers(Some(&headers)).unwrap().as_str(), "test-42");
    }
}
