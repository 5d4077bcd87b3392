//! The Docker engine connection of build workers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bollard::Docker;

use artifacts_runtime::configuration::Settings;

use crate::attempt::BuildFailure;

/// Connects to `docker.host` (else `DOCKER_HOST`, else the local socket) and negotiates the API version:
/// Debian's engine answers 1.41 and refuses bollard's newer default.
pub async fn connect(settings: &Settings) -> Result<Docker, String> {
    OUTAGE_LIMIT_SECS.store(settings.build.engine_outage_secs, Ordering::Relaxed);
    let host = settings.docker_host();
    // The timeout also covers waiting for a build's first response, which the classic builder sends only
    // after the whole context has arrived: let the build timeout bound it.
    let timeout = settings.build.timeout_secs.max(120);
    let docker = if host.starts_with("unix://") || host.starts_with('/') {
        Docker::connect_with_socket(&host, timeout, bollard::API_DEFAULT_VERSION)
    } else {
        Docker::connect_with_http(&host, timeout, bollard::API_DEFAULT_VERSION)
    }
    .map_err(|err| format!("no Docker engine at {host}: {err}"))?;
    docker.negotiate_version().await.map_err(|err| format!("the Docker engine at {host} does not answer: {err}"))
}

/// `build.engine_outage_secs`, as the last [`connect`] read it (every build connects first).
static OUTAGE_LIMIT_SECS: AtomicU64 = AtomicU64::new(300);

/// Since when the engine has not answered this worker (`None`: it answered last time).
static AWAY_SINCE: Mutex<Option<Instant>> = Mutex::new(None);

/// A build that failed because the Docker engine does not answer (it is restarting, its socket is
/// missing, it timed out): an outage of the engine, like one of JetStream, is no fault of the build's
/// and does not count as an attempt ([`BuildFailure::Unavailable`]: the job goes back to the queue). The
/// bound: once the engine has not answered for `build.engine_outage_secs` it is taken to be broken, and
/// the failures count again ([`BuildFailure::Passing`]), so builds end after `build.max_attempts`.
pub fn engine_away(message: String) -> BuildFailure {
    let since = *AWAY_SINCE.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(Instant::now);
    let away = since.elapsed();
    if away < Duration::from_secs(OUTAGE_LIMIT_SECS.load(Ordering::Relaxed)) {
        BuildFailure::Unavailable(message)
    } else {
        BuildFailure::Passing(format!("{message} (the engine has not answered for {} s)", away.as_secs()))
    }
}

/// The engine answered: an outage, if there was one, is over.
pub fn engine_answered() {
    *AWAY_SINCE.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// Whether an error of the engine's API is no answer at all (the connection refused or lost, the socket
/// missing, a timeout) rather than an answer.
pub fn engine_unanswered(err: &bollard::errors::Error) -> bool {
    use bollard::errors::Error::*;
    matches!(
        err,
        RequestTimeoutError
            | IOError { .. }
            | HyperResponseError { .. }
            | HyperLegacyError { .. }
            | HttpClientError { .. }
            | SocketNotFoundError(_)
    )
}

/// The digest an engine knows an image by: a pulled image's manifest digest (its first repository
/// digest), else, for one made or imported on this engine, its configuration's (the image id).
pub fn image_digest(inspected: bollard::models::ImageInspect) -> Option<String> {
    inspected
        .repo_digests
        .unwrap_or_default()
        .iter()
        .find_map(|named| named.split_once('@').map(|(_, digest)| digest.to_owned()))
        .or(inspected.id)
        .filter(|digest| digest.starts_with("sha256:"))
}
