//! `discovery.k8s.io/v1 EndpointSlice` → [`model::EndpointSlice`].

use std::net::IpAddr;

use serde::Deserialize;
use serde_json::Value;
use smol_str::SmolStr;

use super::{
    Decoded, Object, ObjectError, ObjectMeta, decode_field, invalid, missing, port_number,
    port_protocol, take,
};
use crate::model::{self, Endpoint, EndpointPort, ServiceName};

/// The label linking a slice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Clone, Copy, PartialEq, Eq)]
enum AddressType {
    V4,
    V6,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct EndpointManifest {
    addresses: Option<Vec<String>>,
    conditions: Option<Conditions>,
    node_name: Option<String>,
    target_ref: Option<TargetRef>,
}

/// `targetRef`: the object behind the endpoint (a Pod, for a selector's slices).
#[derive(Default, Deserialize)]
#[serde(default)]
struct TargetRef {
    kind: Option<String>,
    name: Option<String>,
    namespace: Option<String>,
}

/// `conditions`; every field is optional in Kubernetes and has a defined meaning when unset.
#[derive(Default, Deserialize)]
#[serde(default)]
struct Conditions {
    ready: Option<bool>,
    serving: Option<bool>,
    terminating: Option<bool>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct PortManifest {
    name: Option<String>,
    protocol: Option<String>,
    port: Option<i64>,
}

pub(super) fn decode(mut value: Value) -> Result<Decoded, ObjectError> {
    let metadata: ObjectMeta = decode_field(take(&mut value, "metadata"), "metadata")?;
    let name = metadata.object_name()?;
    let service = match metadata.label(SERVICE_NAME_LABEL) {
        Some(Value::String(service)) if !service.is_empty() => {
            ServiceName::new(name.namespace.clone(), service.as_str())
        }
        Some(_) => {
            return Err(invalid(
                format!("metadata.labels[{SERVICE_NAME_LABEL}]"),
                "must be the name of a Service",
            ));
        }
        None => return Err(missing(format!("metadata.labels[{SERVICE_NAME_LABEL}]"))),
    };
    let address_type: Option<String> =
        decode_field(take(&mut value, "addressType"), "addressType")?;
    let address_type = match address_type.as_deref() {
        Some("IPv4") => AddressType::V4,
        Some("IPv6") => AddressType::V6,
        Some("FQDN") => {
            return Ok(Decoded::Ignored(
                "FQDN EndpointSlices are not load-balanced",
            ));
        }
        Some(other) => {
            return Err(invalid(
                "addressType",
                format!("unknown address type `{other}` (expected IPv4, IPv6 or FQDN)"),
            ));
        }
        None => return Err(missing("addressType")),
    };
    let raw_endpoints: Vec<Value> = decode_field(take(&mut value, "endpoints"), "endpoints")?;
    let endpoints = raw_endpoints
        .into_iter()
        .enumerate()
        .map(|(index, endpoint)| self::endpoint(endpoint, address_type, index, &name.namespace))
        .collect::<Result<_, _>>()?;
    let raw_ports: Vec<Value> = decode_field(take(&mut value, "ports"), "ports")?;
    // SCTP ports are left out: no Service port of ferrite's uses them.
    let ports = raw_ports
        .into_iter()
        .enumerate()
        .filter_map(|(index, port)| self::port(port, index).transpose())
        .collect::<Result<_, _>>()?;
    Ok(Decoded::Object(Object::EndpointSlice(
        model::EndpointSlice {
            name,
            service,
            ports,
            endpoints,
        },
    )))
}

fn endpoint(
    value: Value,
    address_type: AddressType,
    index: usize,
    namespace: &str,
) -> Result<Endpoint, ObjectError> {
    let field = format!("endpoints[{index}]");
    let manifest: EndpointManifest = decode_field(value, &field)?;
    let raw = manifest.addresses.unwrap_or_default();
    if raw.is_empty() {
        return Err(missing(format!("{field}.addresses")));
    }
    let mut addresses = Vec::with_capacity(raw.len());
    for (i, text) in raw.iter().enumerate() {
        let at = format!("{field}.addresses[{i}]");
        let ip: IpAddr = text
            .parse()
            .map_err(|_| invalid(at.as_str(), format!("`{text}` is not an IP address")))?;
        let family_ok = match address_type {
            AddressType::V4 => ip.is_ipv4(),
            AddressType::V6 => ip.is_ipv6(),
        };
        if !family_ok {
            let expected = if address_type == AddressType::V4 {
                "IPv4"
            } else {
                "IPv6"
            };
            return Err(invalid(
                at,
                format!("`{text}` is not an {expected} address (addressType)"),
            ));
        }
        addresses.push(ip);
    }
    // Kubernetes semantics: ready unset = ready, serving unset = ready, terminating unset = false.
    let conditions = manifest.conditions.unwrap_or_default();
    let ready = conditions.ready.unwrap_or(true);
    Ok(Endpoint {
        addresses,
        ready,
        serving: conditions.serving.unwrap_or(ready),
        terminating: conditions.terminating.unwrap_or(false),
        node_name: manifest
            .node_name
            .filter(|n| !n.is_empty())
            .map(SmolStr::from),
        pod: manifest.target_ref.and_then(|t| pod_of(t, namespace)),
    })
}

/// The pod a `targetRef` names (its namespace defaults to the slice's); `None` for other kinds.
fn pod_of(t: TargetRef, namespace: &str) -> Option<ServiceName> {
    let name = t.name.filter(|n| !n.is_empty())?;
    (t.kind.as_deref() == Some("Pod")).then(|| {
        let ns = t.namespace.filter(|n| !n.is_empty());
        ServiceName::new(ns.as_deref().unwrap_or(namespace), name.as_str())
    })
}

/// One port; `None` for an SCTP port (see [`port_protocol`]).
fn port(value: Value, index: usize) -> Result<Option<EndpointPort>, ObjectError> {
    let field = format!("ports[{index}]");
    let manifest: PortManifest = decode_field(value, &field)?;
    let port = match manifest.port {
        Some(port) => port_number(port, &format!("{field}.port"))?,
        None => return Err(missing(format!("{field}.port"))),
    };
    let Some(protocol) = port_protocol(manifest.protocol.as_deref(), &format!("{field}.protocol"))?
    else {
        return Ok(None);
    };
    Ok(Some(EndpointPort {
        name: SmolStr::new(manifest.name.as_deref().unwrap_or_default()),
        protocol,
        port,
    }))
}
