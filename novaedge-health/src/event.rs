//! How health verdicts leave this crate: a [`HealthEvent`] per change, delivered to a
//! [`HealthSink`].
//!
//! Detectors only report *changes* (healthy → unhealthy and back), never steady state, so a sink
//! can apply each event directly to a balancer (`set_healthy(&key, health.is_healthy())`).
//!
//! A detector calls its sink while holding its own lock, so that the events of one endpoint
//! arrive in the order they happened. A sink therefore must not block and must not call back
//! into the detector that called it: it should only flip a flag (`set_healthy` is atomics) or
//! send on a channel.

use std::fmt;

/// Whether an endpoint may receive traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Health {
    /// Fit for traffic.
    Healthy,
    /// Ejected (outlier detection) or failing probes (active checks).
    Unhealthy,
}

impl Health {
    /// `true` for [`Health::Healthy`], as a balancer's `set_healthy` wants it.
    pub fn is_healthy(self) -> bool {
        self == Health::Healthy
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        })
    }
}

/// One change of an endpoint's health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthEvent<K> {
    /// The endpoint.
    pub key: K,
    /// Its new health.
    pub health: Health,
}

impl<K> HealthEvent<K> {
    /// `(key, health)`.
    pub fn into_parts(self) -> (K, Health) {
        (self.key, self.health)
    }
}

/// Where health changes go.
///
/// Implemented for closures `Fn(HealthEvent<K>)` and for `tokio::sync::mpsc` senders of
/// [`HealthEvent<K>`] (unbounded, or bounded with `try_send`: a full channel drops the event
/// and logs it, since a detector must never wait on its consumer).
pub trait HealthSink<K>: Send + Sync + 'static {
    /// Delivers one change. Must not block.
    fn report(&self, event: HealthEvent<K>);
}

impl<K, F> HealthSink<K> for F
where
    F: Fn(HealthEvent<K>) + Send + Sync + 'static,
{
    fn report(&self, event: HealthEvent<K>) {
        self(event)
    }
}

impl<K: fmt::Debug + Send + 'static> HealthSink<K>
    for tokio::sync::mpsc::UnboundedSender<HealthEvent<K>>
{
    fn report(&self, event: HealthEvent<K>) {
        if let Err(error) = self.send(event) {
            tracing::debug!(key = ?error.0.key, health = %error.0.health, "health event receiver is gone");
        }
    }
}

impl<K: fmt::Debug + Send + 'static> HealthSink<K> for tokio::sync::mpsc::Sender<HealthEvent<K>> {
    fn report(&self, event: HealthEvent<K>) {
        if let Err(error) = self.try_send(event) {
            let event = match error {
                tokio::sync::mpsc::error::TrySendError::Full(event)
                | tokio::sync::mpsc::error::TrySendError::Closed(event) => event,
            };
            tracing::warn!(key = ?event.key, health = %event.health, "health event dropped: channel full or closed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(key: u32) -> HealthEvent<u32> {
        HealthEvent {
            key,
            health: Health::Unhealthy,
        }
    }

    #[test]
    fn a_full_bounded_channel_drops_instead_of_blocking() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        tx.report(event(1));
        tx.report(event(2)); // full: dropped, the caller is not blocked
        assert_eq!(rx.try_recv().map(|e| e.key), Ok(1));
        assert!(rx.try_recv().is_err());
        drop(rx);
        tx.report(event(3)); // closed: dropped quietly
    }

    #[test]
    fn closures_and_unbounded_channels_receive_events() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tx.report(event(7));
        assert_eq!(
            rx.try_recv().map(HealthEvent::into_parts),
            Ok((7, Health::Unhealthy))
        );
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = {
            let seen = std::sync::Arc::clone(&seen);
            move |e: HealthEvent<u32>| seen.lock().unwrap().push(e.key)
        };
        HealthSink::report(&sink, event(8));
        assert_eq!(*seen.lock().unwrap(), [8]);
        assert!(Health::Healthy.is_healthy() && !Health::Unhealthy.is_healthy());
        assert_eq!(Health::Unhealthy.to_string(), "unhealthy");
    }
}
