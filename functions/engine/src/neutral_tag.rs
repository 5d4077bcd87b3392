//! The architecture-neutral tag of each image repository: `latest` is a multi-platform manifest list of
//! the latest image of every architecture built for that component and branch, so that `docker pull
//! <repository>` (and `FROM <repository>`) picks the puller's own architecture.
//!
//! The list is derived from the image records, which say which build is the latest per architecture:
//! whoever changes a record (a build storing its image, a delete) publishes the list again. Two builds
//! of different architectures finishing together could each publish a list read before the other's
//! record was stored; each therefore reads the records again after publishing and publishes once more
//! if they changed, so the last list written names both.

use artifacts_schemas::{Architecture, BranchName, ComponentName, ImageQuery, ImageRecord, ImageRepository};

use artifacts_runtime::{Nats, Settings};

use crate::registry;

/// The tag every multi-platform list is published under.
pub const NEUTRAL_TAG: &str = "latest";

/// Publishes the list of `component`/`branch` from the image records as they are now (removing the tag
/// when no architecture is left).
pub async fn refresh(
    nats: &Nats,
    settings: &Settings,
    component: &ComponentName,
    branch: &BranchName,
) -> Result<(), String> {
    let repository = ImageRepository::new(component, branch).to_string();
    let mut members = latest_per_architecture(nats, component, branch).await?;
    // Bounded: each round needs another build of this repository to have finished in between.
    for _ in 0..5 {
        registry::publish_manifest_list(settings, &repository, NEUTRAL_TAG, &members).await?;
        let now = latest_per_architecture(nats, component, branch).await?;
        if now == members {
            return Ok(());
        }
        members = now;
    }
    Ok(())
}

/// The digest of the latest image of each architecture, in a stable order.
async fn latest_per_architecture(
    nats: &Nats,
    component: &ComponentName,
    branch: &BranchName,
) -> Result<Vec<(Architecture, String)>, String> {
    let mut members = Vec::new();
    for architecture in Architecture::ALL {
        let query = ImageQuery { component: component.clone(), branch: branch.clone(), architecture };
        let record: Option<ImageRecord> = nats.store.image(&query).await.map_err(|err| err.to_string())?;
        if let Some(record) = record {
            members.push((architecture, record.digest));
        }
    }
    Ok(members)
}
