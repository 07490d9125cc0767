//! The allocations a `dir:` agent keeps across restarts: `STATE_DIR/lbipam.json`, replaced
//! atomically (write to a temporary file, fsync, rename, fsync the directory).
//!
//! With the Kubernetes source, services' `status.loadBalancer.ingress` plays this role.

use std::{
    collections::BTreeMap,
    fs,
    io::{self, Write},
    net::IpAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::model::ServiceName;

/// File name under the state directory.
pub const FILE_NAME: &str = "lbipam.json";
const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("reading {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{} is not a valid LB IPAM state file: {source}", path.display())]
    Decode {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{} has version {found}; this ferrite reads version {VERSION}", path.display())]
    Version { path: PathBuf, found: u32 },
    #[error("{op} {}: {source}", path.display())]
    Write {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    allocations: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    namespace: String,
    name: String,
    ips: Vec<IpAddr>,
}

/// Where allocations are kept.
#[derive(Clone, Debug)]
pub struct Store {
    path: PathBuf,
}

impl Store {
    /// The store in `state_dir` (created on the first save).
    pub fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join(FILE_NAME),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved allocations; empty when there is no file yet.
    pub fn load(&self) -> Result<BTreeMap<ServiceName, Vec<IpAddr>>, StoreError> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(source) => {
                return Err(StoreError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let file: File = serde_json::from_slice(&bytes).map_err(|source| StoreError::Decode {
            path: self.path.clone(),
            source,
        })?;
        if file.version != VERSION {
            return Err(StoreError::Version {
                path: self.path.clone(),
                found: file.version,
            });
        }
        Ok(file
            .allocations
            .into_iter()
            .map(|entry| (ServiceName::new(entry.namespace, entry.name), entry.ips))
            .collect())
    }

    /// Replaces the saved allocations, atomically and durably.
    pub fn save(&self, allocations: &BTreeMap<ServiceName, Vec<IpAddr>>) -> Result<(), StoreError> {
        let file = File {
            version: VERSION,
            allocations: allocations
                .iter()
                .map(|(name, ips)| Entry {
                    namespace: name.namespace.to_string(),
                    name: name.name.to_string(),
                    ips: ips.clone(),
                })
                .collect(),
        };
        let mut bytes = serde_json::to_vec_pretty(&file).expect("plain data serializes");
        bytes.push(b'\n');
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let write = |op: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| StoreError::Write { op, path, source }
        };
        fs::create_dir_all(dir).map_err(write("creating", dir))?;
        let tmp = self.path.with_extension("json.tmp");
        let mut out = fs::File::create(&tmp).map_err(write("creating", &tmp))?;
        out.write_all(&bytes).map_err(write("writing", &tmp))?;
        out.sync_all().map_err(write("syncing", &tmp))?;
        drop(out);
        fs::rename(&tmp, &self.path).map_err(write("renaming into place", &self.path))?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(write("syncing the directory", dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("ferrite-lbipam-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn saves_and_loads_allocations() {
        let dir = scratch("roundtrip");
        let store = Store::new(&dir.join("nested"));
        assert!(store.load().unwrap().is_empty(), "no file yet");
        let mut allocations = BTreeMap::new();
        allocations.insert(
            ServiceName::new("ns", "web"),
            vec!["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()],
        );
        store.save(&allocations).unwrap();
        assert_eq!(store.load().unwrap(), allocations);
        assert!(
            !store.path().with_extension("json.tmp").exists(),
            "temporary file renamed"
        );
        store.save(&BTreeMap::new()).unwrap();
        assert!(store.load().unwrap().is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_or_newer_file_is_an_error() {
        let dir = scratch("corrupt");
        fs::create_dir_all(&dir).unwrap();
        let store = Store::new(&dir);
        fs::write(store.path(), "{not json").unwrap();
        assert!(matches!(store.load(), Err(StoreError::Decode { .. })));
        fs::write(store.path(), r#"{"version": 9, "allocations": []}"#).unwrap();
        assert!(matches!(
            store.load(),
            Err(StoreError::Version { found: 9, .. })
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
