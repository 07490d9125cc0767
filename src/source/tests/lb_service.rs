//! The Service fields LB IPAM reads: class, requested IP, annotations, labels, families,
//! externalTrafficPolicy, creation time and the addresses already in status.

use super::{one_service, parse_err};
use crate::model::{IpFamily, IpFamilyPolicy, TrafficPolicy};

const LB: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: dns
  namespace: net
  creationTimestamp: "1970-01-01T00:01:40Z"
  labels: {app: dns, tier: 2}
  annotations:
    ferrite.dev/sharing-key: dns
    metallb.io/loadBalancerIPs: 192.168.1.53
spec:
  type: LoadBalancer
  loadBalancerIP: 192.168.1.53
  loadBalancerClass: ferrite.dev/l2
  ipFamilyPolicy: PreferDualStack
  ipFamilies: [IPv6, IPv4]
  externalTrafficPolicy: Local
  ports: [{port: 53, protocol: UDP}]
status:
  loadBalancer:
    ingress:
    - ip: 192.168.1.53
    - hostname: lb.example.com
    - ip: "fd00::53"
"#;

#[test]
fn load_balancer_fields_are_read() {
    let service = one_service(LB);
    assert_eq!(service.created_unix, Some(100));
    assert_eq!(service.labels["app"], "dns");
    assert_eq!(service.labels["tier"], "2", "unquoted numbers become text");
    assert_eq!(service.annotations["ferrite.dev/sharing-key"], "dns");
    assert_eq!(service.load_balancer_ip.as_deref(), Some("192.168.1.53"));
    assert_eq!(
        service.load_balancer_class.as_deref(),
        Some("ferrite.dev/l2")
    );
    assert_eq!(service.ip_family_policy, IpFamilyPolicy::PreferDualStack);
    assert_eq!(service.ip_families, [IpFamily::V6, IpFamily::V4]);
    assert_eq!(service.external_traffic_policy, TrafficPolicy::Local);
    let ingress: Vec<String> = service
        .status_ingress
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        ingress,
        ["192.168.1.53", "fd00::53"],
        "hostname-only entries are skipped"
    );
}

#[test]
fn defaults_when_unset() {
    let service = one_service("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {}\n");
    assert_eq!(service.ip_family_policy, IpFamilyPolicy::SingleStack);
    assert!(service.ip_families.is_empty() && service.status_ingress.is_empty());
    assert_eq!(service.external_traffic_policy, TrafficPolicy::Cluster);
    assert_eq!(
        (service.load_balancer_ip, service.created_unix),
        (None, None)
    );
}

#[test]
fn invalid_load_balancer_fields_are_errors() {
    for (from, to, expected) in [
        ("PreferDualStack", "MaybeDualStack", "spec.ipFamilyPolicy"),
        ("[IPv6, IPv4]", "[IPv6, IPv6]", "spec.ipFamilies"),
        ("[IPv6, IPv4]", "[IPv5]", "spec.ipFamilies[0]"),
        (
            "externalTrafficPolicy: Local",
            "externalTrafficPolicy: Nearby",
            "externalTrafficPolicy",
        ),
        (
            "- ip: 192.168.1.53",
            "- ip: 192.168.1.530",
            "status.loadBalancer.ingress[0].ip",
        ),
        (
            "1970-01-01T00:01:40Z",
            "last tuesday",
            "metadata.creationTimestamp",
        ),
    ] {
        let text = LB.replace(from, to);
        let error = parse_err(&text);
        assert!(error.contains(expected), "{to}: {error}");
    }
}
