//! The node state file (`<state-dir>/node.json`): how the agent tells the plugin the node's
//! pod CIDRs. The agent writes it (atomically) from `--pod-cidr` or the Node object's
//! `spec.podCIDRs`; the plugin reads it on every ADD unless the conflist names `podCIDRs`.
//!
//! ```json
//! {"nodeName": "pi-1", "podCIDRs": ["10.42.1.0/24", "fd00:42:1::/64"], "source": "flag",
//!  "updatedUnixMs": 1754000000000}
//! ```

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cidr::IpNet;
use super::config::NetConf;
use super::error::code;

pub const FILE_NAME: &str = "node.json";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeState {
    pub node_name: String,
    #[serde(rename = "podCIDRs")]
    pub pod_cidrs: Vec<IpNet>,
    /// `flag` (`--pod-cidr`) or `node` (the Node object).
    pub source: String,
    pub updated_unix_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeStateError {
    #[error(
        "no pod CIDR yet: {path} does not exist (the agent writes it once it knows the node's \
         pod CIDRs; or set podCIDRs in the conflist)"
    )]
    Missing { path: PathBuf },
    #[error("{path} lists no pod CIDR")]
    Empty { path: PathBuf },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a node state file: {source}")]
    Decode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl NodeStateError {
    #[must_use]
    pub fn code(&self) -> u32 {
        match self {
            // The agent has not got that far: a runtime retries later.
            Self::Missing { .. } | Self::Empty { .. } => code::TRY_AGAIN,
            Self::Io { .. } | Self::Decode { .. } => code::IO_FAILURE,
        }
    }
}

/// Reads the node state file.
pub fn read(path: &Path) -> Result<NodeState, NodeStateError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(NodeStateError::Missing {
                path: path.to_owned(),
            });
        }
        Err(source) => {
            return Err(NodeStateError::Io {
                what: "read",
                path: path.to_owned(),
                source,
            });
        }
    };
    serde_json::from_slice(&text).map_err(|source| NodeStateError::Decode {
        path: path.to_owned(),
        source,
    })
}

/// Writes the node state file atomically (temp file, fsync, rename).
pub fn write(path: &Path, state: &NodeState) -> Result<(), NodeStateError> {
    let io = |what: &'static str, p: &Path| {
        let p = p.to_owned();
        move |source| NodeStateError::Io {
            what,
            path: p,
            source,
        }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    }
    let json = serde_json::to_vec_pretty(state).map_err(|source| NodeStateError::Decode {
        path: path.to_owned(),
        source,
    })?;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    f.write_all(&json).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("fsync", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("rename to", path))
}

/// The pod CIDRs for an ADD: the conflist's `podCIDRs`, else the node state file's.
pub fn pod_cidrs(conf: &NetConf) -> Result<Vec<IpNet>, NodeStateError> {
    if !conf.pod_cidrs.is_empty() {
        return Ok(conf.pod_cidrs.clone());
    }
    let state = read(&conf.node_state)?;
    if state.pod_cidrs.is_empty() {
        return Err(NodeStateError::Empty {
            path: conf.node_state.clone(),
        });
    }
    // At most one per family, normalised, like the conflist's.
    let mut out: Vec<IpNet> = Vec::new();
    for c in state.pod_cidrs {
        if !out.iter().any(|o| o.is_ipv4() == c.is_ipv4()) && c.size() >= 4 {
            out.push(c.network());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read() {
        let dir = std::env::temp_dir().join(format!("ferrite-node-{}", std::process::id()));
        let path = dir.join(FILE_NAME);
        let err = read(&path).unwrap_err();
        assert_eq!(err.code(), 11);
        let st = NodeState {
            node_name: "n1".into(),
            pod_cidrs: vec!["10.42.1.0/24".parse().unwrap()],
            source: "flag".into(),
            updated_unix_ms: 1,
        };
        write(&path, &st).unwrap();
        assert_eq!(read(&path).unwrap(), st);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"podCIDRs\""), "{text}");
        std::fs::write(&path, "{").unwrap();
        assert_eq!(read(&path).unwrap_err().code(), 5);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
