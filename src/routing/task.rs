//! The agent's routing loop: on every snapshot and every [`RESYNC`], plan from the Nodes and the
//! local networks, read ferrite's kernel state, apply the difference, publish the view.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::diff::{Op, diff};
use super::kernel::Kernel;
use super::plan::{Plan, PlanInput, Reach, plan};
use super::{RoutingConfig, RoutingMode, VXLAN_DEV, sysctl};
use crate::model::Snapshot;

/// How often the kernel state is compared with the plan when nothing changed: a route, FDB
/// entry or the VXLAN device removed by someone else comes back within this.
pub const RESYNC: Duration = Duration::from_secs(2);

/// One remote PodCIDR in `ferrite routes`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RouteView {
    pub node: String,
    pub cidr: String,
    /// `native`, `vxlan` or `none`.
    pub mode: String,
    /// Next hop (native) or VTEP (vxlan).
    pub via: Option<String>,
    pub device: Option<String>,
    /// `ok`, `pending` or `error`.
    pub state: String,
    pub error: Option<String>,
}

/// ferrite's VXLAN device in `ferrite routes`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VxlanView {
    pub device: String,
    pub vni: u32,
    pub port: u16,
    pub local: String,
    pub mtu: u32,
}

/// `/v1/routes`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RoutesView {
    pub mode: String,
    pub node: String,
    pub routes: Vec<RouteView>,
    pub vxlan: Option<VxlanView>,
    pub pod_mtu: Option<u32>,
    pub problems: Vec<String>,
    /// Netlink operations applied since start (0 after a restart onto a right state).
    pub ops_applied: u64,
    pub last_sync_unix_ms: u64,
    pub last_error: Option<String>,
}

pub type SharedRoutes = Arc<RwLock<RoutesView>>;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What failed per destination in one pass.
type Failures = BTreeMap<IpNet, String>;

/// The view of `plan` after a pass that left `failures` and `blocked` routes.
fn view_of(
    cfg: RoutingConfig,
    node: &str,
    plan: &Plan,
    failures: &Failures,
    blocked: &[IpNet],
) -> RoutesView {
    let mut routes = Vec::new();
    for r in &plan.remotes {
        for (cidr, reach) in &r.cidrs {
            let (mode, via, device) = match reach {
                Reach::Native { via, device } => {
                    ("native", Some(via.to_string()), Some(device.clone()))
                }
                Reach::Vxlan { vtep, .. } => {
                    ("vxlan", Some(vtep.to_string()), Some(VXLAN_DEV.to_string()))
                }
                Reach::Unreachable { .. } => ("none", None, None),
            };
            let error = match reach {
                Reach::Unreachable { reason } => Some(reason.clone()),
                _ if blocked.contains(cidr) => Some(format!(
                    "a route to {cidr} that ferrite did not add is in the main table; \
                     ferrite leaves it alone"
                )),
                _ => failures.get(cidr).cloned(),
            };
            routes.push(RouteView {
                node: r.name.to_string(),
                cidr: cidr.to_string(),
                mode: mode.into(),
                via,
                device,
                state: if error.is_some() { "error" } else { "ok" }.into(),
                error,
            });
        }
    }
    RoutesView {
        mode: cfg.mode.to_string(),
        node: node.to_string(),
        routes,
        vxlan: plan.vxlan.as_ref().map(|v| VxlanView {
            device: VXLAN_DEV.into(),
            vni: v.vni,
            port: v.port,
            local: v.local.to_string(),
            mtu: v.mtu,
        }),
        pod_mtu: plan.pod_mtu,
        problems: plan.problems.clone(),
        ops_applied: 0,
        last_sync_unix_ms: 0,
        last_error: None,
    }
}

/// The destination an op is about (for per-route errors).
fn op_dst(op: &Op) -> Option<IpNet> {
    match op {
        Op::ReplaceRoute(r) => Some(r.dst),
        Op::DelRoute(r) => Some(r.dst),
        _ => None,
    }
}

/// The routing loop's state.
pub struct Routing {
    cfg: RoutingConfig,
    node: String,
    kernel: Kernel,
    view: SharedRoutes,
    pod_mtu: watch::Sender<Option<u32>>,
    /// Where the north-south maps are pinned (`fe_tunnel_v1` among them).
    maps_dir: std::path::PathBuf,
    ops_applied: u64,
    sysctls_done: (bool, bool, bool),
}

impl Routing {
    /// One pass: plan, read, diff, apply, publish.
    pub async fn sync(&mut self, snapshot: &Snapshot) {
        let mut error = None;
        let local = match self.kernel.local_nets().await {
            Ok(l) => l,
            Err(e) => {
                self.fail(e.to_string());
                return;
            }
        };
        let plan = plan(&PlanInput {
            node_name: &self.node,
            nodes: &snapshot.nodes,
            local: &local,
            cfg: &self.cfg,
        });
        self.sysctls(snapshot, &plan);
        let current = match self.kernel.current().await {
            Ok(c) => c,
            Err(e) => {
                self.fail(e.to_string());
                return;
            }
        };
        let d = diff(&plan, &current);
        let mut failures = Failures::new();
        for op in &d.ops {
            match self.kernel.apply(op).await {
                Ok(()) => {
                    self.ops_applied += 1;
                    info!(op = ?op, "routing");
                }
                Err(e) => {
                    warn!(op = ?op, error = %e, "routing operation failed; retried in {RESYNC:?}");
                    if let Some(dst) = op_dst(op) {
                        failures.insert(dst, e.to_string());
                    }
                    error = Some(e.to_string());
                }
            }
        }
        if !d.ops.is_empty() {
            debug!(ops = d.ops.len(), "routing pass applied");
        }
        let overlay = if plan.vxlan.is_some() {
            self.kernel.vxlan_index().await.ok().flatten()
        } else {
            None
        };
        if let Err(e) = super::tunnel::sync(&self.maps_dir, overlay) {
            warn!(error = %e, "telling the north-south datapath about the overlay");
            error = Some(e);
        }
        let blocked: Vec<IpNet> = d.blocked.iter().map(|r| r.dst).collect();
        let mut view = view_of(self.cfg, &self.node, &plan, &failures, &blocked);
        view.ops_applied = self.ops_applied;
        view.last_sync_unix_ms = now_ms();
        view.last_error = error;
        *self
            .view
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = view;
        self.pod_mtu.send_if_modified(|m| {
            let changed = *m != plan.pod_mtu;
            *m = plan.pod_mtu;
            changed
        });
    }

    fn fail(&self, message: String) {
        warn!(error = %message, "routing pass failed; retried in {RESYNC:?}");
        self.view
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .last_error = Some(message);
    }

    /// Forwarding for the families the cluster's PodCIDRs use; rp_filter once VXLAN is in use.
    fn sysctls(&mut self, snapshot: &Snapshot, plan: &Plan) {
        let cidrs = || snapshot.nodes.values().flat_map(|n| n.pod_cidrs.iter());
        let v4 = cidrs().any(|c| matches!(c, IpNet::V4(_)));
        let v6 = cidrs().any(|c| matches!(c, IpNet::V6(_)));
        let vxlan = plan.vxlan.is_some();
        let want = (
            v4 && !self.sysctls_done.0,
            v6 && !self.sysctls_done.1,
            vxlan && !self.sysctls_done.2,
        );
        if want == (false, false, false) {
            return;
        }
        sysctl::ensure(want.0, want.1, want.2);
        self.sysctls_done.0 |= want.0;
        self.sysctls_done.1 |= want.1;
        // The device's own rp_filter exists only once the device does: retried until then.
        self.sysctls_done.2 |= want.2
            && std::path::Path::new("/proc/sys/net/ipv4/conf")
                .join(VXLAN_DEV)
                .exists();
    }
}

/// Starts the routing loop; `None` with `--routing off`.
pub fn spawn(
    cfg: RoutingConfig,
    node: String,
    maps_dir: std::path::PathBuf,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    view: SharedRoutes,
    pod_mtu: watch::Sender<Option<u32>>,
    metrics: Arc<crate::metrics::Metrics>,
) -> Result<Option<tokio::task::JoinHandle<()>>, super::RoutingError> {
    if cfg.mode == RoutingMode::Off {
        return Ok(None);
    }
    let kernel = Kernel::connect()?;
    *view
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = RoutesView {
        mode: cfg.mode.to_string(),
        node: node.clone(),
        ..RoutesView::default()
    };
    let mut routing = Routing {
        cfg,
        node,
        kernel,
        view,
        pod_mtu,
        maps_dir,
        ops_applied: 0,
        sysctls_done: (false, false, false),
    };
    Ok(Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(RESYNC);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Nothing is planned from the empty snapshot the channel starts with: a restarted agent
        // would delete every route until its source caught up.
        let mut seen = false;
        loop {
            tokio::select! {
                changed = snapshots.changed() => {
                    if changed.is_err() { break }
                    seen = true;
                }
                _ = tick.tick() => {}
            }
            if !seen {
                continue;
            }
            let snapshot = snapshots.borrow_and_update().clone();
            let started = std::time::Instant::now();
            routing.sync(&snapshot).await;
            let ok = routing
                .view
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .last_error
                .is_none();
            metrics.reconciled(crate::metrics::RECONCILE_ROUTING, started.elapsed(), ok);
        }
    })))
}
