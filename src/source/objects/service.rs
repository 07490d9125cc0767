//! `v1 Service` → [`model::Service`].

use std::{collections::BTreeSet, net::IpAddr};

use serde::Deserialize;
use serde_json::Value;
use smol_str::SmolStr;

use super::{
    ObjectError, ObjectMeta, decode_field, invalid, missing, port_number, port_protocol, take,
};
use crate::model::{
    self, IpFamily, IpFamilyPolicy, NotProxied, Protocol, SCTP_NOT_SERVED, ServicePort,
    ServiceType, SessionAffinity, TargetPort, TrafficPolicy, UnservedPort,
};

/// A Service with this label (any value) belongs to another proxy: kube-proxy and ferrite skip it.
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// A Service with this label is not proxied (kube-proxy's other skip label).
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

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
    #[serde(rename = "loadBalancerIP")]
    load_balancer_ip: Option<String>,
    load_balancer_class: Option<String>,
    ip_family_policy: Option<String>,
    ip_families: Option<Vec<String>>,
    external_traffic_policy: Option<String>,
    internal_traffic_policy: Option<String>,
    #[serde(rename = "externalIPs")]
    external_ips: Option<Vec<String>>,
    health_check_node_port: Option<i64>,
    load_balancer_source_ranges: Option<Vec<String>>,
}

/// The part of `status` ferrite reads: `loadBalancer.ingress[].ip`.
#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ServiceStatus {
    load_balancer: Option<LoadBalancerStatus>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct LoadBalancerStatus {
    ingress: Option<Vec<IngressManifest>>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct IngressManifest {
    ip: Option<String>,
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
    node_port: Option<i64>,
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
    let (ports, unserved_ports) = ports(spec.ports.unwrap_or_default())?;
    let session_affinity = session_affinity(
        spec.session_affinity.as_deref(),
        spec.session_affinity_config,
    )?;
    let status: ServiceStatus = decode_field(take(&mut value, "status"), "status")?;
    let labels = ObjectMeta::string_map(metadata.labels.as_ref(), "metadata.labels")?;
    let not_proxied = not_proxied(&labels);
    Ok(model::Service {
        name,
        service_type,
        cluster_ips,
        ports,
        session_affinity,
        created_unix: metadata.created_unix()?,
        labels,
        annotations: ObjectMeta::string_map(metadata.annotations.as_ref(), "metadata.annotations")?,
        load_balancer_ip: nonempty(spec.load_balancer_ip.as_deref()),
        load_balancer_class: nonempty(spec.load_balancer_class.as_deref()),
        ip_family_policy: ip_family_policy(spec.ip_family_policy.as_deref())?,
        ip_families: ip_families(spec.ip_families.as_deref().unwrap_or_default())?,
        external_traffic_policy: traffic_policy(
            spec.external_traffic_policy.as_deref(),
            "spec.externalTrafficPolicy",
        )?,
        status_ingress: status_ingress(status)?,
        external_ips: north_south::external_ips(spec.external_ips.as_deref().unwrap_or_default())?,
        health_check_node_port: spec
            .health_check_node_port
            .map(|p| port_number(p, "spec.healthCheckNodePort"))
            .transpose()?,
        source_ranges: north_south::source_ranges(
            spec.load_balancer_source_ranges
                .as_deref()
                .unwrap_or_default(),
        )?,
        internal_traffic_policy: traffic_policy(
            spec.internal_traffic_policy.as_deref(),
            "spec.internalTrafficPolicy",
        )?,
        not_proxied,
        unserved_ports,
    })
}

/// The labels that hand a service to another proxy, as kube-proxy reads them (presence only).
fn not_proxied(labels: &std::collections::BTreeMap<SmolStr, SmolStr>) -> Option<NotProxied> {
    if let Some(proxy) = labels.get(SERVICE_PROXY_NAME_LABEL) {
        return Some(NotProxied::OtherProxy(proxy.clone()));
    }
    labels
        .contains_key(HEADLESS_LABEL)
        .then_some(NotProxied::HeadlessLabel)
}

#[path = "service_north_south.rs"]
mod north_south;

fn nonempty(value: Option<&str>) -> Option<SmolStr> {
    value.filter(|v| !v.is_empty()).map(SmolStr::new)
}

fn ip_family_policy(value: Option<&str>) -> Result<IpFamilyPolicy, ObjectError> {
    match value {
        None | Some("SingleStack") => Ok(IpFamilyPolicy::SingleStack),
        Some("PreferDualStack") => Ok(IpFamilyPolicy::PreferDualStack),
        Some("RequireDualStack") => Ok(IpFamilyPolicy::RequireDualStack),
        Some(other) => Err(invalid(
            "spec.ipFamilyPolicy",
            format!(
                "unknown policy `{other}` \
                 (expected SingleStack, PreferDualStack or RequireDualStack)"
            ),
        )),
    }
}

fn ip_families(values: &[String]) -> Result<Vec<IpFamily>, ObjectError> {
    let mut families = Vec::with_capacity(values.len());
    for (index, value) in values.iter().enumerate() {
        let family = match value.as_str() {
            "IPv4" => IpFamily::V4,
            "IPv6" => IpFamily::V6,
            other => {
                return Err(invalid(
                    format!("spec.ipFamilies[{index}]"),
                    format!("unknown family `{other}` (expected IPv4 or IPv6)"),
                ));
            }
        };
        if families.contains(&family) || families.len() == 2 {
            return Err(invalid(
                "spec.ipFamilies",
                "at most one IPv4 and one IPv6 entry",
            ));
        }
        families.push(family);
    }
    Ok(families)
}

fn traffic_policy(value: Option<&str>, field: &str) -> Result<TrafficPolicy, ObjectError> {
    match value {
        // `Global` is the pre-1.14 spelling of Cluster, still accepted by the API server.
        None | Some("Cluster" | "Global") => Ok(TrafficPolicy::Cluster),
        Some("Local") => Ok(TrafficPolicy::Local),
        Some(other) => Err(invalid(
            field,
            format!("unknown policy `{other}` (expected Cluster or Local)"),
        )),
    }
}

/// `status.loadBalancer.ingress[].ip`; entries with only a hostname are skipped.
fn status_ingress(status: ServiceStatus) -> Result<Vec<IpAddr>, ObjectError> {
    let entries = status
        .load_balancer
        .and_then(|lb| lb.ingress)
        .unwrap_or_default();
    let mut ips = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let Some(text) = entry.ip.filter(|ip| !ip.is_empty()) else {
            continue;
        };
        let ip = text.parse().map_err(|_| {
            invalid(
                format!("status.loadBalancer.ingress[{index}].ip"),
                format!("`{text}` is not an IP address"),
            )
        })?;
        ips.push(ip);
    }
    Ok(ips)
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

/// The served ports, and the valid ones ferrite does not serve (SCTP).
fn ports(raw: Vec<Value>) -> Result<(Vec<ServicePort>, Vec<UnservedPort>), ObjectError> {
    let count = raw.len();
    let mut ports = Vec::with_capacity(count);
    let mut unserved = Vec::new();
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    for (index, value) in raw.into_iter().enumerate() {
        let field = format!("spec.ports[{index}]");
        let manifest: PortManifest = decode_field(value, &field)?;
        let port = match manifest.port {
            Some(port) => port_number(port, &format!("{field}.port"))?,
            None => return Err(missing(format!("{field}.port"))),
        };
        let protocol = port_protocol(manifest.protocol.as_deref(), &format!("{field}.protocol"))?;
        let protocol_name = protocol.map_or("SCTP", Protocol::as_str);
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
        if !numbers.insert((port, protocol_name)) {
            return Err(invalid(
                format!("{field}.port"),
                format!("duplicate port {port}/{protocol_name}"),
            ));
        }
        let target_port = target_port(manifest.target_port, port, &format!("{field}.targetPort"))?;
        let node_port = manifest
            .node_port
            .filter(|p| *p != 0)
            .map(|p| port_number(p, &format!("{field}.nodePort")))
            .transpose()?;
        let Some(protocol) = protocol else {
            unserved.push(UnservedPort {
                name,
                port,
                protocol: SmolStr::new_static("SCTP"),
                reason: SCTP_NOT_SERVED,
            });
            continue;
        };
        ports.push(ServicePort {
            name,
            protocol,
            port,
            target_port,
            node_port,
        });
    }
    Ok((ports, unserved))
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
