//! `ferrite uninstall`: take everything ferrite put on a node back out, so nothing of it keeps
//! running — the programs attached to the cgroup and to devices (their pinned links are
//! detached, then every ferrite link still on the cgroup), the pinned maps, the CNI conflist and
//! the installed plugin, the API socket. What to touch is a pure [`plan`] of the paths; [`apply`]
//! does the IO, keeps going past every error and reports each one (netavark's teardown style).
//!
//! An agent restart or upgrade never runs this: the datapath outlives the agent on purpose.

mod apply;
mod links;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use apply::apply;

use crate::cni::install::{
    CONFLIST_NAME, DEFAULT_BIN_DIR, DEFAULT_CONF_DIR, K3S_BIN_DIR, K3S_CONF_DIR, PLUGIN_NAME,
};

/// k3s's static CNI bin dir since k3s PR #10868 (the OS package links the plugin there).
pub const K3S_STATIC_BIN_DIR: &str = "/var/lib/rancher/k3s/data/cni";

/// Where ferrite may have put things (the agent's flags; defaults are the agent's defaults).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UninstallOptions {
    pub bpf_root: PathBuf,
    /// The socket LB's cgroup; `None` when no cgroup2 is mounted (nothing can be attached).
    pub cgroup: Option<PathBuf>,
    pub api_socket: PathBuf,
    /// CNI conf dirs to remove `05-ferrite.conflist` from; empty = every default location.
    pub cni_conf_dirs: Vec<PathBuf>,
    /// CNI bin dirs to remove the `ferrite` plugin from; empty = every default location.
    pub cni_bin_dirs: Vec<PathBuf>,
}

/// One thing to take out, in order: links are detached before their pins and the maps go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Detach (BPF_LINK_DETACH) every link pinned in this directory.
    DetachPinnedLinks(PathBuf),
    /// Detach every link of a ferrite program (`fe_*`) still attached to this cgroup.
    DetachCgroupPrograms(PathBuf),
    /// Remove every pin below this bpf root (links, then maps) and the directories.
    RemovePins(PathBuf),
    /// Remove a file or symlink ferrite installed.
    RemoveFile { what: &'static str, path: PathBuf },
    /// Remove the pod network's routes (protocol 197) and the `ferrite.vxlan` device.
    RemovePodNetwork,
}

fn defaults_or(dirs: &[PathBuf], defaults: &[&str]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = if dirs.is_empty() {
        defaults.iter().map(PathBuf::from).collect()
    } else {
        dirs.to_vec()
    };
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|d| seen.insert(d.clone()));
    out
}

/// The steps for `opts`, in the order they must run.
#[must_use]
pub fn plan(opts: &UninstallOptions) -> Vec<Step> {
    let mut steps = vec![Step::DetachPinnedLinks(opts.bpf_root.join("links"))];
    steps.extend(opts.cgroup.clone().map(Step::DetachCgroupPrograms));
    steps.push(Step::RemovePins(opts.bpf_root.clone()));
    steps.push(Step::RemovePodNetwork);
    for dir in defaults_or(&opts.cni_conf_dirs, &[K3S_CONF_DIR, DEFAULT_CONF_DIR]) {
        steps.push(Step::RemoveFile {
            what: "CNI conflist",
            path: dir.join(CONFLIST_NAME),
        });
    }
    for dir in defaults_or(
        &opts.cni_bin_dirs,
        &[K3S_STATIC_BIN_DIR, K3S_BIN_DIR, DEFAULT_BIN_DIR],
    ) {
        steps.push(Step::RemoveFile {
            what: "CNI plugin",
            path: dir.join(PLUGIN_NAME),
        });
    }
    steps.push(Step::RemoveFile {
        what: "API socket",
        path: opts.api_socket.clone(),
    });
    steps
}

/// One thing done, or one error (the run keeps going).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// `detached`, `removed`.
    pub action: &'static str,
    /// What it was (`link`, `pin`, `CNI conflist`, …).
    pub what: String,
    /// The pin, file or cgroup.
    pub target: String,
    /// e.g. the program a link carried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub step: String,
    pub target: String,
    pub error: String,
}

/// Everything [`apply`] did and every error it met.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub done: Vec<Outcome>,
    pub errors: Vec<Failure>,
}

impl Report {
    fn done(&mut self, action: &'static str, what: &str, target: &Path, detail: Option<String>) {
        self.done.push(Outcome {
            action,
            what: what.to_owned(),
            target: target.display().to_string(),
            detail,
        });
    }

    fn failed(&mut self, step: &str, target: &Path, error: impl std::fmt::Display) {
        self.errors.push(Failure {
            step: step.to_owned(),
            target: target.display().to_string(),
            error: error.to_string(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> UninstallOptions {
        UninstallOptions {
            bpf_root: "/sys/fs/bpf/ferrite".into(),
            cgroup: Some("/sys/fs/cgroup".into()),
            api_socket: "/run/ferrite/ferrite.sock".into(),
            cni_conf_dirs: Vec::new(),
            cni_bin_dirs: Vec::new(),
        }
    }

    fn files(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::RemoveFile { path, .. } => Some(path.display().to_string()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn links_are_detached_before_pins_and_files_go() {
        let steps = plan(&opts());
        assert_eq!(
            steps[..3],
            [
                Step::DetachPinnedLinks("/sys/fs/bpf/ferrite/links".into()),
                Step::DetachCgroupPrograms("/sys/fs/cgroup".into()),
                Step::RemovePins("/sys/fs/bpf/ferrite".into()),
            ]
        );
    }

    #[test]
    fn the_pod_network_goes_after_the_datapath() {
        let steps = plan(&opts());
        assert_eq!(steps[3], Step::RemovePodNetwork);
    }

    #[test]
    fn without_flags_every_default_cni_location_is_cleaned() {
        assert_eq!(
            files(&plan(&opts())),
            [
                "/var/lib/rancher/k3s/agent/etc/cni/net.d/05-ferrite.conflist",
                "/etc/cni/net.d/05-ferrite.conflist",
                "/var/lib/rancher/k3s/data/cni/ferrite",
                "/var/lib/rancher/k3s/data/current/bin/ferrite",
                "/opt/cni/bin/ferrite",
                "/run/ferrite/ferrite.sock",
            ]
        );
    }

    #[test]
    fn given_dirs_replace_the_defaults_once_each() {
        let mut o = opts();
        o.cni_conf_dirs = vec!["/tmp/conf".into(), "/tmp/conf".into()];
        o.cni_bin_dirs = vec!["/tmp/bin".into()];
        o.cgroup = None;
        assert!(
            !plan(&o)
                .iter()
                .any(|s| matches!(s, Step::DetachCgroupPrograms(_))),
            "no cgroup2, nothing to look at"
        );
        assert_eq!(
            files(&plan(&o)),
            [
                "/tmp/conf/05-ferrite.conflist",
                "/tmp/bin/ferrite",
                "/run/ferrite/ferrite.sock"
            ]
        );
    }
}
