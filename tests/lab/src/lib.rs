//! Lab helpers for ferrite's privileged integration tests and benchmarks.
//!
//! RAII guards clean up on drop, also when a test panics: [`Netns`], [`Veth`], [`Bridge`],
//! [`Cgroup`], [`Child`]. Topologies: [`PodNet`] (host + routed pods), [`Lan`] (a bridge
//! between node namespaces) and [`NsLab`] (nodes with pods, outside clients and per-node
//! agents on one LAN, for north-south load balancing). Traffic tools that also back the
//! `ferrite-lab` binary: [`serve`], [`probe`], [`rate`], [`http`], [`raw`] (malformed
//! frames), with their JSON reports in [`report`]. L2 announcements: [`l2raw`] (ARP/NDP
//! requests, answer watcher, malformed ARP/NDP catalog), [`timeline`] (a request loop with
//! per-attempt times) and [`l2lab`] (the north-south lab with announcing agents and failover
//! trials). [`manifest`] writes `NodePort` and
//! `LoadBalancer` services as Kubernetes YAML and [`kubeproxy`] as kube-proxy's iptables rules.
//!
//! Names of namespaces and cgroups are `PREFIX-PID-N`; [`cleanup_stale`] removes those left by
//! processes that died without running destructors (SIGKILL, `panic = "abort"`).

pub mod addr;
pub mod cgroup;
pub mod child;
pub mod cmd;
pub mod cri;
pub mod errno;
pub mod http;
pub mod ipraw;
pub mod kubeproxy;
pub mod l2lab;
pub mod l2raw;
pub mod lab;
pub mod manifest;
pub mod masqlab;
pub mod name;
pub mod netns;
pub mod nslab;
pub mod podlab;
pub mod probe;
pub mod rate;
pub mod raw;
pub mod report;
pub mod serve;
pub mod shipped;
pub mod sock;
pub mod timeline;
pub mod veth;
pub mod vm;
pub mod wait;

use std::path::PathBuf;

pub use addr::Cidr;
pub use cgroup::{Cgroup, CgroupError};
pub use child::{Child, ChildError};
pub use cmd::CommandError;
pub use lab::{LabError, Lan, LanPort, Pod, PodNet, PodNetConfig};
pub use manifest::{NsService, Protocol, SvcEndpoint, SvcPort};
pub use netns::{Netns, NetnsError, Ns};
pub use nslab::{AgentConfig, LanHost, Node, NodeAgent, NsLab, NsLabConfig, NsLabError};
pub use veth::{Bridge, Iface, LinkError, Route, Veth, kernel_has_netkit, link_kind};
pub use wait::{TimedOut, wait_until};

/// Reports a cleanup failure from a destructor, which cannot return it. Goes to stderr so a
/// leaked namespace or cgroup is visible in test output.
pub(crate) fn report_drop_failure(what: &str, err: &dyn std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "ferrite-lab: cleaning up {what}: {err}");
}

/// Failure of [`cleanup_stale`], naming every object it could not remove.
#[derive(Debug, thiserror::Error)]
#[error("could not remove stale lab objects: {}", .0.join("; "))]
pub struct CleanupError(pub Vec<String>);

/// Removes network namespaces and cgroups named `PREFIX-PID-N` whose process is gone.
/// Returns what it removed.
pub fn cleanup_stale(prefix: &str) -> Result<Vec<String>, CleanupError> {
    let mut removed = Vec::new();
    let mut failed = Vec::new();
    let stale = |name: &str| name::owner_pid(name, prefix).is_some_and(|pid| !name::pid_alive(pid));
    match netns::list() {
        Ok(names) => {
            for n in names.into_iter().filter(|n| stale(n)) {
                match netns::delete(&n) {
                    Ok(()) => removed.push(format!("netns {n}")),
                    Err(e) => failed.push(format!("netns {n}: {e}")),
                }
            }
        }
        Err(e) => failed.push(e.to_string()),
    }
    if let Ok(root) = cgroup::cgroup2_root()
        && let Ok(entries) = std::fs::read_dir(&root)
    {
        for entry in entries.flatten() {
            let Some(n) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if stale(&n) {
                match cgroup::remove(&entry.path()) {
                    Ok(()) => removed.push(format!("cgroup {}", entry.path().display())),
                    Err(e) => failed.push(format!("cgroup {n}: {e}")),
                }
            }
        }
    }
    if failed.is_empty() {
        Ok(removed)
    } else {
        Err(CleanupError(failed))
    }
}

/// Path of the `ferrite-lab` binary for tests that spawn it: `$FERRITE_LAB_BIN`, else next to
/// the current executable or one directory up (test binaries live in `target/*/deps`).
#[must_use]
pub fn lab_bin() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("FERRITE_LAB_BIN") {
        return Some(PathBuf::from(path));
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [dir.join("ferrite-lab"), dir.parent()?.join("ferrite-lab")]
        .into_iter()
        .find(|p| p.is_file())
}
