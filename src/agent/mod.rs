//! `ferrite agent`: source → model → plan → maps, plus the local API.

mod health;
mod l2;
mod late;
mod northsouth;
mod notify;
pub mod readiness;
mod reconcile;
mod shutdown;
mod status;
mod subsystems;
mod tls_from_secret;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info};

use crate::api::{self, ApiState, DatapathStatus, SourceErrorView, Status};
use crate::datapath::{DatapathConfig, DatapathError, HostConfig, HostLb, SockLb};
use crate::lbipam::IpamState;
use crate::model::Snapshot;
use crate::source::kube::owner::Termination;
use crate::source::{SourceSpec, dir::DirSource};
use late::LateParts;
use shutdown::{on_sigterm, uninstall_on_delete};

pub use l2::{DEFAULT_KEY_FILE, KeySource, L2Config, MemberConfig};
pub use reconcile::Reconciler;

/// How often the `dir:` source looks for changes (a change reaches the kernel well within 1 s).
const DIR_POLL: Duration = Duration::from_millis(200);

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub source: SourceSpec,
    pub node_name: String,
    pub api_socket: PathBuf,
    /// `--api-listen` and its certificates: the API on TCP with TLS and client certificates.
    pub api_tcp: Option<api::TcpConfig>,
    /// The TCP API's certificates come from the cluster's CA in Secret `ferrite-api-ca` (kube
    /// mode, `--api-listen` without certificate files): the agent writes its own to `api_tcp`'s
    /// paths before listening. The addresses its certificate names (IP SANs).
    pub api_ca_secret: Option<Vec<std::net::IpAddr>>,
    /// `--metrics-listen`: `/metrics` in plain HTTP for Prometheus.
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub datapath: DatapathConfig,
    /// How devices are attached and why (`--tc-attach`, resolved), for the status.
    pub tc_attach: String,
    /// Kernel features missing here that change what the agent does (see
    /// [`crate::datapath::probe::degraded`]).
    pub degraded: Vec<String>,
    /// L2 announcements (`--l2-bind`, `--l2-peers`, …).
    pub l2: l2::L2Config,
    /// North-south load balancing on external devices (`--devices`).
    pub north_south: Option<NorthSouth>,
    /// Where to install the CNI plugin and its conflist once the datapath is ready.
    pub cni: Option<crate::cni::install::InstallConfig>,
    /// `--state-dir`: node state (LB IPAM allocations of the `dir:` source).
    pub state_dir: PathBuf,
    /// Rate limit of the Kubernetes API client (`--k8s-qps`, `--k8s-burst`).
    pub k8s_client: crate::source::kube::ClientOptions,
    /// Duration of the status-writer Lease (kube source; hidden `--status-lease-seconds`).
    pub status_lease: Duration,
    /// The pod network between nodes (`--routing`, `--vxlan-port`, `--vxlan-vni`).
    pub routing: crate::routing::RoutingConfig,
    /// `--daemonset`: the DaemonSet whose deletion makes a stopping agent uninstall.
    pub daemonset: Option<String>,
    /// `--flow-rate`: flow events per second and CPU (0: off).
    pub flow_rate: u32,
}

#[derive(Clone, Debug)]
pub struct NorthSouth {
    pub host: HostConfig,
    /// Masquerade of pods' egress on the same devices (`--masquerade*`).
    pub masq: crate::masq::MasqConfig,
    pub nodeport_range: std::ops::RangeInclusive<u16>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error(transparent)]
    Api(#[from] api::ApiError),
    #[error("reading the current content of the pinned maps: {0}")]
    ReadBack(DatapathError),
    #[error("kube source: {0}")]
    Kube(#[from] crate::source::kube::KubeError),
    #[error("installing the signal handler: {0}")]
    Signal(std::io::Error),
    #[error("routing: {0}")]
    Routing(#[from] crate::routing::RoutingError),
}

/// The API's initial state: datapath facts, nothing applied yet.
fn initial_api_state(cfg: &AgentConfig, adopted: bool) -> ApiState {
    ApiState {
        status: Status {
            version: crate::VERSION.to_string(),
            node_name: cfg.node_name.clone(),
            source: cfg.source.to_string(),
            datapath: DatapathStatus {
                // The socket LB is attached; the first maintenance round confirms the pins.
                ready: true,
                bpf_root: cfg.datapath.bpf_root.display().to_string(),
                cgroup: cfg.datapath.cgroup.display().to_string(),
                adopted,
                tc_attach: cfg.tc_attach.clone(),
                degraded: cfg.degraded.clone(),
                ..DatapathStatus::default()
            },
            last_apply: None,
            source_errors: Vec::new(),
            unserved_ports: Vec::new(),
            subsystems: Vec::new(),
            masquerade: None,
            api: api::ApiListeners {
                socket: cfg.api_socket.display().to_string(),
                tls: cfg.api_tcp.as_ref().map(|t| t.listen.to_string()),
                metrics: cfg.metrics_listen.map(|m| m.to_string()),
            },
        },
        services: Vec::new(),
        source_errors: None,
        snat_flows: None,
        pools: api::PoolsView::default(),
        l2: api::L2View::default(),
        routes: crate::routing::task::SharedRoutes::default(),
        metrics: Arc::new(crate::metrics::Metrics::new()),
        maps_dir: Some(cfg.datapath.maps_dir()),
        flows: None,
        nodes: Vec::new(),
        pods: Arc::default(),
        policy: Arc::default(),
        policy_slots: Arc::default(),
    }
}

/// Starts the flow reader (`--flow-rate` > 0) and publishes its history to the API; with 0,
/// tells the programs to send nothing. A failure leaves everything else running.
fn start_flows(
    cfg: &AgentConfig,
    shared: &api::SharedState,
) -> Option<crate::flows::reader::FlowReader> {
    let maps_dir = cfg.datapath.maps_dir();
    if cfg.flow_rate == 0 {
        if let Err(e) = crate::flows::reader::set_rate(&maps_dir, 0) {
            error!(error = %e, "turning flow events off");
        }
        return None;
    }
    let history = Arc::new(crate::flows::history::FlowHistory::new(
        crate::flows::history::DEFAULT_CAPACITY,
    ));
    let started = crate::flows::reader::StatsMap::open(&maps_dir).and_then(|stats| {
        let reader = crate::flows::reader::FlowReader::start(
            &maps_dir,
            &cfg.node_name,
            history.clone(),
            cfg.flow_rate,
        )?;
        Ok((stats, reader))
    });
    match started {
        Ok((stats, reader)) => {
            shared
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .flows = Some(api::FlowsSource {
                history,
                received: reader.received_counter(),
                stats: Arc::new(stats),
                rate_per_cpu: cfg.flow_rate,
                streams: Arc::default(),
            });
            Some(reader)
        }
        Err(e) => {
            error!(error = %e, "flow events unavailable");
            None
        }
    }
}

/// A started source: its errors, the LB IPAM status feed (kube; see [`status`]) and the L2
/// key from the Secret (kube without `--l2-key-file`).
struct Started {
    errors: crate::source::dir::ErrorHandle,
    status_feed: Option<status::ReportFeed>,
    l2_key: Option<watch::Receiver<crate::source::kube::l2key::KeyState>>,
    /// The TCP API's CA from its Secret (kube with `api_ca_secret`).
    api_ca: Option<watch::Receiver<crate::source::kube::l2key::KeyState>>,
}

/// Starts the configured source feeding `tx`.
async fn start_source(
    cfg: &AgentConfig,
    tx: watch::Sender<Arc<Snapshot>>,
) -> Result<Started, AgentError> {
    Ok(match &cfg.source {
        SourceSpec::Dir(path) => {
            let source = DirSource::new(path.clone());
            let errors = source.error_handle();
            tokio::spawn(source.run(tx, DIR_POLL));
            Started {
                errors,
                status_feed: None,
                l2_key: None,
                api_ca: None,
            }
        }
        SourceSpec::Kube => {
            let timing = crate::source::kube::lease::LeaseTiming::with_duration(cfg.status_lease);
            let want_key =
                !cfg.l2.member.standalone && matches!(cfg.l2.member.key, l2::KeySource::Secret(_));
            let running =
                crate::source::kube::spawn(&cfg.node_name, cfg.k8s_client, timing, want_key, tx)
                    .await?;
            let feed = status::spawn(running.status_writer, running.leading);
            let api_ca = cfg.api_ca_secret.is_some().then(|| {
                crate::source::kube::api_ca::spawn(
                    running.client.clone(),
                    running.namespace.clone(),
                )
            });
            Started {
                errors: running.errors,
                status_feed: Some(feed),
                l2_key: running.l2_key,
                api_ca,
            }
        }
    })
}

/// The north-south datapath (unless `--devices none`), attached to no device yet, and what
/// chooses its devices.
fn open_host(
    cfg: &AgentConfig,
) -> Result<(Option<reconcile::HostPart>, Option<northsouth::DeviceWatch>), AgentError> {
    let Some(ns) = &cfg.north_south else {
        return Ok((None, None));
    };
    let watch = northsouth::DeviceWatch::new(ns.host.devices.clone())?;
    let host = HostLb::open(&cfg.datapath, &ns.host)?;
    let ext_state = host.maps.read_state().map_err(AgentError::ReadBack)?;
    let masq_state = host.masq.read_state().map_err(AgentError::ReadBack)?;
    info!(enabled = ns.masq.enabled, exclude = ?ns.masq.exclude, "masquerade");
    Ok((
        Some(reconcile::HostPart {
            masq: ns.masq.clone(),
            masq_state,
            lb: host,
            state: ext_state,
            nodeport_range: ns.nodeport_range.clone(),
            table_size: ns.host.table_size,
            rows: ns.host.rows,
            health: health::HealthServer::default(),
        }),
        Some(watch),
    ))
}

/// This node's InternalIPs in `snapshot`.
fn node_ips(snapshot: &Snapshot, node_name: &str) -> Vec<std::net::IpAddr> {
    snapshot
        .nodes
        .get(node_name)
        .map(|n| n.internal_ips.clone())
        .unwrap_or_default()
}

/// After an apply: the source's readiness, and the CNI plugin installed (once the datapath is
/// ready and the first snapshot is applied; retried while it fails).
fn after_apply(
    shared: &api::SharedState,
    ready: &readiness::Readiness,
    cni: &mut CniInstall,
    source: &str,
) {
    let apply = shared
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .status
        .last_apply
        .clone();
    match apply {
        Some(a) if a.error.is_none() => ready.set(
            readiness::SOURCE,
            true,
            format!("{source}: generation {} applied", a.generation),
            None,
        ),
        Some(a) => ready.set(
            readiness::SOURCE,
            false,
            format!("{source}: generation {} failed to apply", a.generation),
            a.error,
        ),
        None => {}
    }
    cni.try_install(ready);
}

/// The CNI plugin's installation, waiting for the datapath and the first applied snapshot.
struct CniInstall {
    pending: Option<crate::cni::install::InstallConfig>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    started: bool,
    /// The pod MTU the routing plan wants (the conflist follows it once written).
    pod_mtu: watch::Receiver<Option<u32>>,
    /// The installation running now.
    job: Option<
        tokio::task::JoinHandle<
            Result<crate::cni::install::InstallReport, crate::cni::install::InstallError>,
        >,
    >,
}

impl CniInstall {
    /// Starts the installation once the datapath is ready and the first snapshot applied, on a
    /// blocking thread (it copies the agent's binary, megabytes that must not stall the agent's
    /// loop); the loop awaits it with [`Self::wait`] and reports it with [`Self::finish`].
    fn try_install(&mut self, ready: &readiness::Readiness) {
        if self.job.is_some() {
            return;
        }
        let mtu = *self.pod_mtu.borrow();
        let Some(cfg) = &mut self.pending else {
            return;
        };
        cfg.mtu = mtu;
        if !(ready.is_ready(readiness::SOURCE) && ready.is_ready(readiness::DATAPATH)) {
            return;
        }
        let cfg = cfg.clone();
        let first = !self.started;
        self.started = true;
        let snapshots = self.snapshots.clone();
        self.job = Some(tokio::task::spawn_blocking(move || {
            if first {
                crate::cni::install::run_in_agent(cfg, snapshots)
            } else {
                crate::cni::install::install(&cfg)
            }
        }));
    }

    /// The running installation's result once it ends; pending forever when none runs.
    async fn wait(&mut self) -> Result<crate::cni::install::InstallReport, String> {
        let Some(job) = self.job.as_mut() else {
            return std::future::pending().await;
        };
        let result = job.await;
        self.job = None;
        match result {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(e) => Err(format!("the installing thread failed: {e}")),
        }
    }

    fn finish(
        &mut self,
        result: Result<crate::cni::install::InstallReport, String>,
        ready: &readiness::Readiness,
    ) {
        match result {
            Ok(r) => {
                ready.set(
                    readiness::CNI,
                    true,
                    format!(
                        "installed {} and {}",
                        r.conflist.display(),
                        r.binary.display()
                    ),
                    None,
                );
                if let Some(cfg) = self.pending.take() {
                    follow_pod_mtu(cfg, self.pod_mtu.clone());
                }
            }
            Err(e) => {
                let Some(cfg) = &self.pending else {
                    return;
                };
                ready.set(
                    readiness::CNI,
                    false,
                    format!(
                        "installing into {} and {} failed (retrying)",
                        cfg.conf_dir.display(),
                        cfg.bin_dir.display()
                    ),
                    Some(e),
                );
            }
        }
    }
}

/// Starts the pod-network routing task; returns the pod MTU it publishes.
fn start_routing(
    cfg: &AgentConfig,
    shared: &crate::api::SharedState,
    rx: &watch::Receiver<Arc<Snapshot>>,
) -> Result<watch::Receiver<Option<u32>>, AgentError> {
    let (pod_mtu_tx, pod_mtu_rx) = watch::channel(None);
    let (routes, metrics) = {
        let guard = shared
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (guard.routes.clone(), guard.metrics.clone())
    };
    // The task runs until the runtime ends; its handle is not needed.
    drop(crate::routing::task::spawn(
        cfg.routing,
        cfg.node_name.clone(),
        cfg.datapath.maps_dir(),
        rx.clone(),
        routes,
        pod_mtu_tx,
        metrics,
    )?);
    Ok(pod_mtu_rx)
}

/// Keeps the conflist's MTU at what the routing plan says pods need.
fn follow_pod_mtu(
    mut cni: crate::cni::install::InstallConfig,
    mut mtu: watch::Receiver<Option<u32>>,
) {
    tokio::spawn(async move {
        while mtu.changed().await.is_ok() {
            let want = *mtu.borrow_and_update();
            match crate::cni::install::set_pod_mtu(&mut cni, want) {
                Ok(true) => info!(mtu = ?want, "pod MTU in the conflist updated"),
                Ok(false) => {}
                Err(e) => error!(error = %e, "rewriting the conflist's MTU"),
            }
        }
    });
}

/// Counts the pinned SNAT table's flows for the API when the status is read.
fn snat_flows(cfg: &AgentConfig) -> api::SnatFlowsFn {
    let maps_dir = cfg.datapath.maps_dir();
    Arc::new(move || {
        crate::datapath::snat_flows(&maps_dir).unwrap_or_else(|e| {
            error!(error = %e, "counting SNAT flows");
            0
        })
    })
}

/// Resolves on the next membership view change; never without membership.
async fn view_change(view_rx: &mut Option<watch::Receiver<crate::l2::membership::MembershipView>>) {
    match view_rx {
        Some(rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// Runs until SIGINT/SIGTERM. The datapath stays in place when the agent exits.
#[expect(
    clippy::too_many_lines,
    reason = "the agent's wiring and its one select loop; every step is a call"
)]
pub async fn run(cfg: AgentConfig) -> Result<(), AgentError> {
    let sock = SockLb::open(&cfg.datapath)?;
    let state = sock.maps.read_state().map_err(AgentError::ReadBack)?;
    info!(
        services = state.services.len(),
        backends = state.backends.len(),
        adopted = sock.adopted,
        "datapath ready"
    );
    let shared = Arc::new(RwLock::new(initial_api_state(&cfg, sock.adopted)));
    let _flows = start_flows(&cfg, &shared);
    let ready = readiness::Readiness::new(shared.clone());
    ready.set(
        readiness::SOURCE,
        false,
        format!("waiting for the first snapshot from {}", cfg.source),
        None,
    );

    let (tx, mut rx) = watch::channel(Arc::new(Snapshot::default()));
    let pod_mtu = start_routing(&cfg, &shared, &rx)?;
    let mut cni = CniInstall {
        pending: cfg.cni.clone(),
        snapshots: rx.clone(),
        started: false,
        pod_mtu,
        job: None,
    };
    if let Some(c) = &cni.pending {
        ready.set(
            readiness::CNI,
            false,
            format!(
                "waiting for the datapath and the first snapshot before writing {}",
                c.conf_dir
                    .join(crate::cni::install::CONFLIST_NAME)
                    .display()
            ),
            None,
        );
    }
    let Started {
        errors,
        status_feed,
        l2_key,
        api_ca,
    } = start_source(&cfg, tx).await?;
    let metrics = shared
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .metrics
        .clone();
    let source_kind = match cfg.source {
        SourceSpec::Dir(_) => "dir",
        SourceSpec::Kube => "kube",
    };
    metrics.source_configured(source_kind);
    // The plugin reports every ADD and DEL here (counted into /metrics).
    let _cni_events = crate::metrics::cni::listen(&cfg.api_socket, metrics.clone())
        .inspect_err(|e| error!(error = %e, "CNI ADD/DEL metrics unavailable"))
        .ok()
        .map(AbortOnDrop);
    let api_path = cfg.api_socket.clone();
    let api_state = shared.clone();
    let mut api_task = tokio::spawn(async move { api::serve(&api_path, api_state).await });
    // The optional listeners end the agent when they fail (a port taken, a bad certificate).
    let mut listeners = tokio::task::JoinSet::new();
    if let Some(tcp) = cfg.api_tcp.clone() {
        let state = shared.clone();
        match api_ca {
            Some(ca) => {
                let node = cfg.node_name.clone();
                let ips = cfg.api_ca_secret.clone().unwrap_or_default();
                listeners.spawn(async move {
                    tls_from_secret::write_node_certs(ca, &node, &ips, &tcp).await?;
                    api::serve_tls(tcp, state).await
                });
            }
            None => {
                listeners.spawn(api::serve_tls(tcp, state));
            }
        }
    }
    if let Some(addr) = cfg.metrics_listen {
        listeners.spawn(api::serve_metrics(addr, shared.clone()));
    }
    shared
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .source_errors = Some(Arc::new(move || {
        errors
            .current()
            .into_iter()
            .map(|e| SourceErrorView {
                path: e.path.display().to_string(),
                message: e.message,
            })
            .collect()
    }));

    // A part that fails to load leaves every other part serving; it is retried every second.
    let mut late = LateParts::default();
    let (host, mut device_watch) = open_host(&cfg).unwrap_or_else(|e| {
        late.host = Some(e.to_string());
        (None, None)
    });
    if host.is_some() {
        shared
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .snat_flows = Some(snat_flows(&cfg));
    }
    let mut reconciler = Reconciler::new(sock, state, shared.clone(), host, cfg.node_name.clone())
        .with_lbipam(IpamState::for_source(&cfg.source, &cfg.state_dir))
        .with_status_feed(status_feed);
    let mut l2_cfg = cfg.l2.clone();
    if l2_key.is_some() {
        l2_cfg.member.key = l2::KeySource::Secret(l2_key);
    }
    late.retry_l2(&cfg, &l2_cfg, &metrics, &mut reconciler);
    let routing_on = cfg.routing.mode != crate::routing::RoutingMode::Off;
    let report_subsystems = |late: &LateParts, rec: &Reconciler| {
        subsystems::report(&shared, &ready, routing_on, late.l2_problem(rec));
    };
    report_subsystems(&late, &reconciler);
    let mut ips = node_ips(&rx.borrow(), &cfg.node_name);
    northsouth::maintain(
        &mut reconciler,
        device_watch.as_ref(),
        &ips,
        &ready,
        &shared,
        cfg.north_south.is_none(),
    )
    .await;
    late.report(&ready);
    let mut maintain_tick = tokio::time::interval(northsouth::MAINTAIN_INTERVAL);
    maintain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut view_rx = reconciler.l2.as_ref().and_then(l2::L2Part::view_receiver);
    let reannounce = reconciler
        .l2
        .as_ref()
        .and_then(l2::L2Part::reannounce_interval);
    let mut iface_poll = tokio::time::interval(std::time::Duration::from_millis(100));
    iface_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut reannounce_tick =
        tokio::time::interval(reannounce.unwrap_or(std::time::Duration::from_hours(1)));
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(AgentError::Signal)?;
    let mut notified = notify::ReadyOnce::default();
    let mut termination = Termination::Keep("stopped".into());
    loop {
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    info!("source ended");
                    break;
                }
                let snapshot = rx.borrow_and_update().clone();
                metrics.source_event(source_kind);
                reconciler.reconcile(&snapshot);
                // A new InternalIP moves north-south now, not at the next tick.
                let now = node_ips(&snapshot, &cfg.node_name);
                if now != ips {
                    ips = now;
                    northsouth::maintain(&mut reconciler, device_watch.as_ref(), &ips, &ready, &shared, cfg.north_south.is_none()).await;
                    reconciler.l2_follow_served();
                    late.report(&ready);
                }
                after_apply(&shared, &ready, &mut cni, &cfg.source.to_string());
                report_subsystems(&late, &reconciler);
                notified.applied();
            }
            _ = maintain_tick.tick() => {
                if late.retry_host(&cfg, &mut reconciler, &mut device_watch) {
                    shared
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .snat_flows = Some(snat_flows(&cfg));
                }
                if late.retry_l2(&cfg, &l2_cfg, &metrics, &mut reconciler) {
                    view_rx = reconciler.l2.as_ref().and_then(l2::L2Part::view_receiver);
                }
                reconciler.l2_retry_attach();
                northsouth::maintain(&mut reconciler, device_watch.as_ref(), &ips, &ready, &shared, cfg.north_south.is_none()).await;
                reconciler.l2_follow_served();
                late.report(&ready);
                cni.try_install(&ready);
                report_subsystems(&late, &reconciler);
            }
            result = cni.wait() => {
                cni.finish(result, &ready);
                report_subsystems(&late, &reconciler);
            }
            () = view_change(&mut view_rx) => reconciler.l2_refresh(false),
            _ = iface_poll.tick() => reconciler.l2_refresh(true),
            _ = reannounce_tick.tick(), if reannounce.is_some() => {
                if let Some(l2) = &reconciler.l2 {
                    l2.reannounce();
                }
            }
            Some(res) = listeners.join_next(), if !listeners.is_empty() => {
                match res {
                    Ok(Err(e)) => return Err(e.into()),
                    Ok(Ok(())) => info!("an API listener stopped"),
                    Err(e) => error!(error = %e, "API listener task failed"),
                }
                break;
            }
            res = &mut api_task => {
                match res {
                    Ok(Err(e)) => return Err(e.into()),
                    Ok(Ok(())) => info!("API server stopped"),
                    Err(e) => error!(error = %e, "API task failed"),
                }
                break;
            }
            _ = tokio::signal::ctrl_c() => { info!("interrupted; datapath stays pinned"); break; }
            _ = sigterm.recv() => {
                termination = on_sigterm(&cfg).await;
                break;
            }
        }
    }
    drop(reconciler);
    // An installation still copying must not write the plugin back after an uninstall.
    if cni.job.is_some() {
        let result = cni.wait().await;
        cni.finish(result, &ready);
    }
    if let Termination::Uninstall(why) = termination {
        uninstall_on_delete(&cfg, why).await;
    }
    let _ = std::fs::remove_file(&cfg.api_socket);
    let _ = std::fs::remove_file(crate::metrics::cni::socket_path(&cfg.api_socket));
    Ok(())
}

/// Ends a background task when dropped (the agent's helpers end with its loop).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
