//! Requests per API key: `gateway.rate_limit_per_minute` a minute, whichever way they come. The gateway
//! admits each HTTP request with it, and every service each NATS request a client sent straight to it
//! (requests the gateway relays were admitted there), so a key cannot go around the limit by skipping
//! HTTP.
//!
//! GCRA from `governor`: a key may spend its whole minute in a burst, then one request every
//! `60 s / limit` as it refills.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use artifacts_schemas::{Failure, RequestError};

/// The rate of each key in one process.
pub struct KeyRateLimit {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    per_minute: u32,
}

/// A request over the key's rate, and when the next one is admitted.
#[derive(Debug)]
pub struct RateLimited {
    pub per_minute: u32,
    pub retry_after: Duration,
}

impl KeyRateLimit {
    /// `per_minute` requests a minute per key; 0 admits everything.
    pub fn new(per_minute: u32) -> Self {
        let limiter = NonZeroU32::new(per_minute).map(|n| governor::RateLimiter::keyed(Quota::per_minute(n)));
        Self { limiter, per_minute }
    }

    pub fn admit(&self, key_id: &str) -> Result<(), RateLimited> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        // Keys are few (each one was authenticated first); forget those idle long enough to be full again.
        if limiter.len() > 10_000 {
            limiter.retain_recent();
        }
        limiter.check_key(&key_id.to_owned()).map_err(|not_until| RateLimited {
            per_minute: self.per_minute,
            retry_after: not_until.wait_time_from(DefaultClock::default().now()),
        })
    }
}

impl RateLimited {
    /// Whole seconds for `Retry-After`, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_secs_f64().ceil().max(1.0) as u64
    }
}

impl From<RateLimited> for RequestError {
    fn from(limited: RateLimited) -> Self {
        RequestError::new(
            Failure::RateLimited,
            format!(
                "this API key made more than {} requests a minute: retry in {}s",
                limited.per_minute,
                limited.retry_after_secs()
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_spends_its_minute_then_waits_and_keys_are_apart() {
        let rate = KeyRateLimit::new(3);
        for _ in 0..3 {
            rate.admit("aaaa").unwrap();
        }
        let limited = rate.admit("aaaa").unwrap_err();
        assert!((1..=20).contains(&limited.retry_after_secs()), "one request refills in 20 s: {limited:?}");
        assert!(RequestError::from(limited).reply().error_message.contains("more than 3 requests a minute"));
        rate.admit("bbbb").expect("another key has its own minute");
        let unlimited = KeyRateLimit::new(0);
        for _ in 0..1000 {
            unlimited.admit("aaaa").unwrap();
        }
    }
}
