//! `networking.k8s.io/v1 NetworkPolicy` → [`model::NetworkPolicy`].

use ipnet::IpNet;
use serde_json::{Map, Value};
use smol_str::SmolStr;

use super::{
    ObjectError, ObjectMeta, decode_field, invalid, missing, port_number, protocol, selector, take,
};
use crate::model::{self, PolicyPeer, PolicyPort, PolicyPortNumber, PolicyRule};

pub(super) fn decode(mut value: Value) -> Result<model::NetworkPolicy, ObjectError> {
    let metadata: ObjectMeta = decode_field(take(&mut value, "metadata"), "metadata")?;
    let name = metadata.object_name()?;
    let spec = match take(&mut value, "spec") {
        Value::Object(spec) => spec,
        Value::Null => return Err(missing("spec")),
        _ => return Err(invalid("spec", "must be a mapping")),
    };
    let pod_selector = match spec.get("podSelector") {
        None | Some(Value::Null) => model::LabelSelector::default(),
        Some(value) => selector::required(value, "spec.podSelector")?,
    };
    let ingress = rules(&spec, "ingress", "from")?;
    let egress = rules(&spec, "egress", "to")?;
    // Kubernetes' default: Ingress always, Egress when egress rules are present.
    let (has_ingress, has_egress) = match spec.get("policyTypes") {
        None | Some(Value::Null) => (true, egress.as_ref().is_some_and(|r| !r.is_empty())),
        Some(Value::Array(types)) => {
            let mut flags = (false, false);
            for (index, t) in types.iter().enumerate() {
                match t.as_str() {
                    Some("Ingress") => flags.0 = true,
                    Some("Egress") => flags.1 = true,
                    _ => {
                        return Err(invalid(
                            format!("spec.policyTypes[{index}]"),
                            format!("`{t}` is not Ingress or Egress"),
                        ));
                    }
                }
            }
            flags
        }
        Some(_) => return Err(invalid("spec.policyTypes", "must be a list")),
    };
    Ok(model::NetworkPolicy {
        name,
        pod_selector,
        ingress: has_ingress.then(|| ingress.unwrap_or_default()),
        egress: has_egress.then(|| egress.unwrap_or_default()),
    })
}

fn rules(
    spec: &Map<String, Value>,
    field: &str,
    peers_field: &str,
) -> Result<Option<Vec<PolicyRule>>, ObjectError> {
    let list = match spec.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(invalid(format!("spec.{field}"), "must be a list")),
    };
    let mut out = Vec::with_capacity(list.len());
    for (index, rule) in list.iter().enumerate() {
        let at = format!("spec.{field}[{index}]");
        let Value::Object(rule) = rule else {
            return Err(invalid(at, "must be a mapping"));
        };
        let mut parsed = PolicyRule::default();
        for (i, peer) in items(rule.get(peers_field), &format!("{at}.{peers_field}"))?
            .iter()
            .enumerate()
        {
            parsed
                .peers
                .push(self::peer(peer, &format!("{at}.{peers_field}[{i}]"))?);
        }
        for (i, port) in items(rule.get("ports"), &format!("{at}.ports"))?
            .iter()
            .enumerate()
        {
            parsed
                .ports
                .push(self::port(port, &format!("{at}.ports[{i}]"))?);
        }
        out.push(parsed);
    }
    Ok(Some(out))
}

fn items<'a>(value: Option<&'a Value>, field: &str) -> Result<&'a [Value], ObjectError> {
    match value {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(list)) => Ok(list),
        Some(_) => Err(invalid(field, "must be a list")),
    }
}

fn peer(value: &Value, field: &str) -> Result<PolicyPeer, ObjectError> {
    let Value::Object(peer) = value else {
        return Err(invalid(field, "must be a mapping"));
    };
    if let Some(block) = peer.get("ipBlock").filter(|b| !b.is_null()) {
        if peer.get("podSelector").is_some_and(|v| !v.is_null())
            || peer.get("namespaceSelector").is_some_and(|v| !v.is_null())
        {
            return Err(invalid(field, "ipBlock cannot be combined with selectors"));
        }
        let cidr_text = block
            .get("cidr")
            .and_then(Value::as_str)
            .ok_or_else(|| missing(format!("{field}.ipBlock.cidr")))?;
        let cidr = parse_cidr(cidr_text, &format!("{field}.ipBlock.cidr"))?;
        let mut except = Vec::new();
        for (i, e) in items(block.get("except"), &format!("{field}.ipBlock.except"))?
            .iter()
            .enumerate()
        {
            let at = format!("{field}.ipBlock.except[{i}]");
            let text = e
                .as_str()
                .ok_or_else(|| invalid(at.as_str(), "must be a string"))?;
            let net = parse_cidr(text, &at)?;
            if !cidr.contains(&net) {
                return Err(invalid(at, format!("{net} is not inside {cidr}")));
            }
            except.push(net);
        }
        return Ok(PolicyPeer::IpBlock { cidr, except });
    }
    let pod_selector =
        selector::optional(peer.get("podSelector"), &format!("{field}.podSelector"))?;
    let namespace_selector = selector::optional(
        peer.get("namespaceSelector"),
        &format!("{field}.namespaceSelector"),
    )?;
    if pod_selector.is_none() && namespace_selector.is_none() {
        return Err(invalid(
            field,
            "needs podSelector, namespaceSelector or ipBlock",
        ));
    }
    Ok(PolicyPeer::Pods {
        pod_selector,
        namespace_selector,
    })
}

fn parse_cidr(text: &str, field: &str) -> Result<IpNet, ObjectError> {
    text.parse::<IpNet>()
        .map(|n| n.trunc())
        .map_err(|_| invalid(field, format!("`{text}` is not a CIDR")))
}

fn port(value: &Value, field: &str) -> Result<PolicyPort, ObjectError> {
    let Value::Object(port) = value else {
        return Err(invalid(field, "must be a mapping"));
    };
    let protocol = protocol(
        port.get("protocol").and_then(Value::as_str),
        &format!("{field}.protocol"),
    )?;
    let number = match port.get("port") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => {
            let n = n
                .as_i64()
                .ok_or_else(|| invalid(format!("{field}.port"), "must be an integer"))?;
            Some(PolicyPortNumber::Number(port_number(
                n,
                &format!("{field}.port"),
            )?))
        }
        Some(Value::String(name)) if !name.is_empty() => {
            Some(PolicyPortNumber::Name(SmolStr::new(name)))
        }
        Some(other) => {
            return Err(invalid(
                format!("{field}.port"),
                format!("`{other}` is not a port"),
            ));
        }
    };
    let end_port = match port.get("endPort") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => {
            let end = port_number(n.as_i64().unwrap_or(0), &format!("{field}.endPort"))?;
            match number {
                Some(PolicyPortNumber::Number(start)) if start <= end => Some(end),
                Some(PolicyPortNumber::Number(start)) => {
                    return Err(invalid(
                        format!("{field}.endPort"),
                        format!("{end} is below port {start}"),
                    ));
                }
                _ => return Err(invalid(format!("{field}.endPort"), "needs a numeric port")),
            }
        }
        Some(other) => {
            return Err(invalid(
                format!("{field}.endPort"),
                format!("`{other}` is not a port"),
            ));
        }
    };
    Ok(PolicyPort {
        protocol,
        port: number,
        end_port,
    })
}
