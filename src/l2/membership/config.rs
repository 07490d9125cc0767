//! Settings of the membership service: who this node is, where it listens, whom it asks to
//! join, and the failure-detector timing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use smol_str::SmolStr;

use super::MembershipError;
use super::auth::Key;
use crate::l2::ownership::NodeName;
use crate::model::Node;

/// UDP port of the membership protocol (memberlist's, which MetalLB also uses).
pub const DEFAULT_PORT: u16 = 7946;
/// Default cluster name: agents only listen to agents of the same cluster name.
pub const DEFAULT_CLUSTER: &str = "ferrite";

/// Failure-detector timing. The defaults target a LAN: a crashed, frozen or cut-off member is
/// declared dead after about 0.5 s (median) and at most about 1.2 s.
///
/// Detection time ≈ wait until someone probes it (a member probes one peer per
/// `probe_interval`, round robin) + `probe_interval` (direct ping, then `indirect_probes`
/// relays after `ack_timeout`) + suspicion timeout. The suspicion timeout starts at
/// `suspicion_max` and shrinks towards `suspicion_min` as other members independently confirm the
/// suspicion (Lifeguard); with nobody left to confirm it is `suspicion_min`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timing {
    pub probe_interval: Duration,
    /// How long to wait for a direct ack before asking relays.
    pub ack_timeout: Duration,
    /// Relays asked to probe an unresponsive member (SWIM's ping-req `k`).
    pub indirect_probes: usize,
    pub suspicion_min: Duration,
    pub suspicion_max: Duration,
    /// Independent confirmations that bring the suspicion timeout down to `suspicion_min`.
    pub confirmations: usize,
    /// Full-state exchange with one random live member (anti-entropy).
    pub sync_interval: Duration,
    /// Full-state exchange with every seed that is not a live member and every dead member:
    /// joins, rejoins after a restart, and merges both sides of a healed partition.
    pub rejoin_interval: Duration,
    /// Dead and departed members stay in the table (and the view) this long.
    pub dead_retention: Duration,
    /// A record is piggybacked `retransmit_mult × ⌈log2(live members + 1)⌉` times.
    pub retransmit_mult: u32,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            probe_interval: Duration::from_millis(100),
            ack_timeout: Duration::from_millis(40),
            indirect_probes: 3,
            suspicion_min: Duration::from_millis(300),
            suspicion_max: Duration::from_millis(900),
            confirmations: 3,
            sync_interval: Duration::from_secs(2),
            rejoin_interval: Duration::from_secs(1),
            dead_retention: Duration::from_mins(1),
            retransmit_mult: 3,
        }
    }
}

impl Timing {
    /// Scales every protocol period from a probe interval and a minimum suspicion timeout
    /// (the rest keeps the default ratios).
    #[must_use]
    pub fn scaled(probe_interval: Duration, suspicion_min: Duration) -> Self {
        Self {
            probe_interval,
            ack_timeout: probe_interval * 2 / 5,
            suspicion_min,
            suspicion_max: suspicion_min * 3,
            ..Self::default()
        }
    }

    pub fn validate(&self) -> Result<(), MembershipError> {
        let bad = |what: &'static str| Err(MembershipError::BadTiming(what));
        if self.probe_interval < Duration::from_millis(10) {
            return bad("the probe interval must be at least 10 ms");
        }
        if self.ack_timeout.is_zero() || self.ack_timeout >= self.probe_interval {
            return bad("the ack timeout must be shorter than the probe interval");
        }
        if self.suspicion_min < self.probe_interval || self.suspicion_max < self.suspicion_min {
            return bad("the suspicion timeouts need probe interval ≤ minimum ≤ maximum");
        }
        if self.sync_interval.is_zero() || self.rejoin_interval.is_zero() {
            return bad("the sync and rejoin intervals must be positive");
        }
        if self.dead_retention < self.suspicion_max {
            return bad("dead members must be kept at least as long as the suspicion timeout");
        }
        if self.retransmit_mult == 0 {
            return bad("records must be retransmitted at least once");
        }
        Ok(())
    }

    /// How long a queued record may still be piggybacked.
    pub(super) fn gossip_ttl(&self) -> Duration {
        (self.probe_interval * 20).max(self.suspicion_max)
    }
}

/// How to run the membership service on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipConfig {
    /// The member name: the Kubernetes node name (at most 255 bytes).
    pub node_name: NodeName,
    /// The node's address on the announcing network and the UDP port (port 0 picks one, for
    /// tests). Must be a specific address: it is what other members probe.
    pub bind: SocketAddr,
    /// Where to ask to join: `--l2-peers`, or the other nodes' InternalIPs. This node's own
    /// address may be listed (it is skipped).
    pub seeds: Vec<SocketAddr>,
    /// Agents of different clusters on one LAN ignore each other.
    pub cluster: SmolStr,
    pub timing: Timing,
    /// Eligibility to advertise from the start.
    pub eligible: BTreeSet<IpAddr>,
    /// The cluster key every datagram is authenticated with.
    pub key: Key,
}

impl MembershipConfig {
    pub fn new(node_name: impl Into<NodeName>, bind: SocketAddr, key: Key) -> Self {
        Self {
            node_name: node_name.into(),
            bind,
            seeds: Vec::new(),
            cluster: SmolStr::new_static(DEFAULT_CLUSTER),
            timing: Timing::default(),
            eligible: BTreeSet::new(),
            key,
        }
    }

    pub fn validate(&self) -> Result<(), MembershipError> {
        if self.node_name.is_empty() || self.node_name.len() > usize::from(u8::MAX) {
            return Err(MembershipError::BadName(self.node_name.clone()));
        }
        if self.bind.ip().is_unspecified() {
            return Err(MembershipError::UnspecifiedBind(self.bind));
        }
        self.timing.validate()
    }
}

/// Parses `--l2-peers`: comma-separated `ip:port`, `[v6]:port`, or a bare address (then
/// [`DEFAULT_PORT`]).
pub fn parse_peers(list: &str) -> Result<Vec<SocketAddr>, MembershipError> {
    list.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<SocketAddr>()
                .or_else(|_| {
                    p.parse::<IpAddr>()
                        .map(|ip| SocketAddr::new(ip, DEFAULT_PORT))
                })
                .map_err(|_| MembershipError::BadPeer(p.to_owned()))
        })
        .collect()
}

/// Where the membership address came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindFrom {
    /// `--l2-bind`.
    Flag,
    /// This node's Node object, its first InternalIP.
    NodeInternalIp,
    /// The `HOST_IP` environment variable (the DaemonSet's downward API `status.hostIP`).
    HostIp,
}

impl BindFrom {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Flag => "--l2-bind",
            Self::NodeInternalIp => "Node InternalIP",
            Self::HostIp => "HOST_IP",
        }
    }
}

/// Why there is no membership address (yet).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoBind {
    #[error(
        "--l2-peers is set but there is no address to bind membership to: give --l2-bind, or a \
         Node object `{node}` with an InternalIP"
    )]
    PeersWithoutBind { node: String },
    #[error(
        "not bound: no Node object `{node}` with an InternalIP yet (nor HOST_IP, nor \
         --l2-bind); nothing is announced until membership is bound (a node deciding alone \
         needs --l2-standalone)"
    )]
    NoAddress { node: String },
}

/// The membership address: `--l2-bind`, else this node's first InternalIP (what the other
/// nodes use as their seed for it), else `HOST_IP`, on `port`.
pub fn choose_bind(
    flag: Option<SocketAddr>,
    host_ip: Option<IpAddr>,
    nodes: &BTreeMap<SmolStr, Node>,
    local: &str,
    port: u16,
    peers_given: bool,
) -> Result<(SocketAddr, BindFrom), NoBind> {
    if let Some(addr) = flag {
        return Ok((addr, BindFrom::Flag));
    }
    let internal = nodes
        .get(local)
        .and_then(|n| n.internal_ips.first().copied());
    if let Some(ip) = internal {
        return Ok((SocketAddr::new(ip, port), BindFrom::NodeInternalIp));
    }
    if let Some(ip) = host_ip.filter(|ip| !ip.is_unspecified()) {
        return Ok((SocketAddr::new(ip, port), BindFrom::HostIp));
    }
    let node = local.to_owned();
    Err(if peers_given {
        NoBind::PeersWithoutBind { node }
    } else {
        NoBind::NoAddress { node }
    })
}

/// Seeds from the Node objects of the model: each node's first InternalIP of `family`'s
/// family, at `port`, this node's own name excluded.
pub fn seeds_from_nodes(
    nodes: &BTreeMap<SmolStr, Node>,
    local: &str,
    family: IpAddr,
    port: u16,
) -> Vec<SocketAddr> {
    nodes
        .values()
        .filter(|n| n.name != local)
        .filter_map(|n| {
            n.internal_ips
                .iter()
                .find(|ip| ip.is_ipv4() == family.is_ipv4())
                .map(|ip| SocketAddr::new(*ip, port))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::from_bytes(&[9; 32])
    }

    #[test]
    fn default_and_scaled_timings_are_valid() {
        Timing::default().validate().unwrap();
        let t = Timing::scaled(Duration::from_millis(200), Duration::from_millis(600));
        t.validate().unwrap();
        assert_eq!(t.ack_timeout, Duration::from_millis(80));
        assert_eq!(t.suspicion_max, Duration::from_millis(1800));
        let mut bad = Timing::default();
        bad.ack_timeout = bad.probe_interval;
        assert!(matches!(bad.validate(), Err(MembershipError::BadTiming(_))));
        let bad = Timing {
            suspicion_max: Duration::from_millis(100),
            ..Timing::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn config_rejects_what_peers_could_not_reach() {
        let ok = MembershipConfig::new("n1", "10.0.0.1:7946".parse().unwrap(), key());
        ok.validate().unwrap();
        let any = MembershipConfig::new("n1", "0.0.0.0:7946".parse().unwrap(), key());
        assert!(matches!(
            any.validate(),
            Err(MembershipError::UnspecifiedBind(_))
        ));
        let long = MembershipConfig::new("x".repeat(256), "10.0.0.1:7946".parse().unwrap(), key());
        assert!(matches!(long.validate(), Err(MembershipError::BadName(_))));
    }

    #[test]
    fn peers_parse_with_default_port() {
        let peers = parse_peers(" 10.0.0.1:7000, 10.0.0.2 ,[fd00::3]:7946,fd00::4,").unwrap();
        let want: Vec<SocketAddr> = [
            "10.0.0.1:7000",
            "10.0.0.2:7946",
            "[fd00::3]:7946",
            "[fd00::4]:7946",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        assert_eq!(peers, want);
        assert!(
            matches!(parse_peers("10.0.0.1:x"), Err(MembershipError::BadPeer(p)) if p == "10.0.0.1:x")
        );
        assert!(parse_peers("").unwrap().is_empty());
    }

    fn nodes(list: &[(&str, &[&str])]) -> BTreeMap<SmolStr, Node> {
        list.iter()
            .map(|(name, ips)| {
                let n = Node {
                    name: (*name).into(),
                    internal_ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
                    ..Node::default()
                };
                (n.name.clone(), n)
            })
            .collect()
    }

    #[test]
    fn bind_defaults_to_this_nodes_internal_ip_then_host_ip() {
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        let ns = nodes(&[("a", &["10.0.0.1", "fd00::1"]), ("b", &["10.0.0.2"])]);
        let host: Option<IpAddr> = Some("10.9.9.9".parse().unwrap());
        // The flag wins.
        assert_eq!(
            choose_bind(Some(sa("10.0.0.7:7000")), host, &ns, "a", 7946, true),
            Ok((sa("10.0.0.7:7000"), BindFrom::Flag))
        );
        // The Node's first InternalIP (the address the others seed with) before HOST_IP.
        assert_eq!(
            choose_bind(None, host, &ns, "a", 7946, false),
            Ok((sa("10.0.0.1:7946"), BindFrom::NodeInternalIp))
        );
        // The Node has not arrived yet: HOST_IP.
        assert_eq!(
            choose_bind(None, host, &ns, "c", 7946, false),
            Ok((sa("10.9.9.9:7946"), BindFrom::HostIp))
        );
        // Nothing: wait, and say so; with --l2-peers it is a configuration error.
        let none = choose_bind(None, None, &ns, "c", 7946, false).unwrap_err();
        assert_eq!(none, NoBind::NoAddress { node: "c".into() });
        assert!(none.to_string().contains("--l2-standalone"), "{none}");
        let unspecified = Some("0.0.0.0".parse().unwrap());
        assert!(choose_bind(None, unspecified, &ns, "c", 7946, false).is_err());
        let peers = choose_bind(None, None, &ns, "c", 7946, true).unwrap_err();
        assert_eq!(peers, NoBind::PeersWithoutBind { node: "c".into() });
        assert!(peers.to_string().contains("--l2-bind"), "{peers}");
    }

    #[test]
    fn seeds_come_from_other_nodes_internal_ips_of_the_family() {
        let node = |name: &str, ips: &[&str]| Node {
            name: name.into(),
            internal_ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            ..Node::default()
        };
        let nodes: BTreeMap<SmolStr, Node> = [
            node("a", &["10.0.0.1", "fd00::1"]),
            node("b", &["fd00::2", "10.0.0.2"]),
            node("c", &["fd00::3"]),
        ]
        .into_iter()
        .map(|n| (n.name.clone(), n))
        .collect();
        let v4 = seeds_from_nodes(&nodes, "a", "10.0.0.1".parse().unwrap(), 7946);
        assert_eq!(v4, vec!["10.0.0.2:7946".parse::<SocketAddr>().unwrap()]);
        let v6 = seeds_from_nodes(&nodes, "a", "fd00::1".parse().unwrap(), 7000);
        assert_eq!(v6.len(), 2);
    }
}
