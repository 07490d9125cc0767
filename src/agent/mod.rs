//! `ferrite agent`: source → model → plan → maps, plus the local API.

mod health;
mod l2;
mod notify;
mod reconcile;
mod status;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info};

use crate::api::{self, ApiState, DatapathStatus, SourceErrorView, Status};
use crate::datapath::{DatapathConfig, DatapathError, HostConfig, HostLb, SockLb};
use crate::lbipam::IpamState;
use crate::model::Snapshot;
use crate::source::{SourceSpec, dir::DirSource};

pub use l2::L2Config;
pub use reconcile::Reconciler;

/// How often the `dir:` source looks for changes (a change reaches the kernel well within 1 s).
const DIR_POLL: Duration = Duration::from_millis(200);

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub source: SourceSpec,
    pub node_name: String,
    pub api_socket: PathBuf,
    pub datapath: DatapathConfig,
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
}

#[derive(Clone, Debug)]
pub struct NorthSouth {
    pub host: HostConfig,
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
}

/// The API's initial state: datapath facts, nothing applied yet.
fn initial_api_state(cfg: &AgentConfig, adopted: bool) -> ApiState {
    ApiState {
        status: Status {
            version: crate::VERSION.to_string(),
            node_name: cfg.node_name.clone(),
            source: cfg.source.to_string(),
            datapath: DatapathStatus {
                ready: true,
                bpf_root: cfg.datapath.bpf_root.display().to_string(),
                cgroup: cfg.datapath.cgroup.display().to_string(),
                adopted,
                ingress: Vec::new(),
            },
            last_apply: None,
            source_errors: Vec::new(),
        },
        services: Vec::new(),
        source_errors: None,
        pools: api::PoolsView::default(),
        l2: api::L2View::default(),
    }
}

/// Starts the configured source feeding `tx`; returns its error handle and, with the kube
/// source, the feed of the LB IPAM status writer (see [`status`]).
async fn start_source(
    cfg: &AgentConfig,
    tx: watch::Sender<Arc<Snapshot>>,
) -> Result<(crate::source::dir::ErrorHandle, Option<status::ReportFeed>), AgentError> {
    Ok(match &cfg.source {
        SourceSpec::Dir(path) => {
            let source = DirSource::new(path.clone());
            let errors = source.error_handle();
            tokio::spawn(source.run(tx, DIR_POLL));
            (errors, None)
        }
        SourceSpec::Kube => {
            let timing = crate::source::kube::lease::LeaseTiming::with_duration(cfg.status_lease);
            let running =
                crate::source::kube::spawn(&cfg.node_name, cfg.k8s_client, timing, tx).await?;
            let feed = status::spawn(running.status_writer, running.leading);
            (running.errors, Some(feed))
        }
    })
}

/// The north-south datapath when `--devices` is given.
fn open_host(cfg: &AgentConfig) -> Result<Option<reconcile::HostPart>, AgentError> {
    let Some(ns) = &cfg.north_south else {
        return Ok(None);
    };
    let host = HostLb::open(&cfg.datapath, &ns.host)?;
    let ext_state = host.maps.read_state().map_err(AgentError::ReadBack)?;
    Ok(Some(reconcile::HostPart {
        lb: host,
        state: ext_state,
        nodeport_range: ns.nodeport_range.clone(),
        table_size: ns.host.table_size,
        rows: ns.host.rows,
        health: health::HealthServer::default(),
    }))
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

    let (tx, mut rx) = watch::channel(Arc::new(Snapshot::default()));
    if let Some(cni) = cfg.cni.clone() {
        crate::cni::install::run_in_agent(cni, rx.clone());
    }
    let (errors, status_feed) = start_source(&cfg, tx).await?;
    let api_path = cfg.api_socket.clone();
    let api_state = shared.clone();
    let mut api_task = tokio::spawn(async move { api::serve(&api_path, api_state).await });
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

    let host = open_host(&cfg)?;
    if let Some(h) = &host {
        shared
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .status
            .datapath
            .ingress =
            h.lb.ingress
                .iter()
                .map(|(device, hook)| api::DeviceIngress {
                    device: device.clone(),
                    hook: hook.as_str().to_string(),
                })
                .collect();
    }
    let mut reconciler = Reconciler::new(sock, state, shared.clone(), host, cfg.node_name.clone())
        .with_lbipam(IpamState::for_source(&cfg.source, &cfg.state_dir))
        .with_status_feed(status_feed);
    match l2::L2Part::open(&cfg.datapath, &cfg.node_name, cfg.l2.clone()) {
        Ok(part) => reconciler.l2 = Some(part),
        Err(e) => error!(error = %e, "L2 announcements unavailable"),
    }
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
    let mut ready = notify::ReadyOnce::default();
    loop {
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    info!("source ended");
                    break;
                }
                let snapshot = rx.borrow_and_update().clone();
                reconciler.reconcile(&snapshot);
                ready.applied();
            }
            () = view_change(&mut view_rx) => reconciler.l2_refresh(false),
            _ = iface_poll.tick() => reconciler.l2_refresh(true),
            _ = reannounce_tick.tick(), if reannounce.is_some() => {
                if let Some(l2) = &reconciler.l2 {
                    l2.reannounce();
                }
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
            _ = sigterm.recv() => { info!("terminated; datapath stays pinned"); break; }
        }
    }
    let _ = std::fs::remove_file(&cfg.api_socket);
    Ok(())
}
