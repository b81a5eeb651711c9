//! The limiter's clock: [`tokio::time::Instant`] as a governor [`Clock`].
//!
//! governor's default clock reads quanta or `std::time::Instant`, which paused tokio time does
//! not move. Reading tokio's clock instead makes the limiter follow `tokio::time::pause` and
//! `advance`, so tests of rates and `Retry-After` run deterministically without sleeping. In a
//! runtime whose clock is not paused, tokio's `Instant::now()` is `std::time::Instant::now()`.

use governor::clock::Clock;
use governor::nanos::Nanos;
use tokio::time::Instant;

/// Time since the clock was made, in nanoseconds, read from tokio's clock.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TokioClock {
    base: Instant,
}

impl TokioClock {
    pub(crate) fn new() -> Self {
        TokioClock {
            base: Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        // A u64 of nanoseconds lasts 584 years; a process will not run that long.
        Nanos::from(Instant::now().saturating_duration_since(self.base))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn follows_paused_tokio_time() {
        let clock = TokioClock::new();
        assert_eq!(clock.now(), Nanos::new(0));
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(clock.now(), Nanos::from(Duration::from_millis(1500)));
    }
}
