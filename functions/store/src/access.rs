//! How every read and write reaches JetStream: the retries that make a key change's reload invisible,
//! and the one compare-and-set that every invariant of the store is kept with.
//!
//! ```text
//!   read entry (revision r) ──> change it in memory ──> write "if still at r"
//!        ^                                                  │
//!        └──── lost: another writer got there first ────────┘  (bounded, with jittered backoff;
//!                                                                past the bound: Conflict)
//! ```
//!
//! The writers of one key in one process take turns ([`until_won`]). nats-server before 2.9.21 checks a
//! replicated stream's expected revision before the write is replicated, not as part of it
//! (nats-server#4320): on a cluster, compare-and-sets of one key sent at the same moment can all
//! succeed, and all but the last change are lost. Measured on 2.9.10, three nodes: 1,000 submissions
//! at once through one build function, 587 to 694 ids missing from the list of every build without
//! turns, none with them. Across processes the race remains, for writes of one key at the same
//! moment: run nats-server 2.9.21 or later on a cluster (every process warns at its start).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, OnceLock, PoisonError, Weak};
use std::time::Duration;

use async_nats::jetstream::kv;
use backon::{BackoffBuilder, ExponentialBuilder};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::StoreError;

/// Runs a JetStream call again while it reached no one ("no responders"), for about a second at most.
///
/// Every API key change rewrites the NATS users and reloads nats-server, and nats-server 2.9 re-registers
/// each account's JetStream API during a reload: for 2 to 15 ms (measured here) a JetStream request finds
/// no responder. Such a request was never delivered, so sending it again is safe, writes included; any
/// other failure is returned at once.
pub async fn retry_unanswered<T, E, F, Fut>(call: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::error::Error + 'static,
{
    retry_while(call, reached_no_one).await
}

/// [`retry_unanswered`] for a read, which is also sent again once its answer did not come in time: an
/// answer on its way while a reload re-registers the accounts' imports is lost (seen once in a loaded
/// CI run, as a 503 `timed out` of `GET /keys`), and reading again changes nothing.
pub async fn retry_read<T, E, F, Fut>(call: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::error::Error + 'static,
{
    let mut timeouts = 0;
    retry_while(call, |err| {
        let timed_out = format!("{err}").contains("timed out");
        timeouts += u32::from(timed_out);
        reached_no_one(err) || (timed_out && timeouts <= 1)
    })
    .await
}

async fn retry_while<T, E, F, Fut>(
    mut call: F,
    mut again: impl FnMut(&(dyn std::error::Error + 'static)) -> bool,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::error::Error + 'static,
{
    // About a second in all, the longest reload measured being 15 ms.
    let mut pauses = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(5))
        .with_max_delay(Duration::from_millis(500))
        .with_max_times(6)
        .with_jitter()
        .build();
    loop {
        match call().await {
            Err(err) if again(&err) => match pauses.next() {
                Some(pause) => tokio::time::sleep(pause).await,
                None => return Err(err),
            },
            done => return done,
        }
    }
}

/// Whether a failure, or one of its causes, is a request that no subscriber received.
fn reached_no_one(err: &(dyn std::error::Error + 'static)) -> bool {
    use async_nats::jetstream::context::RequestErrorKind as JetStreamKind;
    let mut cause = Some(err);
    while let Some(err) = cause {
        if err
            .downcast_ref::<async_nats::RequestError>()
            .is_some_and(|e| e.kind() == async_nats::RequestErrorKind::NoResponders)
            || err
                .downcast_ref::<async_nats::jetstream::context::RequestError>()
                .is_some_and(|e| e.kind() == JetStreamKind::NoResponders)
        {
            return true;
        }
        cause = err.source();
    }
    // Some of async-nats's error kinds keep only the cause's text.
    let text = err.to_string();
    text.contains("no responders") || text.contains("requested JetStream resource does not exist")
}

/// The value at `key`, if one is stored (a deleted key has none).
pub(crate) async fn read_bytes(bucket: &kv::Store, key: &str) -> Result<Option<bytes::Bytes>, StoreError> {
    retry_read(|| bucket.get(key)).await.map_err(StoreError::unavailable)
}

/// The JSON record at `key`.
pub(crate) async fn read_json<T: DeserializeOwned>(bucket: &kv::Store, key: &str) -> Result<Option<T>, StoreError> {
    let Some(bytes) = read_bytes(bucket, key).await? else { return Ok(None) };
    serde_json::from_slice(&bytes).map(Some).map_err(|err| StoreError::corrupt(key, err))
}

/// The live entry at `key` (with its revision), if one is stored.
pub(crate) async fn live_entry(bucket: &kv::Store, key: &str) -> Result<Option<kv::Entry>, StoreError> {
    let entry = retry_read(|| bucket.entry(key)).await.map_err(StoreError::unavailable)?;
    Ok(entry.filter(|entry| entry.operation == kv::Operation::Put))
}

/// Stores `value` at `key`, whatever was there.
pub(crate) async fn put_json<T: Serialize>(bucket: &kv::Store, key: &str, value: &T) -> Result<u64, StoreError> {
    let bytes = to_bytes(value);
    retry_unanswered(|| bucket.put(key, bytes.clone())).await.map_err(StoreError::unavailable)
}

pub(crate) fn to_bytes<T: Serialize>(value: &T) -> bytes::Bytes {
    serde_json::to_vec(value).expect("records serialise").into()
}

/// One round of a compare-and-set: done, or lost to another writer and to be run again.
pub(crate) enum Round<R> {
    Done(R),
    Lost,
}

/// Writes `bytes` at `key` if it is still as read: at `revision`, or absent when `revision` is `None`.
pub(crate) async fn write_if_unchanged(
    bucket: &kv::Store,
    key: &str,
    revision: Option<u64>,
    bytes: bytes::Bytes,
) -> Result<Round<u64>, StoreError> {
    let written = match revision {
        Some(revision) => retry_unanswered(|| bucket.update(key, bytes.clone(), revision))
            .await
            .map_err(|err| (err.kind() == kv::UpdateErrorKind::WrongLastRevision, err.to_string())),
        None => retry_unanswered(|| bucket.create(key, bytes.clone()))
            .await
            .map_err(|err| (err.kind() == kv::CreateErrorKind::AlreadyExists, err.to_string())),
    };
    match written {
        Ok(revision) => Ok(Round::Done(revision)),
        Err((true, _)) => Ok(Round::Lost),
        Err((false, err)) => Err(StoreError::Unavailable(err)),
    }
}

/// Compare-and-set rounds a write may lose before it gives up with [`StoreError::Conflict`]: a few
/// hundred writers of one key at the same moment, far beyond any key here.
const CAS_ROUNDS: usize = 64;

/// Runs `round` until it is done, pausing a jittered, growing while after each round lost to another
/// writer (so that writers of one key spread out instead of colliding again), at most [`CAS_ROUNDS`]
/// times. The one compare-and-set loop of the store.
pub(crate) async fn until_won<R, F, Fut>(key: &str, mut round: F) -> Result<R, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Round<R>, StoreError>>,
{
    let turn = turn_of(key);
    let _turn = turn.lock().await;
    let mut pauses = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(1))
        .with_max_delay(Duration::from_millis(100))
        .with_max_times(CAS_ROUNDS)
        .with_jitter()
        .build();
    loop {
        match round().await? {
            Round::Done(done) => return Ok(done),
            Round::Lost => match pauses.next() {
                Some(pause) => tokio::time::sleep(pause).await,
                None => {
                    return Err(StoreError::Conflict(format!(
                        "{key} was changed by other writers {CAS_ROUNDS} times in a row: try again"
                    )))
                }
            },
        }
    }
}

/// The turn of the writers of `key` in this process (see the module documentation): one lock per key
/// being written, forgotten once no writer holds it.
fn turn_of(key: &str) -> Arc<tokio::sync::Mutex<()>> {
    type Turns = std::sync::Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>;
    static TURNS: OnceLock<Turns> = OnceLock::new();
    let mut turns = TURNS.get_or_init(Default::default).lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(turn) = turns.get(key).and_then(Weak::upgrade) {
        return turn;
    }
    if turns.len() >= 1024 {
        turns.retain(|_, turn| turn.strong_count() > 0);
    }
    let turn = Arc::new(tokio::sync::Mutex::new(()));
    turns.insert(key.to_owned(), Arc::downgrade(&turn));
    turn
}

/// Changes the JSON record at `key` (the default value when there is none) with compare-and-set;
/// `change` says whether it changed anything (nothing is written otherwise). Returns the record as it
/// now stands.
pub(crate) async fn update_json<T>(
    bucket: &kv::Store,
    key: &str,
    change: impl FnMut(&mut T) -> bool,
) -> Result<T, StoreError>
where
    T: Default + Serialize + DeserializeOwned,
{
    // Shared by the rounds, each of which calls it once, between two awaits.
    let change = std::sync::Mutex::new(change);
    until_won(key, || {
        let change = &change;
        async move {
            let entry = live_entry(bucket, key).await?;
            let mut value: T = match &entry {
                Some(entry) => serde_json::from_slice(&entry.value).map_err(|err| StoreError::corrupt(key, err))?,
                None => T::default(),
            };
            if !(change.lock().unwrap_or_else(|p| p.into_inner()))(&mut value) {
                return Ok(Round::Done(value));
            }
            Ok(match write_if_unchanged(bucket, key, entry.map(|e| e.revision), to_bytes(&value)).await? {
                Round::Done(_) => Round::Done(value),
                Round::Lost => Round::Lost,
            })
        }
    })
    .await
}

/// Every key of `bucket`.
pub(crate) async fn all_keys(bucket: &kv::Store) -> Result<Vec<String>, StoreError> {
    use futures::TryStreamExt;
    let keys = retry_read(|| bucket.keys()).await.map_err(StoreError::unavailable)?;
    keys.try_collect().await.map_err(StoreError::unavailable)
}

/// Every JSON record of `bucket` (those that cannot be read are skipped, with a warning).
pub(crate) async fn all_values<T: DeserializeOwned>(bucket: &kv::Store) -> Result<Vec<T>, StoreError> {
    let mut values = Vec::new();
    for key in all_keys(bucket).await? {
        match read_json(bucket, &key).await {
            Ok(Some(value)) => values.push(value),
            Ok(None) => {}
            Err(StoreError::Corrupt(err)) => tracing::warn!(%key, %err, "an unreadable record is skipped"),
            Err(err) => return Err(err),
        }
    }
    Ok(values)
}
