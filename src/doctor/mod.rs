//! `ferrite doctor`: offline checks of a node before (or while) ferrite runs on it. What the
//! node looks like is gathered once ([`gather`], IO) into [`Inputs`]; every check is a pure
//! function of those ([`checks::run`]), so fixture inputs (a Raspberry Pi without the memory
//! cgroup, a kernel without BTF, k3s with flannel still on, …) test them without root.
//! Every failed check says exactly what to do; a failed blocking check makes the exit code 1.

pub mod checks;
pub mod gather;
mod k3s;

use serde::Serialize;

pub use gather::gather;

/// A check's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    /// Works, with a caveat (or cannot be checked from here).
    Warn,
    /// Blocks ferrite (exit 1).
    Fail,
}

impl Level {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Fail => "FAIL",
        }
    }
}

/// One check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Short name (`kernel`, `cgroup-memory`, `k3s-flannel`, …).
    pub name: &'static str,
    pub level: Level,
    /// What was found.
    pub detail: String,
    /// What to do (always set unless the check passed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            level: Level::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            level: Level::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            level: Level::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// The whole report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    /// No blocking problem.
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl Report {
    #[must_use]
    pub fn new(checks: Vec<Check>) -> Self {
        Self {
            ok: !checks.iter().any(|c| c.level == Level::Fail),
            checks,
        }
    }
}

/// Everything the checks look at, as read from the node (or a fixture).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inputs {
    /// `uname -r`.
    pub kernel_release: String,
    /// The kernel config and where it came from (`/proc/config.gz`, `/boot/config-<release>`).
    pub kernel_config: Option<(String, String)>,
    /// `/sys/kernel/btf/vmlinux` exists.
    pub btf: bool,
    /// `/proc/mounts`.
    pub mounts: String,
    /// `/proc/cgroups` (subsystem, hierarchy, cgroups, enabled).
    pub proc_cgroups: String,
    /// `/proc/cmdline`.
    pub cmdline: String,
    /// `/proc/device-tree/model` (e.g. "Raspberry Pi 4 Model B Rev 1.4").
    pub model: Option<String>,
    /// The soft `RLIMIT_MEMLOCK` in bytes; `None` = unlimited.
    pub memlock: Option<u64>,
    pub k3s: K3sInputs,
    pub cni: CniInputs,
    /// Kernel feature probes (only when run as root).
    pub probes: Option<Vec<crate::datapath::probe::Probed>>,
}

/// What k3s is configured with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct K3sInputs {
    /// k3s is installed (binary, unit or config found).
    pub installed: bool,
    /// `/etc/rancher/k3s/config.yaml` then `config.yaml.d/*.yaml` in order: (path, text).
    pub config_files: Vec<(String, String)>,
    /// `ExecStart` lines of the k3s units: (unit path, command line).
    pub unit_commands: Vec<(String, String)>,
}

/// The CNI directories containerd uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniInputs {
    pub conf_dir: String,
    /// The file names in it; `None` when it does not exist.
    pub conf_files: Option<Vec<String>>,
    pub bin_dir: String,
    pub bin_dir_exists: bool,
}
