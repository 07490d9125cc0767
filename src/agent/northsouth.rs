//! Keeping the datapath in place at runtime, once a second: pinned links that disappeared are
//! re-attached (socket LB and north-south), the north-south devices follow the node (detected
//! from netlink dumps unless `--devices` names them: a device or address that appears, changes
//! or goes is picked up without a restart), and the "datapath" and "north-south" readiness say
//! what was found.

use std::net::IpAddr;
use std::path::PathBuf;

use tracing::{info, warn};

use super::Reconciler;
use super::readiness::{DATAPATH, NORTH_SOUTH, Readiness};
use crate::api::{DeviceIngress, DeviceView, HostRoutingView, SharedState};
use crate::datapath::{DatapathError, Device, Netlink, detect};

/// How often links, pins and devices are checked.
pub const MAINTAIN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Which devices north-south wants: the `--devices` names, or detected ones.
pub struct DeviceWatch {
    nl: Netlink,
    names: Option<Vec<String>>,
}

impl DeviceWatch {
    pub fn new(names: Option<Vec<String>>) -> Result<Self, DatapathError> {
        Ok(Self {
            nl: Netlink::new()?,
            names,
        })
    }

    #[must_use]
    pub fn selection(&self) -> &'static str {
        if self.names.is_some() {
            "--devices"
        } else {
            "detected"
        }
    }

    /// The devices wanted now, with `--devices` the names that do not exist, and the local
    /// pods' veths.
    pub async fn wanted(&self, node_ips: &[IpAddr]) -> Result<Wanted, DatapathError> {
        let facts = self.nl.dump().await?;
        let (devices, absent) = match &self.names {
            Some(names) => detect::named(&facts, names),
            None => (detect::detect(&facts, node_ips), Vec::new()),
        };
        Ok(Wanted {
            devices,
            absent,
            pod_devices: detect::pod_devices(&facts),
            tunnels: detect::tunnel_devs(&facts),
            host_addrs: facts.addrs.iter().map(|a| a.addr).collect(),
        })
    }
}

/// What one netlink dump says the datapath should be attached to.
pub struct Wanted {
    pub devices: Vec<Device>,
    /// `--devices` names that do not exist.
    pub absent: Vec<String>,
    /// Local pods' host-side devices (BPF host routing).
    pub pod_devices: Vec<detect::PodDevice>,
    /// ferrite's overlay device, when it exists (BPF host routing).
    pub tunnels: Vec<(String, u32)>,
    /// Every address of the node's network namespace (NetworkPolicy's host identity).
    pub host_addrs: std::collections::BTreeSet<IpAddr>,
}

fn pin_names(pins: &[PathBuf]) -> String {
    pins.iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn device_line(devices: &[Device]) -> String {
    devices
        .iter()
        .map(|d| {
            let addrs: Vec<String> = d.addrs.iter().map(ToString::to_string).collect();
            format!("{} ({})", d.name, addrs.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The pod veths' and the overlay's hooks, and the node's addresses for NetworkPolicy.
fn sync_pods(
    pods: &mut crate::datapath::PodRouting,
    devices: &[detect::PodDevice],
    tunnels: &[(String, u32)],
    host_addrs: &std::collections::BTreeSet<IpAddr>,
) {
    for (dev, e) in pods.sync(devices, tunnels).errors {
        warn!(device = %dev, error = %e, "host routing attach failed; retrying");
    }
    match pods.policy.set_host(host_addrs) {
        Ok(ops) if ops.upserts + ops.deletes > 0 => {
            info!(
                addresses = host_addrs.len(),
                "NetworkPolicy: the node's addresses"
            );
        }
        Ok(_) => {}
        Err(e) => {
            warn!(error = %e, "NetworkPolicy: writing the node's addresses failed; retrying");
        }
    }
}

/// One maintenance round; `node_ips` are this node's InternalIPs from the latest snapshot.
pub async fn maintain(
    rec: &mut Reconciler,
    watch: Option<&DeviceWatch>,
    node_ips: &[IpAddr],
    ready: &Readiness,
    shared: &SharedState,
    north_south_off: bool,
) {
    let mut missing = rec.sock_mut().missing_pins();
    if let Some(host) = rec.host_lb_mut() {
        missing.extend(host.missing_pins());
    }
    let mut errors = Vec::new();
    if !missing.is_empty()
        && let Err(e) = rec.sock_mut().repair()
    {
        errors.push(e.to_string());
    }
    match (watch, rec.host_lb_mut()) {
        (Some(watch), Some(host)) => match watch.wanted(node_ips).await {
            Ok(Wanted {
                devices,
                absent,
                pod_devices,
                tunnels,
                host_addrs,
            }) => {
                let report = host.sync(&devices);
                if let Some(pods) = host.pods.as_mut() {
                    sync_pods(pods, &pod_devices, &tunnels, &host_addrs);
                }
                for (dev, e) in &report.errors {
                    warn!(device = %dev, error = %e, "north-south attach failed; retrying");
                }
                let attached = host.devices().to_vec();
                publish(shared, host, watch.selection());
                let failed: Vec<String> = report
                    .errors
                    .iter()
                    .map(|(d, e)| format!("{d}: {e}"))
                    .collect();
                if !failed.is_empty() {
                    ready.set(
                        NORTH_SOUTH,
                        false,
                        format!("attach failed on {}", failed.join("; ")),
                        Some(failed.join("; ")),
                    );
                } else if !absent.is_empty() {
                    let why = format!("--devices names missing devices: {}", absent.join(", "));
                    ready.set(NORTH_SOUTH, false, why.clone(), Some(why));
                } else if attached.is_empty() {
                    let ips: Vec<String> = node_ips.iter().map(ToString::to_string).collect();
                    ready.set(
                        NORTH_SOUTH,
                        false,
                        format!(
                            "no device detected: none carries an InternalIP ({}) or a default route",
                            if ips.is_empty() {
                                "no Node object for this node yet".to_owned()
                            } else {
                                ips.join(", ")
                            }
                        ),
                        None,
                    );
                } else {
                    ready.set(
                        NORTH_SOUTH,
                        true,
                        format!("attached on {}", device_line(&attached)),
                        None,
                    );
                }
            }
            Err(e) => ready.set(
                NORTH_SOUTH,
                false,
                "cannot list the node's devices",
                Some(e.to_string()),
            ),
        },
        // Not loaded (its failure is reported by the agent loop, which retries it).
        (Some(_), None) | (None, Some(_)) => {}
        (None, None) if !north_south_off => {}
        (None, None) => ready.set(NORTH_SOUTH, true, "off (--devices none)", None),
    }
    if missing.is_empty() && errors.is_empty() {
        ready.set(DATAPATH, true, "pinned maps and links in place", None);
    } else {
        let names = pin_names(&missing);
        let mut error = format!("pinned links had disappeared: {names}");
        for e in &errors {
            error.push_str("; re-attach failed: ");
            error.push_str(e);
        }
        warn!(pins = %names, "pinned links had disappeared; re-attached");
        ready.set(
            DATAPATH,
            false,
            format!("missing pinned links: {names} (re-attaching)"),
            Some(error),
        );
    }
}

/// The attached devices and their ingress hooks into the API status.
fn publish(shared: &SharedState, host: &crate::datapath::HostLb, selection: &str) {
    let mut guard = shared
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dp = &mut guard.status.datapath;
    selection.clone_into(&mut dp.device_selection);
    dp.devices = host
        .devices()
        .iter()
        .map(|d| DeviceView {
            name: d.name.clone(),
            ifindex: d.ifindex,
            addresses: d.addrs.iter().map(ToString::to_string).collect(),
        })
        .collect();
    dp.host_routing = match &host.pods {
        Some(pods) => {
            let c = pods.counters();
            HostRoutingView {
                mode: if host.host_routing { "bpf" } else { "legacy" }.into(),
                pod_devices: pods.attached().keys().cloned().collect(),
                netkit_devices: pods.netkit_devices().cloned().collect(),
                overlay_device: pods.tunnel().map(str::to_owned),
                to_pod_packets: c.to_pod,
                redirected_packets: c.redirected + c.neigh,
                neigh_packets: c.neigh,
                stack_packets: c.stack,
            }
        }
        None => HostRoutingView {
            mode: if host.host_routing {
                "unavailable"
            } else {
                "legacy"
            }
            .into(),
            ..HostRoutingView::default()
        },
    };
    dp.ingress = host
        .ingress
        .iter()
        .map(|(device, hook)| DeviceIngress {
            device: device.clone(),
            hook: hook.as_str().to_string(),
        })
        .collect();
}
