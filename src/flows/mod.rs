//! Flow events (`ferrite observe`): what the eBPF programs decided about each new flow, read
//! from the pinned ring buffer ([`reader`]), kept in a bounded history ([`history`]) and
//! served filtered by the API ([`filter`]). Each [`Flow`] carries Hubble's fields where they
//! apply: time, node, verdict and drop reason, addresses and ports, L4 protocol and TCP flags,
//! the service (filled in from the programmed frontends when served), interface.

pub mod filter;
pub mod history;
pub mod pods;
pub mod reader;

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ferrite_abi::{
    FAMILY_V4, FLOW_DROP_INVALID, FLOW_DROP_NO_BACKEND, FLOW_DROP_NO_SNAT, FLOW_DROP_POLICY,
    FLOW_DROP_SOURCE_RANGE, FLOW_FLAG_EGRESS, FLOW_FLAG_SNAT, FLOW_KIND_L2, FLOW_KIND_MASQUERADE,
    FLOW_KIND_NORTH_SOUTH, FLOW_KIND_POLICY, FLOW_KIND_SOCK_LB, FlowEvent, PROTO_ICMP,
    PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One flow event as the API and `ferrite observe` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Flow {
    /// Position in this agent's history (a cursor for `after`).
    pub seq: u64,
    /// When the program saw it (Unix milliseconds).
    pub time_unix_ms: u64,
    pub node: String,
    /// `sock-lb`, `north-south`, `masquerade` or `l2` (an ARP/NDP answer for an announced
    /// address; its destination is the address, port 0).
    pub kind: String,
    /// `FORWARDED` or `DROPPED` (Hubble's words).
    pub verdict: String,
    /// Why it was dropped: `no-backend`, `source-range`, `invalid`, `no-snat-port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_reason: Option<String>,
    /// `TCP`, `UDP`, `ICMP`, `ICMPv6` (or the protocol number); `ARP` or `NDP` for `l2`.
    pub protocol: String,
    /// The client; absent for socket-LB events (the socket may not be bound yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_port: Option<u16>,
    pub destination_ip: String,
    pub destination_port: u16,
    /// What the destination (LB) or the source (masquerade) became.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub translated_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub translated_port: Option<u16>,
    /// The Service of the frontend (`namespace/name`), when it is one this node programs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The device (TC/XDP events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// TCP flags of the packet (north-south), e.g. `["SYN"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp_flags: Vec<String>,
    /// A north-south flow SNATed to the node (its backend is on another node).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub snat: bool,
    /// The socket's cookie (socket-LB events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_cookie: Option<u64>,
    /// `ingress` (north-south, l2: from outside to the node) or `egress` (masquerade, socket
    /// LB: a pod's or the host's connection out), Hubble's words.
    #[serde(default)]
    pub traffic_direction: String,
    /// The pod of the source address (`namespace/name`), when it is one the model knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_pod: Option<String>,
    /// The source pod's labels, `k=v`, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_labels: Vec<String>,
    /// The pod of the destination: the translated address (the backend) when there is one,
    /// else the destination address (masquerade: the destination address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_pod: Option<String>,
    /// The destination pod's labels, `k=v`, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_labels: Vec<String>,
    /// An `l2` event of the agent rather than an answer of the responder: `takeover` when
    /// this node started announcing the destination address (first election or failover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l2_event: Option<String>,
    /// The node that announced the address before (a takeover from another node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l2_previous_owner: Option<String>,
    /// A failover's duration: from this node seeing the previous owner fail to announcing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l2_failover_ms: Option<u64>,
    /// Hubble's `is_reply`: whether the packet answers a flow seen before. `false` for the
    /// decisions that open or refuse a flow (every event but the two below); `true` for a
    /// SYN-ACK the north-south LB had no state for (the answer to a SYN it never saw); absent
    /// where the program cannot tell (another TCP segment without state, L2 events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_reply: Option<bool>,
}

/// [`Flow::is_reply`] of an event of `kind` dropped for `reason` with TCP `flags`.
fn is_reply(kind: u8, reason: u8, flags: u8) -> Option<bool> {
    const SYN_ACK: u8 = 0x12;
    match (kind, reason) {
        (FLOW_KIND_L2, _) => None,
        (_, FLOW_DROP_INVALID) => (flags & SYN_ACK == SYN_ACK).then_some(true),
        _ => Some(false),
    }
}

/// Hubble's `traffic_direction` of a kind: what comes in from outside is `ingress`, what a
/// pod or the host sends out is `egress`.
#[must_use]
pub fn direction_of(kind: &str) -> &'static str {
    match kind {
        "north-south" | "l2" => "ingress",
        "masquerade" | "sock-lb" => "egress",
        _ => "unknown",
    }
}

fn addr(family: u8, words: &[u32; 4]) -> IpAddr {
    if family == FAMILY_V4 {
        IpAddr::V4(Ipv4Addr::from(u32::from_be(words[0])))
    } else {
        let mut b = [0u8; 16];
        for (i, w) in words.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        IpAddr::V6(Ipv6Addr::from(b))
    }
}

#[must_use]
pub fn protocol_name(proto: u8) -> String {
    match proto {
        PROTO_TCP => "TCP".into(),
        PROTO_UDP => "UDP".into(),
        PROTO_ICMP => "ICMP".into(),
        PROTO_ICMPV6 => "ICMPv6".into(),
        n => n.to_string(),
    }
}

pub(crate) fn kind_name(kind: u8) -> &'static str {
    match kind {
        FLOW_KIND_SOCK_LB => "sock-lb",
        FLOW_KIND_NORTH_SOUTH => "north-south",
        FLOW_KIND_MASQUERADE => "masquerade",
        FLOW_KIND_L2 => "l2",
        FLOW_KIND_POLICY => "policy",
        _ => "unknown",
    }
}

pub(crate) fn drop_reason(reason: u8) -> Option<String> {
    Some(
        match reason {
            0 => return None,
            FLOW_DROP_NO_BACKEND => "no-backend",
            FLOW_DROP_SOURCE_RANGE => "source-range",
            FLOW_DROP_INVALID => "invalid",
            FLOW_DROP_NO_SNAT => "no-snat-port",
            FLOW_DROP_POLICY => "policy-denied",
            _ => "unknown",
        }
        .to_owned(),
    )
}

fn tcp_flags(flags: u8) -> Vec<String> {
    const NAMES: [(u8, &str); 6] = [
        (0x02, "SYN"),
        (0x10, "ACK"),
        (0x01, "FIN"),
        (0x04, "RST"),
        (0x08, "PSH"),
        (0x20, "URG"),
    ];
    NAMES
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, n)| (*n).to_owned())
        .collect()
}

/// Turns the kernel's record into a [`Flow`]. `mono_to_unix_ns` is the Unix time minus
/// CLOCK_MONOTONIC (the programs stamp with `bpf_ktime_get_ns`); `ifname` names a device.
#[must_use]
pub fn decode(
    ev: &FlowEvent,
    seq: u64,
    node: &str,
    mono_to_unix_ns: i128,
    ifname: impl Fn(u32) -> Option<String>,
) -> Flow {
    let unix_ns = i128::from(ev.ts_ns) + mono_to_unix_ns;
    let time_unix_ms = u64::try_from(unix_ns / 1_000_000).unwrap_or(0);
    let dropped = ev.reason != 0;
    let sock = ev.kind == FLOW_KIND_SOCK_LB;
    let l2 = ev.kind == FLOW_KIND_L2;
    let protocol = match (l2, ev.family) {
        (true, FAMILY_V4) => "ARP".to_owned(),
        (true, _) => "NDP".to_owned(),
        (false, _) => protocol_name(ev.proto),
    };
    let policy = ev.kind == FLOW_KIND_POLICY;
    let translated = !dropped && !policy && ev.xaddr != [0; 4];
    let kind = kind_name(ev.kind);
    let direction = match (policy, ev.flags & FLOW_FLAG_EGRESS != 0) {
        (true, true) => "egress",
        (true, false) => "ingress",
        (false, _) => direction_of(kind),
    };
    Flow {
        seq,
        time_unix_ms,
        node: node.to_owned(),
        kind: kind.to_owned(),
        verdict: if dropped { "DROPPED" } else { "FORWARDED" }.to_owned(),
        drop_reason: drop_reason(ev.reason),
        protocol,
        source_ip: (!sock).then(|| addr(ev.family, &ev.saddr).to_string()),
        source_port: (!sock && !l2).then(|| u16::from_be(ev.sport)),
        destination_ip: addr(ev.family, &ev.daddr).to_string(),
        destination_port: u16::from_be(ev.dport),
        translated_ip: translated.then(|| addr(ev.family, &ev.xaddr).to_string()),
        translated_port: translated.then(|| u16::from_be(ev.xport)),
        service: None,
        interface: (ev.ifindex != 0).then(|| ifname(ev.ifindex)).flatten(),
        tcp_flags: tcp_flags(ev.tcp_flags),
        snat: !policy && ev.flags & FLOW_FLAG_SNAT != 0,
        socket_cookie: (sock && ev.cookie != 0).then_some(ev.cookie),
        traffic_direction: direction.to_owned(),
        source_pod: None,
        source_labels: Vec::new(),
        destination_pod: None,
        destination_labels: Vec::new(),
        l2_event: None,
        l2_previous_owner: None,
        l2_failover_ms: None,
        is_reply: is_reply(ev.kind, ev.reason, ev.tcp_flags),
    }
}

/// `ip:port` (`[ip]:port` for IPv6), or `ns/pod:port`.
fn endpoint(ip: &str, port: Option<u16>) -> String {
    let ip = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_owned()
    };
    match port {
        Some(p) => format!("{ip}:{p}"),
        None => ip,
    }
}

/// One line like `hubble observe`'s compact output; a pod's address shows as `ns/pod` (as
/// Hubble shows it).
#[must_use]
pub fn compact(f: &Flow, time: &str) -> String {
    if let Some(event) = &f.l2_event {
        return l2_event_line(f, event, time);
    }
    let masq = f.kind == "masquerade";
    let src = match (&f.source_pod, &f.source_ip) {
        (Some(pod), Some(_)) => endpoint(pod, f.source_port),
        (None, Some(ip)) => endpoint(ip, f.source_port),
        (_, None) => "socket".to_owned(),
    };
    let dst_port = (f.kind != "l2").then_some(f.destination_port);
    // The destination pod is the translated address's unless nothing was translated (or it is
    // a masquerade, whose translation is the node's address).
    let pod_is_dst = f.translated_ip.is_none() || masq;
    let dst = match &f.destination_pod {
        Some(pod) if pod_is_dst => endpoint(pod, dst_port),
        _ => endpoint(&f.destination_ip, dst_port),
    };
    let mut line = format!("{time} {} {}: {src} -> {dst}", f.node, f.kind);
    if let Some(svc) = &f.service {
        let _ = write!(line, " ({svc})");
    }
    if let Some(ip) = &f.translated_ip {
        let arrow = if masq { "as" } else { "=>" };
        let shown = match &f.destination_pod {
            Some(pod) if !pod_is_dst => pod,
            _ => ip,
        };
        let _ = write!(line, " {arrow} {}", endpoint(shown, f.translated_port));
    }
    let _ = write!(line, " {} {}", f.protocol, f.verdict);
    if let Some(r) = &f.drop_reason {
        let _ = write!(line, " ({r})");
    }
    if !f.tcp_flags.is_empty() {
        let _ = write!(line, " [{}]", f.tcp_flags.join(","));
    }
    if f.snat {
        line.push_str(" snat");
    }
    if let Some(i) = &f.interface {
        let _ = write!(line, " on {i}");
    }
    line
}

/// `TIME NODE l2: takeover ADDRESS [from NODE [after N ms]] PROTO on IFACE`.
fn l2_event_line(f: &Flow, event: &str, time: &str) -> String {
    let mut line = format!("{time} {} {}: {event} {}", f.node, f.kind, f.destination_ip);
    if let Some(svc) = &f.service {
        let _ = write!(line, " ({svc})");
    }
    if let Some(from) = &f.l2_previous_owner {
        let _ = write!(line, " from {from}");
    }
    if let Some(ms) = f.l2_failover_ms {
        let _ = write!(line, " after {ms} ms");
    }
    let _ = write!(line, " {}", f.protocol);
    if let Some(i) = &f.interface {
        let _ = write!(line, " on {i}");
    }
    line
}

/// A forwarded socket-LB flow to 10.96.0.10:80 (tests of the history, filters and merging).
#[cfg(test)]
pub(crate) fn test_flow(node: &str, seq: u64, time_unix_ms: u64) -> Flow {
    Flow {
        seq,
        time_unix_ms,
        node: node.into(),
        kind: "sock-lb".into(),
        verdict: "FORWARDED".into(),
        drop_reason: None,
        protocol: "TCP".into(),
        source_ip: None,
        source_port: None,
        destination_ip: "10.96.0.10".into(),
        destination_port: 80,
        translated_ip: None,
        translated_port: None,
        service: None,
        interface: None,
        tcp_flags: Vec::new(),
        snat: false,
        socket_cookie: None,
        traffic_direction: "egress".into(),
        source_pod: None,
        source_labels: Vec::new(),
        destination_pod: None,
        destination_labels: Vec::new(),
        l2_event: None,
        l2_previous_owner: None,
        l2_failover_ms: None,
        is_reply: Some(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: [u8; 4]) -> [u32; 4] {
        [u32::from_be_bytes(a).to_be(), 0, 0, 0]
    }

    #[test]
    fn a_socket_lb_translation_decodes_to_its_service_frontend_and_backend() {
        let ev = FlowEvent {
            ts_ns: 5_000_000,
            daddr: v4([10, 96, 0, 10]),
            xaddr: v4([10, 244, 0, 5]),
            dport: 80u16.to_be(),
            xport: 8080u16.to_be(),
            kind: FLOW_KIND_SOCK_LB,
            proto: PROTO_TCP,
            family: FAMILY_V4,
            cookie: 42,
            ..FlowEvent::default()
        };
        let f = decode(&ev, 7, "node1", 1_700_000_000_000_000_000, |_| None);
        assert_eq!(f.seq, 7);
        assert_eq!(f.time_unix_ms, 1_700_000_000_005);
        assert_eq!(
            (f.kind.as_str(), f.verdict.as_str()),
            ("sock-lb", "FORWARDED")
        );
        assert_eq!((f.source_ip.as_deref(), f.source_port), (None, None));
        assert_eq!(
            (f.destination_ip.as_str(), f.destination_port),
            ("10.96.0.10", 80)
        );
        assert_eq!(f.translated_ip.as_deref(), Some("10.244.0.5"));
        assert_eq!(f.translated_port, Some(8080));
        assert_eq!(f.socket_cookie, Some(42));
        assert_eq!(
            compact(&f, "12:00:00.000"),
            "12:00:00.000 node1 sock-lb: socket -> 10.96.0.10:80 => 10.244.0.5:8080 TCP FORWARDED"
        );
        assert_eq!(f.traffic_direction, "egress");
        // With the backend's pod known, the pod is shown instead of its address.
        let mut f = f;
        f.destination_pod = Some("default/web-1".into());
        f.service = Some("default/web".into());
        assert_eq!(
            compact(&f, "t"),
            "t node1 sock-lb: socket -> 10.96.0.10:80 (default/web) => default/web-1:8080 TCP FORWARDED"
        );
    }

    #[test]
    fn a_north_south_drop_and_an_ipv6_masquerade_decode() {
        let ev = FlowEvent {
            saddr: v4([192, 168, 1, 9]),
            daddr: v4([10, 20, 30, 100]),
            sport: 40000u16.to_be(),
            dport: 443u16.to_be(),
            kind: FLOW_KIND_NORTH_SOUTH,
            reason: FLOW_DROP_SOURCE_RANGE,
            proto: PROTO_TCP,
            family: FAMILY_V4,
            tcp_flags: 0x02,
            ifindex: 3,
            ..FlowEvent::default()
        };
        let f = decode(&ev, 1, "n", 0, |i| Some(format!("eth{i}")));
        assert_eq!(f.verdict, "DROPPED");
        assert_eq!(f.drop_reason.as_deref(), Some("source-range"));
        assert_eq!(f.source_ip.as_deref(), Some("192.168.1.9"));
        assert_eq!(f.source_port, Some(40000));
        assert_eq!(f.translated_ip, None);
        assert_eq!(f.tcp_flags, ["SYN"]);
        assert_eq!(f.interface.as_deref(), Some("eth3"));
        assert!(compact(&f, "t").ends_with("TCP DROPPED (source-range) [SYN] on eth3"));
        assert_eq!(f.traffic_direction, "ingress");
        assert_eq!(f.is_reply, Some(false), "a refused SYN opens nothing");
        // A segment the LB has no state for: a SYN-ACK answers a SYN it never saw; a bare
        // ACK may be either way.
        let stray = |flags| {
            decode(
                &FlowEvent {
                    reason: FLOW_DROP_INVALID,
                    tcp_flags: flags,
                    ..ev
                },
                1,
                "n",
                0,
                |_| None,
            )
            .is_reply
        };
        assert_eq!(stray(0x12), Some(true));
        assert_eq!(stray(0x10), None);
        let l2 = FlowEvent {
            kind: FLOW_KIND_L2,
            ..FlowEvent::default()
        };
        assert_eq!(decode(&l2, 1, "n", 0, |_| None).is_reply, None);

        let pod: Ipv6Addr = "fd00:10:244::5".parse().unwrap();
        let node: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let words = |a: Ipv6Addr| {
            let o = a.octets();
            let mut w = [0u32; 4];
            for (i, c) in o.chunks(4).enumerate() {
                w[i] = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
            }
            w
        };
        let ev = FlowEvent {
            saddr: words(pod),
            daddr: words("2001:db8:100::10".parse().unwrap()),
            xaddr: words(node),
            sport: 5555u16.to_be(),
            dport: 53u16.to_be(),
            xport: 61234u16.to_be(),
            kind: FLOW_KIND_MASQUERADE,
            proto: PROTO_UDP,
            family: 6,
            ..FlowEvent::default()
        };
        let mut f = decode(&ev, 2, "n", 0, |_| None);
        assert_eq!(f.traffic_direction, "egress");
        assert_eq!(f.source_ip.as_deref(), Some("fd00:10:244::5"));
        assert_eq!(f.translated_ip.as_deref(), Some("2001:db8::1"));
        assert!(
            compact(&f, "t").contains(
                "[fd00:10:244::5]:5555 -> [2001:db8:100::10]:53 as [2001:db8::1]:61234 UDP"
            ),
            "{}",
            compact(&f, "t")
        );
        // A masquerade's pods: the source, and a destination pod by its own address.
        f.source_pod = Some("default/client".into());
        f.destination_pod = Some("kube-system/dns".into());
        assert!(
            compact(&f, "t")
                .contains("default/client:5555 -> kube-system/dns:53 as [2001:db8::1]:61234 UDP"),
            "{}",
            compact(&f, "t")
        );
    }
}
