//! The plugin's error type: every failure maps to a CNI error code and is written to stdout as
//! `{cniVersion, code, msg, details}`.

use std::io;

use serde_json::json;

use super::config::ConfigError;
use super::env::EnvError;
use super::ipam::IpamError;
use super::netlink::NetError;
use super::node_state::NodeStateError;
use super::version::CniVersion;

/// Error codes: 0–99 from the spec, 100+ ferrite's own.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    /// Every address of the node's pod CIDRs is in use.
    pub const POOL_EXHAUSTED: u32 = 100;
    /// `CNI_IFNAME` already exists in the container, or the attachment was already added.
    pub const INTERFACE_EXISTS: u32 = 101;
    /// CHECK found the attachment different from `prevResult`.
    pub const CHECK_FAILED: u32 = 102;
    /// An address asked for in `runtimeConfig.ips` is taken or outside the pod CIDRs.
    pub const ADDRESS_UNAVAILABLE: u32 = 103;
}

/// Anything a CNI command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    NodeState(#[from] NodeStateError),
    #[error("reading the network configuration from stdin: {0}")]
    Stdin(#[source] io::Error),
    #[error("the attachment is not as prevResult says: {}", .0.join("; "))]
    Check(Vec<String>),
    #[error("ferrite is not ready: {0}")]
    NotAvailable(String),
    #[error("{count} of the stale attachments could not be removed: {}", .errors.join("; "))]
    Gc { count: usize, errors: Vec<String> },
}

impl CniError {
    #[must_use]
    pub fn code(&self) -> u32 {
        match self {
            Self::Env(_) => code::INVALID_ENV,
            Self::Config(e) => e.code(),
            Self::Ipam(e) => e.code(),
            Self::Net(e) => e.code(),
            Self::NodeState(e) => e.code(),
            Self::Stdin(_) | Self::Gc { .. } => code::IO_FAILURE,
            Self::Check(_) => code::CHECK_FAILED,
            Self::NotAvailable(_) => code::NOT_AVAILABLE,
        }
    }

    /// The error object the spec asks for, in `version`.
    #[must_use]
    pub fn to_json(&self, version: &str) -> serde_json::Value {
        json!({
            "cniVersion": version,
            "code": self.code(),
            "msg": short_message(self.code()),
            "details": self.to_string(),
        })
    }
}

/// The short `msg` for a code (the long story goes in `details`).
#[must_use]
pub fn short_message(code: u32) -> &'static str {
    match code {
        code::INCOMPATIBLE_VERSION => "incompatible CNI version",
        code::INVALID_ENV => "invalid or missing environment variables",
        code::IO_FAILURE => "I/O failure",
        code::DECODE => "failed to decode the network configuration",
        code::INVALID_CONFIG => "invalid network configuration",
        code::TRY_AGAIN => "try again later",
        code::NOT_AVAILABLE => "plugin not available",
        code::POOL_EXHAUSTED => "no free address in the pod CIDR",
        code::INTERFACE_EXISTS => "interface already exists",
        code::CHECK_FAILED => "attachment check failed",
        code::ADDRESS_UNAVAILABLE => "requested address unavailable",
        _ => "error",
    }
}

/// The version to answer an error in: the request's when we speak it, else the newest.
#[must_use]
pub fn reply_version(requested: Option<&str>) -> String {
    requested
        .filter(|v| !v.is_empty())
        .map_or_else(|| CniVersion::V1_1_0.to_string(), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_the_spec_fields() {
        let e = CniError::NotAvailable("the agent at /run/x.sock does not answer".into());
        let j = e.to_json("1.1.0");
        assert_eq!(j["cniVersion"], "1.1.0");
        assert_eq!(j["code"], 50);
        assert_eq!(j["msg"], "plugin not available");
        assert!(j["details"].as_str().unwrap().contains("/run/x.sock"));
        assert_eq!(reply_version(None), "1.1.0");
        assert_eq!(reply_version(Some("0.4.0")), "0.4.0");
    }
}
