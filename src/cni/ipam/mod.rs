//! Node IPAM: addresses from the node's pod CIDRs, one store per network under the state dir.
//! [`state`] holds the pure model and its operations, [`store`] the locked, crash-safe file.

pub mod state;
pub mod store;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use state::{Allocation, IpamState, Owner, Request, gateway, stale_for_gc};
pub use store::{LOCK_TIMEOUT, Store};

use super::cidr::IpNet;
use super::error::code;

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("IPAM store: {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("IPAM store {path} is not valid JSON (move it away to start over): {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("IPAM lock {path} still held by another plugin after {waited:?}")]
    Busy { path: PathBuf, waited: Duration },
    #[error("no free address left in {cidr} ({used} allocated)")]
    Exhausted { cidr: IpNet, used: usize },
    #[error("address {ip} cannot be given out: {why}")]
    Unavailable { ip: IpAddr, why: String },
    #[error("{attachment} is already attached (it holds {ip}); DEL it first")]
    AlreadyAttached { attachment: String, ip: IpAddr },
    #[error("an ADD of {attachment} is still running (pid {pid})")]
    InFlight { attachment: String, pid: u32 },
}

impl IpamError {
    #[must_use]
    pub fn code(&self) -> u32 {
        match self {
            Self::Io { .. } | Self::Corrupt { .. } => code::IO_FAILURE,
            Self::Busy { .. } | Self::InFlight { .. } => code::TRY_AGAIN,
            Self::Exhausted { .. } => code::POOL_EXHAUSTED,
            Self::Unavailable { .. } => code::ADDRESS_UNAVAILABLE,
            Self::AlreadyAttached { .. } => code::INTERFACE_EXISTS,
        }
    }
}
