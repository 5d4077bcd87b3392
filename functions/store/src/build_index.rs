//! Build ids newest first, without reading every record.
//!
//! Every new build's id is appended to two lists in the `<prefix>_build_index` bucket: every build
//! ([`List::All`]) and its component's ([`List::Component`]). A list is kept in pages of [`PAGE_SIZE`]
//! ids: `<list>/head` holds the number of the page being filled, `<list>/<n>` page `n`, oldest id first.
//! A listing reads the head, then pages from the newest backwards, so twenty builds cost the same few
//! reads whether the history holds a thousand builds or a million. A listing's cursor says where it
//! stopped (`<page>.<position>`). Ids whose record the collector removed are dropped from their page by
//! the collector, and skipped by readers meanwhile.

use async_nats::jetstream::kv;

use artifacts_schemas::{BuildId, ComponentName};

use crate::access::{live_entry, to_bytes, until_won, write_if_unchanged, Round};
use crate::{keys, Store, StoreError};

/// Ids per page: a page is one small record (about 4 KiB), rewritten on each append.
pub const PAGE_SIZE: usize = 100;

/// Which builds a list holds.
#[derive(Debug, Clone, Copy)]
pub enum List<'a> {
    All,
    Component(&'a ComponentName),
}

impl List<'_> {
    fn name(&self) -> String {
        match self {
            List::All => keys::build_list_all(),
            List::Component(component) => keys::build_list_of(component),
        }
    }

    fn head_key(&self) -> String {
        keys::build_list_head(&self.name())
    }

    fn page_key(&self, page: u64) -> String {
        keys::build_list_page(&self.name(), page)
    }
}

impl Store {
    /// Appends `build_id` to `list`.
    pub(crate) async fn append_to_index(&self, list: List<'_>, build_id: &BuildId) -> Result<(), StoreError> {
        let store = &self.buckets.build_index;
        until_won(&list.head_key(), || async move {
            let head = live_entry(store, &list.head_key()).await?;
            let page = head.as_ref().map_or(0, |entry| parse_page_number(&entry.value));
            let page_key = list.page_key(page);
            let entry = live_entry(store, &page_key).await?;
            let mut ids = entry.as_ref().map(|e| decode(&e.value)).unwrap_or_default();
            if ids.len() < PAGE_SIZE {
                ids.push(build_id.as_str().to_owned());
                return Ok(
                    match write_if_unchanged(store, &page_key, entry.map(|e| e.revision), encode(&ids)).await? {
                        Round::Done(_) => Round::Done(()),
                        Round::Lost => Round::Lost,
                    },
                );
            }
            // The page is full: open the next one (whoever wins the race, the head moves once).
            let next: bytes::Bytes = (page + 1).to_string().into();
            if let Round::Lost = write_if_unchanged(store, &list.head_key(), head.map(|h| h.revision), next).await? {
                tracing::debug!("another writer moved the index head first");
            }
            Ok(Round::Lost)
        })
        .await
    }

    /// Removes the ids `gone` says are gone from every page of `list`; how many it removed.
    pub async fn remove_from_index(&self, list: List<'_>, gone: impl Fn(&str) -> bool) -> Result<u64, StoreError> {
        let store = &self.buckets.build_index;
        let head = live_entry(store, &list.head_key()).await?.map_or(0, |entry| parse_page_number(&entry.value));
        let mut removed = 0;
        for page in 0..=head {
            let page_key = list.page_key(page);
            removed += until_won(&page_key, || {
                let (gone, page_key) = (&gone, &page_key);
                async move {
                    let Some(entry) = live_entry(store, page_key).await? else { return Ok(Round::Done(0)) };
                    let ids = decode(&entry.value);
                    let kept: Vec<String> = ids.iter().filter(|id| !gone(id)).cloned().collect();
                    if kept.len() == ids.len() {
                        return Ok(Round::Done(0));
                    }
                    Ok(match write_if_unchanged(store, page_key, Some(entry.revision), encode(&kept)).await? {
                        Round::Done(_) => Round::Done((ids.len() - kept.len()) as u64),
                        Round::Lost => Round::Lost,
                    })
                }
            })
            .await?;
        }
        Ok(removed)
    }

    /// A walk through `list`, newest id first, from the newest or where `cursor` (from [`Walk::cursor`])
    /// says an earlier walk stopped.
    pub async fn walk_builds<'a>(&'a self, list: List<'a>, cursor: Option<&str>) -> Result<Walk<'a>, StoreError> {
        Walk::start(&self.buckets.build_index, list, cursor).await
    }
}

/// A walk through one list, newest id first, a page read at a time.
pub struct Walk<'a> {
    store: &'a kv::Store,
    list: List<'a>,
    /// The page `ids` came from; `None` once the walk is past page 0.
    page: Option<u64>,
    ids: Vec<String>,
    /// `ids[..position]` are still to come.
    position: usize,
    pages_read: usize,
}

impl<'a> Walk<'a> {
    async fn start(store: &'a kv::Store, list: List<'a>, cursor: Option<&str>) -> Result<Self, StoreError> {
        let (page, position) = match cursor {
            Some(cursor) => parse_cursor(cursor)?,
            None => {
                let head = live_entry(store, &list.head_key()).await?;
                (head.map_or(0, |entry| parse_page_number(&entry.value)), usize::MAX)
            }
        };
        let mut walk = Walk { store, list, page: Some(page), ids: Vec::new(), position: 0, pages_read: 0 };
        walk.load(page).await?;
        walk.position = position.min(walk.ids.len());
        Ok(walk)
    }

    /// The next older id, or `None` at the start of the list.
    pub async fn next(&mut self) -> Result<Option<String>, StoreError> {
        loop {
            if self.position > 0 {
                self.position -= 1;
                return Ok(Some(self.ids[self.position].clone()));
            }
            match self.page {
                Some(page) if page > 0 => {
                    self.load(page - 1).await?;
                    self.position = self.ids.len();
                }
                _ => {
                    self.page = None;
                    return Ok(None);
                }
            }
        }
    }

    /// Where a later walk goes on from; `None` when nothing is left.
    pub fn cursor(&self) -> Option<String> {
        let page = self.page?;
        (self.position > 0 || page > 0).then(|| format!("{page}.{}", self.position))
    }

    /// Pages read so far (a listing bounds its work by them).
    pub fn pages_read(&self) -> usize {
        self.pages_read
    }

    async fn load(&mut self, page: u64) -> Result<(), StoreError> {
        self.page = Some(page);
        self.pages_read += 1;
        self.ids =
            live_entry(self.store, &self.list.page_key(page)).await?.map(|e| decode(&e.value)).unwrap_or_default();
        Ok(())
    }
}

fn parse_page_number(value: &[u8]) -> u64 {
    std::str::from_utf8(value).ok().and_then(|text| text.parse().ok()).unwrap_or(0)
}

fn parse_cursor(cursor: &str) -> Result<(u64, usize), StoreError> {
    cursor
        .split_once('.')
        .and_then(|(page, position)| Some((page.parse().ok()?, position.parse().ok()?)))
        .ok_or_else(|| StoreError::Invalid("cursor: pass the nextCursor of an earlier answer unchanged".into()))
}

fn encode(ids: &[String]) -> bytes::Bytes {
    to_bytes(&ids)
}

fn decode(value: &[u8]) -> Vec<String> {
    serde_json::from_slice(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_bad_ones_are_refused() {
        assert_eq!(parse_cursor("12.40").unwrap(), (12, 40));
        for bad in ["", "12", "x.1", "1.-1", "1.2.3"] {
            assert!(parse_cursor(bad).is_err(), "{bad}");
        }
    }
}
