//! `ferrite cni`: install the plugin by hand (packaging, or a node without the agent yet) and
//! list the node's pod address allocations. The plugin itself runs when `CNI_COMMAND` is set.

use std::path::PathBuf;

use argh::FromArgs;

use super::output::{OutputFormat, table};
use crate::cni::install::{AgentCniOptions, InstallConfig, install};
use crate::cni::ipam::{Allocation, LOCK_TIMEOUT, Store};

/// The CNI plugin: install it, list pod address allocations.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "cni")]
pub struct CniCmd {
    #[argh(subcommand)]
    pub command: CniSub,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum CniSub {
    Install(InstallCmd),
    Allocations(AllocationsCmd),
}

/// Write the conflist and node state, copy this binary into the CNI bin dir.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "install")]
pub struct InstallCmd {
    /// CNI conf dir (default: k3s's if present, else /etc/cni/net.d)
    #[argh(option)]
    pub conf_dir: Option<PathBuf>,
    /// CNI bin dir (default: k3s's data bin dir if present, else /opt/cni/bin)
    #[argh(option)]
    pub bin_dir: Option<PathBuf>,
    /// the agent's state dir (node.json, IPAM stores)
    #[argh(option, default = "PathBuf::from(\"/var/lib/ferrite\")")]
    pub state_dir: PathBuf,
    /// the agent's API socket, asked by the plugin's STATUS
    #[argh(option, default = "super::default_api_socket()")]
    pub api_socket: PathBuf,
    /// this node's pod CIDRs, comma separated (else the agent writes them later)
    #[argh(option)]
    pub pod_cidr: Option<String>,
    /// this node's name (default: the hostname)
    #[argh(option)]
    pub node_name: Option<String>,
    /// MTU of the pod interfaces (default 1500)
    #[argh(option)]
    pub mtu: Option<u32>,
    /// the device pair the plugin builds for each pod: veth (the default here), netkit (Linux
    /// ≥ 6.7) or auto (netkit where the kernel has it, else veth)
    #[argh(option, default = "crate::cni::config::PodDeviceKind::Veth")]
    pub pod_device: crate::cni::config::PodDeviceKind,
}

/// List the pod addresses the plugin has handed out on this node.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "allocations")]
pub struct AllocationsCmd {
    /// the IPAM state dir (the agent's --state-dir + /cni)
    #[argh(
        option,
        default = "PathBuf::from(crate::cni::config::DEFAULT_STATE_DIR)"
    )]
    pub state_dir: PathBuf,
    /// output format: table (default) or json
    #[argh(option, short = 'o', default = "OutputFormat::Table")]
    pub output: OutputFormat,
}

pub fn run(cmd: CniCmd) -> i32 {
    match cmd.command {
        CniSub::Install(i) => run_install(i),
        CniSub::Allocations(a) => run_allocations(&a),
    }
}

fn run_install(cmd: InstallCmd) -> i32 {
    let node_name = cmd.node_name.unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map_or_else(|_| "localhost".into(), |s| s.trim().to_owned())
    });
    let cfg = InstallConfig::for_agent(AgentCniOptions {
        kube_mode: true,
        conf_dir: cmd.conf_dir,
        bin_dir: cmd.bin_dir,
        pod_cidr: cmd.pod_cidr,
        state_dir: cmd.state_dir,
        api_socket: cmd.api_socket,
        node_name,
        pod_device: cmd.pod_device,
    });
    let cfg = match cfg {
        Ok(Some(mut c)) => {
            c.mtu = cmd.mtu;
            c
        }
        Ok(None) => {
            println!("installation turned off (--conf-dir none)");
            return 0;
        }
        Err(e) => {
            eprintln!("ferrite cni install: {e}");
            return 2;
        }
    };
    match install(&cfg) {
        Ok(r) => {
            println!("binary    {}", r.binary.display());
            println!(
                "conflist  {} (chained: {})",
                r.conflist.display(),
                r.chained.join(", ")
            );
            if let Some(n) = r.node_state {
                println!("node      {}", n.display());
            }
            println!("reclaimed {} leaked addresses", r.reclaimed);
            0
        }
        Err(e) => {
            eprintln!("ferrite cni install: {e}");
            1
        }
    }
}

fn run_allocations(cmd: &AllocationsCmd) -> i32 {
    let stores = match Store::all(&cmd.state_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ferrite cni allocations: {e}");
            return 1;
        }
    };
    let mut all: Vec<(String, Allocation)> = Vec::new();
    for store in stores {
        let network = store
            .dir()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let state = store.lock(LOCK_TIMEOUT).and_then(|l| l.load());
        match state {
            Ok(s) => all.extend(s.allocations.into_iter().map(|a| (network.clone(), a))),
            Err(e) => {
                eprintln!("ferrite cni allocations: {e}");
                return 1;
            }
        }
    }
    match cmd.output {
        OutputFormat::Json => {
            let v: Vec<serde_json::Value> = all
                .iter()
                .map(|(n, a)| {
                    let mut j = serde_json::to_value(a).unwrap_or_default();
                    j["network"] = serde_json::json!(n);
                    j
                })
                .collect();
            println!("{}", serde_json::Value::Array(v));
        }
        OutputFormat::Table => {
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|(n, a)| {
                    vec![
                        n.clone(),
                        a.ip.to_string(),
                        a.container_id.chars().take(12).collect(),
                        a.ifname.clone(),
                        a.host_ifname.clone(),
                        a.pod.clone().unwrap_or_else(|| "-".into()),
                        if a.pending.is_some() {
                            "pending"
                        } else {
                            "ready"
                        }
                        .into(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &[
                        "NETWORK",
                        "IP",
                        "CONTAINER",
                        "IFNAME",
                        "VETH",
                        "POD",
                        "STATE"
                    ],
                    &rows
                )
            );
        }
    }
    0
}
