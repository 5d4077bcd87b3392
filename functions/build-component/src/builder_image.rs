//! Which builder image a component build runs in. A builder image is an input like a Dockerfile's
//! `FROM`: the one `artifact.toml` names is allowed only when the key the build runs for could build
//! `FROM` it. That is one of the configured builder images (`build.builder_image`,
//! `build.builder_images`), or an image of this service's registry whose component the key may read
//! (`artifacts_engine::image_access`), which is then pulled from the registry by the worker and run by
//! the digest pulled, so that a copy another build left in the engine under that name is never used as
//! it is. Never an image id or a prefix of one, nor any other image the engine happens to hold.

use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::Docker;
use futures::StreamExt;

use artifacts_engine::attempt::BuildFailure;
use artifacts_engine::{image_access, registry};
use artifacts_runtime::logs::BuildLog;
use artifacts_runtime::{Nats, Settings};
use artifacts_schemas::messages::keys::glob_matches;
use artifacts_schemas::{ComponentJob, ComponentName, Failure};

/// The image to run the build in: the configured one when `artifact.toml` names none, else the one it
/// names once checked (and, for an image of the registry, pulled).
pub async fn choose(
    nats: &Nats,
    settings: &Settings,
    docker: &Docker,
    job: &ComponentJob,
    named: Option<&str>,
    log: &mut BuildLog,
) -> Result<String, BuildFailure> {
    let Some(named) = named else { return Ok(settings.builder_image(job.architecture).to_owned()) };
    // The operator's choice, even when it is an image of the registry (never read as an image id).
    if configured(settings).any(|image| same_image(image, named)) && !image_access::may_name_image_id(named) {
        return Ok(named.to_owned());
    }
    let patterns = job.component_patterns.as_deref();
    let may_read = |component: &ComponentName| {
        patterns.is_none_or(|patterns| patterns.iter().any(|p| glob_matches(p, component.as_str())))
    };
    let checked =
        image_access::require_readable(nats, &settings.registry.address, named, "the builder image", may_read)
            .await
            .map_err(|err| match err.failure {
                Failure::Unavailable => BuildFailure::Unavailable(err.message),
                Failure::Internal => BuildFailure::Passing(err.message),
                _ => BuildFailure::Permanent(err.message),
            })?;
    match checked {
        Some(repository) => pull(settings, docker, named, &repository, job.architecture.platform(), log).await,
        None => Err(BuildFailure::Permanent(format!(
            "the builder image {named} is neither a configured builder image ({}) nor an image of this service's \
             registry ({}): name one of those in artifact.toml (build an image of your own component to use it)",
            configured(settings).collect::<Vec<_>>().join(", "),
            settings.registry.address
        ))),
    }
}

/// The configured builder images, of every architecture.
fn configured(settings: &Settings) -> impl Iterator<Item = &str> {
    std::iter::once(settings.build.builder_image.as_str())
        .chain(settings.build.builder_images.values().map(String::as_str))
}

/// Whether two references name the same image as Docker reads them (`busybox`, `busybox:latest`,
/// `docker.io/library/busybox:latest`).
fn same_image(a: &str, b: &str) -> bool {
    fn normalized(reference: &str) -> String {
        let prefixes = ["docker.io/library/", "index.docker.io/library/", "docker.io/", "index.docker.io/", "library/"];
        let name = prefixes.iter().find_map(|prefix| reference.strip_prefix(prefix)).unwrap_or(reference);
        let last = name.rsplit('/').next().unwrap_or(name);
        if last.contains([':', '@']) {
            name.to_owned()
        } else {
            format!("{name}:latest")
        }
    }
    normalized(a) == normalized(b)
}

/// Pulls `reference`'s tag or digest of `repository` from this service's registry (as the workers) and
/// answers the reference by digest that was pulled.
async fn pull(
    settings: &Settings,
    docker: &Docker,
    reference: &str,
    repository: &str,
    platform: &str,
    log: &mut BuildLog,
) -> Result<String, BuildFailure> {
    let from = format!("{}/{repository}", settings.registry.address);
    let path = reference.split_once('/').map_or(reference, |(_host, path)| path);
    let version = match path.split_once('@') {
        Some((_, digest)) => digest.to_owned(),
        None => {
            path.rsplit('/').next().and_then(|last| last.split_once(':')).map_or("latest", |(_, tag)| tag).to_owned()
        }
    };
    let options = CreateImageOptionsBuilder::default().from_image(&from).tag(&version).platform(platform).build();
    let mut progress = docker.create_image(Some(options), None, registry::builder_credentials(settings));
    let mut digest = version.starts_with("sha256:").then(|| version.clone());
    while let Some(item) = progress.next().await {
        match item {
            Ok(info) => {
                if let Some(found) = info.status.as_deref().and_then(|s| s.strip_prefix("Digest: ")) {
                    digest = Some(found.trim().to_owned());
                }
            }
            Err(bollard::errors::Error::DockerStreamError { error }) => return Err(pull_failed(reference, &error)),
            Err(bollard::errors::Error::DockerResponseServerError { message, .. }) => {
                return Err(pull_failed(reference, &message))
            }
            Err(other) => {
                return Err(BuildFailure::Passing(format!("lost the Docker engine pulling {reference}: {other}")))
            }
        }
    }
    let pulled = match digest {
        Some(digest) => format!("{from}@{digest}"),
        None => format!("{from}:{version}"),
    };
    log.write(&format!("builder image {reference}: pulled {pulled} from the registry")).await;
    Ok(pulled)
}

fn pull_failed(reference: &str, error: &str) -> BuildFailure {
    let absent = ["manifest unknown", "not found", "does not exist"].iter().any(|says| error.contains(says));
    let message = format!("cannot pull the builder image {reference} from the registry: {}", error.trim());
    if absent {
        BuildFailure::Permanent(message)
    } else {
        BuildFailure::Passing(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_images_match_however_docker_would_spell_them() {
        for (a, b) in [
            ("busybox:latest", "busybox"),
            ("busybox", "docker.io/library/busybox:latest"),
            ("library/busybox", "busybox:latest"),
            ("team/tools:1", "docker.io/team/tools:1"),
        ] {
            assert!(same_image(a, b), "{a} {b}");
        }
        for (a, b) in [("busybox:latest", "busybox:1"), ("busybox", "other/busybox"), ("busybox", "localhost/busybox")]
        {
            assert!(!same_image(a, b), "{a} {b}");
        }
    }
}
