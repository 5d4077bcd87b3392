//! What a build leaves on its worker, and its removal.
//!
//! Every build works in one directory named after its build id (`<tmp>/artifacts-build-<id>`) and labels
//! its containers with `artifacts.build-id`. So whatever ends an attempt (success, failure, timeout, a
//! hand-back at shutdown, or a worker killed outright), its leftovers can be found and removed: by the
//! attempt loop before and after every attempt, and at a worker's start for builds that have ended.
//! Directories are removed on a blocking thread (a clone or context may be gigabytes).

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;

use artifacts_schemas::BuildId;

use artifacts_runtime::nats::Nats;
use artifacts_runtime::Settings;

/// The label every build container carries, valued with its build id.
pub const BUILD_ID_LABEL: &str = "artifacts.build-id";

const WORK_DIR_PREFIX: &str = "artifacts-build-";

/// The labels of a container made for `build_id`.
pub fn container_labels(build_id: &BuildId) -> HashMap<String, String> {
    HashMap::from([(BUILD_ID_LABEL.to_owned(), build_id.to_string())])
}

/// The build's work directory, made empty.
pub async fn fresh_work_dir(build_id: &BuildId) -> Result<PathBuf, String> {
    let dir = work_dir(build_id);
    remove_dir(dir.clone()).await;
    tokio::fs::create_dir_all(&dir).await.map_err(|err| format!("no room to build in {}: {err}", dir.display()))?;
    Ok(dir)
}

fn work_dir(build_id: &BuildId) -> PathBuf {
    std::env::temp_dir().join(format!("{WORK_DIR_PREFIX}{build_id}"))
}

/// Removes the build's containers and work directory.
pub async fn remove(settings: &Settings, build_id: &BuildId) {
    remove_dir(work_dir(build_id)).await;
    let Ok(docker) = crate::docker::connect(settings).await else { return };
    for container in labelled_containers(&docker, Some(build_id)).await {
        remove_container(&docker, &container.0).await;
    }
}

/// Removes what builds that have ended left behind (their worker was killed, or the engine refused a
/// removal). Leftovers of builds still running, or unknown to this service's NATS (another deployment
/// sharing the engine), stay.
pub async fn sweep(nats: &Nats, settings: &Settings) {
    let mut ended = BTreeSet::new();
    let has_ended = |build_id: BuildId| {
        let nats = nats.clone();
        async move {
            let record = nats.store.build(&build_id).await.ok().flatten();
            record.is_some_and(|r| r.status.is_finished()).then_some(build_id)
        }
    };
    if let Ok(mut dirs) = tokio::fs::read_dir(std::env::temp_dir()).await {
        while let Ok(Some(entry)) = dirs.next_entry().await {
            let name = entry.file_name();
            let id = name.to_str().and_then(|n| n.strip_prefix(WORK_DIR_PREFIX)).and_then(|id| BuildId::parse(id).ok());
            if let Some(build_id) = id {
                if let Some(build_id) = has_ended(build_id).await {
                    remove_dir(entry.path()).await;
                    ended.insert(build_id);
                }
            }
        }
    }
    if let Ok(docker) = crate::docker::connect(settings).await {
        for (container, build_id) in labelled_containers(&docker, None).await {
            if let Some(build_id) = has_ended(build_id).await {
                remove_container(&docker, &container).await;
                ended.insert(build_id);
            }
        }
    }
    if !ended.is_empty() {
        tracing::info!(builds = ended.len(), "removed what ended builds left behind");
    }
}

/// Containers (id, build id) carrying the build-id label, of one build or of all.
async fn labelled_containers(docker: &Docker, build_id: Option<&BuildId>) -> Vec<(String, BuildId)> {
    let label = match build_id {
        Some(id) => format!("{BUILD_ID_LABEL}={id}"),
        None => BUILD_ID_LABEL.to_owned(),
    };
    let filters = HashMap::from([("label".to_owned(), vec![label])]);
    let options = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
    let containers = match docker.list_containers(Some(options)).await {
        Ok(containers) => containers,
        Err(err) => {
            tracing::warn!(%err, "cannot list build containers");
            return Vec::new();
        }
    };
    containers
        .into_iter()
        .filter_map(|c| {
            let build_id = c.labels.as_ref()?.get(BUILD_ID_LABEL).and_then(|id| BuildId::parse(id).ok())?;
            Some((c.id?, build_id))
        })
        .collect()
}

async fn remove_container(docker: &Docker, id: &str) {
    let options = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
    if let Err(err) = docker.remove_container(id, Some(options)).await {
        tracing::warn!(%err, container = %id, "could not remove a build container");
    }
}

async fn remove_dir(dir: PathBuf) {
    let removed = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err((dir, err)),
        _ => Ok(()),
    })
    .await;
    if let Ok(Err((dir, err))) = removed {
        tracing::warn!(%err, dir = %dir.display(), "could not remove a build's work directory");
    }
}
