//! Masquerade of pods' traffic leaving the cluster (model → plan; the eBPF side is
//! `bpf/ebpf/src/masq.rs`, the map writer `datapath::MasqMaps`).
//!
//! The cluster's pod CIDRs are every Node's `pod_cidrs` in the snapshot plus this node's
//! `--pod-cidr`: a packet from one of them to anything outside them and outside
//! `--masquerade-exclude` leaves the external device with the device's address. The plan is the
//! difference between the two CIDR sets wanted and the two the maps hold.

use std::collections::BTreeSet;

use ipnet::IpNet;

use crate::model::Snapshot;

/// `--masquerade` and `--masquerade-exclude`, and this node's `--pod-cidr`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MasqConfig {
    pub enabled: bool,
    pub exclude: Vec<IpNet>,
    /// This node's pod CIDRs from the command line (the snapshot may not have its Node).
    pub own_pod_cidrs: Vec<IpNet>,
}

/// The content of the masquerade's two LPM maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MasqSets {
    /// Pod CIDRs: sources to masquerade, destinations never masqueraded.
    pub pods: BTreeSet<IpNet>,
    /// Destinations never masqueraded.
    pub exclude: BTreeSet<IpNet>,
}

/// Map operations turning one [`MasqSets`] into another. Additions come first: a CIDR that
/// moves (e.g. a prefix change) is never missing from the maps in between.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MasqPlan {
    pub add_pods: Vec<IpNet>,
    pub add_exclude: Vec<IpNet>,
    pub delete_pods: Vec<IpNet>,
    pub delete_exclude: Vec<IpNet>,
}

impl MasqPlan {
    pub fn op_count(&self) -> usize {
        self.add_pods.len()
            + self.add_exclude.len()
            + self.delete_pods.len()
            + self.delete_exclude.len()
    }
}

impl MasqSets {
    /// Applies `plan` (after the maps took it).
    pub fn apply(&mut self, plan: &MasqPlan) {
        self.pods.extend(plan.add_pods.iter().copied());
        self.exclude.extend(plan.add_exclude.iter().copied());
        for c in &plan.delete_pods {
            self.pods.remove(c);
        }
        for c in &plan.delete_exclude {
            self.exclude.remove(c);
        }
    }
}

/// What the maps should hold for `snapshot`: nothing at all when masquerading is off (no
/// source is a pod, so nothing is translated; replies of flows already translated still are).
pub fn desired(snapshot: &Snapshot, cfg: &MasqConfig) -> MasqSets {
    if !cfg.enabled {
        return MasqSets::default();
    }
    let pods = snapshot
        .nodes
        .values()
        .flat_map(|n| n.pod_cidrs.iter())
        .chain(&cfg.own_pod_cidrs)
        .map(IpNet::trunc)
        .collect();
    // Other nodes route the PodCIDRs (ferrite's routing), so pod traffic to a node keeps the pod
    // address — also the replies of flows a node opened to a pod (a NodePort SNATed on another
    // node, a host process, kubelet probes), which a masquerade would break.
    let nodes = snapshot
        .nodes
        .values()
        .flat_map(|n| n.internal_ips.iter())
        .map(|ip| IpNet::from(*ip));
    let exclude = cfg.exclude.iter().map(IpNet::trunc).chain(nodes).collect();
    MasqSets { pods, exclude }
}

/// The operations from `current` to `want`.
pub fn plan(want: &MasqSets, current: &MasqSets) -> MasqPlan {
    let diff = |a: &BTreeSet<IpNet>, b: &BTreeSet<IpNet>| a.difference(b).copied().collect();
    MasqPlan {
        add_pods: diff(&want.pods, &current.pods),
        add_exclude: diff(&want.exclude, &current.exclude),
        delete_pods: diff(&current.pods, &want.pods),
        delete_exclude: diff(&current.exclude, &want.exclude),
    }
}

/// A comma-separated CIDR list (`--masquerade-exclude`, `--pod-cidr`); host bits are cleared.
pub fn parse_cidr_list(flag: &str, text: &str) -> Result<Vec<IpNet>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .map(|n| n.trunc())
                .map_err(|e| format!("{flag} {s:?}: {e} (expected CIDRs like 10.0.0.0/8,fd00::/8)"))
        })
        .collect()
}

/// `--masquerade on|off`.
pub fn parse_switch(text: &str) -> Result<bool, String> {
    match text {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        other => Err(format!("--masquerade {other:?}: expected on or off")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Node;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn snapshot(nodes: &[(&str, &[&str])]) -> Snapshot {
        let mut s = Snapshot::default();
        for (name, cidrs) in nodes {
            s.nodes.insert(
                (*name).into(),
                Node {
                    name: (*name).into(),
                    pod_cidrs: cidrs.iter().map(|c| net(c)).collect(),
                    ..Node::default()
                },
            );
        }
        s
    }

    fn on(own: &[&str], exclude: &[&str]) -> MasqConfig {
        MasqConfig {
            enabled: true,
            exclude: exclude.iter().map(|c| net(c)).collect(),
            own_pod_cidrs: own.iter().map(|c| net(c)).collect(),
        }
    }

    #[test]
    fn every_nodes_pod_cidrs_and_the_flag_are_pod_cidrs() {
        let s = snapshot(&[
            ("n1", &["10.244.1.0/24", "fd00:244:1::/64"]),
            ("n2", &["10.244.2.0/24"]),
        ]);
        let want = desired(
            &s,
            &on(&["10.244.1.0/24", "10.244.9.7/24"], &["192.168.0.0/16"]),
        );
        let pods: Vec<String> = want.pods.iter().map(ToString::to_string).collect();
        assert_eq!(
            pods,
            [
                "10.244.1.0/24",
                "10.244.2.0/24",
                "10.244.9.0/24",
                "fd00:244:1::/64"
            ]
        );
        assert_eq!(want.exclude, BTreeSet::from([net("192.168.0.0/16")]));
        let mut s = s;
        s.nodes.get_mut("n2").unwrap().internal_ips = vec!["192.0.2.2".parse().unwrap()];
        let want = desired(&s, &on(&[], &[]));
        assert_eq!(
            want.exclude,
            BTreeSet::from([net("192.0.2.2/32")]),
            "traffic to a node is never masqueraded"
        );
    }

    #[test]
    fn off_wants_nothing() {
        let s = snapshot(&[("n1", &["10.244.1.0/24"])]);
        let mut cfg = on(&["10.244.1.0/24"], &["10.0.0.0/8"]);
        cfg.enabled = false;
        assert_eq!(desired(&s, &cfg), MasqSets::default());
    }

    #[test]
    fn plan_is_the_difference_and_applying_it_reaches_the_target() {
        let current = desired(
            &snapshot(&[("n1", &["10.244.1.0/24"]), ("n2", &["10.244.2.0/24"])]),
            &on(&[], &["10.0.0.0/8"]),
        );
        let want = desired(
            &snapshot(&[("n1", &["10.244.1.0/24"]), ("n3", &["10.244.3.0/24"])]),
            &on(&[], &["172.16.0.0/12"]),
        );
        let p = plan(&want, &current);
        assert_eq!(p.add_pods, [net("10.244.3.0/24")]);
        assert_eq!(p.delete_pods, [net("10.244.2.0/24")]);
        assert_eq!(p.add_exclude, [net("172.16.0.0/12")]);
        assert_eq!(p.delete_exclude, [net("10.0.0.0/8")]);
        assert_eq!(p.op_count(), 4);
        let mut state = current;
        state.apply(&p);
        assert_eq!(state, want);
        assert_eq!(plan(&want, &state), MasqPlan::default());
    }

    #[test]
    fn cidr_lists_parse_or_say_what_is_wrong() {
        assert_eq!(
            parse_cidr_list("--masquerade-exclude", " 10.1.2.3/8, fd00::1/8 ,").unwrap(),
            [net("10.0.0.0/8"), net("fd00::/8")]
        );
        assert!(
            parse_cidr_list("--masquerade-exclude", "")
                .unwrap()
                .is_empty()
        );
        let e = parse_cidr_list("--masquerade-exclude", "10.0.0.0/8,nope").unwrap_err();
        assert!(e.starts_with("--masquerade-exclude \"nope\""), "{e}");
        assert_eq!(parse_switch("on"), Ok(true));
        assert_eq!(parse_switch("off"), Ok(false));
        assert!(parse_switch("maybe").is_err());
    }
}
