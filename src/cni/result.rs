//! The ADD result: one model, rendered in the version the runtime asked for, and parsed back
//! from `prevResult` (any supported version) for chaining and CHECK.

use std::net::IpAddr;

use serde_json::{Map, Value, json};

use super::cidr::IpNet;
use super::version::CniVersion;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: Option<String>,
    pub mtu: Option<u32>,
    /// The netns path for interfaces inside the container; `None` on the host.
    pub sandbox: Option<String>,
    /// 1.1.0 `socketPath` and `pciID`, kept when passing a prevResult through.
    pub socket_path: Option<String>,
    pub pci_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpConfig {
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    pub interface: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
    /// 1.1.0 extras: `mtu`, `advmss`, `priority`, `table`, `scope`.
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct AddResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Option<Value>,
}

/// A `prevResult` that is not a CNI result.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("prevResult: {0}")]
pub struct ResultError(pub String);

const ROUTE_1_1_KEYS: [&str; 5] = ["mtu", "advmss", "priority", "table", "scope"];

impl AddResult {
    /// The result JSON for `version`.
    #[must_use]
    pub fn render(&self, version: CniVersion) -> Value {
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut o = Map::new();
                o.insert("name".into(), json!(i.name));
                if let Some(mac) = &i.mac {
                    o.insert("mac".into(), json!(mac));
                }
                if version.has_1_1_fields() {
                    if let Some(mtu) = i.mtu {
                        o.insert("mtu".into(), json!(mtu));
                    }
                    if let Some(p) = &i.socket_path {
                        o.insert("socketPath".into(), json!(p));
                    }
                    if let Some(p) = &i.pci_id {
                        o.insert("pciID".into(), json!(p));
                    }
                }
                if let Some(s) = &i.sandbox {
                    o.insert("sandbox".into(), json!(s));
                }
                Value::Object(o)
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut o = Map::new();
                if version.ips_have_version() {
                    let v = if ip.address.is_ipv4() { "4" } else { "6" };
                    o.insert("version".into(), json!(v));
                }
                o.insert("address".into(), json!(ip.address.to_string()));
                if let Some(gw) = ip.gateway {
                    o.insert("gateway".into(), json!(gw.to_string()));
                }
                if let Some(i) = ip.interface {
                    o.insert("interface".into(), json!(i));
                }
                Value::Object(o)
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                let mut o = Map::new();
                o.insert("dst".into(), json!(r.dst.to_string()));
                if let Some(gw) = r.gw {
                    o.insert("gw".into(), json!(gw.to_string()));
                }
                if version.has_1_1_fields() {
                    for (k, v) in &r.extra {
                        o.insert(k.clone(), v.clone());
                    }
                }
                Value::Object(o)
            })
            .collect();
        let mut out = Map::new();
        out.insert("cniVersion".into(), json!(version.as_str()));
        out.insert("interfaces".into(), Value::Array(interfaces));
        out.insert("ips".into(), Value::Array(ips));
        if !routes.is_empty() {
            out.insert("routes".into(), Value::Array(routes));
        }
        out.insert("dns".into(), self.dns.clone().unwrap_or_else(|| json!({})));
        Value::Object(out)
    }

    /// Parses a result of any supported version (0.4.0's `version` keys are ignored).
    pub fn parse(value: &Value) -> Result<Self, ResultError> {
        let obj = value
            .as_object()
            .ok_or_else(|| ResultError("not an object".into()))?;
        let list = |key: &str| -> Result<Vec<Value>, ResultError> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(a)) => Ok(a.clone()),
                Some(_) => Err(ResultError(format!("{key} is not a list"))),
            }
        };
        let s = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
        let interfaces = list("interfaces")?
            .iter()
            .map(|i| {
                Ok(Interface {
                    name: s(i, "name")
                        .ok_or_else(|| ResultError("an interface has no name".into()))?,
                    mac: s(i, "mac"),
                    mtu: i
                        .get("mtu")
                        .and_then(Value::as_u64)
                        .and_then(|m| u32::try_from(m).ok()),
                    sandbox: s(i, "sandbox").filter(|s| !s.is_empty()),
                    socket_path: s(i, "socketPath"),
                    pci_id: s(i, "pciID"),
                })
            })
            .collect::<Result<Vec<_>, ResultError>>()?;
        let ips = list("ips")?
            .iter()
            .map(|ip| {
                let address = s(ip, "address")
                    .and_then(|a| a.parse().ok())
                    .ok_or_else(|| ResultError(format!("bad address in {ip}")))?;
                Ok(IpConfig {
                    address,
                    gateway: s(ip, "gateway").and_then(|g| g.parse().ok()),
                    interface: ip
                        .get("interface")
                        .and_then(Value::as_u64)
                        .and_then(|i| usize::try_from(i).ok()),
                })
            })
            .collect::<Result<Vec<_>, ResultError>>()?;
        let routes = list("routes")?
            .iter()
            .map(|r| {
                let dst = s(r, "dst")
                    .and_then(|d| d.parse().ok())
                    .ok_or_else(|| ResultError(format!("bad route dst in {r}")))?;
                let extra = ROUTE_1_1_KEYS
                    .iter()
                    .filter_map(|k| r.get(*k).map(|v| ((*k).to_owned(), v.clone())))
                    .collect();
                Ok(Route {
                    dst,
                    gw: s(r, "gw").and_then(|g| g.parse().ok()),
                    extra,
                })
            })
            .collect::<Result<Vec<_>, ResultError>>()?;
        Ok(Self {
            interfaces,
            ips,
            routes,
            dns: obj.get("dns").cloned().filter(|d| !d.is_null()),
        })
    }

    /// Appends `ours` after this (previous) result, shifting its interface indices, so a plugin
    /// earlier in the chain keeps everything it reported.
    #[must_use]
    pub fn chain(mut self, ours: AddResult) -> AddResult {
        let base = self.interfaces.len();
        self.interfaces.extend(ours.interfaces);
        self.ips.extend(ours.ips.into_iter().map(|mut ip| {
            ip.interface = ip.interface.map(|i| i + base);
            ip
        }));
        self.routes.extend(ours.routes);
        if self
            .dns
            .as_ref()
            .is_none_or(|d| d.as_object().is_some_and(Map::is_empty))
        {
            self.dns = ours.dns;
        }
        self
    }

    /// Index of the interface named `name` in `sandbox`.
    #[must_use]
    pub fn sandbox_interface(&self, name: &str, sandbox: &str) -> Option<usize> {
        self.interfaces
            .iter()
            .position(|i| i.name == name && i.sandbox.as_deref() == Some(sandbox))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AddResult {
        AddResult {
            interfaces: vec![
                Interface {
                    name: "fer0123".into(),
                    mac: Some("02:00:00:00:00:01".into()),
                    mtu: Some(1500),
                    ..Interface::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("02:00:00:00:00:02".into()),
                    mtu: Some(1500),
                    sandbox: Some("/run/netns/x".into()),
                    ..Interface::default()
                },
            ],
            ips: vec![IpConfig {
                address: "10.244.0.5/32".parse().unwrap(),
                gateway: Some("10.244.0.1".parse().unwrap()),
                interface: Some(1),
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some("10.244.0.1".parse().unwrap()),
                extra: Map::new(),
            }],
            dns: None,
        }
    }

    #[test]
    fn renders_per_version() {
        let r = sample();
        let v04 = r.render(CniVersion::V0_4_0);
        assert_eq!(v04["cniVersion"], "0.4.0");
        assert_eq!(v04["ips"][0]["version"], "4");
        assert!(v04["interfaces"][0].get("mtu").is_none());
        let v10 = r.render(CniVersion::V1_0_0);
        assert!(v10["ips"][0].get("version").is_none());
        assert!(v10["interfaces"][1].get("mtu").is_none());
        let v11 = r.render(CniVersion::V1_1_0);
        assert_eq!(v11["interfaces"][1]["mtu"], 1500);
        assert_eq!(v11["interfaces"][1]["sandbox"], "/run/netns/x");
        assert_eq!(v11["routes"][0]["gw"], "10.244.0.1");
        for v in [v04, v10, v11] {
            assert_eq!(AddResult::parse(&v).unwrap().ips, r.ips);
        }
    }

    #[test]
    fn chaining_shifts_interface_indices() {
        let prev = AddResult {
            interfaces: vec![Interface {
                name: "lo-ish".into(),
                ..Interface::default()
            }],
            dns: Some(json!({"nameservers": ["1.1.1.1"]})),
            ..AddResult::default()
        };
        let merged = prev.chain(sample());
        assert_eq!(merged.interfaces.len(), 3);
        assert_eq!(merged.ips[0].interface, Some(2));
        assert_eq!(merged.dns.unwrap()["nameservers"][0], "1.1.1.1");
    }

    #[test]
    fn rejects_garbage() {
        assert!(AddResult::parse(&json!([1])).is_err());
        assert!(AddResult::parse(&json!({"ips": [{"address": "nope"}]})).is_err());
        assert!(AddResult::parse(&json!({"interfaces": 3})).is_err());
        assert_eq!(AddResult::parse(&json!({})).unwrap(), AddResult::default());
    }
}
