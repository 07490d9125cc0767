//! The allocator on hand-written cases: blocks, requests, selectors, pools' states, stability.

use std::{collections::BTreeMap, time::Instant};

use smol_str::SmolStr;

use super::{block, ip, ips_of, lb, message_of, pool, reason_of, run, with_annotation};
use crate::lbipam::allocate;
use crate::model::{
    IpFamily, IpFamilyPolicy, IpPool, IpamReason, LabelRequirement, LabelSelector, PoolProblem,
    ServiceName, ServiceType,
};

#[test]
fn hands_out_the_first_free_addresses_and_skips_network_and_broadcast() {
    let pools = [pool("lan", &["10.0.0.0/30"])];
    let alloc = run(&pools, &[lb("a"), lb("b"), lb("c")]);
    assert_eq!(ips_of(&alloc, "a"), ["10.0.0.1"]);
    assert_eq!(ips_of(&alloc, "b"), ["10.0.0.2"]);
    assert!(ips_of(&alloc, "c").is_empty());
    assert_eq!(reason_of(&alloc, "c"), IpamReason::OutOfIps);
    assert_eq!(reason_of(&alloc, "a"), IpamReason::Satisfied);
    assert!(
        message_of(&alloc, "a").contains("10.0.0.1 (pool lan)"),
        "{alloc:?}"
    );
    let status = &alloc.pools["lan"];
    assert_eq!((status.total, status.used, status.available), (2, 2, 0));
}

#[test]
fn allow_first_last_ips_uses_every_address_of_a_cidr() {
    let mut lan = pool("lan", &["10.0.0.0/30"]);
    lan.allow_first_last_ips = true;
    let services: Vec<_> = (0..5).map(|i| lb(&format!("s{i}"))).collect();
    let alloc = run(&[lan], &services);
    let got: Vec<_> = (0..4)
        .flat_map(|i| ips_of(&alloc, &format!("s{i}")))
        .collect();
    assert_eq!(got, ["10.0.0.0", "10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    assert_eq!(reason_of(&alloc, "s4"), IpamReason::OutOfIps);
}

#[test]
fn ranges_and_v6_blocks_work() {
    let pools = [pool("p", &["192.168.1.240-192.168.1.241", "fd00:1::/126"])];
    let mut six = lb("six");
    six.ip_families = vec![IpFamily::V6];
    let alloc = run(&pools, &[lb("a"), lb("b"), six]);
    assert_eq!(ips_of(&alloc, "a"), ["192.168.1.240"]);
    assert_eq!(ips_of(&alloc, "b"), ["192.168.1.241"]);
    assert_eq!(ips_of(&alloc, "six"), ["fd00:1::1"]);
    assert_eq!(alloc.pools["p"].total, 4);
}

#[test]
fn every_request_annotation_and_load_balancer_ip_is_honoured() {
    let pools = [pool("lan", &["10.0.0.0/24"])];
    let mut services = Vec::new();
    for (i, key) in crate::lbipam::request::IPS_ANNOTATIONS.iter().enumerate() {
        services.push(with_annotation(
            lb(&format!("s{i}")),
            key,
            &format!("10.0.0.{}", 100 + i),
        ));
    }
    let mut spec = lb("spec");
    spec.load_balancer_ip = Some(SmolStr::new("10.0.0.200"));
    services.push(spec);
    services.push(with_annotation(
        lb("two"),
        "ferrite.dev/ips",
        "10.0.0.51, 10.0.0.50",
    ));
    let alloc = run(&pools, &services);
    for i in 0..4 {
        assert_eq!(
            ips_of(&alloc, &format!("s{i}")),
            [format!("10.0.0.{}", 100 + i)]
        );
    }
    assert_eq!(ips_of(&alloc, "spec"), ["10.0.0.200"]);
    assert_eq!(ips_of(&alloc, "two"), ["10.0.0.50", "10.0.0.51"]);
}

#[test]
fn bad_requests_are_invalid_and_hold_nothing() {
    let pools = [pool("lan", &["10.0.0.0/24"])];
    let garbage = with_annotation(lb("garbage"), "ferrite.dev/ips", "10.0.0.5,banana");
    let disagree = with_annotation(
        with_annotation(lb("disagree"), "ferrite.dev/ips", "10.0.0.5"),
        "metallb.io/loadBalancerIPs",
        "10.0.0.6",
    );
    let agree = with_annotation(
        with_annotation(lb("agree"), "lbipam.cilium.io/ips", "10.0.0.7"),
        "metallb.universe.tf/loadBalancerIPs",
        " 10.0.0.7 ",
    );
    let reserved = with_annotation(lb("reserved"), "ferrite.dev/ips", "10.0.0.255");
    let keys = with_annotation(
        with_annotation(lb("keys"), "ferrite.dev/sharing-key", "a"),
        "metallb.io/allow-shared-ip",
        "b",
    );
    let alloc = run(&pools, &[garbage, disagree, agree, reserved, keys]);
    for name in ["garbage", "disagree", "reserved", "keys"] {
        assert_eq!(
            reason_of(&alloc, name),
            IpamReason::InvalidRequest,
            "{name}"
        );
        assert!(ips_of(&alloc, name).is_empty(), "{name}");
    }
    assert!(message_of(&alloc, "garbage").contains("banana"));
    assert!(message_of(&alloc, "disagree").contains("metallb.io/loadBalancerIPs"));
    assert!(message_of(&alloc, "reserved").contains("allowFirstLastIPs"));
    assert_eq!(ips_of(&alloc, "agree"), ["10.0.0.7"]);
}

#[test]
fn requested_addresses_outside_usable_pools_say_why() {
    let mut off = pool("off", &["10.1.0.0/24"]);
    off.disabled = true;
    let mut picky = pool("picky", &["10.2.0.0/24"]);
    picky.service_selector = Some(LabelSelector {
        match_labels: [("tier".into(), "edge".into())].into(),
        ..LabelSelector::default()
    });
    let services = [
        with_annotation(lb("nowhere"), "ferrite.dev/ips", "172.16.0.1"),
        with_annotation(lb("disabled"), "ferrite.dev/ips", "10.1.0.5"),
        with_annotation(lb("unselected"), "ferrite.dev/ips", "10.2.0.5"),
    ];
    let alloc = run(&[off, picky], &services);
    assert_eq!(reason_of(&alloc, "nowhere"), IpamReason::NoPool);
    assert_eq!(reason_of(&alloc, "disabled"), IpamReason::NoPool);
    assert!(message_of(&alloc, "disabled").contains("disabled"));
    assert_eq!(
        reason_of(&alloc, "unselected"),
        IpamReason::PoolSelectorMismatch
    );
}

#[test]
fn no_pool_and_selector_mismatch_are_told_apart() {
    let alloc = run(&[], &[lb("a")]);
    assert_eq!(reason_of(&alloc, "a"), IpamReason::NoPool);

    let mut picky = pool("picky", &["10.2.0.0/24"]);
    picky.service_selector = Some(LabelSelector {
        match_expressions: vec![LabelRequirement::new("tier", "In", vec!["edge".into()]).unwrap()],
        ..LabelSelector::default()
    });
    let mut edge = lb("edge");
    edge.labels.insert("tier".into(), "edge".into());
    let alloc = run(&[picky], &[lb("plain"), edge]);
    assert_eq!(reason_of(&alloc, "plain"), IpamReason::PoolSelectorMismatch);
    assert_eq!(ips_of(&alloc, "edge"), ["10.2.0.1"]);
}

#[test]
fn selectors_see_the_synthetic_namespace_and_name_labels() {
    let mut by_ns = pool("by-ns", &["10.3.0.0/24"]);
    by_ns.service_selector = Some(LabelSelector {
        match_labels: [("io.kubernetes.service.namespace".into(), "media".into())].into(),
        ..LabelSelector::default()
    });
    let mut by_name = pool("by-name", &["10.4.0.0/24"]);
    by_name.service_selector = Some(LabelSelector {
        match_labels: [("io.kubernetes.service.name".into(), "dns".into())].into(),
        ..LabelSelector::default()
    });
    let mut media = lb("plex");
    media.name = ServiceName::new("media", "plex");
    let alloc = run(&[by_ns, by_name], &[media, lb("dns"), lb("other")]);
    assert_eq!(
        alloc.services[&ServiceName::new("media", "plex")].addresses[0].ip,
        ip("10.3.0.1")
    );
    assert_eq!(ips_of(&alloc, "dns"), ["10.4.0.1"]);
    assert_eq!(reason_of(&alloc, "other"), IpamReason::PoolSelectorMismatch);
}

#[test]
fn lower_priority_pools_are_tried_first() {
    let mut second = pool("a-second", &["10.9.0.0/30"]);
    second.priority = 10;
    let mut first = pool("z-first", &["10.8.0.0/30"]);
    first.priority = -1;
    let alloc = run(&[second, first], &[lb("a"), lb("b"), lb("c")]);
    assert_eq!(ips_of(&alloc, "a"), ["10.8.0.1"]);
    assert_eq!(ips_of(&alloc, "b"), ["10.8.0.2"]);
    assert_eq!(
        ips_of(&alloc, "c"),
        ["10.9.0.1"],
        "overflow into the next pool"
    );
}

#[test]
fn the_newer_of_two_overlapping_pools_is_marked_and_unused() {
    let mut old = pool("zz-old", &["10.0.0.0/29"]);
    old.created_unix = Some(100);
    let mut new = pool("aa-new", &["10.0.0.4-10.0.0.20"]);
    new.created_unix = Some(200);
    new.priority = -5;
    let alloc = run(&[new, old], &[lb("a")]);
    assert_eq!(
        ips_of(&alloc, "a"),
        ["10.0.0.1"],
        "the conflicting pool is not used"
    );
    let conflict = alloc.pools["aa-new"].conflict.as_deref().expect("conflict");
    assert!(
        conflict.contains("zz-old") && conflict.contains("10.0.0.4-10.0.0.7"),
        "{conflict}"
    );
    assert!(alloc.pools["zz-old"].conflict.is_none());
    assert_eq!(alloc.pools["aa-new"].available, 0);

    // Without timestamps the name decides.
    let alloc = run(
        &[pool("b", &["10.0.0.0/24"]), pool("a", &["10.0.0.128/25"])],
        &[],
    );
    assert!(alloc.pools["b"].conflict.is_some() && alloc.pools["a"].conflict.is_none());
    // Pools of different families or disjoint blocks never conflict.
    let alloc = run(
        &[pool("v4", &["10.0.0.0/24"]), pool("v6", &["fd00::/120"])],
        &[],
    );
    assert!(alloc.pools.values().all(|p| p.conflict.is_none()));
}

#[test]
fn disabled_and_invalid_pools_keep_what_they_gave_and_give_nothing_new() {
    let mut lan = pool("lan", &["10.0.0.0/24"]);
    let first = run(std::slice::from_ref(&lan), &[lb("a")]);
    assert_eq!(ips_of(&first, "a"), ["10.0.0.1"]);

    lan.disabled = true;
    let alloc = allocate([&lan], &[lb("a"), lb("b")], &first.lb_ips());
    assert_eq!(ips_of(&alloc, "a"), ["10.0.0.1"], "kept");
    assert_eq!(reason_of(&alloc, "b"), IpamReason::NoPool);

    lan.disabled = false;
    lan.problems.push(PoolProblem {
        field: "spec.blocks[1]".into(),
        message: "bad".into(),
    });
    let alloc = allocate([&lan], &[lb("a"), lb("b")], &first.lb_ips());
    assert_eq!(ips_of(&alloc, "a"), ["10.0.0.1"], "kept");
    assert_eq!(reason_of(&alloc, "b"), IpamReason::NoPool);
    assert!(!alloc.pools["lan"].problems.is_empty());
}

#[test]
fn previous_and_status_addresses_are_kept_before_anyone_else_is_served() {
    let pools = [pool("lan", &["10.0.0.0/24"])];
    // `b` held .1 (e.g. from a previous run); `a` sorts first but must not take it.
    let previous = BTreeMap::from([(ServiceName::new("default", "b"), vec![ip("10.0.0.1")])]);
    let alloc = allocate(&pools, &[lb("a"), lb("b")], &previous);
    assert_eq!(ips_of(&alloc, "b"), ["10.0.0.1"]);
    assert_eq!(ips_of(&alloc, "a"), ["10.0.0.2"]);

    // Addresses already in status (written by an earlier leader, or MetalLB) are adopted.
    let mut c = lb("c");
    c.status_ingress = vec![ip("10.0.0.77")];
    let alloc = run(&pools, &[lb("a"), c]);
    assert_eq!(ips_of(&alloc, "c"), ["10.0.0.77"]);
    assert_eq!(ips_of(&alloc, "a"), ["10.0.0.1"]);

    // ... but not when they are outside every pool, or of the wrong family.
    let mut d = lb("d");
    d.status_ingress = vec![ip("192.0.2.1"), ip("fd00::1")];
    let alloc = run(&pools, &[d]);
    assert_eq!(ips_of(&alloc, "d"), ["10.0.0.1"]);
}

#[test]
fn older_services_are_served_first() {
    let pools = [pool("lan", &["10.0.0.1/32"])];
    let mut young = lb("a-young");
    young.created_unix = Some(2_000);
    let mut old = lb("z-old");
    old.created_unix = Some(1_000);
    let alloc = run(&pools, &[young, old]);
    assert_eq!(ips_of(&alloc, "z-old"), ["10.0.0.1"]);
    assert_eq!(reason_of(&alloc, "a-young"), IpamReason::OutOfIps);
}

#[test]
fn only_load_balancers_of_no_class_or_ferrites_class_are_handled() {
    let pools = [pool("lan", &["10.0.0.0/24"])];
    let mut other = lb("other");
    other.load_balancer_class = Some("example.com/other".into());
    let mut ours = lb("ours");
    ours.load_balancer_class = Some("ferrite.dev/l2".into());
    let mut cluster_ip = lb("plain");
    cluster_ip.service_type = ServiceType::ClusterIp;
    let alloc = run(&pools, &[other, ours, cluster_ip]);
    assert_eq!(alloc.services.len(), 1);
    assert_eq!(ips_of(&alloc, "ours"), ["10.0.0.1"]);
}

#[test]
fn changing_the_type_releases_the_address() {
    let pools = [pool("lan", &["10.0.0.1/32"])];
    let first = run(&pools, &[lb("a")]);
    let mut a = lb("a");
    a.service_type = ServiceType::NodePort;
    let alloc = allocate(&pools, &[a, lb("b")], &first.lb_ips());
    assert_eq!(ips_of(&alloc, "b"), ["10.0.0.1"]);
    assert!(
        !alloc
            .services
            .contains_key(&ServiceName::new("default", "a"))
    );
}

#[test]
fn dual_stack_policies() {
    let v4_only = [pool("v4", &["10.0.0.0/24"])];
    let both = [pool("v4", &["10.0.0.0/24"]), pool("v6", &["fd00::/120"])];
    let mut prefer = lb("prefer");
    prefer.ip_family_policy = IpFamilyPolicy::PreferDualStack;
    let mut require = lb("require");
    require.ip_family_policy = IpFamilyPolicy::RequireDualStack;
    let mut single6 = lb("single6");
    single6.ip_families = vec![IpFamily::V6, IpFamily::V4];

    let alloc = run(
        &v4_only,
        &[prefer.clone(), require.clone(), single6.clone()],
    );
    assert_eq!(ips_of(&alloc, "prefer"), ["10.0.0.1"]);
    assert_eq!(reason_of(&alloc, "prefer"), IpamReason::Satisfied);
    assert!(
        message_of(&alloc, "prefer").contains("no IPv6 address"),
        "{alloc:?}"
    );
    assert!(
        ips_of(&alloc, "require").is_empty(),
        "nothing half-allocated"
    );
    assert_eq!(reason_of(&alloc, "require"), IpamReason::NoPool);
    assert_eq!(reason_of(&alloc, "single6"), IpamReason::NoPool);

    let alloc = run(&both, &[prefer, require, single6]);
    assert_eq!(ips_of(&alloc, "prefer"), ["10.0.0.1", "fd00::1"]);
    assert_eq!(ips_of(&alloc, "require"), ["10.0.0.2", "fd00::2"]);
    assert_eq!(ips_of(&alloc, "single6"), ["fd00::3"]);
}

#[test]
fn families_default_from_cluster_ips() {
    let both = [pool("v4", &["10.0.0.0/24"]), pool("v6", &["fd00::/120"])];
    let mut six = lb("six");
    six.cluster_ips = vec![ip("fd00:96::1")];
    let alloc = run(&both, &[six]);
    assert_eq!(ips_of(&alloc, "six"), ["fd00::1"]);
}

#[test]
fn a_slash_16_pool_fills_quickly() {
    let pools = [pool("big", &["10.20.0.0/16"])];
    let services: Vec<_> = (0..65_534).map(|i| lb(&format!("s{i:05}"))).collect();
    let started = Instant::now();
    let alloc = run(&pools, &services);
    let first = started.elapsed();
    assert_eq!(alloc.pools["big"].used, 65_534);
    assert_eq!(alloc.pools["big"].available, 0);
    // Again with everything held: the steady state of every reconcile.
    let started = Instant::now();
    let again = allocate(&pools, &services, &alloc.lb_ips());
    let second = started.elapsed();
    assert_eq!(again, alloc);
    assert!(
        first.as_secs_f64() < 5.0 && second.as_secs_f64() < 5.0,
        "a /16 took {first:?} then {second:?}"
    );
}

#[test]
fn huge_v6_pools_are_counted_without_enumerating() {
    let pools = [pool("v6", &["fd00::/64"]), pool("all", &["2001:db8::/32"])];
    let mut six = lb("six");
    six.ip_families = vec![IpFamily::V6];
    let alloc = run(&pools, &[six]);
    assert_eq!(alloc.pools["v6"].total, (1u128 << 64) - 2);
    assert_eq!(alloc.pools["all"].total, (1u128 << 96) - 2);
    assert_eq!(alloc.pools["v6"].used + alloc.pools["all"].used, 1);
}

#[test]
fn blocks_of_one_pool_may_overlap_each_other() {
    let alloc = run(
        &[pool("p", &["10.0.0.0/30", "10.0.0.0-10.0.0.1"])],
        &[lb("a"), lb("b"), lb("c")],
    );
    assert_eq!(alloc.pools["p"].total, 3, "{alloc:?}");
    assert_eq!(
        ips_of(&alloc, "a"),
        ["10.0.0.0"],
        "the range block makes .0 usable"
    );
    assert!(alloc.pools["p"].conflict.is_none());
    let _ = block("10.0.0.0/8");
}

#[test]
fn pool_selector_with_every_operator() {
    let mut service = lb("s");
    service.labels = [("a".into(), "1".into()), ("b".into(), "2".into())].into();
    let req = |key: &str, op: &str, values: &[&str]| {
        LabelRequirement::new(key, op, values.iter().map(|v| (*v).to_owned()).collect()).unwrap()
    };
    let selects = |reqs: Vec<LabelRequirement>| {
        let mut p: IpPool = pool("p", &["10.0.0.0/24"]);
        p.service_selector = Some(LabelSelector {
            match_expressions: reqs,
            ..LabelSelector::default()
        });
        run(&[p], std::slice::from_ref(&service))
            .services
            .values()
            .all(|s| s.reason == IpamReason::Satisfied)
    };
    assert!(selects(vec![req("a", "In", &["1", "3"])]));
    assert!(!selects(vec![req("a", "In", &["3"])]));
    assert!(selects(vec![
        req("a", "NotIn", &["3"]),
        req("zz", "NotIn", &["1"])
    ]));
    assert!(!selects(vec![req("b", "NotIn", &["2"])]));
    assert!(selects(vec![
        req("a", "Exists", &[]),
        req("zz", "DoesNotExist", &[])
    ]));
    assert!(!selects(vec![req("zz", "Exists", &[])]));
    assert!(selects(vec![]), "an empty selector selects everything");
}
