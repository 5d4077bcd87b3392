//! Reading a webhook delivery's body so that a slow or forged delivery holds only its own share.
//!
//! Anyone can send a delivery with a made-up signature, and its body must be read to find the signature
//! wrong. So:
//! - the signature is computed as the body streams in ([`crate::webhook::Signature::update`]);
//! - what a delivery holds is counted as it arrives, not as its `Content-Length` declares: its first
//!   [`IN_MEMORY`] bytes in memory, the rest spooled to a temporary file;
//! - both budgets (memory, spool) are shared out per sender (peer address; an IPv6 sender is its /64):
//!   one sender holds at most a share of each, so others' deliveries are read meanwhile;
//! - a delivery must keep arriving: after [`GRACE`], each [`WINDOW`] must bring at least
//!   `gateway.webhook_min_bytes_per_sec` times its length, or it is cut off with 408; and the whole body
//!   must arrive within [`BODY_TIMEOUT`].

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use artifacts_schemas::Failure;

use crate::error::ApiError;
use crate::webhook::Signature;

/// Bytes of a delivery held in memory; past them, it is spooled to disk.
pub const IN_MEMORY: usize = 64 * 1024;

/// How long a delivery may take before its pace is checked.
pub const GRACE: Duration = Duration::from_secs(2);

/// The span over which the pace is measured, again and again once [`GRACE`] is over.
pub const WINDOW: Duration = Duration::from_secs(2);

/// How long a delivery's body may take to arrive once its head has.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// The memory budget, in maximal deliveries (`gateway.max_webhook_bytes` each), and the part of it one
/// sender may hold.
pub const MEMORY_BODIES: usize = 4;
pub const MEMORY_SHARES: usize = 4;

/// The spool budget (disk), in maximal deliveries; one sender may spool one maximal delivery at once.
pub const SPOOLED_BODIES: usize = 8;

/// Bytes held at once, in total and per sender.
pub struct Budget {
    what: &'static str,
    total: usize,
    per_sender: usize,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    total: usize,
    by_sender: HashMap<IpAddr, usize>,
}

impl Budget {
    pub fn new(what: &'static str, total: usize, per_sender: usize) -> Arc<Self> {
        Arc::new(Self { what, total, per_sender: per_sender.min(total), held: Mutex::default() })
    }

    fn take(&self, sender: IpAddr, bytes: usize) -> Result<(), ApiError> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let by_sender = held.by_sender.get(&sender).copied().unwrap_or(0);
        let busy = |whose: &str| {
            ApiError::new(
                Failure::Unavailable,
                format!("too many webhook deliveries are arriving at once {whose} ({}): retry shortly", self.what),
            )
            .retry_after(1)
        };
        if by_sender + bytes > self.per_sender {
            return Err(busy("from this sender"));
        }
        if held.total + bytes > self.total {
            return Err(busy("in all"));
        }
        held.total += bytes;
        held.by_sender.insert(sender, by_sender + bytes);
        Ok(())
    }

    fn give(&self, sender: IpAddr, bytes: usize) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.total = held.total.saturating_sub(bytes);
        if let Some(by_sender) = held.by_sender.get_mut(&sender) {
            *by_sender = by_sender.saturating_sub(bytes);
            if *by_sender == 0 {
                held.by_sender.remove(&sender);
            }
        }
    }

    /// Bytes held now (for tests and metrics).
    pub fn held(&self) -> usize {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

/// What one delivery holds of a budget, given back when it is dropped.
struct Share {
    budget: Arc<Budget>,
    sender: IpAddr,
    bytes: usize,
}

impl Share {
    fn new(budget: &Arc<Budget>, sender: IpAddr) -> Self {
        Self { budget: Arc::clone(budget), sender, bytes: 0 }
    }

    fn grow(&mut self, bytes: usize) -> Result<(), ApiError> {
        self.budget.take(self.sender, bytes)?;
        self.bytes += bytes;
        Ok(())
    }

    fn release(&mut self) {
        self.budget.give(self.sender, std::mem::take(&mut self.bytes));
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.release();
    }
}

/// The webhook bodies being read.
pub struct Budgets {
    pub memory: Arc<Budget>,
    pub spool: Arc<Budget>,
}

impl Budgets {
    pub fn new(max_webhook_bytes: usize) -> Self {
        let memory = max_webhook_bytes.saturating_mul(MEMORY_BODIES);
        Self {
            memory: Budget::new("memory", memory, (memory / MEMORY_SHARES).max(IN_MEMORY)),
            spool: Budget::new("spool", max_webhook_bytes.saturating_mul(SPOOLED_BODIES), max_webhook_bytes),
        }
    }
}

/// Who sent a delivery, as budgets are shared out: its address, an IPv6 address by its /64.
pub fn sender(peer: Option<IpAddr>) -> IpAddr {
    match peer.map(|ip| ip.to_canonical()) {
        Some(IpAddr::V6(v6)) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        Some(ip) => ip,
        None => IpAddr::from([0, 0, 0, 0]),
    }
}

/// A body read whole, its signature checked: in memory or spooled, with its shares of the budgets.
pub struct Body {
    bytes: Option<Vec<u8>>,
    spooled: Option<tempfile::NamedTempFile>,
    _memory: Share,
    _spool: Share,
}

impl Body {
    /// The body's bytes (read back from the spool if it was spooled; only a verified body gets here).
    pub async fn into_bytes(self) -> Result<Vec<u8>, ApiError> {
        match (&self.bytes, &self.spooled) {
            (Some(bytes), _) => Ok(bytes.clone()),
            (None, Some(file)) => tokio::fs::read(file.path()).await.map_err(|err| {
                ApiError::new(Failure::Unavailable, format!("cannot read back the spooled delivery: {err}"))
            }),
            (None, None) => Ok(Vec::new()),
        }
    }
}

/// How a delivery's body must arrive.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub max_bytes: usize,
    pub min_bytes_per_sec: u64,
}

/// Reads a delivery's body from `sender`, computing `signature` as it streams in, and checks it.
pub async fn read(
    body: axum::body::Body,
    sender: IpAddr,
    budgets: &Budgets,
    pace: Pace,
    mut signature: Signature,
) -> Result<Body, ApiError> {
    let mut body = body;
    let mut memory = Share::new(&budgets.memory, sender);
    let mut spool = Share::new(&budgets.spool, sender);
    let mut buffer = Vec::new();
    let mut spooled: Option<(tempfile::NamedTempFile, tokio::fs::File)> = None;
    let mut received = 0usize;
    let started = Instant::now();
    let give_up_at = started + BODY_TIMEOUT;
    let mut window_end = started + GRACE + WINDOW;
    let mut window_bytes = 0u64;
    let window_needs = pace.min_bytes_per_sec.saturating_mul(WINDOW.as_secs());
    let too_slow = || {
        ApiError::new(
            Failure::Invalid,
            format!("the delivery's body arrived slower than {} bytes a second: cut off", pace.min_bytes_per_sec),
        )
        .with_status(StatusCode::REQUEST_TIMEOUT)
    };
    loop {
        let next = tokio::time::timeout_at(window_end.min(give_up_at), body.frame()).await;
        if next.is_err() && Instant::now() >= give_up_at {
            return Err(ApiError::new(
                Failure::Invalid,
                format!("the delivery's body did not arrive within {}s", BODY_TIMEOUT.as_secs()),
            )
            .with_status(StatusCode::REQUEST_TIMEOUT));
        }
        // A window is over: it must have brought enough.
        while Instant::now() >= window_end {
            if window_bytes < window_needs {
                return Err(too_slow());
            }
            window_bytes = 0;
            window_end += WINDOW;
        }
        // Nothing arrived before a window ended.
        let Ok(next) = next else { continue };
        // The body is complete.
        let Some(frame) = next else { break };
        let frame =
            frame.map_err(|err| ApiError::new(Failure::Invalid, format!("cannot read the delivery's body: {err}")))?;
        let Ok(data) = frame.into_data() else { continue };
        received += data.len();
        window_bytes += data.len() as u64;
        if received > pace.max_bytes {
            return Err(ApiError::new(
                Failure::TooLarge,
                format!("the delivery is larger than gateway.max_webhook_bytes ({} bytes)", pace.max_bytes),
            ));
        }
        signature.update(&data);
        if spooled.is_none() && buffer.len() + data.len() <= IN_MEMORY {
            memory.grow(data.len())?;
            buffer.extend_from_slice(&data);
            continue;
        }
        if spooled.is_none() {
            let spool_error =
                |err: std::io::Error| ApiError::new(Failure::Unavailable, format!("cannot spool the delivery: {err}"));
            spool.grow(buffer.len())?;
            let temporary = tempfile::NamedTempFile::new().map_err(spool_error)?;
            let mut file = tokio::fs::File::create(temporary.path()).await.map_err(spool_error)?;
            file.write_all(&buffer).await.map_err(spool_error)?;
            buffer = Vec::new();
            memory.release();
            spooled = Some((temporary, file));
        }
        spool.grow(data.len())?;
        let (_, file) = spooled.as_mut().expect("spooled above");
        file.write_all(&data)
            .await
            .map_err(|err| ApiError::new(Failure::Unavailable, format!("cannot spool the delivery: {err}")))?;
    }
    signature.finish()?;
    let spooled = match spooled {
        Some((temporary, mut file)) => {
            file.flush()
                .await
                .map_err(|err| ApiError::new(Failure::Unavailable, format!("cannot spool the delivery: {err}")))?;
            Some(temporary)
        }
        None => None,
    };
    let bytes = spooled.is_none().then_some(buffer);
    Ok(Body { bytes, spooled, _memory: memory, _spool: spool })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_holds_only_its_share() {
        let budget = Budget::new("test", 100, 40);
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let mut first = Share::new(&budget, a);
        first.grow(40).unwrap();
        assert!(Share::new(&budget, a).grow(1).is_err(), "past a's share");
        let mut second = Share::new(&budget, b);
        second.grow(40).unwrap();
        assert!(Share::new(&budget, IpAddr::from([10, 0, 0, 3])).grow(21).is_err(), "past the total");
        drop(first);
        assert_eq!(budget.held(), 40);
        Share::new(&budget, a).grow(40).unwrap();
        assert_eq!(budget.held(), 40, "a share dropped gives its bytes back");
    }

    #[test]
    fn ipv6_senders_are_their_64() {
        let one: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        let other: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        assert_eq!(sender(Some(one)), sender(Some(other)));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(sender(Some(mapped)), IpAddr::from([192, 0, 2, 7]));
    }
}
