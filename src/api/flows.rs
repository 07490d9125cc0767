//! `/v1/flows`: the flow history filtered by the query (the `ferrite observe` flags), each
//! flow's service filled in from the frontends this node programs, with the counters that say
//! what the rate cap or a full ring left out.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hyper::StatusCode;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::routes::{Param, Reply};
use super::{ServiceView, SharedState};
use crate::flows::Flow;
use crate::flows::filter::{FlowQuery, MAX_LAST, MAX_SEQ};
use crate::flows::history::FlowHistory;

/// Where the agent's flows are (set once the reader runs).
#[derive(Clone, Debug)]
pub struct FlowsSource {
    pub history: Arc<FlowHistory>,
    pub received: Arc<AtomicU64>,
    /// The programs' counters (opened once, when the reader starts).
    pub stats: Arc<crate::flows::reader::StatsMap>,
    pub rate_per_cpu: u32,
    /// `/v1/flows/stream` answers open now.
    pub streams: Arc<AtomicU64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct FlowStats {
    /// Flow events are being collected.
    pub enabled: bool,
    /// Events per second and CPU the programs send at most (`--flow-rate`).
    pub rate_per_cpu: u32,
    /// Sent by the programs, summed over CPUs.
    pub emitted: u64,
    /// Not sent: over the per-CPU rate (a flood is sampled down to the rate).
    pub rate_limited: u64,
    /// Not sent: the ring buffer was full.
    pub ring_full: u64,
    /// Read from the ring by this agent.
    pub received: u64,
    /// Held in the history now, and at most.
    pub in_history: u64,
    pub capacity: u64,
    /// Pushed out of the history by newer flows.
    pub evicted: u64,
    /// The newest flow's `seq` (0: none yet): pass it as `after` to get only newer ones.
    pub latest_seq: u64,
    /// `/v1/flows/stream` answers open now.
    #[serde(default)]
    pub streams: u64,
}

/// The answer of `/v1/flows`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct FlowsView {
    /// Matching flows, oldest first.
    pub flows: Vec<Flow>,
    pub stats: FlowStats,
}

/// `k=v` or `k`, comma-separated ([`crate::flows::filter::Labels`]): keys not empty.
const LABELS_PATTERN: &str = "^[^=,]+(=[^,]*)?(,[^=,]+(=[^,]*)?)*$";

pub const PARAMS: &[Param] = &[
    Param {
        name: "after",
        description: "Only flows with a seq above this one (follow with the last seq seen)",
        kind: "integer",
        values: &[],
        bounds: Some((0, MAX_SEQ)),
        pattern: None,
    },
    Param {
        name: "last",
        description: "The newest N matching flows (default 100)",
        kind: "integer",
        values: &[],
        bounds: Some((1, MAX_LAST as u64)),
        pattern: None,
    },
    Param {
        name: "verdict",
        description: "FORWARDED or DROPPED",
        kind: "string",
        values: &["FORWARDED", "DROPPED"],
        bounds: None,
        pattern: None,
    },
    Param {
        name: "type",
        description: "sock-lb, north-south, masquerade or l2",
        kind: "string",
        values: &["sock-lb", "north-south", "masquerade", "l2"],
        bounds: None,
        pattern: None,
    },
    Param {
        name: "protocol",
        description: "TCP, UDP, ICMP, ICMPv6, ARP or NDP",
        kind: "string",
        values: &["TCP", "UDP", "ICMP", "ICMPv6", "ARP", "NDP"],
        bounds: None,
        pattern: None,
    },
    Param {
        name: "port",
        description: "Source, destination or translated port",
        kind: "integer",
        values: &[],
        bounds: Some((0, 65535)),
        pattern: None,
    },
    Param {
        name: "from_ip",
        description: "Source address",
        kind: "ip",
        values: &[],
        bounds: None,
        pattern: None,
    },
    Param {
        name: "to_ip",
        description: "Destination or translated address",
        kind: "ip",
        values: &[],
        bounds: None,
        pattern: None,
    },
    Param {
        name: "ip",
        description: "Any address of the flow",
        kind: "ip",
        values: &[],
        bounds: None,
        pattern: None,
    },
    Param {
        name: "service",
        description: "namespace/name, or a name in any namespace",
        kind: "string",
        values: &[],
        bounds: None,
        pattern: None,
    },
    Param {
        name: "from_pod",
        description: "The source pod: [namespace/]name-prefix (no namespace: default)",
        kind: "string",
        values: &[],
        bounds: None,
        pattern: None,
    },
    Param {
        name: "to_pod",
        description: "The destination pod (the backend when translated): [namespace/]name-prefix",
        kind: "string",
        values: &[],
        bounds: None,
        pattern: None,
    },
    Param {
        name: "pod",
        description: "The source or destination pod: [namespace/]name-prefix",
        kind: "string",
        values: &[],
        bounds: None,
        pattern: None,
    },
    Param {
        name: "from_namespace",
        description: "The source pod's namespace",
        kind: "string",
        values: &[],
        bounds: None,
        pattern: None,
    },
    Param {
        name: "to_namespace",
        description: "The destination pod's namespace",
        kind: "string",
        values: &[],
        bounds: None,
        pattern: None,
    },
    Param {
        name: "namespace",
        description: "The source or destination pod's namespace",
        kind: "string",
        values: &[],
        bounds: None,
        pattern: None,
    },
    Param {
        name: "from_label",
        description: "The source pod's labels: k=v or k, comma-separated, all required",
        kind: "string",
        values: &[],
        bounds: None,
        pattern: Some(LABELS_PATTERN),
    },
    Param {
        name: "to_label",
        description: "The destination pod's labels: k=v or k, comma-separated, all required",
        kind: "string",
        values: &[],
        bounds: None,
        pattern: Some(LABELS_PATTERN),
    },
    Param {
        name: "label",
        description: "The source or destination pod's labels (all on one of them): k=v or k, comma-separated",
        kind: "string",
        values: &[],
        bounds: None,
        pattern: Some(LABELS_PATTERN),
    },
    Param {
        name: "not",
        description: "Invert the whole filter",
        kind: "boolean",
        values: &[],
        bounds: None,
        pattern: None,
    },
];

/// `ip:port` of a flow's destination as the services view spells frontends.
fn frontend_of(f: &Flow) -> String {
    if f.destination_ip.contains(':') {
        format!("[{}]:{}", f.destination_ip, f.destination_port)
    } else {
        format!("{}:{}", f.destination_ip, f.destination_port)
    }
}

/// Fills in the service of a flow whose destination is a programmed frontend.
pub fn enrich(services: &[ServiceView], f: &mut Flow) {
    let fe = frontend_of(f);
    if let Some(s) = services
        .iter()
        .find(|s| s.frontend == fe && s.protocol.eq_ignore_ascii_case(&f.protocol))
    {
        f.service = Some(s.service.clone());
    }
}

/// What fills in a served flow: its service (the frontends programmed now) and its pods (the
/// pod index of the last snapshot).
pub fn enricher(state: &SharedState) -> impl Fn(&mut Flow) + use<> {
    let (services, pods) = {
        let s = state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (s.services.clone(), s.pods.clone())
    };
    move |f| {
        enrich(&services, f);
        pods.enrich(f);
    }
}

/// The agent's flow source, when flows are on (shared by `/v1/flows` and its stream).
pub(super) fn flow_source(state: &SharedState) -> Option<super::FlowsSource> {
    state
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .flows
        .clone()
}

pub fn handler(state: &SharedState, _: Option<&str>, query: Option<&str>) -> Reply {
    let q = match FlowQuery::parse(query) {
        Ok(q) => q,
        Err(e) => return Reply::error(StatusCode::BAD_REQUEST, e),
    };
    let source = flow_source(state);
    let Some(src) = source else {
        return Reply::json(StatusCode::OK, &FlowsView::default());
    };
    let flows = src.history.query(&q, enricher(state));
    let (held, latest, evicted) = src.history.counts();
    let kernel = src.stats.counts().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "reading the flow counters");
        crate::flows::reader::KernelCounts::default()
    });
    let counts = FlowStats {
        enabled: src.rate_per_cpu > 0,
        rate_per_cpu: src.rate_per_cpu,
        emitted: kernel.emitted,
        rate_limited: kernel.rate_limited,
        ring_full: kernel.ring_full,
        received: src.received.load(Ordering::Relaxed),
        in_history: held as u64,
        capacity: src.history.capacity() as u64,
        evicted,
        latest_seq: latest,
        streams: src.streams.load(Ordering::Relaxed),
    };
    Reply::json(
        StatusCode::OK,
        &FlowsView {
            flows,
            stats: counts,
        },
    )
}
