//! The network configuration the runtime writes to stdin: decoded, version-checked, validated.
//!
//! ferrite's own keys (all optional):
//!
//! | key | meaning | default |
//! |---|---|---|
//! | `podCIDRs` | the node's pod CIDRs (one per family) | read from `nodeState` |
//! | `nodeState` | node state file the agent writes | `/var/lib/ferrite/node.json` |
//! | `stateDir` | IPAM store (one folder per network) | `/var/lib/ferrite/cni` |
//! | `apiSocket` | the agent's API, asked by STATUS | `/run/ferrite/ferrite.sock` |
//! | `mtu` | MTU of both ends of the pod's device pair | 1500 |
//! | `podDevice` | the pair ADD builds: `veth`, `netkit` (Linux ≥ 6.7), or `auto` (netkit where the kernel has it, else veth) | `veth` |
//! | `logFile`, `logLevel` | where the plugin logs besides stderr | none, `info` |
//!
//! Capabilities (in `runtimeConfig`): `ips` (ask for specific addresses) and `mac`.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use super::cidr::IpNet;
use super::env::{Attachment, Command, valid_name};
use super::error::code;
use super::version::{CniVersion, supported_list};

pub const DEFAULT_STATE_DIR: &str = "/var/lib/ferrite/cni";
pub const DEFAULT_NODE_STATE: &str = "/var/lib/ferrite/node.json";
pub const DEFAULT_MTU: u32 = 1500;

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the network configuration is not a JSON object: {0}")]
    Decode(#[source] serde_json::Error),
    #[error("cniVersion {0:?} is not supported; this plugin speaks {list}", list = supported_list())]
    Version(String),
    #[error("cniVersion {version} does not allow {command}; it needs 1.1.0")]
    CommandNotAllowed {
        version: CniVersion,
        command: Command,
    },
    #[error("{field}: {why}")]
    Invalid { field: String, why: String },
}

impl ConfigError {
    #[must_use]
    pub fn code(&self) -> u32 {
        match self {
            Self::Decode(_) => code::DECODE,
            Self::Version(_) | Self::CommandNotAllowed { .. } => code::INCOMPATIBLE_VERSION,
            Self::Invalid { .. } => code::INVALID_CONFIG,
        }
    }

    fn invalid(field: impl Into<String>, why: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            why: why.into(),
        }
    }
}

/// The device pair ADD builds for a pod (`podDevice`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PodDeviceKind {
    #[default]
    Veth,
    /// netkit (Linux ≥ 6.7): BPF host routing runs in the pod's own transmit.
    Netkit,
    /// netkit where the kernel has it, else veth.
    Auto,
}

impl PodDeviceKind {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Veth => "veth",
            Self::Netkit => "netkit",
            Self::Auto => "auto",
        }
    }
}

impl std::str::FromStr for PodDeviceKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "veth" => Ok(Self::Veth),
            "netkit" => Ok(Self::Netkit),
            "auto" => Ok(Self::Auto),
            other => Err(format!("{other:?} is not one of veth, netkit, auto")),
        }
    }
}

/// Capability arguments ferrite understands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// `ips`: addresses the runtime asks for (at most one per family).
    pub ips: Vec<IpAddr>,
    /// `mac`: the container interface's MAC address.
    pub mac: Option<[u8; 6]>,
}

/// A validated network configuration.
#[derive(Clone, Debug)]
pub struct NetConf {
    pub version: CniVersion,
    pub name: String,
    pub mtu: u32,
    pub pod_device: PodDeviceKind,
    /// From the config; empty means "ask the node state file".
    pub pod_cidrs: Vec<IpNet>,
    pub node_state: PathBuf,
    pub state_dir: PathBuf,
    pub api_socket: PathBuf,
    pub log_file: Option<PathBuf>,
    pub log_level: Option<String>,
    pub runtime: RuntimeConfig,
    pub prev_result: Option<Value>,
    pub valid_attachments: Option<Vec<Attachment>>,
    pub dns: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    name: Option<String>,
    mtu: Option<u64>,
    pod_device: Option<String>,
    #[serde(rename = "podCIDRs")]
    pod_cidrs: Option<Vec<String>>,
    node_state: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    api_socket: Option<PathBuf>,
    log_file: Option<PathBuf>,
    log_level: Option<String>,
    runtime_config: Option<RawRuntime>,
    prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<RawAttachment>>,
    dns: Option<Value>,
}

#[derive(Deserialize)]
struct RawRuntime {
    ips: Option<Vec<String>>,
    mac: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAttachment {
    #[serde(rename = "containerID")]
    container_id: String,
    ifname: String,
}

/// The `cniVersion` of a configuration, as written (for error replies), when there is one.
#[must_use]
pub fn requested_version(stdin: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(stdin).ok()?;
    v.get("cniVersion")?.as_str().map(str::to_owned)
}

/// Decodes and validates the configuration for `command`.
pub fn parse(stdin: &[u8], command: Command) -> Result<NetConf, ConfigError> {
    let value: Value = serde_json::from_slice(stdin).map_err(ConfigError::Decode)?;
    if !value.is_object() {
        return Err(ConfigError::Decode(serde::de::Error::custom(
            "expected a JSON object",
        )));
    }
    let requested = value
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let version =
        CniVersion::parse(requested).ok_or_else(|| ConfigError::Version(requested.to_owned()))?;
    if matches!(command, Command::Gc | Command::Status) && !version.allows_gc_and_status() {
        return Err(ConfigError::CommandNotAllowed { version, command });
    }
    let raw: Raw = serde_json::from_value(value).map_err(ConfigError::Decode)?;
    let name = raw
        .name
        .ok_or_else(|| ConfigError::invalid("name", "missing"))?;
    if !valid_name(&name) {
        return Err(ConfigError::invalid(
            "name",
            format!("{name:?} must start with a letter or digit, then letters, digits, _ . -"),
        ));
    }
    let mtu = match raw.mtu {
        None => DEFAULT_MTU,
        Some(m @ 68..=65535) => u32::try_from(m).unwrap_or(DEFAULT_MTU),
        Some(m) => {
            return Err(ConfigError::invalid(
                "mtu",
                format!("{m} is outside 68..65535"),
            ));
        }
    };
    let pod_device = raw
        .pod_device
        .map(|d| d.parse())
        .transpose()
        .map_err(|why| ConfigError::invalid("podDevice", why))?
        .unwrap_or_default();
    let pod_cidrs = parse_cidrs(raw.pod_cidrs.unwrap_or_default())?;
    let runtime = match raw.runtime_config {
        None => RuntimeConfig::default(),
        Some(r) => RuntimeConfig {
            ips: parse_requested_ips(&r.ips.unwrap_or_default())?,
            mac: r.mac.map(|m| parse_mac(&m)).transpose()?,
        },
    };
    let valid_attachments = raw.valid_attachments.map(|list| {
        list.into_iter()
            .map(|a| Attachment {
                container_id: a.container_id,
                ifname: a.ifname,
            })
            .collect()
    });
    Ok(NetConf {
        version,
        name,
        mtu,
        pod_device,
        pod_cidrs,
        node_state: raw
            .node_state
            .unwrap_or_else(|| PathBuf::from(DEFAULT_NODE_STATE)),
        state_dir: raw
            .state_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
        api_socket: raw
            .api_socket
            .unwrap_or_else(|| PathBuf::from(crate::api::DEFAULT_SOCKET)),
        log_file: raw.log_file,
        log_level: raw.log_level,
        runtime,
        prev_result: raw.prev_result,
        valid_attachments,
        dns: raw.dns,
    })
}

/// Pod CIDRs: valid, at most one per family, and big enough for a gateway and one pod.
pub fn parse_cidrs(texts: Vec<String>) -> Result<Vec<IpNet>, ConfigError> {
    let mut out: Vec<IpNet> = Vec::new();
    for (i, text) in texts.into_iter().enumerate() {
        let field = format!("podCIDRs[{i}]");
        let net: IpNet = text
            .parse()
            .map_err(|e: super::cidr::CidrError| ConfigError::invalid(&field, e.to_string()))?;
        if out.iter().any(|o| o.is_ipv4() == net.is_ipv4()) {
            return Err(ConfigError::invalid(
                field,
                "a second CIDR of the same family",
            ));
        }
        // Network address, gateway, (v4) broadcast, and at least one pod.
        if net.size() < 4 {
            return Err(ConfigError::invalid(
                field,
                format!("{net} is too small for a gateway and a pod"),
            ));
        }
        out.push(net.network());
    }
    Ok(out)
}

fn parse_requested_ips(texts: &[String]) -> Result<Vec<IpAddr>, ConfigError> {
    let mut out: Vec<IpAddr> = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let field = format!("runtimeConfig.ips[{i}]");
        let ip = text
            .parse::<IpNet>()
            .map(|n| n.addr())
            .or_else(|_| text.parse::<IpAddr>())
            .map_err(|_| ConfigError::invalid(&field, format!("{text:?} is not an address")))?;
        if out.iter().any(|o| o.is_ipv4() == ip.is_ipv4()) {
            return Err(ConfigError::invalid(
                field,
                "a second address of the same family",
            ));
        }
        out.push(ip);
    }
    Ok(out)
}

fn parse_mac(text: &str) -> Result<[u8; 6], ConfigError> {
    let bad = || {
        ConfigError::invalid(
            "runtimeConfig.mac",
            format!("{text:?} is not a MAC address"),
        )
    };
    let parts: Vec<&str> = text.split([':', '-']).collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (slot, part) in mac.iter_mut().zip(&parts) {
        if part.len() != 2 {
            return Err(bad());
        }
        *slot = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if mac[0] & 1 == 1 {
        return Err(ConfigError::invalid(
            "runtimeConfig.mac",
            format!("{text} is a multicast address"),
        ));
    }
    Ok(mac)
}

/// `aa:bb:cc:dd:ee:ff`.
#[must_use]
pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_add(json: &str) -> Result<NetConf, ConfigError> {
        parse(json.as_bytes(), Command::Add)
    }

    #[test]
    fn full_config() {
        let c = parse_add(
            r#"{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"ferrite","mtu":1450,
                "podDevice":"auto","podCIDRs":["10.244.1.0/24","fd00:10:244:1::/64"],"stateDir":"/tmp/s",
                "runtimeConfig":{"ips":["10.244.1.9/24","fd00:10:244:1::9"],"mac":"02:00:00:00:00:09"},
                "prevResult":{"interfaces":[]},"dns":{"nameservers":["10.96.0.10"]}}"#,
        )
        .unwrap();
        assert_eq!(c.version, CniVersion::V1_0_0);
        assert_eq!(c.mtu, 1450);
        assert_eq!(c.pod_device, PodDeviceKind::Auto);
        assert_eq!(c.pod_cidrs.len(), 2);
        assert_eq!(c.state_dir, PathBuf::from("/tmp/s"));
        assert_eq!(c.node_state, PathBuf::from(DEFAULT_NODE_STATE));
        assert_eq!(c.runtime.ips.len(), 2);
        assert_eq!(c.runtime.mac, Some([2, 0, 0, 0, 0, 9]));
        assert!(c.prev_result.is_some());
        assert_eq!(format_mac(&[2, 0, 0, 0, 0, 9]), "02:00:00:00:00:09");
    }

    #[test]
    fn codes_for_bad_configs() {
        let code = |json: &str| parse_add(json).unwrap_err().code();
        assert_eq!(code("not json"), 6);
        assert_eq!(code("[1,2]"), 6);
        assert_eq!(code(r#"{"cniVersion":"1.0.0","name":"n","mtu":"big"}"#), 6);
        assert_eq!(code(r#"{"name":"n"}"#), 1);
        assert_eq!(code(r#"{"cniVersion":"0.3.1","name":"n"}"#), 1);
        assert_eq!(code(r#"{"cniVersion":"9.9.9","name":"n"}"#), 1);
        assert_eq!(code(r#"{"cniVersion":"1.1.0"}"#), 7);
        assert_eq!(code(r#"{"cniVersion":"1.1.0","name":"-x"}"#), 7);
        assert_eq!(code(r#"{"cniVersion":"1.1.0","name":"n","mtu":10}"#), 7);
        assert_eq!(
            code(r#"{"cniVersion":"1.1.0","name":"n","podDevice":"macvlan"}"#),
            7
        );
        assert_eq!(
            code(r#"{"cniVersion":"1.1.0","name":"n","podCIDRs":["10.0.0/24"]}"#),
            7
        );
        assert_eq!(
            code(r#"{"cniVersion":"1.1.0","name":"n","podCIDRs":["10.0.0.0/31"]}"#),
            7
        );
        assert_eq!(
            code(r#"{"cniVersion":"1.1.0","name":"n","podCIDRs":["10.0.0.0/24","10.1.0.0/24"]}"#),
            7
        );
        assert_eq!(
            code(
                r#"{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"mac":"01:00:00:00:00:01"}}"#
            ),
            7
        );
        assert_eq!(
            code(r#"{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"ips":["x"]}}"#),
            7
        );
    }

    #[test]
    fn gc_and_status_need_1_1() {
        let old = br#"{"cniVersion":"1.0.0","name":"n"}"#;
        assert_eq!(parse(old, Command::Gc).unwrap_err().code(), 1);
        assert_eq!(parse(old, Command::Status).unwrap_err().code(), 1);
        let gc = parse(
            br#"{"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}"#,
            Command::Gc,
        )
        .unwrap();
        assert_eq!(gc.valid_attachments.unwrap()[0].container_id, "a");
        assert_eq!(requested_version(old).as_deref(), Some("1.0.0"));
        assert_eq!(requested_version(b"garbage"), None);
    }

    #[test]
    fn cidrs_are_normalised() {
        let c = parse_cidrs(vec!["10.244.1.7/24".into()]).unwrap();
        assert_eq!(c[0].to_string(), "10.244.1.0/24");
    }
}
