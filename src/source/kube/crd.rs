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
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
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
    #[serde(
        rename = "allowFirstLastIPs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("enum" = ["Yes", "No"]))]
    pub allow_first_last_ips: Option<String>,
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
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
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
    #[serde(
        rename = "externalIPs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub external_ips: Option<bool>,
    /// Announce the services' LoadBalancer addresses (`status.loadBalancer.ingress`).
    #[serde(
        rename = "loadBalancerIPs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
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
        out.push_str(&quote_yaml11_booleans(&serde_yaml_ng::to_string(&crd)?));
    }
    Ok(out)
}

/// Quotes plain scalars that YAML 1.1 reads as booleans (`Yes`, `No`, `on`, ...). The emitter
/// writes YAML 1.2, where they are strings, but Kubernetes' YAML reader follows 1.1 and would
/// turn the `allowFirstLastIPs` enum values into `true`/`false`. Real booleans are emitted as
/// `true`/`false`, so every such plain scalar here is a string.
fn quote_yaml11_booleans(yaml: &str) -> String {
    const YAML11_BOOLEANS: &[&str] = &[
        "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off",
        "OFF",
    ];
    let mut out = String::with_capacity(yaml.len());
    for line in yaml.lines() {
        let split = line.rfind(": ").map(|i| i + 2).or_else(|| {
            line.trim_start()
                .starts_with("- ")
                .then(|| line.find("- ").map_or(0, |i| i + 2))
        });
        match split {
            Some(at) if YAML11_BOOLEANS.contains(&&line[at..]) => {
                out.push_str(&line[..at]);
                out.push('\'');
                out.push_str(&line[at..]);
                out.push('\'');
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    #[test]
    fn yaml_1_1_booleans_are_quoted_and_everything_else_is_unchanged() {
        let yaml = "enum:\n- Yes\n- No\na: on\nb: true\nc: Yesterday\n";
        assert_eq!(
            super::quote_yaml11_booleans(yaml),
            "enum:\n- 'Yes'\n- 'No'\na: 'on'\nb: true\nc: Yesterday\n"
        );
    }

    #[test]
    fn crds_parse_back_with_cilium_field_names_and_keyed_conditions() {
        let yaml = super::crds_yaml().expect("serialize");
        let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&yaml)
            .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
            .filter(|v: &Value| !v.is_null())
            .collect();
        assert_eq!(docs.len(), 2);
        let schema = |doc: &Value| {
            doc.pointer("/spec/versions/0/schema/openAPIV3Schema/properties")
                .cloned()
                .expect("schema")
        };
        let pool = schema(&docs[0]);
        for field in [
            "blocks",
            "serviceSelector",
            "allowFirstLastIPs",
            "disabled",
            "priority",
        ] {
            assert!(
                pool["spec"]["properties"].get(field).is_some(),
                "pool spec.{field}"
            );
        }
        assert_eq!(
            pool["spec"]["properties"]["allowFirstLastIPs"]["enum"],
            serde_json::json!(["Yes", "No"])
        );
        let policy = schema(&docs[1]);
        for field in [
            "serviceSelector",
            "nodeSelector",
            "interfaces",
            "externalIPs",
            "loadBalancerIPs",
        ] {
            assert!(
                policy["spec"]["properties"].get(field).is_some(),
                "policy spec.{field}"
            );
        }
        for doc in &docs {
            assert_eq!(doc["spec"]["scope"], "Cluster");
            assert_eq!(doc["spec"]["group"], "ferrite.dev");
            assert!(
                doc.pointer("/spec/versions/0/subresources/status")
                    .is_some()
            );
            let conditions = schema(doc)["status"]["properties"]["conditions"].clone();
            assert_eq!(conditions["x-kubernetes-list-type"], "map");
            assert_eq!(
                conditions["x-kubernetes-list-map-keys"],
                serde_json::json!(["type"])
            );
        }
    }
}
