//! Build ids newest first, without reading every record.
//!
//! Every new build's id is appended to two lists in the `<prefix>_build_index` bucket: every build
//! ([`List::All`]) and its component's ([`List::Component`]). A list is kept in pages of [`PAGE_SIZE`]
//! ids: `<list>/head` holds the number of the page being filled, `<list>/<n>` page `n`, oldest id first.
//! An append is a compare-and-set of the page being filled.
//!
//! The list of every build is the one that every submission appends to, so it is kept in
//! [`ALL_SHARDS`] shards, each a list of its own (`all`, `all.1` .. `all.15`), and a build goes to the
//! shard its id's last hex digit (random bits of the UUIDv7) names: concurrent submissions across a
//! cluster compare-and-set sixteen keys, not one. A component's list stays one shard: only that
//! component's submissions append to it.
//!
//! ```text
//!   shard 0  all/head=7    all/0 [..] .. all/7 [.. 0193a.. 0193f..]   <- newest at the end of a page
//!   shard 1  all.1/head=7  all.1/0 [..] .. all.1/7 [.. 0193c..]
//!   ...                                         \      |      /
//!   walk: newest first = the newest of the shards' next ids (UUIDv7s sort by time)
//! ```
//!
//! A listing reads the heads, then pages from the newest backwards, merging the shards, so twenty
//! builds cost the same few reads whether the history holds a thousand builds or a million. A listing's
//! cursor says where each shard's walk stopped (`<page>.<position>`, `-` for a shard walked to its
//! start, joined by `_`). Ids whose record the collector removed are dropped from their page by the
//! collector, and skipped by readers meanwhile.

use async_nats::jetstream::kv;

use artifacts_schemas::{BuildId, ComponentName};

use crate::access::{live_entry, to_bytes, until_won, write_if_unchanged, Round};
use crate::{keys, Store, StoreError};

/// Ids per page: a page is one small record (about 4 KiB), rewritten on each append.
pub const PAGE_SIZE: usize = 100;

/// Shards of the list of every build.
pub const ALL_SHARDS: usize = 16;

/// Which builds a list holds.
#[derive(Debug, Clone, Copy)]
pub enum List<'a> {
    All,
    Component(&'a ComponentName),
}

impl List<'_> {
    fn shards(&self) -> usize {
        match self {
            List::All => ALL_SHARDS,
            List::Component(_) => 1,
        }
    }

    fn shard_name(&self, shard: usize) -> String {
        match self {
            List::All => keys::build_list_all(shard),
            List::Component(component) => keys::build_list_of(component),
        }
    }

    /// The shard `build_id` is kept in.
    fn shard_of(&self, build_id: &BuildId) -> usize {
        let last = build_id.as_str().bytes().last().and_then(|digit| (digit as char).to_digit(16)).unwrap_or(0);
        last as usize % self.shards()
    }
}

impl Store {
    /// Appends `build_id` to `list`.
    pub(crate) async fn append_to_index(&self, list: List<'_>, build_id: &BuildId) -> Result<(), StoreError> {
        let store = &self.buckets.build_index;
        let shard = list.shard_name(list.shard_of(build_id));
        let head_key = keys::build_list_head(&shard);
        until_won(&head_key, || async {
            let head = live_entry(store, &head_key).await?;
            let page = head.as_ref().map_or(0, |entry| parse_page_number(&entry.value));
            let page_key = keys::build_list_page(&shard, page);
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
            if let Round::Lost = write_if_unchanged(store, &head_key, head.map(|h| h.revision), next).await? {
                tracing::debug!("another writer moved the index head first");
            }
            Ok(Round::Lost)
        })
        .await
    }

    /// Removes the ids `gone` says are gone from every page of `list`; how many it removed.
    pub async fn remove_from_index(&self, list: List<'_>, gone: impl Fn(&str) -> bool) -> Result<u64, StoreError> {
        let store = &self.buckets.build_index;
        let mut removed = 0;
        for shard in 0..list.shards() {
            let shard = list.shard_name(shard);
            let head_key = keys::build_list_head(&shard);
            let head = live_entry(store, &head_key).await?.map_or(0, |entry| parse_page_number(&entry.value));
            for page in 0..=head {
                let page_key = keys::build_list_page(&shard, page);
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
        }
        Ok(removed)
    }

    /// A walk through `list`, newest id first, from the newest or where `cursor` (from [`Walk::cursor`])
    /// says an earlier walk stopped.
    pub async fn walk_builds(&self, list: List<'_>, cursor: Option<&str>) -> Result<Walk<'_>, StoreError> {
        let store = &self.buckets.build_index;
        let starts: Vec<Start> = match cursor {
            None => vec![Start::Newest; list.shards()],
            Some(cursor) => parse_cursor(cursor, list.shards())?,
        };
        let shards =
            starts.into_iter().enumerate().map(|(shard, start)| ShardWalk::start(store, list.shard_name(shard), start));
        Ok(Walk { shards: futures::future::try_join_all(shards).await? })
    }
}

/// A walk through one list, newest id first: the shards' walks merged.
pub struct Walk<'a> {
    shards: Vec<ShardWalk<'a>>,
}

impl Walk<'_> {
    /// The next older id, or `None` at the start of the list.
    pub async fn next(&mut self) -> Result<Option<String>, StoreError> {
        let mut newest: Option<(usize, String)> = None;
        for (shard, walk) in self.shards.iter_mut().enumerate() {
            if let Some(id) = walk.peek().await? {
                if newest.as_ref().is_none_or(|(_, newest)| id > *newest) {
                    newest = Some((shard, id));
                }
            }
        }
        Ok(newest.map(|(shard, id)| {
            self.shards[shard].position -= 1;
            id
        }))
    }

    /// Where a later walk goes on from; `None` when nothing is left.
    pub fn cursor(&self) -> Option<String> {
        let cursors: Vec<Option<String>> = self.shards.iter().map(ShardWalk::cursor).collect();
        cursors.iter().any(Option::is_some).then(|| {
            let parts: Vec<&str> = cursors.iter().map(|cursor| cursor.as_deref().unwrap_or("-")).collect();
            parts.join("_")
        })
    }

    /// Pages read so far (a listing bounds its work by them).
    pub fn pages_read(&self) -> usize {
        self.shards.iter().map(|shard| shard.pages_read).sum()
    }
}

/// Where a shard's walk starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Newest,
    At {
        page: u64,
        position: usize,
    },
    /// Walked to its start already.
    Done,
}

/// A walk through one shard, a page read at a time.
struct ShardWalk<'a> {
    store: &'a kv::Store,
    name: String,
    /// The page `ids` came from; `None` once the walk is past page 0.
    page: Option<u64>,
    ids: Vec<String>,
    /// `ids[..position]` are still to come.
    position: usize,
    pages_read: usize,
}

impl<'a> ShardWalk<'a> {
    async fn start(store: &'a kv::Store, name: String, start: Start) -> Result<Self, StoreError> {
        let mut walk = ShardWalk { store, name, page: None, ids: Vec::new(), position: 0, pages_read: 0 };
        if start == Start::Done {
            return Ok(walk);
        }
        let head = live_entry(store, &keys::build_list_head(&walk.name)).await?;
        let head = head.map_or(0, |entry| parse_page_number(&entry.value));
        let (page, position) = match start {
            // The cursor is the client's to write: a page past the head would be walked down to, a read
            // at a time.
            Start::At { page, .. } if page > head => return Err(bad_cursor()),
            Start::At { page, position } => (page, position),
            Start::Newest | Start::Done => (head, usize::MAX),
        };
        walk.load(page).await?;
        walk.position = position.min(walk.ids.len());
        Ok(walk)
    }

    /// The next older id, left in place; `None` at the start of the shard.
    async fn peek(&mut self) -> Result<Option<String>, StoreError> {
        loop {
            if self.position > 0 {
                return Ok(Some(self.ids[self.position - 1].clone()));
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

    fn cursor(&self) -> Option<String> {
        let page = self.page?;
        (self.position > 0 || page > 0).then(|| format!("{page}.{}", self.position))
    }

    async fn load(&mut self, page: u64) -> Result<(), StoreError> {
        self.page = Some(page);
        self.pages_read += 1;
        let key = keys::build_list_page(&self.name, page);
        self.ids = live_entry(self.store, &key).await?.map(|e| decode(&e.value)).unwrap_or_default();
        Ok(())
    }
}

fn parse_page_number(value: &[u8]) -> u64 {
    std::str::from_utf8(value).ok().and_then(|text| text.parse().ok()).unwrap_or(0)
}

fn parse_cursor(cursor: &str, shards: usize) -> Result<Vec<Start>, StoreError> {
    let shard = |part: &str| match part {
        "-" => Some(Start::Done),
        part => {
            let (page, position) = part.split_once('.')?;
            Some(Start::At { page: page.parse().ok()?, position: position.parse().ok()? })
        }
    };
    let starts: Option<Vec<Start>> = cursor.split('_').map(shard).collect();
    starts.filter(|starts| starts.len() == shards).ok_or_else(bad_cursor)
}

fn bad_cursor() -> StoreError {
    StoreError::Invalid("cursor: pass the nextCursor of an earlier answer unchanged".into())
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
        assert_eq!(parse_cursor("12.40", 1).unwrap(), vec![Start::At { page: 12, position: 40 }]);
        assert_eq!(parse_cursor("3.1_-", 2).unwrap(), vec![Start::At { page: 3, position: 1 }, Start::Done]);
        for bad in ["", "12", "x.1", "1.-1", "1.2.3", "1.2_3.4"] {
            assert!(parse_cursor(bad, 1).is_err(), "{bad}");
        }
        assert!(parse_cursor("1.2", ALL_SHARDS).is_err(), "a cursor for another number of shards");
    }

    #[test]
    fn builds_spread_over_every_shard_of_the_list_of_every_build() {
        let mut used = std::collections::BTreeSet::new();
        for _ in 0..1000 {
            used.insert(List::All.shard_of(&BuildId::generate()));
        }
        assert_eq!(used.len(), ALL_SHARDS);
        let component = ComponentName::parse("c").unwrap();
        assert_eq!(List::Component(&component).shard_of(&BuildId::generate()), 0);
    }
}
