//! Where each component's source is known from.

use artifacts_schemas::{normalize_repository, ComponentName, ComponentSource};

use crate::access::{live_entry, read_json, to_bytes, until_won, write_if_unchanged, Round};
use crate::{keys, Store, StoreError};

impl Store {
    /// Where `component`'s source is known from.
    pub async fn source(&self, component: &ComponentName) -> Result<Option<ComponentSource>, StoreError> {
        read_json(&self.buckets.sources, &keys::source(component)).await
    }

    /// Records `source`, and keeps the trigger index in step (pushes of its repository reach the
    /// component from now on; those of the repository it was built from before no longer do). Another
    /// repository than the recorded one is refused unless `may_move`: then the answer is the recorded
    /// source. The same repository under another spelling or with new credentials is an update.
    pub async fn record_source(
        &self,
        source: &ComponentSource,
        may_move: bool,
    ) -> Result<Option<ComponentSource>, StoreError> {
        let key = keys::source(&source.component);
        let bucket = &self.buckets.sources;
        let outcome = until_won(&key, || async {
            let current = live_entry(bucket, &key).await?;
            let recorded: Option<ComponentSource> =
                current.as_ref().and_then(|c| serde_json::from_slice(&c.value).ok());
            if let Some(recorded) = &recorded {
                if recorded.url == source.url {
                    return Ok(Round::Done(Ok(None)));
                }
                if normalize_repository(&recorded.url) != normalize_repository(&source.url) && !may_move {
                    return Ok(Round::Done(Err(recorded.clone())));
                }
            }
            Ok(match write_if_unchanged(bucket, &key, current.map(|c| c.revision), to_bytes(source)).await? {
                Round::Done(_) => Round::Done(Ok(recorded)),
                Round::Lost => Round::Lost,
            })
        })
        .await?;
        let previous = match outcome {
            Ok(previous) => previous,
            Err(held) => return Ok(Some(held)),
        };
        if let Some(previous) = previous.filter(|p| normalize_repository(&p.url) != normalize_repository(&source.url)) {
            self.remove_built_from(&previous.url, &previous.component).await?;
        }
        self.add_built_from(&source.url, &source.component, None).await?;
        Ok(None)
    }

    /// Every recorded source.
    pub async fn all_sources(&self) -> Result<Vec<ComponentSource>, StoreError> {
        crate::access::all_values(&self.buckets.sources).await
    }
}
