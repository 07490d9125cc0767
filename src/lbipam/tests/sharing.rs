//! Address sharing: sharing keys (ferrite's, Cilium's, MetalLB's), ports and traffic policy.

use super::{ips_of, lb, message_of, pool, port, reason_of, run, with_annotation};
use crate::lbipam::request::SHARING_ANNOTATIONS;
use crate::model::{IpamReason, Protocol, Service, TrafficPolicy};

fn keyed(name: &str, key: &str, protocol: Protocol, number: u16) -> Service {
    let mut service = with_annotation(lb(name), "ferrite.dev/sharing-key", key);
    service.ports = vec![port(protocol, number)];
    service
}

#[test]
fn services_with_one_key_and_distinct_ports_share_an_address() {
    let pools = [pool("lan", &["10.0.0.0/24"])];
    let services = [
        keyed("dns-tcp", "dns", Protocol::Tcp, 53),
        keyed("dns-udp", "dns", Protocol::Udp, 53),
        keyed("web", "dns", Protocol::Tcp, 80),
    ];
    let alloc = run(&pools, &services);
    for name in ["dns-tcp", "dns-udp", "web"] {
        assert_eq!(ips_of(&alloc, name), ["10.0.0.1"], "{name}");
    }
    assert_eq!(alloc.pools["lan"].used, 1, "one address, three services");
}

#[test]
fn every_sharing_annotation_counts() {
    let pools = [pool("lan", &["10.0.0.0/24"])];
    let services: Vec<Service> = SHARING_ANNOTATIONS
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let mut s = with_annotation(lb(&format!("s{i}")), key, "shared");
            s.ports = vec![port(Protocol::Tcp, 1000 + u16::try_from(i).unwrap())];
            s
        })
        .collect();
    let alloc = run(&pools, &services);
    for i in 0..SHARING_ANNOTATIONS.len() {
        assert_eq!(ips_of(&alloc, &format!("s{i}")), ["10.0.0.1"]);
    }
}

#[test]
fn colliding_ports_or_policies_get_their_own_address() {
    let pools = [pool("lan", &["10.0.0.0/24"])];
    let mut local = keyed("local", "k", Protocol::Tcp, 443);
    local.external_traffic_policy = TrafficPolicy::Local;
    let services = [
        keyed("a", "k", Protocol::Tcp, 80),
        keyed("b", "k", Protocol::Tcp, 80),
        local,
        keyed("other-key", "x", Protocol::Tcp, 81),
    ];
    let alloc = run(&pools, &services);
    assert_eq!(ips_of(&alloc, "a"), ["10.0.0.1"]);
    assert_eq!(ips_of(&alloc, "b"), ["10.0.0.2"], "port 80/TCP collides");
    assert_eq!(
        ips_of(&alloc, "local"),
        ["10.0.0.3"],
        "externalTrafficPolicy differs"
    );
    assert_eq!(ips_of(&alloc, "other-key"), ["10.0.0.4"]);
}

#[test]
fn a_requested_address_in_use_is_refused_with_the_precise_reason() {
    let pools = [pool("lan", &["10.0.0.0/24"])];
    let request = |service: Service| with_annotation(service, "ferrite.dev/ips", "10.0.0.9");
    let mut local = keyed("policy", "k", Protocol::Tcp, 443);
    local.external_traffic_policy = TrafficPolicy::Local;
    let services = [
        request(keyed("a-owner", "k", Protocol::Tcp, 80)),
        request(lb("b-nokey")),
        request(keyed("c-ports", "k", Protocol::Tcp, 80)),
        request(local),
        request(keyed("d-friend", "k", Protocol::Udp, 80)),
    ];
    let alloc = run(&pools, &services);
    assert_eq!(ips_of(&alloc, "a-owner"), ["10.0.0.9"]);
    assert_eq!(reason_of(&alloc, "b-nokey"), IpamReason::AlreadyAllocated);
    assert!(message_of(&alloc, "b-nokey").contains("default/a-owner"));
    assert_eq!(reason_of(&alloc, "c-ports"), IpamReason::SharingConflict);
    assert!(
        message_of(&alloc, "c-ports").contains("80/TCP"),
        "{}",
        message_of(&alloc, "c-ports")
    );
    assert_eq!(reason_of(&alloc, "policy"), IpamReason::SharingConflict);
    assert_eq!(ips_of(&alloc, "d-friend"), ["10.0.0.9"]);
    for name in ["b-nokey", "c-ports", "policy"] {
        assert!(ips_of(&alloc, name).is_empty(), "{name}");
    }
}

#[test]
fn sharing_also_works_across_families() {
    let pools = [pool("v4", &["10.0.0.0/24"]), pool("v6", &["fd00::/120"])];
    let mut a = keyed("a", "k", Protocol::Tcp, 80);
    a.ip_family_policy = crate::model::IpFamilyPolicy::RequireDualStack;
    let mut b = keyed("b", "k", Protocol::Tcp, 81);
    b.ip_family_policy = crate::model::IpFamilyPolicy::RequireDualStack;
    let alloc = run(&pools, &[a, b]);
    assert_eq!(ips_of(&alloc, "a"), ["10.0.0.1", "fd00::1"]);
    assert_eq!(ips_of(&alloc, "b"), ["10.0.0.1", "fd00::1"]);
}
