//! The (component, branch) whose images each registry repository holds, so that registry tokens follow
//! component patterns (repository names are not reversible: branches are slugged, and
//! `<component>-<branch>-image` may split more than one way).

use std::fmt;

use serde::{Deserialize, Serialize};

use artifacts_schemas::{Architecture, BranchName, ComponentName, ImageRecord, ImageRepository};

use crate::access::{live_entry, read_bytes, read_json, to_bytes, until_won, write_if_unchanged, Round};
use crate::{keys, Store, StoreError};

/// The (component, branch) whose images a repository holds: the value in the repositories bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepositoryOwner {
    pub component: ComponentName,
    /// `None` in a record of an earlier version, which held only the component (as plain text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<BranchName>,
}

impl RepositoryOwner {
    /// A JSON record, or the plain component name an earlier version stored.
    fn decode(bytes: &[u8]) -> Option<Self> {
        if let Ok(owner) = serde_json::from_slice(bytes) {
            return Some(owner);
        }
        let component = ComponentName::parse(std::str::from_utf8(bytes).ok()?).ok()?;
        Some(Self { component, branch: None })
    }
}

impl fmt::Display for RepositoryOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.branch {
            Some(branch) => write!(f, "component {}, branch {}", self.component, branch.as_str()),
            None => write!(f, "component {}", self.component),
        }
    }
}

impl Store {
    /// The recorded owner of `repository`, if any (a name no build could make has none).
    pub async fn repository_owner(&self, repository: &str) -> Result<Option<RepositoryOwner>, StoreError> {
        let Ok(key) = keys::repository(repository) else { return Ok(None) };
        Ok(read_bytes(&self.buckets.repositories, &key).await?.and_then(|bytes| RepositoryOwner::decode(&bytes)))
    }

    /// Records that the repository of (`component`, `branch`) holds that pair's images, or checks that it
    /// already does. When another pair owns the name, the answer is that pair.
    pub async fn claim_repository(
        &self,
        component: &ComponentName,
        branch: &BranchName,
    ) -> Result<Result<ImageRepository, RepositoryOwner>, StoreError> {
        let repository = ImageRepository::new(component, branch);
        let key = keys::repository(repository.as_str()).map_err(StoreError::Corrupt)?;
        let wanted = RepositoryOwner { component: component.clone(), branch: Some(branch.clone()) };
        let bucket = &self.buckets.repositories;
        until_won(&key, || async {
            let current = live_entry(bucket, &key).await?;
            if let Some(current) = &current {
                let recorded = RepositoryOwner::decode(&current.value).ok_or_else(|| {
                    StoreError::Corrupt(format!("the owner record of image repository {repository} is unreadable"))
                })?;
                if recorded == wanted {
                    return Ok(Round::Done(Ok(repository.clone())));
                }
                if recorded.component != *component || recorded.branch.is_some() {
                    return Ok(Round::Done(Err(recorded)));
                }
            }
            // No owner recorded, or an earlier version's record of this component alone: builds from
            // before owners were recorded left image records, which say which pair it was.
            if let Some(built) = self.other_pair_built(&repository, &wanted).await? {
                return Ok(Round::Done(Err(built)));
            }
            Ok(match write_if_unchanged(bucket, &key, current.map(|c| c.revision), to_bytes(&wanted)).await? {
                Round::Done(_) => Round::Done(Ok(repository.clone())),
                Round::Lost => Round::Lost,
            })
        })
        .await
    }

    /// The components whose images `repository` holds: its recorded owner, or (for repositories from
    /// before owners were recorded) every pair whose image records name it.
    pub async fn repository_components(&self, repository: &str) -> Result<Vec<ComponentName>, StoreError> {
        let recorded = self.repository_owner(repository).await?;
        if let Some(RepositoryOwner { component, branch: Some(_) }) = recorded {
            return Ok(vec![component]);
        }
        let mut components: Vec<ComponentName> = recorded.map(|o| o.component).into_iter().collect();
        for record in self.image_records_of(repository).await? {
            if !components.contains(&record.component) {
                components.push(record.component);
            }
        }
        Ok(components)
    }

    /// The pair of an image record in `repository` other than `wanted`, if any.
    async fn other_pair_built(
        &self,
        repository: &ImageRepository,
        wanted: &RepositoryOwner,
    ) -> Result<Option<RepositoryOwner>, StoreError> {
        let records = self.image_records_of(repository.as_str()).await?;
        Ok(records
            .into_iter()
            .map(|record| RepositoryOwner { component: record.component, branch: Some(record.branch) })
            .find(|built| built != wanted))
    }

    /// The image records whose repository is `repository` (`<component>-<branch slug>-image`). The name
    /// alone is ambiguous (`a-b` + `c` and `a` + `b-c`), so every split is looked up in the images
    /// bucket, whose keys are `<component slug>/<branch slug>/<architecture>`.
    async fn image_records_of(&self, repository: &str) -> Result<Vec<ImageRecord>, StoreError> {
        let Some(stem) = repository.strip_suffix("-image") else { return Ok(Vec::new()) };
        let mut records = Vec::new();
        for (at, _) in stem.match_indices('-') {
            let (component_slug, branch_slug) = (&stem[..at], &stem[at + 1..]);
            for architecture in Architecture::ALL {
                let key = format!("{component_slug}/{branch_slug}/{}", architecture.short());
                let Ok(Some(record)) = read_json::<ImageRecord>(&self.buckets.images, &key).await else { continue };
                if ImageRepository::new(&record.component, &record.branch).as_str() == repository {
                    records.push(record);
                }
            }
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use artifacts_schemas::BranchName;

    #[test]
    fn owner_records_of_this_version_and_the_previous_one_are_read() {
        let owner = RepositoryOwner {
            component: ComponentName::parse("app-web").unwrap(),
            branch: Some(BranchName::parse("main").unwrap()),
        };
        let bytes = serde_json::to_vec(&owner).unwrap();
        assert_eq!(RepositoryOwner::decode(&bytes), Some(owner.clone()));
        assert_eq!(owner.to_string(), "component app-web, branch main");
        let legacy = RepositoryOwner::decode(b"app-web").unwrap();
        assert_eq!((legacy.component.as_str(), legacy.branch), ("app-web", None));
        assert_eq!(RepositoryOwner::decode(b"{\"branch\": \"main\"}"), None);
        assert_eq!(RepositoryOwner::decode(b"Not A Name"), None);
    }
}
