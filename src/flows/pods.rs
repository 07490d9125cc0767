//! Which pod an address of a flow belongs to: an index of the model's pods by IP, built once
//! per snapshot (not per flow), that fills in a [`Flow`]'s `source_pod` / `destination_pod`
//! and their labels when the API serves it.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use super::Flow;
use crate::model::{EndpointSlice, Pod, PodPhase, ServiceName};

/// A pod as flows show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRef {
    /// `namespace/name`.
    pub name: String,
    /// `k=v`, sorted.
    pub labels: Vec<String>,
    running: bool,
}

/// The model's pods by address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodIndex {
    by_ip: HashMap<IpAddr, PodRef>,
}

impl PodIndex {
    /// Indexes every pod's addresses. Host-network pods are left out (their addresses are the
    /// node's), and so are finished pods (their addresses are free for others); when two pods
    /// claim one address (a pod being replaced), a running one wins, then the first by name.
    /// Endpoints whose `targetRef` is a pod name the addresses no pod of the model holds (a pod
    /// the source has not delivered yet), without labels.
    #[must_use]
    pub fn build(
        pods: &BTreeMap<ServiceName, Pod>,
        slices: &BTreeMap<ServiceName, EndpointSlice>,
    ) -> Self {
        let mut by_ip: HashMap<IpAddr, PodRef> = HashMap::new();
        for pod in pods.values() {
            if pod.host_network || matches!(pod.phase, PodPhase::Succeeded | PodPhase::Failed) {
                continue;
            }
            // BTreeMap iteration: already sorted by key, and `k=v` sorts as (k, v) does
            // except where a key is a prefix of another; sort the strings to be exact.
            let mut labels: Vec<String> =
                pod.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort_unstable();
            let entry = PodRef {
                name: pod.name.to_string(),
                labels,
                running: pod.phase == PodPhase::Running,
            };
            for ip in &pod.ips {
                match by_ip.get(ip) {
                    Some(held) if held.running || !entry.running => {}
                    _ => {
                        by_ip.insert(*ip, entry.clone());
                    }
                }
            }
        }
        for ep in slices.values().flat_map(|s| &s.endpoints) {
            let Some(pod) = &ep.pod else { continue };
            for ip in &ep.addresses {
                by_ip.entry(*ip).or_insert_with(|| PodRef {
                    name: pod.to_string(),
                    labels: Vec::new(),
                    running: false,
                });
            }
        }
        Self { by_ip }
    }

    #[must_use]
    pub fn get(&self, ip: IpAddr) -> Option<&PodRef> {
        self.by_ip.get(&ip)
    }

    fn lookup(&self, ip: Option<&str>) -> Option<&PodRef> {
        ip.and_then(|t| t.parse().ok()).and_then(|ip| self.get(ip))
    }

    /// Fills in the flow's pods: the source by its address; the destination by the translated
    /// address when there is one (the backend), except for masquerade, whose translated
    /// address is the node's (there the destination is the original one).
    pub fn enrich(&self, f: &mut Flow) {
        if let Some(p) = self.lookup(f.source_ip.as_deref()) {
            f.source_pod = Some(p.name.clone());
            f.source_labels.clone_from(&p.labels);
        }
        let dst = match (&f.translated_ip, f.kind.as_str()) {
            (Some(x), k) if k != "masquerade" => x.as_str(),
            _ => f.destination_ip.as_str(),
        };
        if let Some(p) = self.lookup(Some(dst)) {
            f.destination_pod = Some(p.name.clone());
            f.destination_labels.clone_from(&p.labels);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str, ips: &[&str], phase: PodPhase, labels: &[(&str, &str)]) -> Pod {
        Pod {
            name: ServiceName {
                namespace: ns.into(),
                name: name.into(),
            },
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            named_ports: Vec::new(),
            node_name: Some("n1".into()),
            ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
            host_network: false,
            phase,
        }
    }

    fn index(pods: Vec<Pod>) -> PodIndex {
        let pods = pods.into_iter().map(|p| (p.name.clone(), p)).collect();
        PodIndex::build(&pods, &BTreeMap::new())
    }

    #[test]
    fn endpoints_name_the_pods_of_other_nodes_without_labels() {
        let ep = |ip: &str, pod: Option<&str>| crate::model::Endpoint {
            addresses: vec![ip.parse().unwrap()],
            ready: true,
            serving: true,
            terminating: false,
            node_name: Some("n2".into()),
            pod: pod.map(|p| ServiceName::new("default", p)),
        };
        let slice = EndpointSlice {
            name: ServiceName::new("default", "web-abc"),
            service: ServiceName::new("default", "web"),
            ports: Vec::new(),
            endpoints: vec![
                ep("10.244.1.5", Some("web-remote")),
                ep("10.244.0.5", Some("stale-name")),
                ep("10.244.1.6", None),
            ],
        };
        let slices = BTreeMap::from([(slice.name.clone(), slice)]);
        let local = pod(
            "default",
            "web-1",
            &["10.244.0.5"],
            PodPhase::Running,
            &[("app", "web")],
        );
        let pods = BTreeMap::from([(local.name.clone(), local)]);
        let idx = PodIndex::build(&pods, &slices);
        let remote = idx.get("10.244.1.5".parse().unwrap()).unwrap();
        assert_eq!(remote.name, "default/web-remote");
        assert!(remote.labels.is_empty());
        // A pod of the model wins over an endpoint's reference (it has the labels).
        let here = idx.get("10.244.0.5".parse().unwrap()).unwrap();
        assert_eq!(
            (here.name.as_str(), here.labels.len()),
            ("default/web-1", 1)
        );
        assert_eq!(idx.get("10.244.1.6".parse().unwrap()), None, "no targetRef");
    }

    #[test]
    fn every_address_of_a_live_pod_is_indexed_with_sorted_labels() {
        let mut host = pod(
            "kube-system",
            "proxy",
            &["192.168.1.2"],
            PodPhase::Running,
            &[],
        );
        host.host_network = true;
        let idx = index(vec![
            pod(
                "default",
                "web-1",
                &["10.244.0.5", "fd00:10:244::5"],
                PodPhase::Running,
                &[
                    ("app", "web"),
                    ("app.kubernetes.io/name", "web"),
                    ("tier", "front"),
                ],
            ),
            pod(
                "default",
                "pending",
                &["10.244.0.6"],
                PodPhase::Pending,
                &[],
            ),
            pod("default", "done", &["10.244.0.7"], PodPhase::Succeeded, &[]),
            pod("default", "broken", &["10.244.0.8"], PodPhase::Failed, &[]),
            host,
        ]);
        let web = idx.get("fd00:10:244::5".parse().unwrap()).unwrap();
        assert_eq!(web.name, "default/web-1");
        assert_eq!(
            web.labels,
            ["app.kubernetes.io/name=web", "app=web", "tier=front"]
        );
        assert_eq!(idx.get("10.244.0.5".parse().unwrap()), Some(web));
        assert_eq!(
            idx.get("10.244.0.6".parse().unwrap()).unwrap().name,
            "default/pending"
        );
        for gone in ["10.244.0.7", "10.244.0.8", "192.168.1.2"] {
            assert_eq!(idx.get(gone.parse().unwrap()), None, "{gone}");
        }
        assert_eq!(idx.by_ip.len(), 3);
    }

    #[test]
    fn a_running_pod_wins_an_address_over_one_that_is_not() {
        for order in [["a-old", "b-new"], ["b-old", "a-new"]] {
            let idx = index(vec![
                pod("ns", order[0], &["10.244.0.9"], PodPhase::Pending, &[]),
                pod("ns", order[1], &["10.244.0.9"], PodPhase::Running, &[]),
            ]);
            let got = &idx.get("10.244.0.9".parse().unwrap()).unwrap().name;
            assert_eq!(got, &format!("ns/{}", order[1]));
        }
    }

    #[test]
    fn the_destination_pod_is_the_backend_except_for_masquerade() {
        let idx = index(vec![
            pod(
                "default",
                "client",
                &["10.244.0.3"],
                PodPhase::Running,
                &[("app", "cli")],
            ),
            pod(
                "default",
                "web-1",
                &["10.244.0.5"],
                PodPhase::Running,
                &[("app", "web")],
            ),
        ]);
        let mut ns = crate::flows::test_flow("n", 1, 1);
        ns.kind = "north-south".into();
        ns.source_ip = Some("10.244.0.3".into());
        ns.destination_ip = "10.20.30.100".into();
        ns.translated_ip = Some("10.244.0.5".into());
        idx.enrich(&mut ns);
        assert_eq!(ns.source_pod.as_deref(), Some("default/client"));
        assert_eq!(ns.source_labels, ["app=cli"]);
        assert_eq!(ns.destination_pod.as_deref(), Some("default/web-1"));
        assert_eq!(ns.destination_labels, ["app=web"]);

        // Masquerade: the pod is the source; the translated address is the node's.
        let mut masq = crate::flows::test_flow("n", 2, 2);
        masq.kind = "masquerade".into();
        masq.source_ip = Some("10.244.0.3".into());
        masq.destination_ip = "10.244.0.5".into();
        masq.translated_ip = Some("192.168.1.2".into());
        idx.enrich(&mut masq);
        assert_eq!(masq.source_pod.as_deref(), Some("default/client"));
        assert_eq!(masq.destination_pod.as_deref(), Some("default/web-1"));

        // Not translated (a drop): the destination address itself; no source (socket LB).
        let mut drop = crate::flows::test_flow("n", 3, 3);
        drop.destination_ip = "10.244.0.5".into();
        idx.enrich(&mut drop);
        assert_eq!(drop.source_pod, None);
        assert!(drop.source_labels.is_empty());
        assert_eq!(drop.destination_pod.as_deref(), Some("default/web-1"));

        let mut none = crate::flows::test_flow("n", 4, 4);
        PodIndex::default().enrich(&mut none);
        assert_eq!(none, crate::flows::test_flow("n", 4, 4));
    }
}
