//! Property tests: random pools and services in a small address space (so that pools overlap,
//! requests collide and pools run out), checked against independent, naive rules.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use proptest::{prelude::*, sample::select};
use smol_str::SmolStr;

use super::{block, lb, port, with_annotation};
use crate::lbipam::{Allocation, allocate};
use crate::model::{
    IpBlock, IpFamily, IpFamilyPolicy, IpPool, LabelRequirement, LabelSelector, Protocol,
    SERVICE_NAME_LABEL, SERVICE_NAMESPACE_LABEL, Service, ServiceName, TrafficPolicy,
};

const KEY: &str = "ferrite.dev/sharing-key";

/// An address in 10.0.0.0/27 or fd00::/123 (32 addresses each).
fn address(v6: bool, offset: u8) -> String {
    if v6 {
        format!("fd00::{offset:x}")
    } else {
        format!("10.0.0.{offset}")
    }
}

fn block_strategy() -> impl Strategy<Value = IpBlock> {
    let cidr = (any::<bool>(), 0u8..32, 27u8..=32).prop_map(|(v6, offset, v4_prefix)| {
        let prefix = if v6 { v4_prefix + 96 } else { v4_prefix };
        block(&format!("{}/{prefix}", address(v6, offset)))
    });
    let range = (any::<bool>(), 0u8..32, 0u8..32).prop_map(|(v6, a, b)| {
        block(&format!(
            "{}-{}",
            address(v6, a.min(b)),
            address(v6, a.max(b))
        ))
    });
    prop_oneof![cidr, range]
}

fn selector_strategy() -> impl Strategy<Value = Option<LabelSelector>> {
    prop_oneof![
        3 => Just(None),
        1 => select(vec!["a", "b"]).prop_map(|tier| Some(LabelSelector {
            match_labels: [("tier".into(), tier.into())].into(),
            ..LabelSelector::default()
        })),
        1 => select(vec!["x", "y"]).prop_map(|ns| Some(LabelSelector {
            match_expressions: vec![
                LabelRequirement::new(SERVICE_NAMESPACE_LABEL, "NotIn", vec![ns.into()]).unwrap()
            ],
            ..LabelSelector::default()
        })),
    ]
}

fn pools_strategy() -> impl Strategy<Value = Vec<IpPool>> {
    let pool = (
        prop::collection::vec(block_strategy(), 1..3),
        selector_strategy(),
        any::<bool>(),
        prop::bool::weighted(0.15),
        -1i32..=1,
        prop::option::of(1i64..4),
    );
    prop::collection::vec(pool, 0..5).prop_map(|pools| {
        pools
            .into_iter()
            .enumerate()
            .map(
                |(i, (blocks, selector, allow, disabled, priority, created))| IpPool {
                    name: SmolStr::new(format!("pool{i}")),
                    created_unix: created,
                    blocks,
                    service_selector: selector,
                    allow_first_last_ips: allow,
                    disabled,
                    priority,
                    problems: Vec::new(),
                },
            )
            .collect()
    })
}

/// Raw parts of one random service.
type ServiceParts = (
    (bool, u8, prop::sample::Index, u8, bool),
    (Option<(bool, u8)>, Option<&'static str>, u8),
    (bool, Vec<(bool, u8)>, Option<i64>),
);

fn services_strategy() -> impl Strategy<Value = Vec<Service>> {
    let one = (
        (
            any::<bool>(),
            0u8..3,
            any::<prop::sample::Index>(),
            1u8..8,
            any::<bool>(),
        ),
        (
            prop::option::weighted(0.3, (any::<bool>(), 0u8..34)),
            prop::option::weighted(0.5, select(vec!["k1", "k2"])),
            0u8..4,
        ),
        (
            any::<bool>(),
            prop::collection::vec((any::<bool>(), 0u8..32), 0..2),
            prop::option::of(1i64..4),
        ),
    );
    prop::collection::vec(one, 0..14).prop_map(|parts| {
        parts
            .into_iter()
            .enumerate()
            .map(|(i, part): (usize, ServiceParts)| service(i, part))
            .collect()
    })
}

fn service(i: usize, raw: ServiceParts) -> Service {
    let (
        (in_x, tier, policy, ports, local),
        (request, key, families),
        (v6_first, ingress, created),
    ) = raw;
    let mut s = lb(&format!("s{i:02}"));
    s.name.namespace = SmolStr::new(if in_x { "x" } else { "y" });
    if tier > 0 {
        s.labels
            .insert("tier".into(), if tier == 1 { "a" } else { "b" }.into());
    }
    s.ip_family_policy = *policy.get(&[
        IpFamilyPolicy::SingleStack,
        IpFamilyPolicy::PreferDualStack,
        IpFamilyPolicy::RequireDualStack,
    ]);
    s.ip_families = match families {
        0 => vec![],
        1 => vec![IpFamily::V4],
        2 => vec![IpFamily::V6],
        _ => vec![IpFamily::V6, IpFamily::V4],
    };
    let all = [
        (Protocol::Tcp, 80),
        (Protocol::Tcp, 443),
        (Protocol::Udp, 53),
    ];
    s.ports = all
        .iter()
        .enumerate()
        .filter(|(bit, _)| ports & (1 << bit) != 0)
        .map(|(_, &(protocol, number))| port(protocol, number))
        .collect();
    if local {
        s.external_traffic_policy = TrafficPolicy::Local;
    }
    if let Some((v6, offset)) = request {
        s = with_annotation(s, "ferrite.dev/ips", &address(v6 ^ v6_first, offset));
    }
    if let Some(key) = key {
        s = with_annotation(s, KEY, key);
    }
    s.status_ingress = ingress
        .into_iter()
        .map(|(v6, offset)| address(v6, offset).parse().unwrap())
        .collect();
    s.created_unix = created;
    s
}

fn previous_strategy() -> impl Strategy<Value = BTreeMap<ServiceName, Vec<IpAddr>>> {
    prop::collection::btree_map(
        (0usize..14, any::<bool>()).prop_map(|(i, in_x)| {
            ServiceName::new(if in_x { "x" } else { "y" }, format!("s{i:02}"))
        }),
        prop::collection::vec(
            (any::<bool>(), 0u8..32).prop_map(|(v6, o)| address(v6, o).parse().unwrap()),
            0..3,
        ),
        0..6,
    )
}

/// Naive: may these two services hold the same address?
fn compatible(a: &Service, b: &Service) -> bool {
    let key = |s: &Service| s.annotations.get(KEY).cloned();
    let ports =
        |s: &Service| -> BTreeSet<_> { s.ports.iter().map(|p| (p.protocol, p.port)).collect() };
    key(a).is_some()
        && key(a) == key(b)
        && a.external_traffic_policy == b.external_traffic_policy
        && ports(a).is_disjoint(&ports(b))
}

/// Naive: is `ip` a usable address of `block` under `allow`?
fn usable_in(block: &IpBlock, allow: bool, ip: IpAddr) -> bool {
    let (first, last) = block.bounds();
    if block.family() != IpFamily::of(ip) || ip < first || ip > last {
        return false;
    }
    match block {
        IpBlock::Range { .. } => true,
        IpBlock::Cidr(net) => {
            allow || net.max_prefix_len() - net.prefix_len() <= 1 || (ip != first && ip != last)
        }
    }
}

fn label<'a>(service: &'a Service, key: &str) -> Option<&'a str> {
    match key {
        SERVICE_NAMESPACE_LABEL => Some(&service.name.namespace),
        SERVICE_NAME_LABEL => Some(&service.name.name),
        _ => service.labels.get(key).map(SmolStr::as_str),
    }
}

fn check_invariants(pools: &[IpPool], services: &[Service], alloc: &Allocation) {
    let by_name: BTreeMap<_, _> = services.iter().map(|s| (&s.name, s)).collect();
    let pool_by_name: BTreeMap<_, _> = pools.iter().map(|p| (&p.name, p)).collect();
    let mut holders: BTreeMap<IpAddr, Vec<&Service>> = BTreeMap::new();
    for (name, status) in &alloc.services {
        let service = by_name[name];
        let mut families = BTreeSet::new();
        for held in &status.addresses {
            let pool = pool_by_name[&held.pool];
            assert!(
                alloc.pools[&held.pool].conflict.is_none(),
                "{name}: {} from conflicting pool {}",
                held.ip,
                held.pool
            );
            assert!(
                pool.blocks
                    .iter()
                    .any(|b| usable_in(b, pool.allow_first_last_ips, held.ip)),
                "{name}: {} is not a usable address of pool {}",
                held.ip,
                held.pool
            );
            assert!(
                pool.service_selector
                    .as_ref()
                    .is_none_or(|sel| sel.matches(|key| label(service, key))),
                "{name}: pool {} does not select it",
                held.pool
            );
            if let Some(requested) = service.annotations.get("ferrite.dev/ips") {
                let requested: IpAddr = requested.parse().expect("generated address");
                assert_eq!(held.ip, requested, "{name}");
            } else {
                assert!(
                    families.insert(IpFamily::of(held.ip)),
                    "{name}: two of one family"
                );
            }
            holders.entry(held.ip).or_default().push(service);
        }
    }
    for (ip, list) in &holders {
        for (i, a) in list.iter().enumerate() {
            for b in &list[i + 1..] {
                assert!(
                    compatible(a, b),
                    "{ip} held by incompatible {} and {}",
                    a.name,
                    b.name
                );
            }
        }
    }
    for (name, status) in &alloc.pools {
        let used: BTreeSet<IpAddr> = alloc
            .services
            .values()
            .flat_map(|s| &s.addresses)
            .filter(|a| &a.pool == name)
            .map(|a| a.ip)
            .collect();
        assert_eq!(status.used, used.len() as u128, "pool {name} used count");
        assert_eq!(
            status.used + status.available,
            if status.conflict.is_some() {
                0
            } else {
                status.total
            }
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn allocations_respect_pools_families_and_sharing(
        pools in pools_strategy(),
        services in services_strategy(),
        previous in previous_strategy(),
    ) {
        let alloc = allocate(&pools, &services, &previous);
        check_invariants(&pools, &services, &alloc);
    }

    #[test]
    fn the_result_does_not_depend_on_input_order(
        pools in pools_strategy().prop_shuffle(),
        services in services_strategy(),
        previous in previous_strategy(),
        seed in any::<u64>(),
    ) {
        let alloc = allocate(&pools, &services, &previous);
        let mut shuffled: Vec<&Service> = services.iter().collect();
        // A deterministic permutation from the seed (rotate + reverse).
        let len = shuffled.len().max(1);
        shuffled.rotate_left(usize::try_from(seed).unwrap_or(0) % len);
        if seed & 1 == 1 {
            shuffled.reverse();
        }
        let mut reversed_pools: Vec<&IpPool> = pools.iter().collect();
        reversed_pools.reverse();
        prop_assert_eq!(alloc, allocate(reversed_pools, shuffled, &previous));
    }

    #[test]
    fn a_second_round_keeps_every_address(
        pools in pools_strategy(),
        services in services_strategy(),
        previous in previous_strategy(),
    ) {
        let first = allocate(&pools, &services, &previous);
        let second = allocate(&pools, &services, &first.lb_ips());
        prop_assert_eq!(first.lb_ips(), second.lb_ips());
    }

    #[test]
    fn a_newcomer_never_moves_an_existing_address(
        pools in pools_strategy(),
        mut services in services_strategy(),
        newcomer_request in prop::option::of((any::<bool>(), 0u8..32)),
    ) {
        let first = allocate(&pools, &services, &BTreeMap::new());
        let mut newcomer = lb("zz-newcomer");
        newcomer.created_unix = Some(i64::MAX);
        if let Some((v6, offset)) = newcomer_request {
            newcomer = with_annotation(newcomer, "ferrite.dev/ips", &address(v6, offset));
        }
        services.push(newcomer);
        let second = allocate(&pools, &services, &first.lb_ips());
        let kept = second.lb_ips();
        for (name, ips) in first.lb_ips() {
            prop_assert_eq!(Some(&ips), kept.get(&name), "{} moved", name);
        }
        check_invariants(&pools, &services, &second);
    }
}
