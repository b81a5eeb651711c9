//! The retry budget: see [`RetryBudget`].

use std::{
    fmt,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use tokio::time::Instant;

const SLOTS: usize = 10;

/// Configuration of a [`RetryBudget`].
#[derive(Clone, Debug, PartialEq)]
pub struct RetryBudgetConfig {
    /// Retries allowed per request in the window: `0.2` allows one retry per five requests.
    /// Between 0 and 1000 (linkerd's bounds).
    pub retry_ratio: f64,
    /// Retries allowed per second of the window whatever the request count.
    pub min_retries_per_sec: u32,
    /// The length of the window over which requests and retries are counted, between 1 and
    /// 60 seconds (Finagle's bounds).
    pub ttl: Duration,
}

impl Default for RetryBudgetConfig {
    /// linkerd's defaults: 20 %, 10 retries per second, 10 s.
    fn default() -> Self {
        Self {
            retry_ratio: 0.2,
            min_retries_per_sec: 10,
            ttl: Duration::from_secs(10),
        }
    }
}

/// A retry budget, after Finagle's `RetryBudget` and linkerd's `retryBudget`: retries are
/// allowed as a ratio of the recent requests, plus a small reserve per second so that a
/// quiet route can still retry.
///
/// Over a sliding window of `ttl` (kept as ten slots, so it slides in tenths of `ttl`), the
/// budget counts the requests that came in and the retries that were made. A retry is allowed
/// while
///
/// ```text
/// retries_in_window + 1 <= min_retries_per_sec * ttl_secs + retry_ratio * requests_in_window
/// ```
///
/// so with the defaults (ratio 0.2, 10 per second, 10 s) retries add at most 20 % to the
/// upstream's load once past a reserve of 100 retries per 10 s. This is what stops a retry
/// storm from multiplying the load on an upstream that is already failing.
///
/// A budget is shared by every clone of a [`Retry`](super::Retry) service (and, through
/// [`RetryLayer::with_budget`](super::RetryLayer::with_budget), by several routes if wanted).
pub struct RetryBudget {
    window: Mutex<Window>,
    reserve: f64,
    ratio: f64,
    slot: Duration,
}

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    requests: u64,
    retries: u64,
}

#[derive(Debug)]
struct Window {
    slots: [Slot; SLOTS],
    current: usize,
    current_start: Instant,
}

/// An error in a [`RetryBudgetConfig`].
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RetryBudgetConfigError {
    /// `retry_ratio` is not a number between 0 and 1000.
    #[error("retry.budget.retry_ratio: {0} is not between 0 and 1000")]
    Ratio(f64),
    /// `ttl` is outside 1..=60 seconds.
    #[error("retry.budget.ttl: {0:?} is not between 1 and 60 seconds")]
    Ttl(Duration),
}

impl RetryBudget {
    /// Builds a budget, checking the configuration.
    pub fn new(config: &RetryBudgetConfig) -> Result<Self, RetryBudgetConfigError> {
        if !(0.0..=1000.0).contains(&config.retry_ratio) {
            // Also catches NaN.
            return Err(RetryBudgetConfigError::Ratio(config.retry_ratio));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&config.ttl) {
            return Err(RetryBudgetConfigError::Ttl(config.ttl));
        }
        Ok(Self {
            window: Mutex::new(Window {
                slots: [Slot::default(); SLOTS],
                current: 0,
                current_start: Instant::now(),
            }),
            reserve: f64::from(config.min_retries_per_sec) * config.ttl.as_secs_f64(),
            ratio: config.retry_ratio,
            slot: config.ttl / SLOTS as u32,
        })
    }

    /// Records a request (every request that reaches the retry filter, retried or not).
    pub fn deposit(&self) {
        let mut window = self.window();
        let current = window.current;
        window.slots[current].requests += 1;
    }

    /// Asks for one retry: `true` (and the retry is counted) if the budget allows it.
    pub fn withdraw(&self) -> bool {
        let mut window = self.window();
        let (requests, retries) = window
            .slots
            .iter()
            .fold((0u64, 0u64), |(q, r), s| (q + s.requests, r + s.retries));
        let allowed = self.reserve + self.ratio * requests as f64;
        if (retries + 1) as f64 <= allowed {
            let current = window.current;
            window.slots[current].retries += 1;
            true
        } else {
            false
        }
    }

    /// The window, with the slots that have aged out of it cleared.
    fn window(&self) -> std::sync::MutexGuard<'_, Window> {
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed = window.current_start.elapsed();
        let steps = (elapsed.as_nanos() / self.slot.as_nanos()) as u64;
        if steps > 0 {
            for i in 1..=steps.min(SLOTS as u64) {
                let idx = (window.current + i as usize) % SLOTS;
                window.slots[idx] = Slot::default();
            }
            window.current = (window.current + (steps % SLOTS as u64) as usize) % SLOTS;
            // Saturates: `steps` fits since the elapsed time did.
            window.current_start += self.slot * u32::try_from(steps).unwrap_or(u32::MAX);
        }
        window
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("reserve", &self.reserve)
            .field("ratio", &self.ratio)
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(ratio: f64, per_sec: u32, ttl_secs: u64) -> RetryBudget {
        RetryBudget::new(&RetryBudgetConfig {
            retry_ratio: ratio,
            min_retries_per_sec: per_sec,
            ttl: Duration::from_secs(ttl_secs),
        })
        .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn reserve_alone() {
        let b = budget(0.0, 2, 1);
        assert!(b.withdraw());
        assert!(b.withdraw());
        assert!(!b.withdraw());
        for _ in 0..100 {
            b.deposit();
        }
        // A ratio of 0 earns nothing from requests.
        assert!(!b.withdraw());
        // The reserve comes back once the window has slid past the spent retries.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(b.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn ratio_of_requests() {
        let b = budget(0.2, 0, 10);
        assert!(!b.withdraw());
        for _ in 0..10 {
            b.deposit();
        }
        assert!(b.withdraw());
        assert!(b.withdraw());
        assert!(!b.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn requests_age_out_of_the_window() {
        let b = budget(1.0, 0, 10);
        for _ in 0..3 {
            b.deposit();
        }
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(b.withdraw());
        tokio::time::advance(Duration::from_secs(2)).await;
        // The deposits were made more than 10 s ago; the retry 2 s ago is still counted.
        assert!(!b.withdraw());
        b.deposit();
        b.deposit();
        assert!(b.withdraw());
        assert!(!b.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn long_idle_clears_everything() {
        let b = budget(1.0, 0, 1);
        b.deposit();
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(!b.withdraw());
        b.deposit();
        assert!(b.withdraw());
    }

    #[test]
    fn bad_config_names_the_field() {
        let err = RetryBudget::new(&RetryBudgetConfig {
            retry_ratio: f64::NAN,
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("retry.budget.retry_ratio"),
            "{err}"
        );
        let err = RetryBudget::new(&RetryBudgetConfig {
            ttl: Duration::from_millis(10),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("retry.budget.ttl"), "{err}");
    }
}
