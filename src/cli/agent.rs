//! `ferrite agent`.

use std::path::PathBuf;

use argh::FromArgs;
use tracing::{error, info, warn};

use crate::agent::{AgentConfig, NorthSouth, run as run_agent};
use crate::datapath::{DatapathConfig, HostConfig, cgroup2_root, cleanup};
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
    /// external devices for north-south load balancing, comma separated (default: detected and
    /// followed at runtime: the devices of the node's InternalIPs and default routes; "none"
    /// turns north-south off)
    #[argh(option)]
    pub devices: Option<String>,
    /// path of the API unix socket
    #[argh(option, default = "super::default_api_socket()")]
    pub api_socket: PathBuf,
    /// also serve the API on this TCP address (ADDR:PORT), TLS only with client certificates:
    /// needs --api-tls-cert, --api-tls-key and --api-client-ca
    #[argh(option)]
    pub api_listen: Option<String>,
    /// the TLS listener's certificate chain (PEM)
    #[argh(option)]
    pub api_tls_cert: Option<PathBuf>,
    /// the TLS listener's private key (PEM)
    #[argh(option)]
    pub api_tls_key: Option<PathBuf>,
    /// the CA (PEM) that must have signed every client's certificate on --api-listen
    #[argh(option)]
    pub api_client_ca: Option<PathBuf>,
    /// serve /metrics (Prometheus, plain HTTP, nothing else) on this TCP address (ADDR:PORT)
    #[argh(option)]
    pub metrics_listen: Option<String>,
    /// bpffs directory for pinned maps and links
    #[argh(option, default = "super::default_bpf_root()")]
    pub bpf_root: PathBuf,
    /// cgroup v2 directory to attach the socket load balancer to (default: the cgroup2 root)
    #[argh(option)]
    pub cgroup: Option<PathBuf>,
    /// directory for node state (IPAM, CNI config)
    #[argh(option, default = "PathBuf::from(\"/var/lib/ferrite\")")]
    pub state_dir: PathBuf,
    /// CNI conf dir for 05-ferrite.conflist (default: k3s's if present, else /etc/cni/net.d;
    /// "none" turns installing the CNI plugin off)
    #[argh(option)]
    pub cni_conf_dir: Option<PathBuf>,
    /// CNI bin dir to install the plugin into (default: k3s's data bin dir if present, else
    /// /opt/cni/bin)
    #[argh(option)]
    pub cni_bin_dir: Option<PathBuf>,
    /// this node's pod CIDRs, comma separated (standalone mode; in kube mode the Node's
    /// spec.podCIDRs)
    #[argh(option)]
    pub pod_cidr: Option<String>,
    /// the NodePort range (default 30000-32767)
    #[argh(option, default = "String::from(\"30000-32767\")")]
    pub nodeport_range: String,
    /// the Maglev table size for north-south backend selection (a prime; default 16381)
    #[argh(option, default = "ferrite_abi::MAGLEV_DEFAULT_M")]
    pub maglev_table_size: u32,
    /// how many Maglev tables (distinct backend sets of LoadBalancer/NodePort/externalIP frontends)
    #[argh(option, default = "ferrite_abi::map_sizes::MAGLEV_ROWS")]
    pub max_external_tables: u32,
    /// L2 membership address: this node's LAN address and UDP port (default: this Node's
    /// InternalIP, else $HOST_IP, on port 7946)
    #[argh(option)]
    pub l2_bind: Option<String>,
    /// L2 membership peers, comma separated ip:port (default: the other Nodes' InternalIPs)
    #[argh(option)]
    pub l2_peers: Option<String>,
    /// no L2 membership: this node alone decides which addresses it announces (a single
    /// node, or nodes that never share an address)
    #[argh(switch)]
    pub l2_standalone: bool,
    /// the cluster key authenticating L2 membership, shared by every node (make one with
    /// `ferrite l2 keygen`; default with --source dir: /etc/ferrite/l2.key; with --source
    /// kube: the Secret ferrite-l2-key, created by the first agent)
    #[argh(option)]
    pub l2_key_file: Option<PathBuf>,
    /// re-announce owned addresses every N seconds (gratuitous ARP / unsolicited NA)
    #[argh(option)]
    pub l2_reannounce_seconds: Option<u64>,
    /// after a start, a link-up or a freeze, claim no new L2 address until membership has
    /// synced with a peer, or for at most this many ms when no peer answers (default 1000)
    #[argh(option, default = "1000")]
    pub l2_claim_hold_ms: u64,
    /// run the north-south ingress translation in XDP: off (the default, TC only: native XDP
    /// takes the NIC's single XDP slot from other users, some drivers reset the link on attach,
    /// and on veth it turns GSO off on the peer, which cost ~5x throughput in the bench), auto
    /// (native, else generic, else TC), native or generic (else TC); a failed attach logs one
    /// warning and keeps TC
    #[argh(option, default = "crate::datapath::XdpMode::Off")]
    pub xdp: crate::datapath::XdpMode,
    /// how pod traffic is forwarded on the node: bpf (the default: eBPF on each pod's veth and
    /// on the external devices sends it straight to the next device or into the pod, past the
    /// node's IP stack and netfilter, as Cilium's BPF host routing) or legacy (the stack routes)
    #[argh(option, default = "String::from(\"bpf\")")]
    pub host_routing: String,
    /// the device pair the CNI plugin builds for each new pod: auto (the default: netkit where
    /// the kernel has it, Linux ≥ 6.7, with --host-routing bpf, else veth), netkit or veth.
    /// On netkit, host routing runs inside the pod's own transmit, skipping the veth's backlog
    /// queue (Cilium's netkit datapath); existing pods keep the pair they were made with
    #[argh(option, default = "crate::cni::config::PodDeviceKind::Auto")]
    pub pod_device: crate::cni::config::PodDeviceKind,
    /// how programs attach to devices: auto (the default: TCX links when the kernel has them,
    /// Linux ≥ 6.6, else a clsact qdisc with a cls_bpf filter), tcx, or legacy (clsact +
    /// cls_bpf, and XDP over netlink)
    #[argh(option, default = "crate::datapath::TcAttach::Auto")]
    pub tc_attach: crate::datapath::TcAttach,
    /// how pods on other nodes are reached: auto (the default: a native route via the node's
    /// InternalIP when it is on a directly connected subnet, else VXLAN), native, vxlan, or off
    /// (another component routes pods)
    #[argh(option, default = "crate::routing::RoutingMode::Auto")]
    pub routing: crate::routing::RoutingMode,
    /// UDP port of the VXLAN overlay (default 8472, flannel's)
    #[argh(option, default = "crate::routing::DEFAULT_VXLAN_PORT")]
    pub vxlan_port: u16,
    /// VXLAN network identifier (default 1, flannel's)
    #[argh(option, default = "crate::routing::DEFAULT_VNI")]
    pub vxlan_vni: u32,
    /// masquerade pods' traffic to outside the cluster's pod CIDRs with the address of the
    /// external device it leaves by (eBPF, on the north-south devices): on (the default) or off
    #[argh(option, default = "String::from(\"on\")")]
    pub masquerade: String,
    /// destinations never masqueraded, comma separated CIDRs (pod↔pod traffic never is)
    #[argh(option)]
    pub masquerade_exclude: Option<String>,
    /// remove every pinned map and link under --bpf-root, then exit
    #[argh(switch)]
    pub cleanup: bool,
    /// kubernetes API requests per second (client-side rate limit; 0 = unlimited)
    #[argh(option, default = "50.0")]
    pub k8s_qps: f32,
    /// kubernetes API requests allowed in a burst above --k8s-qps
    #[argh(option, default = "100")]
    pub k8s_burst: u32,
    /// the DaemonSet running this agent (kube source; the addon sets it): when the agent is
    /// stopped because that DaemonSet was deleted (`kubectl delete`), it uninstalls everything;
    /// every other stop keeps the datapath
    #[argh(option)]
    pub daemonset: Option<String>,
    /// flow events (`ferrite observe`): at most this many per second and CPU are sent by the
    /// programs, the rest only counted (default 2000; 0 turns flows off)
    #[argh(option, default = "crate::flows::reader::DEFAULT_RATE_PER_CPU")]
    pub flow_rate: u32,
    /// duration of the status-writer Lease in seconds (tests shorten it; default 15)
    #[argh(option, default = "15", hidden_help)]
    pub status_lease_seconds: u16,
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
    let maglev_entries = cmd
        .max_external_tables
        .max(1)
        .saturating_mul(cmd.maglev_table_size);
    let Some(kernel) = kernel_choices(&cmd) else {
        return 1;
    };
    let datapath = DatapathConfig {
        bpf_root: cmd.bpf_root.clone(),
        cgroup,
        maglev_entries,
        tc: kernel.tc,
        features: kernel.features,
    };
    if cmd.cleanup {
        return run_cleanup(&datapath);
    }
    let parts = l2_config(&cmd).and_then(|l2| Ok((l2, north_south(&cmd)?, api_listeners(&cmd)?)));
    let (l2, north_south, (api_tcp, from_secret, metrics_listen)) = match parts {
        Ok(parts) => parts,
        Err(e) => {
            error!("{e}");
            return 2;
        }
    };
    let cni =
        match crate::cni::install::InstallConfig::for_agent(crate::cni::install::AgentCniOptions {
            kube_mode: matches!(cmd.source, SourceSpec::Kube),
            conf_dir: cmd.cni_conf_dir.clone(),
            bin_dir: cmd.cni_bin_dir.clone(),
            pod_cidr: cmd.pod_cidr.clone(),
            state_dir: cmd.state_dir.clone(),
            api_socket: cmd.api_socket.clone(),
            node_name: cmd.node_name.clone().unwrap_or_else(hostname),
            pod_device: pod_device(&cmd),
        }) {
            Ok(c) => c,
            Err(e) => {
                error!(error = %e, "CNI options");
                return 2;
            }
        };
    let cfg = AgentConfig {
        source: cmd.source,
        node_name: cmd.node_name.unwrap_or_else(hostname),
        api_socket: cmd.api_socket,
        api_ca_secret: from_secret.then(|| {
            api_cert_ips(
                api_tcp.as_ref().map(|t| t.listen.ip()),
                std::env::var(super::l2flags::HOST_IP_ENV).ok().as_deref(),
            )
        }),
        api_tcp,
        metrics_listen,
        datapath,
        tc_attach: kernel.tc_attach,
        degraded: kernel.degraded,
        cni,
        north_south,
        l2,
        state_dir: cmd.state_dir,
        k8s_client: crate::source::kube::ClientOptions {
            qps: cmd.k8s_qps,
            burst: cmd.k8s_burst,
        },
        status_lease: std::time::Duration::from_secs(cmd.status_lease_seconds.into()),
        daemonset: cmd.daemonset,
        flow_rate: cmd.flow_rate,
        routing: crate::routing::RoutingConfig {
            mode: cmd.routing,
            vni: cmd.vxlan_vni,
            port: cmd.vxlan_port,
        },
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

/// `--cleanup`: every pin under the bpf root (legacy filters and netlink XDP taken off their
/// devices first) and the pod network's routes and devices.
fn run_cleanup(datapath: &DatapathConfig) -> i32 {
    let (removed, errors) = cleanup(datapath);
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
    let routing_ok = cleanup_routing();
    i32::from(!errors.is_empty() || !routing_ok)
}

/// What the agent loads on this kernel, from its feature probes and `--tc-attach`.
struct KernelChoices {
    tc: crate::datapath::TcBackend,
    features: crate::datapath::probe::Choices,
    /// How devices attach and why, for the status.
    tc_attach: String,
    degraded: Vec<String>,
}

/// Probes the kernel (not for `--cleanup`, which takes out whatever is pinned on any kernel);
/// `None` after logging the one line saying what this kernel lacks.
fn kernel_choices(cmd: &AgentCmd) -> Option<KernelChoices> {
    use crate::datapath::{TcAttach, ladder, probe};
    let probes = if cmd.cleanup {
        Vec::new()
    } else {
        probe::probe_kernel()
    };
    for p in &probes {
        if let Some(e) = &p.error {
            warn!(feature = p.feature.name(), error = %e, "kernel feature probe failed");
        }
    }
    let features = probe::decide(&probes)
        .map_err(|line| error!("{line}"))
        .ok()?;
    let tc = ladder::resolve(cmd.tc_attach, features.tcx || cmd.cleanup)
        .map_err(|e| error!("{e}"))
        .ok()?;
    let tc_attach = match cmd.tc_attach {
        TcAttach::Auto if features.tcx => "tcx (auto: the kernel has TCX)".to_owned(),
        TcAttach::Auto => "legacy (auto: this kernel has no TCX, which needs Linux 6.6)".to_owned(),
        forced => format!("{tc} (--tc-attach {forced})"),
    };
    if !cmd.cleanup {
        info!(tc_attach = %tc_attach, "device attach");
    }
    Some(KernelChoices {
        tc,
        features,
        tc_attach,
        degraded: probe::degraded(&probes),
    })
}

/// Removes ferrite's routes and VXLAN device; `false` when something could not be removed.
fn cleanup_routing() -> bool {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "starting the runtime");
            return false;
        }
    };
    let (removed, errors) = rt.block_on(crate::routing::kernel::cleanup());
    for r in &removed {
        info!(removed = %r, "routing");
    }
    for e in &errors {
        error!(error = %e, "routing cleanup");
    }
    println!(
        "removed {} routes and devices of the pod network",
        removed.len()
    );
    errors.is_empty()
}

/// `--devices`, `--nodeport-range`, `--maglev-table-size` → the north-south settings (none
/// with `--devices none`; detected devices without `--devices`).
fn north_south(cmd: &AgentCmd) -> Result<Option<NorthSouth>, String> {
    let devices: Option<Vec<String>> = match cmd.devices.as_deref().map(str::trim) {
        Some("none") => return Ok(None),
        Some(list) => {
            let names: Vec<String> = list
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(String::from)
                .collect();
            if names.is_empty() {
                return Err(format!(
                    "--devices {list:?}: name at least one device, or \"none\""
                ));
            }
            Some(names)
        }
        None => None,
    };
    if !crate::lb::maglev::is_prime(cmd.maglev_table_size) || cmd.maglev_table_size < 251 {
        return Err(format!(
            "--maglev-table-size {} must be a prime ≥ 251",
            cmd.maglev_table_size
        ));
    }
    let (lo, hi) = cmd
        .nodeport_range
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)))
        .filter(|(a, b)| a <= b && *a > 0)
        .ok_or_else(|| {
            format!(
                "--nodeport-range {:?} must look like 30000-32767",
                cmd.nodeport_range
            )
        })?;
    let masq = crate::masq::MasqConfig {
        enabled: crate::masq::parse_switch(&cmd.masquerade)?,
        exclude: crate::masq::parse_cidr_list(
            "--masquerade-exclude",
            cmd.masquerade_exclude.as_deref().unwrap_or_default(),
        )?,
        own_pod_cidrs: crate::masq::parse_cidr_list(
            "--pod-cidr",
            cmd.pod_cidr.as_deref().unwrap_or_default(),
        )?,
    };
    Ok(Some(NorthSouth {
        masq,
        host: HostConfig {
            devices,
            table_size: cmd.maglev_table_size,
            rows: cmd.max_external_tables.max(1),
            xdp: cmd.xdp,
            host_routing: parse_host_routing(&cmd.host_routing)?,
        },
        nodeport_range: lo..=hi,
    }))
}

/// The L2 flags and `HOST_IP` (see [`super::l2flags`]).
fn l2_config(cmd: &AgentCmd) -> Result<crate::agent::L2Config, String> {
    let host_ip = std::env::var(super::l2flags::HOST_IP_ENV).ok();
    super::l2flags::l2_config(
        &super::l2flags::L2Flags {
            bind: cmd.l2_bind.as_deref(),
            peers: cmd.l2_peers.as_deref(),
            standalone: cmd.l2_standalone,
            key_file: cmd.l2_key_file.clone(),
            kube: matches!(cmd.source, crate::source::SourceSpec::Kube),
            reannounce_seconds: cmd.l2_reannounce_seconds,
            claim_hold_ms: cmd.l2_claim_hold_ms,
        },
        host_ip.as_deref(),
    )
}

/// The addresses an agent's own API certificate names: `$HOST_IP` (the node's address, which
/// `observe --all-nodes` dials), the `--api-listen` address when it is one, and loopback.
fn api_cert_ips(listen: Option<std::net::IpAddr>, host_ip: Option<&str>) -> Vec<std::net::IpAddr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let mut ips: Vec<IpAddr> = host_ip.and_then(|h| h.parse().ok()).into_iter().collect();
    ips.extend(listen.filter(|ip| !ip.is_unspecified()));
    ips.extend([
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ]);
    let mut seen = std::collections::BTreeSet::new();
    ips.retain(|ip| seen.insert(*ip));
    ips
}

/// The TCP API (and whether its certificates come from the Secret CA), and `--metrics-listen`.
type Listeners = (
    Option<crate::api::TcpConfig>,
    bool,
    Option<std::net::SocketAddr>,
);

/// `--api-listen` with its three certificate files (all or none; none in kube mode: the agent
/// issues its own from the cluster's CA in Secret `ferrite-api-ca`), and `--metrics-listen`.
fn api_listeners(cmd: &AgentCmd) -> Result<Listeners, String> {
    let addr = |flag: &str, v: &str| {
        v.parse::<std::net::SocketAddr>()
            .map_err(|e| format!("{flag} {v:?}: {e} (expected ADDR:PORT, e.g. 0.0.0.0:9443)"))
    };
    let files = (
        cmd.api_tls_cert.clone(),
        cmd.api_tls_key.clone(),
        cmd.api_client_ca.clone(),
    );
    let mut from_secret = false;
    let tcp = match (cmd.api_listen.as_deref(), files) {
        (None, (None, None, None)) => None,
        (Some(listen), (None, None, None)) if matches!(cmd.source, SourceSpec::Kube) => {
            from_secret = true;
            let dir = cmd.state_dir.join("api-tls");
            Some(crate::api::TcpConfig {
                listen: addr("--api-listen", listen)?,
                cert: dir.join("tls.crt"),
                key: dir.join("tls.key"),
                client_ca: dir.join("ca.crt"),
            })
        }
        (None, _) => {
            return Err(
                "--api-tls-cert, --api-tls-key and --api-client-ca need --api-listen".into(),
            );
        }
        (Some(listen), (Some(cert), Some(key), Some(client_ca))) => Some(crate::api::TcpConfig {
            listen: addr("--api-listen", listen)?,
            cert,
            key,
            client_ca,
        }),
        (Some(_), _) => {
            return Err(
                "--api-listen serves only TLS with client certificates: give \
                        --api-tls-cert, --api-tls-key and --api-client-ca (kube mode \
                        without them issues its own from Secret ferrite-api-ca)"
                    .into(),
            );
        }
    };
    let metrics = cmd
        .metrics_listen
        .as_deref()
        .map(|m| addr("--metrics-listen", m))
        .transpose()?;
    Ok((tcp, from_secret, metrics))
}

/// `--pod-device`: `auto` builds veths where the stack routes (`--host-routing legacy`), since
/// netkit gains nothing there.
fn pod_device(cmd: &AgentCmd) -> crate::cni::config::PodDeviceKind {
    use crate::cni::config::PodDeviceKind;
    match cmd.pod_device {
        PodDeviceKind::Auto if parse_host_routing(&cmd.host_routing) == Ok(false) => {
            PodDeviceKind::Veth
        }
        other => other,
    }
}

/// `--host-routing bpf|legacy`: whether BPF host routing is on.
fn parse_host_routing(text: &str) -> Result<bool, String> {
    match text {
        "bpf" => Ok(true),
        "legacy" => Ok(false),
        other => Err(format!("--host-routing {other:?}: expected bpf or legacy")),
    }
}

#[cfg(test)]
mod tests {
    use argh::FromArgs;

    use super::*;

    fn parse(args: &[&str]) -> AgentCmd {
        AgentCmd::from_args(&["agent"], args).expect("args parse")
    }

    #[test]
    fn the_tcp_api_needs_all_three_certificate_files() {
        assert_eq!(api_listeners(&parse(&[])).unwrap(), (None, false, None));
        let err = api_listeners(&parse(&[
            "--source",
            "dir:/etc/ferrite",
            "--api-listen",
            "127.0.0.1:9443",
        ]))
        .unwrap_err();
        assert!(err.contains("--api-client-ca"), "{err}");
        // Kube mode without files: the agent's own, from the Secret CA, in its state dir.
        let (tcp, from_secret, _) =
            api_listeners(&parse(&["--api-listen", "127.0.0.1:9443"])).unwrap();
        assert!(from_secret);
        assert_eq!(
            tcp.unwrap().cert,
            std::path::Path::new("/var/lib/ferrite/api-tls/tls.crt")
        );
        let err = api_listeners(&parse(&["--api-tls-cert", "c.pem"])).unwrap_err();
        assert!(err.contains("need --api-listen"), "{err}");
        let (tcp, from_secret, metrics) = api_listeners(&parse(&[
            "--api-listen",
            "127.0.0.1:9443",
            "--api-tls-cert",
            "c.pem",
            "--api-tls-key",
            "k.pem",
            "--api-client-ca",
            "ca.pem",
            "--metrics-listen",
            "0.0.0.0:9962",
        ]))
        .unwrap();
        assert_eq!(tcp.unwrap().listen.port(), 9443);
        assert!(!from_secret);
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert_eq!(
            api_cert_ips(Some(ip("0.0.0.0")), Some("192.168.1.10")),
            [ip("192.168.1.10"), ip("127.0.0.1"), ip("::1")]
        );
        assert_eq!(
            api_cert_ips(Some(ip("127.0.0.1")), Some("not an address")),
            [ip("127.0.0.1"), ip("::1")]
        );
        assert_eq!(metrics.unwrap().port(), 9962);
        assert!(api_listeners(&parse(&["--metrics-listen", "9962"])).is_err());
    }

    #[test]
    fn pod_device_auto_is_veth_where_the_stack_routes() {
        use crate::cni::config::PodDeviceKind;
        assert_eq!(pod_device(&parse(&[])), PodDeviceKind::Auto);
        assert_eq!(
            pod_device(&parse(&["--host-routing", "legacy"])),
            PodDeviceKind::Veth
        );
        // An explicit choice stands.
        assert_eq!(
            pod_device(&parse(&[
                "--host-routing",
                "legacy",
                "--pod-device",
                "netkit"
            ])),
            PodDeviceKind::Netkit
        );
    }
}
