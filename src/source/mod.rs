//! Sources of desired state: they turn the outside world into a [`crate::model::Snapshot`].
//!
//! - [`dir`]: a folder of standard Kubernetes YAML/JSON, watched by polling.
//! - [`kube`]: watchers on the Kubernetes API, status writes and leader election.
//!
//! Kubernetes types never leave this module: the manifest decoders in `objects` are private and
//! produce only `model` types.

pub mod dir;
pub mod kube;
mod manifest;
mod merge;
mod objects;
mod walk;
mod yaml_depth;

#[cfg(test)]
mod tests;

use std::{fmt, path::PathBuf, str::FromStr};

/// Where the agent reads desired state from, as given to `--source`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// `dir:PATH`: Kubernetes manifests in a folder (or a single file).
    Dir(PathBuf),
    /// `kube`: the Kubernetes API server.
    Kube,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SourceSpecError {
    #[error("`dir:` needs a path, e.g. `dir:/etc/ferrite/manifests`")]
    EmptyPath,
    #[error("unknown source `{0}`: expected `dir:PATH` or `kube`")]
    Unknown(String),
}

impl FromStr for SourceSpec {
    type Err = SourceSpecError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        if let Some(path) = spec.strip_prefix("dir:") {
            if path.is_empty() {
                return Err(SourceSpecError::EmptyPath);
            }
            return Ok(Self::Dir(PathBuf::from(path)));
        }
        if spec == "kube" {
            return Ok(Self::Kube);
        }
        Err(SourceSpecError::Unknown(spec.to_owned()))
    }
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dir(path) => write!(f, "dir:{}", path.display()),
            Self::Kube => f.write_str("kube"),
        }
    }
}
