//! `v1 Namespace` → [`model::Namespace`] and `v1 Pod` → [`model::Pod`].

use std::net::IpAddr;

use serde::Deserialize;
use serde_json::Value;
use smol_str::SmolStr;

use super::{ObjectError, ObjectMeta, decode_field, invalid, missing, take};
use crate::model::{self, PodPhase};

pub(super) fn namespace(mut value: Value) -> Result<model::Namespace, ObjectError> {
    let metadata: ObjectMeta = decode_field(take(&mut value, "metadata"), "metadata")?;
    let name = match metadata.name.as_deref() {
        None | Some("") => return Err(missing("metadata.name")),
        Some(name) => SmolStr::new(name),
    };
    let labels = ObjectMeta::string_map(metadata.labels.as_ref(), "metadata.labels")?;
    Ok(model::Namespace { name, labels })
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct PodSpec {
    node_name: Option<String>,
    host_network: Option<bool>,
    containers: Vec<Container>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct Container {
    ports: Vec<ContainerPort>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct ContainerPort {
    name: Option<String>,
    #[serde(rename = "containerPort")]
    number: u16,
    protocol: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct PodStatus {
    phase: Option<String>,
    #[serde(rename = "podIP")]
    pod_ip: Option<String>,
    #[serde(rename = "podIPs")]
    pod_ips: Option<Vec<PodIp>>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct PodIp {
    ip: String,
}

pub(super) fn pod(mut value: Value) -> Result<model::Pod, ObjectError> {
    let metadata: ObjectMeta = decode_field(take(&mut value, "metadata"), "metadata")?;
    let name = metadata.object_name()?;
    let labels = ObjectMeta::string_map(metadata.labels.as_ref(), "metadata.labels")?;
    let spec: PodSpec = decode_field(take(&mut value, "spec"), "spec")?;
    let status: PodStatus = decode_field(take(&mut value, "status"), "status")?;
    let (field, raw): (&str, Vec<String>) = match (status.pod_ips, status.pod_ip) {
        (Some(ips), _) if !ips.is_empty() => {
            ("status.podIPs", ips.into_iter().map(|i| i.ip).collect())
        }
        (_, Some(ip)) if !ip.is_empty() => ("status.podIP", vec![ip]),
        _ => ("status.podIPs", Vec::new()),
    };
    let ips = raw
        .iter()
        .enumerate()
        .map(|(index, text)| {
            text.parse::<IpAddr>().map_err(|_| {
                invalid(
                    format!("{field}[{index}]"),
                    format!("`{text}` is not an IP address"),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let phase = match status.phase.as_deref() {
        None | Some("Pending") => PodPhase::Pending,
        Some("Running") => PodPhase::Running,
        Some("Succeeded") => PodPhase::Succeeded,
        Some("Failed") => PodPhase::Failed,
        Some(_) => PodPhase::Unknown,
    };
    let mut named_ports = Vec::new();
    for (c, container) in spec.containers.iter().enumerate() {
        for (i, port) in container.ports.iter().enumerate() {
            let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) else {
                continue;
            };
            let protocol = match port.protocol.as_deref() {
                None | Some("TCP") => model::Protocol::Tcp,
                Some("UDP") => model::Protocol::Udp,
                Some("SCTP") => model::Protocol::Sctp,
                Some(other) => {
                    return Err(invalid(
                        format!("spec.containers[{c}].ports[{i}].protocol"),
                        format!("`{other}` is not TCP, UDP or SCTP"),
                    ));
                }
            };
            named_ports.push(model::NamedPort {
                name: SmolStr::new(port_name),
                protocol,
                port: port.number,
            });
        }
    }
    Ok(model::Pod {
        name,
        labels,
        named_ports,
        node_name: spec.node_name.filter(|n| !n.is_empty()).map(SmolStr::from),
        ips,
        host_network: spec.host_network.unwrap_or(false),
        phase,
    })
}
