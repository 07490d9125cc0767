//! The CNI dirs k3s's containerd really uses, read from its generated `config.toml`: the
//! `cni` table of the CRI plugin, `plugins."io.containerd.grpc.v1.cri".cni` (config version 2,
//! containerd 1.x) or `plugins.'io.containerd.cri.v1.runtime'.cni` (version 3, containerd 2).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where k3s writes its containerd configuration.
pub const K3S_CONTAINERD_CONFIG: &str = "/var/lib/rancher/k3s/agent/etc/containerd/config.toml";

/// The CRI plugin's table names, newest first.
const CRI_PLUGINS: [&str; 2] = ["io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri"];

/// The `cni` table of containerd's CRI plugin (each field optional: containerd has defaults).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniDirs {
    pub conf_dir: Option<PathBuf>,
    pub bin_dir: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    #[error("reading containerd config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("containerd config {path} is not valid TOML: {message}")]
    Parse { path: PathBuf, message: String },
}

#[derive(Deserialize)]
struct Root {
    #[serde(default)]
    plugins: BTreeMap<String, Plugin>,
}

#[derive(Deserialize)]
struct Plugin {
    cni: Option<CniTable>,
}

#[derive(Deserialize)]
struct CniTable {
    bin_dir: Option<String>,
    /// containerd 2.1 replaced `bin_dir` with a list; the first entry is where plugins go.
    bin_dirs: Option<Vec<String>>,
    conf_dir: Option<String>,
}

/// The CNI dirs in `text` (the content of `path`, named in errors); `None` when no CRI plugin
/// table has a `cni` table.
pub fn parse(path: &Path, text: &str) -> Result<Option<CniDirs>, ContainerdError> {
    let root: Root = basic_toml::from_str(text).map_err(|e| ContainerdError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let Some(cni) = CRI_PLUGINS
        .iter()
        .find_map(|name| root.plugins.get(*name).and_then(|p| p.cni.as_ref()))
    else {
        return Ok(None);
    };
    let nonempty = |s: &String| (!s.trim().is_empty()).then(|| PathBuf::from(s.trim()));
    Ok(Some(CniDirs {
        conf_dir: cni.conf_dir.as_ref().and_then(nonempty),
        bin_dir: cni.bin_dir.as_ref().and_then(nonempty).or_else(|| {
            cni.bin_dirs
                .as_ref()
                .and_then(|dirs| dirs.iter().find_map(nonempty))
        }),
    }))
}

/// [`parse`] of the file at `path`; `None` when it does not exist.
pub fn read(path: &Path) -> Result<Option<CniDirs>, ContainerdError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(path, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ContainerdError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(text: &str) -> Result<Option<CniDirs>, ContainerdError> {
        parse(Path::new("config.toml"), text)
    }

    fn both(conf: &str, bin: &str) -> CniDirs {
        CniDirs {
            conf_dir: Some(conf.into()),
            bin_dir: Some(bin.into()),
        }
    }

    #[test]
    fn version_2_grpc_cri_table() {
        // The shape k3s's template renders for containerd 1.x.
        let text = r#"
version = 2
[plugins."io.containerd.internal.v1.opt"]
  path = "/var/lib/rancher/k3s/agent/containerd"
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  enable_selinux = false
[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/var/lib/rancher/k3s/data/cni"
  conf_dir = "/var/lib/rancher/k3s/agent/etc/cni/net.d"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = true
"#;
        assert_eq!(
            dirs(text).unwrap(),
            Some(both(
                "/var/lib/rancher/k3s/agent/etc/cni/net.d",
                "/var/lib/rancher/k3s/data/cni"
            ))
        );
    }

    #[test]
    fn version_3_runtime_table_with_single_quotes_and_bin_dirs() {
        let text = r"
version = 3
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = ['/var/lib/rancher/k3s/data/cni', '/opt/cni/bin']
  conf_dir = '/var/lib/rancher/k3s/agent/etc/cni/net.d'
";
        assert_eq!(
            dirs(text).unwrap(),
            Some(both(
                "/var/lib/rancher/k3s/agent/etc/cni/net.d",
                "/var/lib/rancher/k3s/data/cni"
            ))
        );
        let text = "[plugins.'io.containerd.cri.v1.runtime'.cni]\nbin_dir = '/b'\n";
        assert_eq!(
            dirs(text).unwrap(),
            Some(CniDirs {
                conf_dir: None,
                bin_dir: Some("/b".into())
            })
        );
    }

    #[test]
    fn missing_table_or_file_is_none() {
        assert_eq!(dirs("version = 2\n").unwrap(), None);
        assert_eq!(
            dirs("[plugins.\"io.containerd.grpc.v1.cri\"]\nsandbox_image = \"pause\"\n").unwrap(),
            None
        );
        assert_eq!(dirs("").unwrap(), None);
        assert_eq!(
            read(Path::new("/nonexistent/ferrite/config.toml")).unwrap(),
            None
        );
    }

    #[test]
    fn malformed_file_is_a_clear_error() {
        let err = dirs("[plugins.\"io.containerd.grpc.v1.cri\".cni\nbin_dir = 3").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("containerd config config.toml is not valid TOML:"),
            "{text}"
        );
        let err = dirs("[plugins.'io.containerd.cri.v1.runtime'.cni]\nbin_dir = 3\n").unwrap_err();
        assert!(matches!(err, ContainerdError::Parse { .. }), "{err}");
    }
}
