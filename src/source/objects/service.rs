//! `v1 Service` → [`model::Service`].

use std::{collections::BTreeSet, net::IpAddr};

use serde::Deserialize;
use serde_json::Value;
use smol_str::SmolStr;

use super::{ObjectError, ObjectMeta, decode_field, invalid, missing, port_number, protocol, take};
use crate::model::{self, ServicePort, ServiceType, SessionAffinity, TargetPort};

/// Kubernetes' default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT_SECONDS: u32 = 10_800;
/// Kubernetes' upper bound for the `ClientIP` affinity timeout (1 day).
pub const MAX_AFFINITY_TIMEOUT_SECONDS: u32 = 86_400;

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ServiceSpec {
    #[serde(rename = "type")]
    service_type: Option<String>,
    #[serde(rename = "clusterIP")]
    cluster_ip: Option<String>,
    #[serde(rename = "clusterIPs")]
    cluster_ips: Option<Vec<String>>,
    ports: Option<Vec<Value>>,
    session_affinity: Option<String>,
    session_affinity_config: Option<AffinityConfig>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct AffinityConfig {
    #[serde(rename = "clientIP")]
    client_ip: Option<ClientIpConfig>,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ClientIpConfig {
    timeout_seconds: Option<i64>,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct PortManifest {
    name: Option<String>,
    protocol: Option<String>,
    port: Option<i64>,
    target_port: Value,
}

pub(super) fn decode(mut value: Value) -> Result<model::Service, ObjectError> {
    let metadata: ObjectMeta = decode_field(take(&mut value, "metadata"), "metadata")?;
    let name = metadata.object_name()?;
    let spec: ServiceSpec = decode_field(take(&mut value, "spec"), "spec")?;
    let service_type = service_type(spec.service_type.as_deref())?;
    let cluster_ips = if service_type == ServiceType::ExternalName {
        // ExternalName services are DNS aliases: Kubernetes never gives them cluster IPs.
        Vec::new()
    } else {
        cluster_ips(&spec)?
    };
    let ports = ports(spec.ports.unwrap_or_default())?;
    let session_affinity = session_affinity(
        spec.session_affinity.as_deref(),
        spec.session_affinity_config,
    )?;
    Ok(model::Service {
        name,
        service_type,
        cluster_ips,
        ports,
        session_affinity,
    })
}

fn service_type(value: Option<&str>) -> Result<ServiceType, ObjectError> {
    match value {
        None | Some("ClusterIP") => Ok(ServiceType::ClusterIp),
        Some("NodePort") => Ok(ServiceType::NodePort),
        Some("LoadBalancer") => Ok(ServiceType::LoadBalancer),
        Some("ExternalName") => Ok(ServiceType::ExternalName),
        Some(other) => Err(invalid(
            "spec.type",
            format!(
                "unknown type `{other}` \
                 (expected ClusterIP, NodePort, LoadBalancer or ExternalName)"
            ),
        )),
    }
}

/// `clusterIPs` when set and non-empty, else `clusterIP`; `None` or an empty string means headless.
fn cluster_ips(spec: &ServiceSpec) -> Result<Vec<IpAddr>, ObjectError> {
    let (field, raw): (&str, Vec<&str>) = match (&spec.cluster_ips, &spec.cluster_ip) {
        (Some(ips), _) if !ips.is_empty() => {
            ("spec.clusterIPs", ips.iter().map(String::as_str).collect())
        }
        (_, Some(ip)) => ("spec.clusterIP", vec![ip.as_str()]),
        _ => return Ok(Vec::new()),
    };
    let headless = |ip: &&str| ip.is_empty() || *ip == "None";
    if raw.iter().any(headless) {
        return if raw.len() == 1 {
            Ok(Vec::new())
        } else {
            Err(invalid(field, "`None` (headless) must be the only entry"))
        };
    }
    if raw.len() > 2 {
        return Err(invalid(
            field,
            "at most two addresses (one IPv4 and one IPv6)",
        ));
    }
    let mut ips = Vec::with_capacity(raw.len());
    for (index, text) in raw.iter().enumerate() {
        let at = if field == "spec.clusterIPs" {
            format!("{field}[{index}]")
        } else {
            field.to_owned()
        };
        let ip: IpAddr = text
            .parse()
            .map_err(|_| invalid(at.as_str(), format!("`{text}` is not an IP address")))?;
        if ip.is_unspecified() {
            return Err(invalid(at, format!("`{text}` is the unspecified address")));
        }
        ips.push(ip);
    }
    if let [first, second] = ips[..]
        && first.is_ipv4() == second.is_ipv4()
    {
        return Err(invalid(
            field,
            "two addresses must be one IPv4 and one IPv6",
        ));
    }
    Ok(ips)
}

fn ports(raw: Vec<Value>) -> Result<Vec<ServicePort>, ObjectError> {
    let count = raw.len();
    let mut ports = Vec::with_capacity(count);
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    for (index, value) in raw.into_iter().enumerate() {
        let field = format!("spec.ports[{index}]");
        let manifest: PortManifest = decode_field(value, &field)?;
        let port = match manifest.port {
            Some(port) => port_number(port, &format!("{field}.port"))?,
            None => return Err(missing(format!("{field}.port"))),
        };
        let protocol = protocol(manifest.protocol.as_deref(), &format!("{field}.protocol"))?;
        let name = SmolStr::new(manifest.name.as_deref().unwrap_or_default());
        if count > 1 && name.is_empty() {
            return Err(invalid(
                format!("{field}.name"),
                "every port needs a name when a Service has more than one",
            ));
        }
        if !names.insert(name.clone()) {
            return Err(invalid(
                format!("{field}.name"),
                format!("duplicate port name `{name}`"),
            ));
        }
        if !numbers.insert((port, protocol)) {
            return Err(invalid(
                format!("{field}.port"),
                format!("duplicate port {port}/{protocol}"),
            ));
        }
        let target_port = target_port(manifest.target_port, port, &format!("{field}.targetPort"))?;
        ports.push(ServicePort {
            name,
            protocol,
            port,
            target_port,
        });
    }
    Ok(ports)
}

/// `targetPort`: a number, or the name of a container port. Unset, 0 or "" mean `port`, as in
/// Kubernetes' defaulting.
fn target_port(value: Value, port: u16, field: &str) -> Result<TargetPort, ObjectError> {
    match value {
        Value::Null => Ok(TargetPort::Number(port)),
        Value::Number(number) => match number.as_i64() {
            Some(0) => Ok(TargetPort::Number(port)),
            Some(n) => port_number(n, field).map(TargetPort::Number),
            None => Err(invalid(
                field,
                format!("{number} is not a port number (1-65535)"),
            )),
        },
        Value::String(name) if name.is_empty() => Ok(TargetPort::Number(port)),
        Value::String(name) if name.bytes().all(|b| b.is_ascii_digit()) => Err(invalid(
            field,
            format!("`\"{name}\"` is a quoted number; write it unquoted or use a port name"),
        )),
        Value::String(name) => Ok(TargetPort::Name(SmolStr::new(name))),
        other => Err(invalid(
            field,
            format!("expected a port number or name, got `{other}`"),
        )),
    }
}

fn session_affinity(
    value: Option<&str>,
    config: Option<AffinityConfig>,
) -> Result<SessionAffinity, ObjectError> {
    const FIELD: &str = "spec.sessionAffinityConfig.clientIP.timeoutSeconds";
    match value {
        None | Some("None") => Ok(SessionAffinity::None),
        Some("ClientIP") => {
            let timeout = config
                .and_then(|c| c.client_ip)
                .and_then(|c| c.timeout_seconds);
            let timeout_seconds = match timeout {
                None => DEFAULT_AFFINITY_TIMEOUT_SECONDS,
                Some(seconds) => u32::try_from(seconds)
                    .ok()
                    .filter(|s| (1..=MAX_AFFINITY_TIMEOUT_SECONDS).contains(s))
                    .ok_or_else(|| {
                        invalid(
                            FIELD,
                            format!(
                                "{seconds} is out of range \
                                 (1-{MAX_AFFINITY_TIMEOUT_SECONDS} seconds)"
                            ),
                        )
                    })?,
            };
            Ok(SessionAffinity::ClientIp { timeout_seconds })
        }
        Some(other) => Err(invalid(
            "spec.sessionAffinity",
            format!("unknown session affinity `{other}` (expected None or ClientIP)"),
        )),
    }
}
