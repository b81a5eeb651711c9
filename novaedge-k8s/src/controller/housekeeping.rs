//! What the leader does besides status: the ProxyVIP finalizer, and Events for snapshots the
//! agents refuse.
//!
//! # The ProxyVIP finalizer
//!
//! Every ProxyVIP carries the finalizer [`VIP_FINALIZER`], added by the leader. When a
//! ProxyVIP is deleted, the API server only sets its `deletionTimestamp`; the translation
//! leaves it out from then on, so the next snapshots withdraw it. The leader removes the
//! finalizer, and the API server the object, once the VIP is withdrawn from every node that can
//! be reached ([`Distributor::withdrawn`]): no node says it holds it and every node has applied
//! a snapshot without it. Until then `kubectl get proxyvip` still shows it, being deleted.
//!
//! Finalizers are changed with merge patches that carry the `resourceVersion` read, so that a
//! concurrent change (another controller's finalizer) makes the patch fail with a conflict and
//! be retried on fresh data instead of dropping the other finalizer.
//!
//! # Refused snapshots
//!
//! An agent that cannot apply its snapshot keeps the previous one and says why (a NACK). The
//! leader turns each refused version into a `Warning` Event on the Node, reason
//! [`NACK_REASON`], so that `kubectl describe node` and `kubectl get events` show it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use novaedge_snapshot::distribution::Publisher;
use serde_json::json;
use tokio::sync::watch;

use super::distributor::{Distributor, lock};
use super::events::{Events, NOTE_MAX, Problem, truncate};
use super::is_conflict;
use super::watch::Stores;
use crate::crd::ProxyVip;

/// The finalizer that holds a deleted ProxyVIP until it is withdrawn everywhere.
pub const VIP_FINALIZER: &str = "novaedge.io/vip-withdrawal";
/// The `reason` of the Event for a refused snapshot.
pub const NACK_REASON: &str = "SnapshotRejected";
/// How often the leader looks.
const PERIOD: Duration = Duration::from_millis(200);

/// Runs while the process lives; acts while `leading`.
pub(super) async fn run(
    client: Client,
    stores: Stores,
    distributor: Arc<Mutex<Distributor>>,
    publisher: Publisher,
    mut leading: watch::Receiver<bool>,
    identity: String,
) {
    let mut events = Events::new(client.clone(), &identity);
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if !*leading.borrow_and_update() {
            events.forget();
            if leading.changed().await.is_err() {
                return;
            }
            continue;
        }
        tick.tick().await;
        finalizers(&client, &stores, &distributor).await;
        events.publish(&refusals(&publisher)).await;
    }
}

/// Adds the finalizer to every ProxyVIP that lacks it, and removes it from deleted ones once
/// they are withdrawn.
async fn finalizers(client: &Client, stores: &Stores, distributor: &Mutex<Distributor>) {
    for vip in stores.proxy_vips.state() {
        let ours = vip.finalizers().iter().any(|f| f == VIP_FINALIZER);
        let deleting = vip.metadata.deletion_timestamp.is_some();
        let name = format!("{}/{}", vip.namespace().unwrap_or_default(), vip.name_any());
        let finalizers: Vec<String> = match (deleting, ours) {
            (false, false) => vip
                .finalizers()
                .iter()
                .cloned()
                .chain([VIP_FINALIZER.to_owned()])
                .collect(),
            (true, true) if lock(distributor).withdrawn(&name) => vip
                .finalizers()
                .iter()
                .filter(|f| *f != VIP_FINALIZER)
                .cloned()
                .collect(),
            _ => continue,
        };
        let api: Api<ProxyVip> =
            Api::namespaced(client.clone(), &vip.namespace().unwrap_or_default());
        let patch = json!({
            "metadata": {
                "resourceVersion": vip.resource_version(),
                "finalizers": finalizers,
            }
        });
        match api
            .patch(
                &vip.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) if deleting => {
                tracing::info!(vip = name, "ProxyVIP withdrawn from every node; released")
            }
            Ok(_) => tracing::debug!(vip = name, "finalizer added"),
            // The object changed meanwhile; the reflector brings the new one.
            Err(e) if is_conflict(&e) => {}
            Err(e) => tracing::warn!(vip = name, error = %e, "cannot update the finalizers"),
        }
    }
}

/// A problem per node whose agent refused its snapshot, naming the version and the reason.
fn refusals(publisher: &Publisher) -> Vec<Problem> {
    publisher
        .reports()
        .into_iter()
        .filter_map(|(node, report)| {
            let (version, reason) = report.nacked?;
            let mut note = format!(
                "the agent refused snapshot version {version} and keeps serving the previous \
                 one: {reason}"
            );
            truncate(&mut note, NOTE_MAX);
            Some(Problem {
                regarding: ("v1".to_owned(), "Node".to_owned(), None, node, None),
                note,
                reason: NACK_REASON,
                action: "Apply",
            })
        })
        .collect()
}
