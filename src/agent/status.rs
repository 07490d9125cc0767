//! The LB IPAM status writer of the Kubernetes agent: a task fed with the latest allocation and
//! snapshot that, while this node holds the status Lease, makes services and pools carry what
//! [`crate::lbipam::report`] plans (ingress, `ferrite.dev/IPAMRequestSatisfied`, pool counts and
//! conflicts) through the source's [`StatusWriter`].
//!
//! # One writer per cluster: the Lease holder
//!
//! Every agent runs the same deterministic allocator on the same watched state, so every node
//! programs the same LoadBalancer addresses without waiting for anyone; only the holder of the
//! `ferrite-status-writer` Lease writes them back. Several writers of one status would race (409s,
//! N× the API load on a small control plane) and, with views that differ for a moment, could make
//! an address flap. Agents still agree when views differ (a node that saw a service a moment
//! later, a restarted agent, a new leader after a failover) because the allocator adopts every
//! address already in `status.loadBalancer.ingress` before it hands out anything new: what the
//! leader wrote is every agent's input, so the leader's choice is what all of them serve, and a
//! new leader (or a restarted agent) keeps every address instead of reshuffling. All agents use
//! one field manager, so a new leader's applies take over (and can remove) what the old one wrote.
//!
//! The task never blocks the reconcile loop: the loop only replaces the value in a
//! `tokio::sync::watch` channel; the task always works on the latest value, retries failures
//! after [`RETRY`], and forgets what it knows of objects when it loses the Lease, so that it
//! reads everything again (and re-plans everything) when it gains it.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::{
    lbipam::{
        Allocation,
        report::{self, Carried, Known, Step, Target},
    },
    model::{ServiceName, ServiceType, Snapshot},
    source::kube::{
        StatusWriter,
        status::{StatusError, pool_resource, service_resource},
    },
};

/// How long after a failed read or write the plan is tried again.
pub const RETRY: Duration = Duration::from_secs(3);
/// Above this many objects to read, one list per kind is cheaper than a read per object (after
/// gaining the Lease every object is unknown).
const LIST_ABOVE: usize = 16;

/// What the reconcile loop publishes after every LB IPAM allocation.
#[derive(Debug)]
pub struct Report {
    pub allocation: Allocation,
    pub snapshot: Arc<Snapshot>,
}

/// The reconcile loop's end of the channel.
pub type ReportFeed = watch::Sender<Option<Arc<Report>>>;

/// Starts the writer on the current runtime; returns the channel to publish allocations on.
/// The task ends when the feed is dropped.
pub fn spawn(writer: StatusWriter, leading: watch::Receiver<bool>) -> ReportFeed {
    let (feed, reports) = watch::channel(None);
    tokio::spawn(run(writer, reports, leading));
    feed
}

async fn run(
    writer: StatusWriter,
    mut reports: watch::Receiver<Option<Arc<Report>>>,
    mut leading: watch::Receiver<bool>,
) {
    // What is known of each object, valid for the snapshot `seen`.
    let mut known: BTreeMap<Target, Known> = BTreeMap::new();
    let mut seen: Option<Arc<Snapshot>> = None;
    loop {
        let is_leading = *leading.borrow_and_update();
        let report = reports.borrow_and_update().clone();
        let failed = if !is_leading {
            if seen.take().is_some() {
                debug!("not the status Lease holder: LB IPAM status is written by another node");
            }
            known.clear();
            false
        } else if let Some(report) = report {
            if let Some(previous) = &seen
                && !Arc::ptr_eq(previous, &report.snapshot)
            {
                report::refresh(&mut known, previous, &report.snapshot);
            }
            seen = Some(report.snapshot.clone());
            !sync(&writer, &report, &mut known, &leading).await
        } else {
            false
        };
        tokio::select! {
            changed = reports.changed() => if changed.is_err() { return },
            changed = leading.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(RETRY), if failed => {}
        }
    }
}

fn now() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// One pass: reads what is unknown, then writes what differs. `false` when something failed
/// (to be retried).
async fn sync(
    writer: &StatusWriter,
    report: &Report,
    known: &mut BTreeMap<Target, Known>,
    leading: &watch::Receiver<bool>,
) -> bool {
    let desired = report::desired(&report.allocation, &report.snapshot);
    let candidates = report::cleanup_candidates(&report.allocation, &report.snapshot);
    let mut ok = true;
    let steps = report::plan(&desired, &candidates, known, &now());
    let reads = steps.iter().filter(|s| matches!(s, Step::Fetch(_))).count();
    if reads > LIST_ABOVE
        && let Err(error) = prime(writer, &report.snapshot, known).await
    {
        warn!(%error, "listing services and pools failed; reading them one by one");
    }
    for step in report::plan(&desired, &candidates, known, &now()) {
        let Step::Fetch(target) = step else { continue };
        if !*leading.borrow() {
            return true;
        }
        match read(writer, &target).await {
            Ok(Some(object)) => {
                known.insert(
                    target,
                    Known::Fresh(Carried::from_object(&object, writer.manager())),
                );
            }
            Ok(None) => {
                known.insert(target, Known::Gone);
            }
            Err(error) => {
                warn!(object = %target, %error, "reading the status failed; will retry");
                ok = false;
            }
        }
    }
    for step in report::plan(&desired, &candidates, known, &now()) {
        let Step::Write { target, status } = step else {
            continue;
        };
        if !*leading.borrow() {
            return true;
        }
        let summary = summary(status.as_ref());
        match write(writer, &target, status).await {
            Ok(object) => {
                info!(object = %target, status = %summary, "LB IPAM status written");
                known.insert(
                    target,
                    Known::Fresh(Carried::from_object(&object, writer.manager())),
                );
            }
            Err(StatusError::Apply {
                source: kube::Error::Api(response),
                ..
            }) if response.code == 404 => {
                known.insert(target, Known::Gone);
            }
            Err(error) => {
                warn!(object = %target, %error, "writing the LB IPAM status failed; will retry");
                if let Some(Known::Fresh(carried)) = known.remove(&target) {
                    known.insert(target, Known::Stale(carried));
                }
                ok = false;
            }
        }
    }
    ok
}

/// Learns what every service and pool of `snapshot` carries from one list per kind. Objects
/// that carry nothing of ferrite's and that it does not report on are not kept.
async fn prime(
    writer: &StatusWriter,
    snapshot: &Snapshot,
    known: &mut BTreeMap<Target, Known>,
) -> Result<(), StatusError> {
    for resource in [service_resource(), pool_resource()] {
        for object in writer.list(&resource).await? {
            let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str);
            let Some(name) = text("/metadata/name") else {
                continue;
            };
            let carried = Carried::from_object(&object, writer.manager());
            let target = match text("/metadata/namespace") {
                Some(namespace) => {
                    let name = ServiceName::new(namespace, name);
                    let keep = snapshot.services.get(&name).is_some_and(|s| {
                        s.service_type == ServiceType::LoadBalancer
                            || !s.status_ingress.is_empty()
                            || carried.owns_any()
                    });
                    if !keep {
                        continue;
                    }
                    Target::Service(name)
                }
                None if snapshot.pools.contains_key(name) => Target::Pool(name.into()),
                None => continue,
            };
            known.entry(target).or_insert(Known::Fresh(carried));
        }
    }
    Ok(())
}

/// `satisfied 10.0.0.1`, `out_of_ips`, `removed` …: for the log.
fn summary(status: Option<&Value>) -> String {
    let Some(status) = status else {
        return "removed".into();
    };
    let ips: Vec<&str> = status
        .pointer("/loadBalancer/ingress")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| i["ip"].as_str())
        .collect();
    let reasons: Vec<String> = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let kind = c["type"].as_str().unwrap_or_default();
            let kind = kind.strip_prefix("ferrite.dev/").unwrap_or(kind);
            format!(
                "{kind}={}/{}",
                c["status"].as_str().unwrap_or_default(),
                c["reason"].as_str().unwrap_or_default()
            )
        })
        .collect();
    let mut out = reasons.join(" ");
    if !ips.is_empty() {
        out.push_str(" ingress=");
        out.push_str(&ips.join(","));
    }
    out
}

async fn read(writer: &StatusWriter, target: &Target) -> Result<Option<Value>, StatusError> {
    match target {
        Target::Service(name) => {
            writer
                .get(&service_resource(), Some(&name.namespace), &name.name)
                .await
        }
        Target::Pool(name) => writer.get(&pool_resource(), None, name).await,
    }
}

async fn write(
    writer: &StatusWriter,
    target: &Target,
    status: Option<Value>,
) -> Result<Value, StatusError> {
    match target {
        Target::Service(name) => {
            writer
                .apply_service_status(&name.namespace, &name.name, status)
                .await
        }
        Target::Pool(name) => writer.apply_pool_status(name, status).await,
    }
}
