//! The local API: JSON over HTTP/1.1 on a unix socket (mode 0600) and, optionally, on TCP with
//! TLS and client certificates; `/metrics`, `/openapi.json`, health probes. The agent publishes
//! views of its model and applied state into [`ApiState`]; the CLI reads them with [`client`].

pub mod certs;
pub mod client;
mod flows;
mod l2;
mod openapi;
mod pools;
mod routes;
mod scrape;
mod server;
mod stream;
pub mod tls;
mod types;

pub use flows::{FlowsSource, FlowsView};
pub use l2::{L2AddressView, L2MembershipView, L2View};
pub use pools::{ConditionView, LbServiceView, PoolView, PoolsView};
pub use server::{ApiError, serve, serve_metrics, serve_tls};
pub use tls::TcpConfig;
pub use types::{
    ApiListeners, ApplyReport, DatapathStatus, DeviceIngress, DeviceView, HostRoutingView,
    MasqStatus, NodeView, ServiceView, SourceErrorView, Status, Subsystem,
};

use std::sync::{Arc, RwLock};

/// Reads the source's current errors when the status is requested (a broken file changes no
/// snapshot, so no reconcile would publish it).
pub type SourceErrorsFn = Arc<dyn Fn() -> Vec<SourceErrorView> + Send + Sync>;

/// Counts the masquerade's SNAT flows when the status is requested (the programs add them).
pub type SnatFlowsFn = Arc<dyn Fn() -> u64 + Send + Sync>;

/// What the API serves; written by the agent after each reconcile.
#[derive(Default)]
pub struct ApiState {
    pub status: Status,
    pub services: Vec<ServiceView>,
    pub source_errors: Option<SourceErrorsFn>,
    pub snat_flows: Option<SnatFlowsFn>,
    /// LB IPAM: pools and LoadBalancer services (`/v1/pools`).
    pub pools: PoolsView,
    /// L2 announcements (`/v1/l2`).
    pub l2: L2View,
    /// The pod network between nodes (`/v1/routes`), written by the routing task.
    pub routes: crate::routing::task::SharedRoutes,
    /// Event counters for `/metrics` (the agent's parts count into the same instance).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The pinned maps, whose fill `/metrics` reads when scraped.
    pub maps_dir: Option<std::path::PathBuf>,
    /// Flow events (`/v1/flows`), once the reader runs.
    pub flows: Option<FlowsSource>,
    /// The cluster's nodes (`/v1/nodes`), as of the last applied snapshot.
    pub nodes: Vec<NodeView>,
    /// The model's pods by address (a flow's `source_pod` / `destination_pod`), rebuilt when
    /// the snapshot's pods change.
    pub pods: Arc<crate::flows::pods::PodIndex>,
    /// NetworkPolicy per local pod (`/v1/policy`), as of the last applied snapshot.
    pub policy: Arc<Vec<crate::policy::EndpointReport>>,
    /// NetworkPolicy's counter slots → `namespace/name` (slot 0: denied).
    pub policy_slots: Arc<Vec<String>>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("status", &self.status)
            .field("services", &self.services.len())
            .finish_non_exhaustive()
    }
}

impl ApiState {
    /// The status with the source's errors as of now.
    pub fn current_status(&self) -> Status {
        let mut st = self.status.clone();
        if let Some(errors) = &self.source_errors {
            st.source_errors = errors();
        }
        if let (Some(m), Some(count)) = (&mut st.masquerade, &self.snat_flows) {
            m.snat_flows = count();
        }
        st
    }
}

pub type SharedState = Arc<RwLock<ApiState>>;

pub const DEFAULT_SOCKET: &str = "/run/ferrite/ferrite.sock";
