//! ferrite's CustomResourceDefinitions, defined in Rust: `LoadBalancerIPPool` and
//! `L2AnnouncementPolicy` (group `ferrite.dev`, version `v1alpha1`, cluster-scoped), with the field
//! names of Cilium's `CiliumLoadBalancerIPPool` and `CiliumL2AnnouncementPolicy`, so that moving
//! YAML over is a change of `apiVersion` and `kind`.
//!
//! These types generate the CRD manifests (`ferrite manifests crds`, `k3s-addon/crds.yaml`). The
//! watchers read objects as JSON and decode them with the same code as the `dir:` source, so an
//! invalid object is reported on its own instead of failing a whole list.

use std::collections::BTreeMap;

use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A pool of addresses for `type: LoadBalancer` services.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "ferrite.dev",
    version = "v1alpha1",
    kind = "LoadBalancerIPPool",
    plural = "loadbalancerippools",
    shortname = "lbippool",
    shortname = "ippools",
    status = "ObjectStatus",
    doc = "A pool of IP addresses that ferrite hands out to LoadBalancer services \
           (compatible with Cilium's CiliumLoadBalancerIPPool).",
    printcolumn(name = "Disabled", type_ = "boolean", json_path = ".spec.disabled"),
    printcolumn(name = "Priority", type_ = "integer", json_path = ".spec.priority"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerIPPoolSpec {
    /// Address blocks: each a `cidr`, or a `start`/`stop` range (both included).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<IpBlock>,
    /// Services this pool serves; unset selects every service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_selector: Option<LabelSelector>,
    /// `Yes`: the network and broadcast addresses of CIDR blocks may be handed out.
    #[serde(rename = "allowFirstLastIPs", default, skip_serializing_if = "Option::is_none")]
    pub allow_first_last_ips: Option<YesNo>,
    /// A disabled pool keeps its allocations but makes no new ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// Pools are tried in ascending priority (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
}

/// One block of a pool.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
pub struct IpBlock {
    /// A CIDR, e.g. `192.168.1.240/28` or `fd00:1::/120`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    /// First address of a range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// Last address of a range (default: `start`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum YesNo {
    Yes,
    No,
}

/// Which services are announced on the local network (ARP/NDP), from which nodes and
/// interfaces.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "ferrite.dev",
    version = "v1alpha1",
    kind = "L2AnnouncementPolicy",
    plural = "l2announcementpolicies",
    shortname = "l2policy",
    status = "ObjectStatus",
    doc = "Which services' addresses ferrite answers ARP/NDP for, from which nodes and interfaces \
           (compatible with Cilium's CiliumL2AnnouncementPolicy).",
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct L2AnnouncementPolicySpec {
    /// Services whose addresses are announced; unset selects every service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_selector: Option<LabelSelector>,
    /// Nodes that may announce; unset selects every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    /// Regular expressions of interface names to announce on; unset means every interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<Vec<String>>,
    /// Announce the services' `spec.externalIPs`.
    #[serde(rename = "externalIPs", default, skip_serializing_if = "Option::is_none")]
    pub external_ips: Option<bool>,
    /// Announce the services' LoadBalancer addresses (`status.loadBalancer.ingress`).
    #[serde(rename = "loadBalancerIPs", default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_ips: Option<bool>,
}

/// A Kubernetes label selector.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_expressions: Option<Vec<LabelSelectorRequirement>>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
pub struct LabelSelectorRequirement {
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
}

/// The status of a pool or policy: its conditions (a map keyed by `type`, so that several
/// writers can each own their own conditions with server-side apply).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
pub struct ObjectStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// A `metav1.Condition`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    pub last_transition_time: String,
    pub reason: String,
    pub message: String,
}

/// Both CRDs as multi-document YAML (what `ferrite manifests crds` prints).
pub fn crds_yaml() -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::from(
        "# ferrite's CustomResourceDefinitions, generated by `ferrite manifests crds`.\n",
    );
    for crd in [LoadBalancerIPPool::crd(), L2AnnouncementPolicy::crd()] {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd)?);
    }
    Ok(out)
}
