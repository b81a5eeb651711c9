//! The agent side: one stream to the controller, kept open, with ACK/NACK and heartbeats.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

use super::proto::snapshot_distribution_client::SnapshotDistributionClient;
use super::proto::{AgentMessage, Heartbeat, Hello, agent_message};
use crate::ConfigSnapshot;

/// What the agent does with the snapshots it receives.
pub trait Applier: Send + 'static {
    /// Applies a decoded and validated snapshot whose content has the given digest; `Err` with
    /// the reason refuses it (the previous snapshot keeps serving) and is sent back as a NACK.
    fn apply(&mut self, snapshot: ConfigSnapshot, digest: Vec<u8>) -> Result<(), String>;
    /// The version and digest of the snapshot running now; `(0, empty)` for none.
    fn current(&self) -> (u64, Vec<u8>);
    /// Whether the data plane is ready, for heartbeats.
    fn ready(&self) -> bool {
        true
    }
    /// The L2 VIPs (by name) this node holds right now, for the Hello and heartbeats.
    fn held_vips(&self) -> Vec<String> {
        Vec::new()
    }
}

/// What the agent knows of its contact with the controller, for L2 VIP fencing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Contact {
    /// When the agent sent the last heartbeat the controller answered. The controller heard
    /// from the node at that time or later, so its fencing delay runs out no earlier than
    /// `confirmed + fencing_delay`. `None`: no answer yet.
    pub confirmed: Option<Instant>,
    /// The controller's fencing delay, from its last message (`None`: it never moves L2 VIPs,
    /// or has not said yet).
    pub fencing_delay: Option<Duration>,
}

impl Contact {
    /// Until when this node may hold L2 VIPs, keeping `margin` for withdrawing them before
    /// the controller may give them to another node. `None`: it may not (no answered
    /// heartbeat yet, or no fencing delay known).
    pub fn l2_deadline(&self, margin: Duration) -> Option<Instant> {
        let delay = self.fencing_delay?.checked_sub(margin)?;
        Some(self.confirmed? + delay)
    }
}

/// Exponential backoff with full jitter between connection attempts.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The wait before attempt `attempt` (0-based) after a failure: uniform in
    /// `[0, min(max, initial * 2^attempt)]`, so agents restarted together do not reconnect in
    /// lockstep.
    fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(1 << attempt.min(20))
            .min(self.max);
        ceiling.mul_f64(rand::rng().random::<f64>())
    }
}

/// How a [`Subscriber`] reaches the controller and introduces itself.
#[derive(Debug, Clone)]
pub struct SubscriberConfig {
    /// The controller, with its TLS settings.
    pub endpoint: Endpoint,
    /// The node whose snapshot to receive.
    pub node: String,
    /// The agent's version, for the controller's logs.
    pub agent_version: String,
    pub backoff: Backoff,
}

/// Keeps a stream to the controller open and applies what comes down it.
#[derive(Debug)]
pub struct Subscriber<A> {
    config: SubscriberConfig,
    applier: A,
    contact: watch::Sender<Contact>,
}

/// Why one stream ended.
#[derive(Debug, thiserror::Error)]
enum StreamEnd {
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("{0}")]
    Status(#[from] tonic::Status),
    #[error("the controller closed the stream")]
    Closed,
}

impl<A: Applier> Subscriber<A> {
    pub fn new(config: SubscriberConfig, applier: A) -> Self {
        Self {
            config,
            applier,
            contact: watch::Sender::new(Contact::default()),
        }
    }

    /// Follows the contact with the controller: changes on every answered heartbeat.
    pub fn contact(&self) -> watch::Receiver<Contact> {
        self.contact.subscribe()
    }

    /// The applier, e.g. to read what runs now.
    pub fn applier(&self) -> &A {
        &self.applier
    }

    /// Runs until the task is dropped: connects, streams, and reconnects after any failure
    /// with backoff. A stream that delivered something resets the backoff.
    pub async fn run(mut self) {
        let mut attempt = 0;
        loop {
            let mut delivered = false;
            let Err(end) = self.stream(&mut delivered).await;
            if delivered {
                attempt = 0;
            }
            let delay = self.config.backoff.delay(attempt);
            attempt = attempt.saturating_add(1);
            tracing::warn!(
                controller = %self.config.endpoint.uri(),
                error = %end,
                retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "snapshot stream ended"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// One stream, until it fails; `delivered` is set once the controller answered.
    async fn stream(&mut self, delivered: &mut bool) -> Result<Infallible, StreamEnd> {
        let channel = self.config.endpoint.connect().await?;
        let mut client = SnapshotDistributionClient::new(channel);
        let (tx, rx) = mpsc::channel(8);
        let (current_version, current_digest) = self.applier.current();
        let hello = AgentMessage {
            message: Some(agent_message::Message::Hello(Hello {
                node: self.config.node.clone(),
                current_version,
                current_digest,
                agent_version: self.config.agent_version.clone(),
                held_vips: self.applier.held_vips(),
            })),
        };
        // The channel has room: this cannot wait.
        let _ = tx.try_send(hello);
        let mut inbound = client
            .subscribe(ReceiverStream::new(rx))
            .await?
            .into_inner();
        tracing::info!(controller = %self.config.endpoint.uri(), node = self.config.node, "subscribed");
        *delivered = true;
        let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Heartbeats sent and not answered yet: (sequence, when sent).
        let mut unanswered: VecDeque<(u64, Instant)> = VecDeque::new();
        let mut sequence = 0;
        loop {
            tokio::select! {
                message = inbound.message() => {
                    let Some(message) = message? else {
                        return Err(StreamEnd::Closed);
                    };
                    if message.heartbeat_interval_ms > 0 {
                        let every = Duration::from_millis(message.heartbeat_interval_ms.into());
                        if every != heartbeat.period() {
                            heartbeat = tokio::time::interval(every);
                            heartbeat.set_missed_tick_behavior(
                                tokio::time::MissedTickBehavior::Delay,
                            );
                        }
                    }
                    let fencing_delay = (message.fencing_delay_ms > 0)
                        .then(|| Duration::from_millis(message.fencing_delay_ms.into()));
                    let ack = message.heartbeat_ack;
                    // A snapshot comes before the answer in the same message: apply it first.
                    if message.snapshot.is_some() {
                        let answer = self.receive(message);
                        if tx.send(answer).await.is_err() {
                            return Err(StreamEnd::Closed);
                        }
                    }
                    let mut confirmed = None;
                    while let Some(&(seq, sent)) = unanswered.front() {
                        if seq > ack {
                            break;
                        }
                        unanswered.pop_front();
                        if seq == ack {
                            confirmed = Some(sent);
                        }
                    }
                    self.contact.send_if_modified(|c| {
                        let before = *c;
                        c.fencing_delay = fencing_delay;
                        if confirmed.is_some() {
                            c.confirmed = confirmed;
                        }
                        *c != before
                    });
                }
                _ = heartbeat.tick() => {
                    sequence += 1;
                    // Answers come in order; a controller that answers nothing must not make
                    // this grow without bound.
                    if unanswered.len() >= 64 {
                        unanswered.pop_front();
                    }
                    unanswered.push_back((sequence, Instant::now()));
                    let beat = AgentMessage {
                        message: Some(agent_message::Message::Heartbeat(Heartbeat {
                            ready: self.applier.ready(),
                            sequence,
                            held_vips: self.applier.held_vips(),
                        })),
                    };
                    if tx.send(beat).await.is_err() {
                        return Err(StreamEnd::Closed);
                    }
                }
            }
        }
    }

    /// Decodes, validates and applies one snapshot; the ACK or NACK to send.
    fn receive(&mut self, message: super::proto::ControllerMessage) -> AgentMessage {
        let wire = message.snapshot.unwrap_or_default();
        let version = wire.version;
        let outcome = ConfigSnapshot::try_from(wire)
            .map_err(|errors| errors.to_string())
            .and_then(|snapshot| self.applier.apply(snapshot, message.digest));
        AgentMessage {
            message: Some(match outcome {
                Ok(()) => {
                    tracing::info!(version, "snapshot applied");
                    agent_message::Message::Ack(super::proto::Ack { version })
                }
                Err(error) => {
                    tracing::warn!(
                        version,
                        error,
                        "snapshot refused; the previous one keeps serving"
                    );
                    agent_message::Message::Nack(super::proto::Nack { version, error })
                }
            }),
        }
    }
}
