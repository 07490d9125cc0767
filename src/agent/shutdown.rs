//! What a stopping agent does with the datapath: keep it (restart, upgrade), or take it out
//! when the addon's DaemonSet was deleted (`kubectl delete`).

use std::time::Duration;

use tracing::{error, info};

use super::AgentConfig;
use crate::source::SourceSpec;
use crate::source::kube::owner::Termination;

/// How long a stopping agent waits for the API server to say whether its DaemonSet is gone
/// (well inside the DaemonSet's 30 s grace period, leaving time to uninstall).
const OWNER_LOOKUP: Duration = Duration::from_secs(5);

/// SIGTERM: in kube mode with `--daemonset`, uninstall only if that DaemonSet was deleted.
pub(super) async fn on_sigterm(cfg: &AgentConfig) -> Termination {
    let decision = match (&cfg.source, &cfg.daemonset) {
        (SourceSpec::Kube, Some(ds)) => {
            crate::source::kube::owner::termination(cfg.k8s_client, ds, OWNER_LOOKUP).await
        }
        _ => Termination::Keep("not run by a DaemonSet".into()),
    };
    if let Termination::Keep(why) = &decision {
        info!(reason = %why, "terminated; datapath stays pinned");
    }
    decision
}

/// `ferrite uninstall`'s steps on this agent's own paths, after `kubectl delete` of the addon
/// (on a blocking thread: the pod network's teardown runs its own netlink runtime).
pub(super) async fn uninstall_on_delete(cfg: &AgentConfig, why: String) {
    info!(reason = %why, "terminated by the deletion of the addon: uninstalling");
    let (conf, bin) = cfg
        .cni
        .as_ref()
        .map(|c| (vec![c.conf_dir.clone()], vec![c.bin_dir.clone()]))
        .unwrap_or_default();
    let steps = crate::uninstall::plan(&crate::uninstall::UninstallOptions {
        bpf_root: cfg.datapath.bpf_root.clone(),
        cgroup: Some(cfg.datapath.cgroup.clone()),
        api_socket: cfg.api_socket.clone(),
        cni_conf_dirs: conf,
        cni_bin_dirs: bin,
    });
    let report = match tokio::task::spawn_blocking(move || crate::uninstall::apply(&steps)).await {
        Ok(report) => report,
        Err(e) => {
            error!(error = %e, "uninstall task failed");
            return;
        }
    };
    for e in &report.errors {
        error!(step = %e.step, target = %e.target, error = %e.error, "uninstall");
    }
    info!(
        done = report.done.len(),
        errors = report.errors.len(),
        "uninstalled"
    );
}
