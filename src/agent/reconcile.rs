//! One reconcile: snapshot → frontends (socket and north-south) → plans against the mirrored
//! map state → writes, in an order that never exposes a half-written service.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tracing::{debug, error, info, warn};

use super::health::{self, HealthServer};
use crate::api::{ApplyReport, PoolsView, ServiceView, SharedState};
use crate::datapath::{DatapathError, HostLb, SockLb};
use crate::lb::ext_plan::{ExtState, ext_plan};
use crate::lb::external::{ExtFrontend, NodeView, external_frontends};
use crate::lb::frontend::FrontendCache;
use crate::lb::{self, Frontend, LbState};
use crate::lbipam::{self, IpamState};
use crate::model::{ServiceName, Snapshot};

/// The north-south half, present unless `--devices none`.
pub struct HostPart {
    pub lb: HostLb,
    pub state: ExtState,
    pub nodeport_range: std::ops::RangeInclusive<u16>,
    pub table_size: u32,
    pub rows: u32,
    pub health: HealthServer,
    pub masq: crate::masq::MasqConfig,
    /// What the masquerade's CIDR maps hold.
    pub masq_state: crate::masq::MasqSets,
}

impl HostPart {
    /// The masquerade's part of the status (the API counts the SNAT flows when asked).
    fn masq_status(&self) -> crate::api::MasqStatus {
        crate::api::MasqStatus {
            enabled: self.masq.enabled,
            pod_cidrs: self
                .masq_state
                .pods
                .iter()
                .map(ToString::to_string)
                .collect(),
            exclude: self
                .masq_state
                .exclude
                .iter()
                .map(ToString::to_string)
                .collect(),
            snat_flows: 0,
        }
    }
}

type LbIps = BTreeMap<ServiceName, Vec<IpAddr>>;

pub struct Reconciler {
    pub l2: Option<super::l2::L2Part>,
    /// The last snapshot and its LB addresses (L2 re-decides from them between snapshots).
    last: Option<(std::sync::Arc<Snapshot>, LbIps)>,
    sock: SockLb,
    state: LbState,
    host: Option<HostPart>,
    node_name: String,
    shared: SharedState,
    generation: u64,
    /// LB IPAM: allocates LoadBalancer addresses on every reconcile.
    lbipam: IpamState,
    /// Where every allocation goes for the status writer (kube source only).
    status_feed: Option<super::status::ReportFeed>,
    /// Frontends memoised per service (unchanged services are not recomputed).
    frontends: FrontendCache,
    /// The frontends the API's service views were made from.
    views: ViewCache,
    /// Reconcile latency for `/metrics`.
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// The snapshot NetworkPolicy's maps were last written from.
    policy_input: Option<std::sync::Arc<Snapshot>>,
}

impl Reconciler {
    pub fn new(
        sock: SockLb,
        state: LbState,
        shared: SharedState,
        host: Option<HostPart>,
        node_name: String,
    ) -> Self {
        let metrics = shared
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .metrics
            .clone();
        let frontends = FrontendCache::new(&node_name);
        Self {
            metrics,
            l2: None,
            last: None,
            sock,
            state,
            host,
            node_name,
            shared,
            generation: 0,
            lbipam: IpamState::in_memory(),
            status_feed: None,
            frontends,
            views: ViewCache::default(),
            policy_input: None,
        }
    }

    /// The socket load balancer (pin checks and repairs, `super::northsouth`).
    pub fn sock_mut(&mut self) -> &mut SockLb {
        &mut self.sock
    }

    /// The north-south load balancer, unless `--devices none`.
    pub fn host_lb_mut(&mut self) -> Option<&mut HostLb> {
        self.host.as_mut().map(|h| &mut h.lb)
    }

    /// Publishes every allocation (with its snapshot) on `feed` for the status writer.
    #[must_use]
    pub fn with_status_feed(mut self, feed: Option<super::status::ReportFeed>) -> Self {
        self.status_feed = feed;
        self
    }

    /// Uses `lbipam` (e.g. one persisted in the state dir) instead of in-memory state.
    #[must_use]
    pub fn with_lbipam(mut self, lbipam: IpamState) -> Self {
        self.lbipam = lbipam;
        self
    }

    fn write(
        &mut self,
        frontends: &[Frontend],
        external: &[ExtFrontend],
        snapshot: &std::sync::Arc<Snapshot>,
    ) -> Result<usize, DatapathError> {
        let extra: BTreeSet<SocketAddr> = external
            .iter()
            .flat_map(|f| f.backends.iter().copied())
            .collect();
        let plan = lb::plan_with(frontends, &extra, &self.state);
        self.sock.maps.apply_upserts(&plan, &mut self.state)?;
        let mut ops = plan.op_count();
        if let Some(host) = &mut self.host {
            let ids: HashMap<_, _> = self
                .state
                .backends
                .iter()
                .map(|(id, b)| (*b, *id))
                .collect();
            let ext = ext_plan(external, &ids, &host.state, host.table_size, host.rows);
            ops += ext.op_count();
            host.lb.maps.apply(&ext, &mut host.state)?;
        }
        self.sock.maps.apply_deletes(&plan, &mut self.state)?;
        Ok(ops + self.write_masq(snapshot)? + self.write_policy(snapshot)?)
    }

    /// NetworkPolicy's maps for `snapshot` (identities, this node's pods' allow rules).
    /// Compiled only when the pods, namespaces or policies changed since the last successful
    /// write (a Service or `EndpointSlice` event leaves them as they are).
    fn write_policy(
        &mut self,
        snapshot: &std::sync::Arc<Snapshot>,
    ) -> Result<usize, DatapathError> {
        let Some(routing) = self.host.as_mut().and_then(|h| h.lb.pods.as_mut()) else {
            return Ok(0);
        };
        let unchanged = self.policy_input.as_ref().is_some_and(|l| {
            l.pods == snapshot.pods
                && l.namespaces == snapshot.namespaces
                && l.network_policies == snapshot.network_policies
        });
        if unchanged {
            return Ok(0);
        }
        let plan = crate::policy::compile(snapshot, &self.node_name);
        let ops = routing.policy.apply(&plan)?;
        self.policy_input = Some(snapshot.clone());
        if ops.upserts + ops.deletes > 0 {
            let isolated = plan
                .endpoints
                .iter()
                .filter(|e| e.ingress_isolated || e.egress_isolated)
                .count();
            info!(
                upserts = ops.upserts,
                deletes = ops.deletes,
                addresses = plan.addrs.len(),
                rules = plan.rules.len(),
                local_pods = plan.endpoints.len(),
                isolated,
                "NetworkPolicy maps"
            );
        }
        if let Ok(mut g) = self.shared.write() {
            g.policy = std::sync::Arc::new(plan.endpoints);
            g.policy_slots = std::sync::Arc::new(plan.slots);
        }
        Ok(ops.upserts + ops.deletes)
    }

    /// The masquerade's CIDR maps for `snapshot` (every node's pod CIDRs, the exclusions).
    fn write_masq(&mut self, snapshot: &Snapshot) -> Result<usize, DatapathError> {
        let Some(host) = &mut self.host else {
            return Ok(0);
        };
        let want = crate::masq::desired(snapshot, &host.masq);
        let plan = crate::masq::plan(&want, &host.masq_state);
        if plan.op_count() > 0 {
            info!(pod_cidrs = ?want.pods, exclude = ?want.exclude, "masquerade CIDRs");
        }
        host.lb.masq.apply(&plan, &mut host.masq_state)?;
        Ok(plan.op_count())
    }

    /// Puts in the north-south part whose first open failed, and applies the latest snapshot
    /// to it at once.
    pub fn set_host(&mut self, host: HostPart) {
        self.host = Some(host);
        if let Some((snapshot, _)) = self.last.clone() {
            self.reconcile(&snapshot);
        }
    }

    /// `/v1/pools` (when LB IPAM ran), `/v1/nodes` (when the nodes changed) and the pod index of
    /// the flows (when the pods or endpoints changed).
    fn publish_lists(
        &self,
        api: &mut crate::api::ApiState,
        snapshot: &Snapshot,
        ipam_unchanged: bool,
        pods: Option<std::sync::Arc<crate::flows::pods::PodIndex>>,
    ) {
        if !ipam_unchanged {
            api.pools = PoolsView::new(&snapshot.pools, self.lbipam.last());
        }
        let last = self.last.as_ref().map(|(l, _)| &**l);
        if let Some(nodes) = node_views(last, snapshot) {
            api.nodes = nodes;
        }
        if let Some(pods) = pods {
            api.pods = pods;
        }
    }

    /// Retries the L2 responder's attach on the interfaces where it failed (they become
    /// eligible once it is in place).
    pub fn l2_retry_attach(&mut self) {
        let (Some(l2), Some((snapshot, lb_ips))) = (&mut self.l2, &self.last) else {
            return;
        };
        if l2.attach_failures().is_empty() {
            return;
        }
        l2.update(snapshot, lb_ips);
        publish_l2(
            &mut self
                .shared
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            l2,
        );
    }

    /// Membership changed or the interface poll ticked: re-decide L2 ownership.
    /// The north-south devices changed between snapshots (detected at runtime: a device that
    /// appears late, or is re-created): L2 answers move with them at once, since only a device
    /// the datapath serves may answer for an address.
    pub fn l2_follow_served(&mut self) {
        let served = served_devices(self.host.as_ref());
        let (Some(l2), Some((snapshot, lb_ips))) = (&mut self.l2, &self.last) else {
            return;
        };
        if l2.served() == &served {
            return;
        }
        info!(devices = ?served, "north-south devices changed; L2 answers follow");
        l2.set_served(served);
        l2.update(snapshot, lb_ips);
        self.shared
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .l2 = l2.view().clone();
    }

    pub fn l2_refresh(&mut self, poll_interfaces: bool) {
        let (Some(l2), Some((snapshot, lb_ips))) = (&mut self.l2, &self.last) else {
            if let Some(l2) = &mut self.l2 {
                l2.heartbeat();
            }
            return;
        };
        if poll_interfaces {
            l2.poll_interfaces(snapshot, lb_ips);
        } else {
            l2.decide();
        }
        publish_l2(
            &mut self
                .shared
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            l2,
        );
    }

    /// LB IPAM's addresses for `snapshot`, and whether the allocator was skipped: it reads
    /// only services and pools, so when neither changed (an `EndpointSlice` event) and it is at
    /// its fixed point, its result is the last one (and the status writer has it already).
    fn allocate(&mut self, snapshot: &std::sync::Arc<Snapshot>) -> (LbIps, bool) {
        let unchanged = self.lbipam.stable()
            && self.last.as_ref().is_some_and(|(last, _)| {
                std::sync::Arc::ptr_eq(last, snapshot)
                    || (last.services == snapshot.services && last.pools == snapshot.pools)
            });
        if unchanged && let Some((_, lb_ips)) = &self.last {
            return (lb_ips.clone(), true);
        }
        let lb_ips = lbipam::lb_ips(self.lbipam.reconcile(snapshot));
        if let Some(feed) = &self.status_feed {
            feed.send_replace(Some(std::sync::Arc::new(super::status::Report {
                allocation: self.lbipam.last().clone(),
                snapshot: snapshot.clone(),
            })));
        }
        (lb_ips, false)
    }

    pub fn reconcile(&mut self, snapshot: &std::sync::Arc<Snapshot>) {
        let started = Instant::now();
        let (lb_ips, ipam_unchanged) = self.allocate(snapshot);
        let ipam_done = started.elapsed();
        let frontends = self.frontends.update(snapshot, &lb_ips);
        // Every debug build (all the agent's tests) checks the memoised frontends against the
        // full computation.
        debug_assert!(
            frontends == lb::frontends_with(snapshot, &lb_ips, &self.node_name),
            "memoised frontends differ from the full computation"
        );
        let frontends_done = started.elapsed();
        let external = match &mut self.host {
            Some(host) => {
                host.health
                    .update(health::desired(snapshot, &self.node_name));
                let node = NodeView {
                    node_name: &self.node_name,
                    nodeport_range: host.nodeport_range.clone(),
                };
                external_frontends(snapshot, &lb_ips, &node)
            }
            None => Vec::new(),
        };
        let result = self.write(&frontends, &external, snapshot);
        let duration = started.elapsed();
        debug!(
            ipam_us = ipam_done.as_micros(),
            ipam_skipped = ipam_unchanged,
            frontends_us = frontends_done.saturating_sub(ipam_done).as_micros(),
            write_us = duration.saturating_sub(frontends_done).as_micros(),
            "reconcile stages"
        );
        self.generation += 1;
        let (ops, error) = match result {
            Ok(ops) => {
                if ops == 0 {
                    debug!(generation = self.generation, "maps already up to date");
                } else {
                    info!(
                        generation = self.generation,
                        ops,
                        frontends = frontends.len(),
                        external = external.len(),
                        duration_us = duration.as_micros(),
                        "maps updated"
                    );
                }
                (ops, None)
            }
            Err(e) => {
                error!(error = %e, "writing the maps failed; will retry on the next change");
                (0, Some(e.to_string()))
            }
        };
        self.metrics
            .reconciled(crate::metrics::RECONCILE_LB, duration, error.is_none());
        let report = ApplyReport {
            generation: self.generation,
            at_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            duration_us: u64::try_from(duration.as_micros()).unwrap_or(u64::MAX),
            ops,
            services: snapshot.services.len(),
            frontends: frontends.len() + external.len(),
            backends: self.state.backends.len(),
            error,
        };
        let views_started = Instant::now();
        if let Some(l2) = &mut self.l2 {
            l2.set_served(served_devices(self.host.as_ref()));
            l2.update(snapshot, &lb_ips);
        }
        let l2_done = views_started.elapsed();
        let pods = pod_index(self.last.as_ref().map(|(l, _)| &**l), snapshot);
        let mut guard = self
            .shared
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(l2) = &mut self.l2 {
            publish_l2(&mut guard, l2);
        }
        guard.status.last_apply = Some(report);
        guard.status.masquerade = self.host.as_ref().map(HostPart::masq_status);
        note_unserved(&mut guard.status.unserved_ports, snapshot);
        // Views of unchanged frontends are kept (most of them, after one event).
        let mut views = std::mem::take(&mut guard.services);
        self.views.update(&mut views, frontends, &external);
        guard.services = views;
        self.publish_lists(&mut guard, snapshot, ipam_unchanged, pods);
        drop(guard);
        debug!(
            l2_us = l2_done.as_micros(),
            views_us = views_started.elapsed().saturating_sub(l2_done).as_micros(),
            "reconcile views"
        );
        self.last = Some((snapshot.clone(), lb_ips));
        if self.generation == 1 {
            release_freed_memory();
        }
    }
}

/// Replaces `notes` with the snapshot's unserved ports, logging each one that is new.
fn note_unserved(notes: &mut Vec<String>, snapshot: &Snapshot) {
    let now: Vec<String> = snapshot
        .services
        .values()
        .flat_map(crate::model::Service::unserved_notes)
        .collect();
    for note in now.iter().filter(|n| !notes.contains(n)) {
        warn!("{note}; the service's other ports are served");
    }
    *notes = now;
}

/// After the first programming, gives the heap freed since (the initial lists' transient copies)
/// back to the system: glibc keeps free pages in its arenas otherwise, and the agent's RSS stays
/// nearer that peak (≈0.7 MiB less at 1k services in the kube bench). musl's allocator (the
/// shipped static binary) returns them by itself.
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks and trims the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The API's service views, one per frontend then one per north-south frontend; the views of
/// frontends equal to the previous ones are moved over instead of formatted again.
#[derive(Debug, Default)]
struct ViewCache {
    /// The frontends `views` started with (in order).
    frontends: Vec<Frontend>,
}

impl ViewCache {
    fn update(
        &mut self,
        views: &mut Vec<ServiceView>,
        frontends: Vec<Frontend>,
        external: &[ExtFrontend],
    ) {
        let mut old_views: Vec<Option<ServiceView>> =
            std::mem::take(views).into_iter().map(Some).collect();
        if old_views.len() < self.frontends.len() {
            old_views.clear();
        }
        let old: HashMap<(IpAddr, u16, crate::model::Protocol), usize> = if old_views.is_empty() {
            HashMap::new()
        } else {
            self.frontends
                .iter()
                .enumerate()
                .map(|(i, fe)| ((fe.addr, fe.port, fe.protocol), i))
                .collect()
        };
        views.reserve(frontends.len() + external.len());
        for fe in &frontends {
            let kept = old
                .get(&(fe.addr, fe.port, fe.protocol))
                .filter(|&&i| self.frontends[i] == *fe)
                .and_then(|&i| old_views[i].take());
            views.push(kept.unwrap_or_else(|| view(fe)));
        }
        views.extend(external.iter().map(ext_view));
        self.frontends = frontends;
    }
}

/// `/v1/nodes` for `snapshot`, when its nodes differ from `last`'s.
/// Publishes the L2 view, and each address this node started announcing as an `l2` takeover
/// flow in the flow history (when flows are on).
fn publish_l2(api: &mut crate::api::ApiState, l2: &mut super::l2::L2Part) {
    api.l2 = l2.view().clone();
    let gains = l2.take_gains();
    if let Some(src) = &api.flows {
        for g in &gains {
            src.history.push(|seq| g.flow(seq, &api.status.node_name));
        }
    }
}

/// The flows' pod index for `snapshot`, when its pods or endpoints changed (built before the
/// API state is locked).
fn pod_index(
    last: Option<&Snapshot>,
    snapshot: &Snapshot,
) -> Option<std::sync::Arc<crate::flows::pods::PodIndex>> {
    last.is_none_or(|l| l.pods != snapshot.pods || l.endpoint_slices != snapshot.endpoint_slices)
        .then(|| {
            std::sync::Arc::new(crate::flows::pods::PodIndex::build(
                &snapshot.pods,
                &snapshot.endpoint_slices,
            ))
        })
}

fn node_views(last: Option<&Snapshot>, snapshot: &Snapshot) -> Option<Vec<crate::api::NodeView>> {
    last.is_none_or(|l| l.nodes != snapshot.nodes).then(|| {
        snapshot
            .nodes
            .values()
            .map(crate::api::NodeView::of)
            .collect()
    })
}

fn view(fe: &Frontend) -> ServiceView {
    ServiceView {
        service: fe.service.to_string(),
        port_name: fe.port_name.to_string(),
        frontend: SocketAddr::new(fe.addr, fe.port).to_string(),
        protocol: fe.protocol.to_string(),
        backends: fe.backends.iter().map(ToString::to_string).collect(),
        affinity_timeout_seconds: fe.affinity_timeout,
    }
}

fn ext_view(fe: &ExtFrontend) -> ServiceView {
    let frontend = match fe.addr {
        Some(ip) => SocketAddr::new(ip, fe.port).to_string(),
        None => format!(
            "{}:{} (NodePort)",
            if fe.family_v4 { "0.0.0.0" } else { "[::]" },
            fe.port
        ),
    };
    ServiceView {
        service: fe.service.to_string(),
        port_name: fe.port_name.to_string(),
        frontend,
        protocol: fe.protocol.to_string(),
        backends: fe.backends.iter().map(ToString::to_string).collect(),
        affinity_timeout_seconds: None,
    }
}

/// The devices north-south serves (its ingress hooks): the only ones that answer ARP/NDP.
fn served_devices(host: Option<&HostPart>) -> BTreeSet<String> {
    host.map_or_else(Default::default, |h| {
        h.lb.ingress.iter().map(|(d, _)| d.clone()).collect()
    })
}
