//! `ferrite agent`.

use std::path::PathBuf;

use argh::FromArgs;
use tracing::{error, info, warn};

use crate::agent::{AgentConfig, run as run_agent};
use crate::datapath::{DatapathConfig, cgroup2_root, cleanup};
use crate::source::SourceSpec;

/// Run the node agent: watch the source, programme the eBPF datapath, serve the local API.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "agent")]
pub struct AgentCmd {
    /// where desired state comes from: dir:PATH (Kubernetes YAML folder) or kube
    #[argh(option, default = "SourceSpec::Kube")]
    pub source: SourceSpec,
    /// this node's name (default: the hostname)
    #[argh(option)]
    pub node_name: Option<String>,
    /// external devices for north-south load balancing, comma separated
    #[argh(option)]
    pub devices: Option<String>,
    /// path of the API unix socket
    #[argh(option, default = "super::default_api_socket()")]
    pub api_socket: PathBuf,
    /// bpffs directory for pinned maps and links
    #[argh(option, default = "PathBuf::from(\"/sys/fs/bpf/ferrite\")")]
    pub bpf_root: PathBuf,
    /// cgroup v2 directory to attach the socket load balancer to (default: the cgroup2 root)
    #[argh(option)]
    pub cgroup: Option<PathBuf>,
    /// directory for node state (IPAM, CNI config)
    #[argh(option, default = "PathBuf::from(\"/var/lib/ferrite\")")]
    pub state_dir: PathBuf,
    /// remove every pinned map and link under --bpf-root, then exit
    #[argh(switch)]
    pub cleanup: bool,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "localhost".into(), |s| s.trim().to_string())
}

pub fn run(cmd: AgentCmd) -> i32 {
    let cgroup = match cmd.cgroup.clone().map_or_else(cgroup2_root, Ok) {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "no cgroup v2 to attach to");
            return 1;
        }
    };
    let datapath = DatapathConfig {
        bpf_root: cmd.bpf_root.clone(),
        cgroup,
    };
    if cmd.cleanup {
        let (removed, errors) = cleanup(&datapath);
        for p in &removed {
            info!(pin = %p.display(), "removed");
        }
        for e in &errors {
            error!(error = %e, "cleanup");
        }
        println!(
            "removed {} pinned objects under {}",
            removed.len(),
            datapath.bpf_root.display()
        );
        return i32::from(!errors.is_empty());
    }
    if let Some(d) = &cmd.devices {
        warn!(devices = %d, "--devices is accepted; north-south load balancing is not in this build");
    }
    let _ = &cmd.state_dir;
    let cfg = AgentConfig {
        source: cmd.source,
        node_name: cmd.node_name.unwrap_or_else(hostname),
        api_socket: cmd.api_socket,
        datapath,
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "starting the runtime");
            return 1;
        }
    };
    match rt.block_on(run_agent(cfg)) {
        Ok(()) => 0,
        Err(e) => {
            error!(error = %e, "agent failed");
            1
        }
    }
}
