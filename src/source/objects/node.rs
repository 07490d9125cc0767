//! `v1 Node` → [`model::Node`].

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;
use smol_str::SmolStr;

use super::{ObjectError, ObjectMeta, decode_field, invalid, missing, take};
use crate::model;

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct NodeSpec {
    #[serde(rename = "podCIDR")]
    pod_cidr: Option<String>,
    #[serde(rename = "podCIDRs")]
    pod_cidrs: Option<Vec<String>>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct NodeStatus {
    addresses: Option<Vec<NodeAddress>>,
    conditions: Option<Vec<NodeCondition>>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct NodeAddress {
    #[serde(rename = "type")]
    kind: String,
    address: String,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct NodeCondition {
    #[serde(rename = "type")]
    kind: String,
    status: String,
}

pub(super) fn decode(mut value: Value) -> Result<model::Node, ObjectError> {
    let metadata: ObjectMeta = decode_field(take(&mut value, "metadata"), "metadata")?;
    let name = match metadata.name.as_deref() {
        None | Some("") => return Err(missing("metadata.name")),
        Some(name) => SmolStr::new(name),
    };
    let labels = ObjectMeta::string_map(metadata.labels.as_ref(), "metadata.labels")?;
    let spec: NodeSpec = decode_field(take(&mut value, "spec"), "spec")?;
    let status: NodeStatus = decode_field(take(&mut value, "status"), "status")?;
    let (field, raw) = match (spec.pod_cidrs, spec.pod_cidr) {
        (Some(cidrs), _) if !cidrs.is_empty() => ("spec.podCIDRs", cidrs),
        (_, Some(cidr)) if !cidr.is_empty() => ("spec.podCIDR", vec![cidr]),
        _ => ("spec.podCIDRs", Vec::new()),
    };
    let mut pod_cidrs = Vec::with_capacity(raw.len());
    for (index, text) in raw.iter().enumerate() {
        let cidr: IpNet = text.parse().map_err(|_| {
            invalid(
                format!("{field}[{index}]"),
                format!("`{text}` is not a CIDR"),
            )
        })?;
        if pod_cidrs
            .iter()
            .any(|c: &IpNet| c.addr().is_ipv4() == cidr.addr().is_ipv4())
        {
            return Err(invalid(field, "at most one CIDR per IP family"));
        }
        pod_cidrs.push(cidr);
    }
    let mut node = model::Node {
        name,
        labels,
        pod_cidrs,
        ready: true,
        ..model::Node::default()
    };
    for (index, address) in status.addresses.unwrap_or_default().into_iter().enumerate() {
        let at = format!("status.addresses[{index}].address");
        let ip = || {
            address.address.parse::<IpAddr>().map_err(|_| {
                invalid(
                    at.as_str(),
                    format!("`{}` is not an IP address", address.address),
                )
            })
        };
        match address.kind.as_str() {
            "InternalIP" => node.internal_ips.push(ip()?),
            "ExternalIP" => node.external_ips.push(ip()?),
            "Hostname" if !address.address.is_empty() => {
                node.hostname = Some(SmolStr::new(&address.address));
            }
            _ => {}
        }
    }
    if let Some(ready) = status
        .conditions
        .unwrap_or_default()
        .iter()
        .find(|c| c.kind == "Ready")
    {
        node.ready = ready.status == "True";
    }
    Ok(node)
}
