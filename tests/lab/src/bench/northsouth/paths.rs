//! The paths the north-south bench measures, each checked with one request before it counts.

use std::net::{Ipv4Addr, SocketAddr};

use ferrite_lab::NsLab;
use ferrite_lab::nslab::{POD_HTTP, POD_IPERF};

use super::tools::check_path;
use super::{
    FERRITE_LB, FERRITE_NODE, IPTABLES_LB, IPTABLES_NODE, LEGACY_LB, LEGACY_NODE,
    LEGACY_NODE_PORT_HTTP, LEGACY_NODE_PORT_IPERF, NODE_PORT_HTTP, NODE_PORT_IPERF, PLAIN_NODE,
    Path_, XDP_LB, XDP_NODE, XDP_NODE_PORT_HTTP, XDP_NODE_PORT_IPERF, progress,
};

/// The paths to measure, each checked with one HTTP request through it.
pub(super) fn paths(
    lab: &NsLab,
    fer_ready: &Result<(), String>,
    ipt_ready: &Result<(), String>,
    xdp_ready: &Result<(), String>,
    legacy_ready: &Result<(), String>,
) -> Vec<Path_> {
    let pod = |node: usize| lab.node(node).pod_name(0);
    let (fer_pod, ipt_pod, plain_pod) = (pod(FERRITE_NODE), pod(IPTABLES_NODE), pod(PLAIN_NODE));
    let (xdp_pod, legacy_pod) = (pod(XDP_NODE), pod(LEGACY_NODE));
    let n = |i: usize| lab.node(i);
    let at = |ip: Ipv4Addr, port: u16| SocketAddr::from((ip, port));
    vec![
        (
            "direct to pod (plain node)",
            at(n(PLAIN_NODE).pod_v4(0), POD_HTTP),
            at(n(PLAIN_NODE).pod_v4(0), POD_IPERF),
            Ok(()),
            &plain_pod,
        ),
        (
            "direct to pod (through ferrite's node)",
            at(n(FERRITE_NODE).pod_v4(0), POD_HTTP),
            at(n(FERRITE_NODE).pod_v4(0), POD_IPERF),
            fer_ready.clone(),
            &fer_pod,
        ),
        (
            "ferrite LoadBalancer IP",
            at(FERRITE_LB, 80),
            at(FERRITE_LB, POD_IPERF),
            fer_ready.clone(),
            &fer_pod,
        ),
        (
            "ferrite NodePort",
            at(n(FERRITE_NODE).v4(), NODE_PORT_HTTP),
            at(n(FERRITE_NODE).v4(), NODE_PORT_IPERF),
            fer_ready.clone(),
            &fer_pod,
        ),
        (
            "ferrite+XDP LoadBalancer IP (native, veth)",
            at(XDP_LB, 80),
            at(XDP_LB, POD_IPERF),
            xdp_ready.clone(),
            &xdp_pod,
        ),
        (
            "ferrite+XDP NodePort (native, veth)",
            at(n(XDP_NODE).v4(), XDP_NODE_PORT_HTTP),
            at(n(XDP_NODE).v4(), XDP_NODE_PORT_IPERF),
            xdp_ready.clone(),
            &xdp_pod,
        ),
        (
            "ferrite legacy TC LoadBalancer IP (clsact + cls_bpf)",
            at(LEGACY_LB, 80),
            at(LEGACY_LB, POD_IPERF),
            legacy_ready.clone(),
            &legacy_pod,
        ),
        (
            "ferrite legacy TC NodePort (clsact + cls_bpf)",
            at(n(LEGACY_NODE).v4(), LEGACY_NODE_PORT_HTTP),
            at(n(LEGACY_NODE).v4(), LEGACY_NODE_PORT_IPERF),
            legacy_ready.clone(),
            &legacy_pod,
        ),
        (
            "iptables LoadBalancer IP (kube-proxy rules)",
            at(IPTABLES_LB, 80),
            at(IPTABLES_LB, POD_IPERF),
            ipt_ready.clone(),
            &ipt_pod,
        ),
        (
            "iptables NodePort (kube-proxy rules)",
            at(n(IPTABLES_NODE).v4(), NODE_PORT_HTTP),
            at(n(IPTABLES_NODE).v4(), NODE_PORT_IPERF),
            ipt_ready.clone(),
            &ipt_pod,
        ),
    ]
    .into_iter()
    .map(|(label, http, iperf, ready, backend)| {
        let ready = ready.and_then(|()| check_path(lab, http, backend));
        progress(&format!("  {label}: {http}: {ready:?}"));
        Path_ {
            label,
            http,
            iperf,
            ready,
            gbps: Vec::new(),
            rps: Vec::new(),
            errors_gbps: 0,
            errors_rps: 0,
            failed: None,
        }
    })
    .collect()
}
