//! The Docker engine connection of build workers.

use bollard::Docker;

use crate::configuration::Settings;

/// Connects to `docker.host` (else `DOCKER_HOST`, else the local socket) and negotiates the API version:
/// Debian's engine answers 1.41 and refuses bollard's newer default.
pub async fn connect(settings: &Settings) -> Result<Docker, String> {
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
