//! Leader election on a `coordination.k8s.io/v1` Lease (see [`Elector`]).

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{is_conflict, is_not_found};

/// Which Lease, who we are, and the timing (client-go's defaults: 15 s, 10 s, 2 s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// Unique among the replicas: the Pod's name.
    pub identity: String,
    /// How long a Lease that is not renewed keeps others waiting.
    pub lease_duration: Duration,
    /// How long a leader keeps trying to renew before it steps down; below `lease_duration`.
    pub renew_deadline: Duration,
    /// How often the leader renews and candidates try.
    pub retry_period: Duration,
}

impl LeaseConfig {
    pub fn new(
        name: impl Into<String>,
        namespace: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// The Lease record as last seen, and when this replica first saw it.
#[derive(Debug)]
struct Observed {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    resource_version: Option<String>,
    since: Instant,
}

/// Leader election on a `coordination.k8s.io/v1` Lease, the way client-go's `leaderelection`
/// does it.
///
/// The holder renews the Lease every [`LeaseConfig::retry_period`] by replacing it with its
/// `resourceVersion` (optimistic concurrency: of two replicas writing at once, one gets a
/// `409 Conflict` and is not the leader). A candidate takes the Lease over when it has seen the
/// same record (holder, renew time, resource version) for the Lease's
/// `leaseDurationSeconds`, measured on *its own* clock from when it first saw that record: the
/// replicas' clocks need not agree. A leader that cannot renew for
/// [`LeaseConfig::renew_deadline`] steps down; being shorter than the lease duration, this makes
/// it stop before anyone else can have taken over. A leader that shuts down gives the Lease up
/// (no holder, a one-second duration), so that another replica takes over at its next try.
#[derive(Debug)]
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Option<Observed>,
    /// When this replica last renewed (or acquired) the Lease, while it leads.
    renewed: Option<Instant>,
}

impl Elector {
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
            renewed: None,
        }
    }

    /// Tries to acquire or renew every `retry_period`, telling `leading` whether this replica
    /// leads, until `shutdown` resolves; then gives the Lease up if it holds it.
    pub async fn run(mut self, leading: watch::Sender<bool>, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let now = Instant::now();
            let leads = match self.try_acquire_or_renew().await {
                Ok(true) => {
                    self.renewed = Some(now);
                    true
                }
                Ok(false) => false,
                Err(e) => {
                    tracing::warn!(
                        lease = %self.config.name,
                        namespace = %self.config.namespace,
                        error = %e,
                        "cannot read or write the Lease"
                    );
                    // Still leading while another replica cannot have taken over yet.
                    self.renewed
                        .is_some_and(|t| now.duration_since(t) < self.config.renew_deadline)
                }
            };
            if !leads {
                self.renewed = None;
            }
            let was = leading.send_replace(leads);
            if was != leads {
                if leads {
                    tracing::info!(identity = %self.config.identity, "became the leader");
                } else {
                    tracing::warn!(identity = %self.config.identity, "no longer the leader");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(self.config.retry_period) => {}
                () = &mut shutdown => break,
            }
        }
        if *leading.borrow() {
            leading.send_replace(false);
            match self.release().await {
                Ok(()) => tracing::info!("gave the Lease up"),
                Err(e) => tracing::warn!(error = %e, "cannot give the Lease up; it will expire"),
            }
        }
    }

    fn now() -> MicroTime {
        MicroTime(Timestamp::now())
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.config.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    /// Notes the record of `lease`, restarting the clock if it changed. Returns its holder and
    /// whether the record is older, on this replica's clock, than its lease duration.
    fn observe(&mut self, lease: &Lease) -> (Option<String>, bool) {
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.filter(|h| !h.is_empty());
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.config.lease_duration, Duration::from_secs);
        let since = match &self.observed {
            Some(o)
                if o.holder == holder
                    && o.renew_time == spec.renew_time
                    && o.resource_version == lease.metadata.resource_version =>
            {
                o.since
            }
            _ => Instant::now(),
        };
        let expired = since.elapsed() >= duration;
        self.observed = Some(Observed {
            holder: holder.clone(),
            renew_time: spec.renew_time,
            resource_version: lease.metadata.resource_version.clone(),
            since,
        });
        (holder, expired)
    }

    /// One round: `true` if this replica holds the Lease afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let name = self.config.name.clone();
        let Some(mut lease) = self.api.get_opt(&name).await? else {
            let now = Self::now();
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(self.duration_seconds()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(&created);
                    Ok(true)
                }
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let (holder, expired) = self.observe(&lease);
        let mine = holder.as_deref() == Some(self.config.identity.as_str());
        if !mine && holder.is_some() && !expired {
            return Ok(false);
        }
        let now = Self::now();
        let mut spec = lease.spec.take().unwrap_or_default();
        if !mine {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            tracing::info!(
                previous = holder.as_deref().unwrap_or(""),
                "taking the Lease over"
            );
        }
        spec.holder_identity = Some(self.config.identity.clone());
        spec.lease_duration_seconds = Some(self.duration_seconds());
        spec.renew_time = Some(now);
        lease.spec = Some(spec);
        // The resourceVersion read above makes this fail if anyone wrote in between.
        match self
            .api
            .replace(&name, &PostParams::default(), &lease)
            .await
        {
            Ok(replaced) => {
                self.observe(&replaced);
                Ok(true)
            }
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up if this replica still holds it.
    async fn release(&mut self) -> Result<(), kube::Error> {
        let mut lease = match self.api.get(&self.config.name).await {
            Ok(lease) => lease,
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(e),
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(Self::now());
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            // Someone wrote since: it is not ours to give up any more.
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
