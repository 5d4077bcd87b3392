//! Which images a build may use, and which (component, branch) each repository of the registry belongs to.
//!
//! An image is an input of a build wherever it is named: a Dockerfile's `FROM` or `COPY --from`, or a
//! component's builder image (`artifact.toml`'s `build.image`). The same rules hold for each
//! ([`require_readable`]): a name the engine may read as an image id is refused (it could be any team's
//! image, [`may_name_image_id`]); a name on this service's registry, however its host is spelled
//! ([`registry_repository`]), must be a repository of this service whose component the caller may read.
//!
//! A repository `<component>-<branch slug>-image` belongs to the one (component, branch) whose submission
//! recorded it first in the repositories bucket ([`claim`]). Another pair whose name comes out the same
//! (`app` on `web-main` and `app-web` on `main`, or a branch named like another branch's slug with its
//! hash) is refused with 409 naming the owner, so two pairs never share a repository, and registry tokens
//! ([`artifacts_store::Store::repository_owner`]) follow the one component whose images it holds. A record of an earlier version holds only
//! a component name: it is read as that component's, on the branch its image records there name (else
//! on the branch of the component's next submission, which completes the record).

use artifacts_schemas::{BranchName, ComponentName, Failure, ImageRepository, RequestError};
use artifacts_store::RepositoryOwner;

use artifacts_runtime::Nats;

/// Records that the repository of (`component`, `branch`) holds that pair's images, or checks that it
/// already does: a submission calls it before its build is queued. 409 when another pair owns the name.
pub async fn claim(
    nats: &Nats,
    component: &ComponentName,
    branch: &BranchName,
) -> Result<ImageRepository, RequestError> {
    match nats.store.claim_repository(component, branch).await? {
        Ok(repository) => Ok(repository),
        Err(owner) => {
            let repository = ImageRepository::new(component, branch);
            let wanted = RepositoryOwner { component: component.clone(), branch: Some(branch.clone()) };
            Err(RequestError::new(
                Failure::Conflict,
                format!(
                    "image repository {repository} holds the images of {owner}; {wanted} would get the same repository \
                     name (<component>-<branch>-image): build these images under another branch name"
                ),
            ))
        }
    }
}

/// Checks an image a build uses, named by `what` ("the Dockerfile", "the builder image"): 403 when the
/// engine may read the name as an image id, or when it names this service's registry (at
/// `registry_address`, however the host is spelled) and is not an image this service built or belongs
/// to a component `may_read` refuses. Answers its repository when it is on this registry, `None` when
/// it names another registry.
pub async fn require_readable(
    nats: &Nats,
    registry_address: &str,
    reference: &str,
    what: &str,
    may_read: impl Fn(&ComponentName) -> bool,
) -> Result<Option<String>, RequestError> {
    if may_name_image_id(reference) {
        return Err(RequestError::forbidden(format!(
            "{what} names {reference:?}, which the engine may read as an image id: name images by repository and tag"
        )));
    }
    let Some(repository) = registry_repository(reference, registry_address) else { return Ok(None) };
    let components = nats.store.repository_components(&repository).await?;
    if components.is_empty() {
        return Err(RequestError::forbidden(format!(
            "{what} names {reference}, which is not an image this service built: only its own images may be used from {registry_address}"
        )));
    }
    if let Some(refused) = components.iter().find(|component| !may_read(component)) {
        return Err(RequestError::forbidden(format!(
            "{what} names {reference}, an image of component {refused}, which this API key may not read"
        )));
    }
    Ok(Some(repository))
}

/// Registry names Docker rewrites to Docker Hub.
const DOCKER_HUB: [&str; 2] = ["docker.io", "index.docker.io"];

/// The repository (path without tag or digest) that `reference` names on the registry at
/// `registry_address` (`host[:port]`), or `None` when it names another registry.
///
/// The first component of a reference names a registry when it contains `.` or `:`, is `localhost`, or
/// has capitals (newer engines read it so); otherwise the image is on Docker Hub, which is never ours,
/// nor are Docker Hub's own names (`docker.io`, `index.docker.io`). Any other registry counts as ours
/// when Docker would contact it on the registry's port (a port left out is 443, then 80; leading zeros
/// do not count), whatever its host is called. The host cannot be trusted to differ: any name may
/// resolve to the registry's address (`localhost`, `LOCALHOST`, `127.0.0.1`, `[::1]`, `0.0.0.0`, or a
/// public name such as `127.0.0.1.nip.io`), and Docker speaks plain HTTP, without credentials, to any
/// name that resolves to a loopback address. So a registry on the default HTTPS port makes every other
/// registry named without a port "ours": give it a port of its own (as `127.0.0.1:5000`) to let builds
/// use other registries. A `registry_address` that cannot be read makes every registry ours.
pub fn registry_repository(reference: &str, registry_address: &str) -> Option<String> {
    let (host, path) = reference.split_once('/')?;
    let names_registry =
        host.contains(['.', ':']) || host == "localhost" || host.bytes().any(|b| b.is_ascii_uppercase());
    if !names_registry {
        return None;
    }
    // Docker cannot pull a reference whose host it cannot read.
    let (name, port) = host_and_port(host)?;
    if DOCKER_HUB.iter().any(|hub| name.eq_ignore_ascii_case(hub)) {
        return None;
    }
    let same_port = match host_and_port(registry_address) {
        Some((_, registry_port)) => contacted_ports(port).iter().any(|p| contacted_ports(registry_port).contains(p)),
        None => true,
    };
    if !same_port {
        return None;
    }
    let path = path.split_once('@').map_or(path, |(path, _digest)| path);
    let path = path.rsplit_once(':').map_or(path, |(path, _tag)| path);
    Some(path.to_owned())
}

/// Whether the engine could take `reference` for the id of an image it holds, whoever built it: it
/// looks a reference up by name, then as an id or any unique prefix of one (`3f2a`, `cafe`,
/// `sha256:3f2a…`), so every lowercase hex word of up to 64 digits may name an image by id.
pub fn may_name_image_id(reference: &str) -> bool {
    let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
    (1..=64).contains(&hex.len()) && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `host[:port]` or `[ipv6][:port]`, the port as a number.
fn host_and_port(host: &str) -> Option<(&str, Option<u16>)> {
    let (name, port) = match host.strip_prefix('[') {
        Some(bracketed) => {
            let (name, rest) = bracketed.split_once(']')?;
            (name, if rest.is_empty() { None } else { Some(rest.strip_prefix(':')?) })
        }
        None => match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        },
    };
    let port = match port {
        None => None,
        Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => Some(digits.parse().ok()?),
        Some(_) => return None,
    };
    Some((name, port))
}

fn contacted_ports(port: Option<u16>) -> Vec<u16> {
    port.map_or_else(|| vec![443, 80], |port| vec![port])
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f2a8b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";
    const REGISTRY: &str = "127.0.0.1:5000";

    #[test]
    fn registry_repository_finds_our_repositories_however_the_host_is_spelled() {
        let by_digest = format!("localhost:5000/a-main-image@sha256:{ID}");
        let tag_and_digest = format!("127.0.0.1:5000/a-main-image:amd64@sha256:{ID}");
        let ours = [
            ("127.0.0.1:5000/a-main-image:amd64", "a-main-image"),
            (by_digest.as_str(), "a-main-image"),
            (tag_and_digest.as_str(), "a-main-image"),
            ("LOCALHOST:5000/x", "x"),
            ("[::1]:5000/x:1", "x"),
            ("0.0.0.0:5000/x", "x"),
            ("127.0.0.2:05000/team/app", "team/app"),
            // Names that resolve to a loopback address reach the registry too.
            ("127.0.0.1.nip.io:5000/x", "x"),
            ("other:5000/x", "x"),
        ];
        for (reference, repository) in ours {
            assert_eq!(registry_repository(reference, REGISTRY).as_deref(), Some(repository), "{reference}");
        }
        assert_eq!(registry_repository("[::1]:5000/x", "[::1]:5000").as_deref(), Some("x"));
        assert_eq!(registry_repository("localhost:5000/x", "localhost:5000").as_deref(), Some("x"));
        assert_eq!(registry_repository("ghcr.io/x", "http://127.0.0.1:5000").as_deref(), Some("x"));
    }

    #[test]
    fn registry_repository_leaves_other_registries_and_docker_hub_alone() {
        for reference in [
            "127.0.0.1:5001/x",
            "localhost/x",
            "busybox",
            "library/busybox:1",
            "docker.io/x/y",
            "ghcr.io/x/y:1",
            "127.0.0.1:5000",
            "127.0.0.1:99999/x",
            "127.0.0.1:+5000/x",
            ID,
        ] {
            assert_eq!(registry_repository(reference, REGISTRY), None, "{reference}");
        }
    }

    #[test]
    fn a_registry_on_the_default_port_claims_every_host_named_without_one() {
        let registry = "registry.example.com";
        assert_eq!(registry_repository("Registry.Example.com/team/app:1", registry).as_deref(), Some("team/app"));
        assert_eq!(registry_repository("registry.example.com:443/team/app", registry).as_deref(), Some("team/app"));
        assert_eq!(registry_repository("ghcr.io/x/y", registry).as_deref(), Some("x/y"));
        assert_eq!(registry_repository("docker.io/x/y", registry), None);
        assert_eq!(registry_repository("index.docker.io/x/y", registry), None);
        assert_eq!(registry_repository("alpine", registry), None);
        assert_eq!(registry_repository("ghcr.io:5000/x", registry), None);
    }

    #[test]
    fn any_lowercase_hex_word_may_name_an_image_by_id() {
        let sha = format!("sha256:{ID}");
        for reference in [ID, sha.as_str(), "3f2a", "cafe", "0", "sha256:3f"] {
            assert!(may_name_image_id(reference), "{reference}");
        }
        let too_long = format!("{ID}0");
        for reference in ["alpine", "ABC", "sha256:", "", too_long.as_str(), "cafe:latest", "127.0.0.1:5000/cafe"] {
            assert!(!may_name_image_id(reference), "{reference}");
        }
    }
}
