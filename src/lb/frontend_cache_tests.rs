//! [`FrontendCache`] along random walks: after every change it must give exactly what the full
//! [`frontends_with`] gives for the same snapshot.

use std::net::IpAddr;
use std::sync::Arc;

use super::*;
use crate::model::{Endpoint, EndpointPort, ServicePort, ServiceType, TrafficPolicy};

/// A small deterministic generator (xorshift64*), so failures replay.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        usize::try_from(x >> 33).unwrap() % n
    }
}

fn ip(a: usize, b: usize) -> IpAddr {
    IpAddr::from([10, 96, u8::try_from(a).unwrap(), u8::try_from(b).unwrap()])
}

fn service(i: usize, rng: &mut Rng) -> Service {
    Service {
        name: ServiceName::new("default", format!("s{i}")),
        service_type: ServiceType::ClusterIp,
        // Few addresses, so that services sometimes claim the same frontend.
        cluster_ips: vec![ip(0, rng.below(12))],
        ports: (0..=rng.below(2))
            .map(|p| ServicePort {
                name: format!("p{p}").into(),
                protocol: Protocol::Tcp,
                port: 80 + u16::try_from(p).unwrap(),
                target_port: TargetPort::Number(8080),
                node_port: None,
            })
            .collect(),
        session_affinity: if rng.below(4) == 0 {
            SessionAffinity::ClientIp {
                timeout_seconds: 30,
            }
        } else {
            SessionAffinity::None
        },
        internal_traffic_policy: if rng.below(3) == 0 {
            TrafficPolicy::Local
        } else {
            TrafficPolicy::Cluster
        },
        ..Service::default()
    }
}

fn slice(name: usize, service: usize, rng: &mut Rng) -> EndpointSlice {
    EndpointSlice {
        name: ServiceName::new("default", format!("e{name}")),
        service: ServiceName::new("default", format!("s{service}")),
        ports: vec![EndpointPort {
            name: "p0".into(),
            protocol: Protocol::Tcp,
            port: 8080,
        }],
        endpoints: (0..rng.below(4))
            .map(|_| Endpoint {
                addresses: vec![IpAddr::from([
                    10,
                    42,
                    0,
                    u8::try_from(rng.below(20)).unwrap(),
                ])],
                ready: rng.below(3) != 0,
                serving: true,
                terminating: rng.below(2) == 0,
                node_name: Some(if rng.below(2) == 0 { "node1" } else { "node2" }.into()),
                pod: None,
            })
            .collect(),
    }
}

#[test]
fn memoised_frontends_equal_the_full_computation_along_random_walks() {
    for seed in 1..=8_u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut snapshot = Snapshot::default();
        let mut extra: BTreeMap<ServiceName, Vec<IpAddr>> = BTreeMap::new();
        for i in 0..10 {
            let s = service(i, &mut rng);
            snapshot.services.insert(s.name.clone(), s);
            let e = slice(i, i, &mut rng);
            snapshot.endpoint_slices.insert(e.name.clone(), e);
        }
        let mut cache = FrontendCache::new("node1");
        for step in 0..300 {
            match rng.below(6) {
                // An endpoint change (the common event), possibly a new slice.
                0 | 1 => {
                    let e = slice(rng.below(14), rng.below(12), &mut rng);
                    snapshot.endpoint_slices.insert(e.name.clone(), e);
                }
                2 => {
                    let name = ServiceName::new("default", format!("e{}", rng.below(14)));
                    snapshot.endpoint_slices.remove(&name);
                }
                3 => {
                    let s = service(rng.below(12), &mut rng);
                    snapshot.services.insert(s.name.clone(), s);
                }
                4 => {
                    let name = ServiceName::new("default", format!("s{}", rng.below(12)));
                    snapshot.services.remove(&name);
                }
                _ => {
                    let name = ServiceName::new("default", format!("s{}", rng.below(12)));
                    if rng.below(2) == 0 {
                        extra.insert(name, vec![IpAddr::from([192, 0, 2, 1])]);
                    } else {
                        extra.remove(&name);
                    }
                }
            }
            // Sometimes the same snapshot again (a reconcile without a source change).
            let shared = Arc::new(snapshot.clone());
            let repeats = 1 + usize::from(rng.below(5) == 0);
            for _ in 0..repeats {
                assert_eq!(
                    cache.update(&shared, &extra),
                    frontends_with(&snapshot, &extra, "node1"),
                    "seed {seed}, step {step}"
                );
            }
        }
    }
}
