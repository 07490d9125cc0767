//! Pool manifests: both kinds, every field, and lenient handling of bad input.

use std::path::Path;

use super::super::Object;
use crate::model::{IpBlock, IpPool, LabelRequirement};
use crate::source::manifest::parse_manifest;

fn pools(text: &str) -> Vec<IpPool> {
    parse_manifest(Path::new("pools.yaml"), text)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter_map(|object| match object {
            Object::Pool(_, pool) => Some(pool),
            _ => None,
        })
        .collect()
}

fn one(text: &str) -> IpPool {
    let mut all = pools(text);
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

fn problems(pool: &IpPool) -> Vec<String> {
    pool.problems.iter().map(ToString::to_string).collect()
}

const FULL: &str = r#"
apiVersion: ferrite.dev/v1alpha1
kind: LoadBalancerIPPool
metadata:
  name: lan
  creationTimestamp: "2024-02-29T12:34:56Z"
spec:
  blocks:
  - cidr: 192.168.1.240/28
  - start: 192.168.1.10
    stop: 192.168.1.20
  - cidr: fd00:1::/120
  serviceSelector:
    matchLabels:
      exposure: lan
    matchExpressions:
    - {key: io.kubernetes.service.namespace, operator: In, values: [media, dns]}
    - {key: internal, operator: DoesNotExist}
  allowFirstLastIPs: "Yes"
  disabled: false
  priority: 5
"#;

#[test]
fn every_field_is_read() {
    let pool = one(FULL);
    assert_eq!(pool.name, "lan");
    assert_eq!(pool.created_unix, Some(1_709_210_096));
    let blocks: Vec<String> = pool.blocks.iter().map(ToString::to_string).collect();
    assert_eq!(
        blocks,
        [
            "192.168.1.240/28",
            "192.168.1.10-192.168.1.20",
            "fd00:1::/120"
        ]
    );
    let selector = pool.service_selector.as_ref().expect("selector");
    assert_eq!(selector.match_labels["exposure"], "lan");
    assert_eq!(selector.match_expressions.len(), 2);
    assert_eq!(
        selector.match_expressions[1],
        LabelRequirement::new("internal", "DoesNotExist", vec![]).unwrap()
    );
    assert!(pool.allow_first_last_ips && !pool.disabled);
    assert_eq!(pool.priority, 5);
    assert!(pool.problems.is_empty(), "{:?}", pool.problems);
}

#[test]
fn cilium_pools_move_by_changing_api_version_and_kind() {
    for api_version in ["cilium.io/v2alpha1", "cilium.io/v2"] {
        let text = FULL
            .replace("ferrite.dev/v1alpha1", api_version)
            .replace("kind: LoadBalancerIPPool", "kind: CiliumLoadBalancerIPPool");
        let mut cilium = one(&text);
        cilium.problems.clear();
        assert_eq!(cilium, one(FULL), "{api_version}");
    }
    // Cilium's older `cidrs` field is read too.
    let old = one(
        "apiVersion: cilium.io/v2alpha1\nkind: CiliumLoadBalancerIPPool\nmetadata: {name: old}\n\
         spec:\n  cidrs:\n  - cidr: 10.0.0.0/24\n",
    );
    assert_eq!(
        old.blocks,
        [IpBlock::parse(Some("10.0.0.0/24"), None, None).unwrap()]
    );
}

#[test]
fn unknown_versions_are_errors_and_other_kinds_of_the_groups_are_ignored() {
    let err = parse_manifest(
        Path::new("p.yaml"),
        "apiVersion: ferrite.dev/v9\nkind: LoadBalancerIPPool\nmetadata: {name: x}\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("ferrite.dev/v1alpha1"), "{err}");
    assert!(
        pools("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: x}\n")
            .is_empty()
    );
}

#[test]
fn bad_fields_become_problems_and_the_rest_of_the_file_still_loads() {
    let text = r#"
apiVersion: ferrite.dev/v1alpha1
kind: LoadBalancerIPPool
metadata: {name: broken}
spec:
  blocks:
  - cidr: 10.0.0.0/33
  - {start: 10.0.0.9, stop: 10.0.0.1}
  - {start: 10.0.0.1, stop: "fd00::1"}
  - cidr: 10.1.0.0/24
  - "nonsense"
  serviceSelector:
    matchExpressions:
    - {key: a, operator: Near, values: [x]}
    - {key: b, operator: In}
    matchLabels: {ok: "yes"}
  allowFirstLastIPs: maybe
  disabled: "no"
  priority: high
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports: [{port: 80}]
"#;
    let objects = parse_manifest(Path::new("p.yaml"), text).expect("file accepted");
    assert_eq!(objects.len(), 2, "the Service still loads");
    let pool = one(text);
    assert_eq!(pool.blocks.len(), 1, "the good block is kept");
    let found = problems(&pool);
    for expected in [
        "spec.blocks[0]: `10.0.0.0/33` is not a CIDR",
        "spec.blocks[1]: start 10.0.0.9 is after stop 10.0.0.1",
        "spec.blocks[2]: start 10.0.0.1 and stop fd00::1 are of different IP families",
        "spec.blocks[4]: must be a mapping",
        "spec.serviceSelector.matchExpressions[0]: unknown operator `Near`",
        "spec.allowFirstLastIPs: `\"maybe\"` is not Yes or No",
        "spec.disabled",
        "spec.priority",
    ] {
        assert!(
            found.iter().any(|p| p.starts_with(expected)),
            "{expected} not in {found:?}"
        );
    }
    assert!(!pool.accepts_new());
    assert_eq!(
        pool.service_selector, None,
        "a selector that does not parse is dropped"
    );
}

#[test]
fn a_pool_without_spec_or_blocks_says_so_and_a_nameless_one_rejects_the_file() {
    let pool = one(
        "apiVersion: ferrite.dev/v1alpha1\nkind: LoadBalancerIPPool\nmetadata: {name: empty}\n",
    );
    assert_eq!(
        problems(&pool),
        ["spec: is required (with at least one block)"]
    );
    let pool = one(
        "apiVersion: ferrite.dev/v1alpha1\nkind: LoadBalancerIPPool\nmetadata: {name: e}\nspec: {}\n",
    );
    assert_eq!(
        problems(&pool),
        ["spec.blocks: no blocks: the pool has no addresses"]
    );
    let err = parse_manifest(
        Path::new("p.yaml"),
        "apiVersion: ferrite.dev/v1alpha1\nkind: LoadBalancerIPPool\nmetadata: {}\nspec: {}\n",
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("metadata.name is required"),
        "{err}"
    );
}

#[test]
fn a_bad_timestamp_is_a_problem_not_an_error() {
    let pool = one(
        "apiVersion: ferrite.dev/v1alpha1\nkind: LoadBalancerIPPool\n\
         metadata: {name: t, creationTimestamp: yesterday}\nspec: {blocks: [{cidr: 10.0.0.0/24}]}\n",
    );
    assert_eq!(pool.created_unix, None);
    assert!(
        problems(&pool)[0].starts_with("metadata.creationTimestamp"),
        "{:?}",
        pool.problems
    );
}
