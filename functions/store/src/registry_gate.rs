//! Registry pushes and the registry's blob sweep never overlap.
//!
//! The registry's `garbage-collect` deletes every blob that no manifest refers to. A push uploads its
//! blobs before the manifest that refers to them, so a sweep running meanwhile can delete the blobs of
//! an image being pushed and leave its manifest pointing at nothing. The registry's own advice is to
//! stop it or make it read-only while sweeping; here only pushes wait, and only while blobs are swept
//! (pulls, builds and everything else go on). One record of the `<prefix>_registry_gate` bucket holds
//! the pushes in flight and the sweep, changed by compare-and-set: a push enters only while no sweep
//! runs, and a sweep, once it has closed the gate, starts only when the pushes in flight have left.
//! The workers take part; a `docker push` by hand with an admin key does not (README, "Retention").
//!
//! A holder that dies leaves its entry: a push entry older than [`PUSH_STALE`] and a sweep older than
//! [`SWEEP_LIMIT`] plus a minute are ignored.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::access::update_json;
use crate::keys::REGISTRY_GATE as KEY;
use crate::{Store, StoreError};

/// How long a sweep may run; its command is killed past it.
pub const SWEEP_LIMIT: Duration = Duration::from_secs(600);
/// A push entry this old is from a holder that died.
pub const PUSH_STALE: Duration = Duration::from_secs(3600);
const POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Gate {
    /// Holders of pushes in flight, with when each entered (Unix seconds).
    pushes: BTreeMap<String, i64>,
    /// When the sweep that holds the gate started (Unix seconds).
    sweep_started: Option<i64>,
}

impl Gate {
    fn sweeping(&self, now: i64) -> bool {
        self.sweep_started.is_some_and(|started| now - started < (SWEEP_LIMIT.as_secs() + 60) as i64)
    }

    fn pushes_in_flight(&self, now: i64) -> usize {
        self.pushes.values().filter(|&&entered| now - entered < PUSH_STALE.as_secs() as i64).count()
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl Store {
    /// Runs `push` as `holder` once no sweep runs (waiting at most `wait`), and leaves the gate after it.
    pub async fn registry_push<T>(
        &self,
        holder: &str,
        wait: Duration,
        push: impl Future<Output = T>,
    ) -> Result<T, StoreError> {
        let store = &self.buckets.registry_gate;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let mut entered = false;
            update_json(store, KEY, |gate: &mut Gate| {
                let now = now();
                entered = !gate.sweeping(now);
                if entered {
                    gate.pushes.insert(holder.to_owned(), now);
                }
                entered
            })
            .await?;
            if entered {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StoreError::Unavailable("the registry's blob sweep did not end in time; try again".into()));
            }
            tokio::time::sleep(POLL).await;
        }
        let pushed = push.await;
        if let Err(err) = update_json(store, KEY, |gate: &mut Gate| gate.pushes.remove(holder).is_some()).await {
            // Its entry goes stale in time; a sweep waits for it until then.
            tracing::warn!(%err, holder, "cannot leave the registry gate");
        }
        Ok(pushed)
    }

    /// Runs `sweep` with the gate closed to pushes, once those in flight have left (waiting at most
    /// `wait` for them). `None` when another sweep runs or the pushes did not leave in time: the sweep is
    /// for a later collection.
    pub async fn registry_sweep<T>(
        &self,
        wait: Duration,
        sweep: impl Future<Output = T>,
    ) -> Result<Option<T>, StoreError> {
        let store = &self.buckets.registry_gate;
        let mut closed = false;
        update_json(store, KEY, |gate: &mut Gate| {
            closed = !gate.sweeping(now());
            if closed {
                gate.sweep_started = Some(now());
            }
            closed
        })
        .await?;
        if !closed {
            return Ok(None);
        }
        let deadline = tokio::time::Instant::now() + wait;
        let outcome = loop {
            let gate = update_json(store, KEY, |_: &mut Gate| false).await?;
            if gate.pushes_in_flight(now()) == 0 {
                break Some(sweep.await);
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::info!(
                    pushes = gate.pushes_in_flight(now()),
                    "pushes in flight: the blob sweep waits for a later collection"
                );
                break None;
            }
            tokio::time::sleep(POLL).await;
        };
        update_json(store, KEY, |gate: &mut Gate| gate.sweep_started.take().is_some()).await?;
        Ok(outcome)
    }
}
