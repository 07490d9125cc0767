//! ADD: reserve addresses, build the device pair (veth or netkit), address and route both ends, commit.
//! Any failure after the reservation undoes everything this run created.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tracing::{info, warn};

use crate::cni::config::{ConfigError, NetConf, PodDeviceKind};
use crate::cni::env::{Attachment, CniEnv};
use crate::cni::error::CniError;
use crate::cni::ipam::{Allocation, IpamError, LOCK_TIMEOUT, Owner, Request, Store};
use crate::cni::netlink::{Net, NetError};
use crate::cni::netns::{NetnsFile, sysctl};
use crate::cni::node_state;
use crate::cni::plan::{AttachPlan, host_ifname};
use crate::cni::reclaim::reap_dead_adds;
use crate::cni::result::AddResult;

use super::attachment;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub fn run(env: &CniEnv, conf: &NetConf) -> Result<Value, CniError> {
    let started = Instant::now();
    let a = attachment(env)?;
    let netns_path = env
        .netns
        .as_deref()
        .unwrap_or_else(|| std::path::Path::new(""));
    let ns = NetnsFile::open(netns_path)?;
    let prev = conf
        .prev_result
        .as_ref()
        .map(AddResult::parse)
        .transpose()
        .map_err(|e| ConfigError::Invalid {
            field: "prevResult".into(),
            why: e.to_string(),
        })?;
    let cidrs = node_state::pod_cidrs(conf)?;
    let net = Net::new()?;
    let store = Store::new(&conf.state_dir, &conf.name);
    let owner = Owner::current();
    let host = host_ifname(a);

    let reserved = {
        let locked = store.lock(LOCK_TIMEOUT)?;
        let mut state = locked.load()?;
        let reaped = reap_dead_adds(&net, &mut state).len();
        let reserved = state.reserve(&Request {
            attachment: a,
            host_ifname: &host,
            cidrs: &cidrs,
            wanted: &conf.runtime.ips,
            owner,
            pod: env.pod(),
            netns: Some(netns_path.display().to_string()),
            now_unix_ms: now_ms(),
        });
        if reserved.is_ok() || reaped > 0 {
            locked.save(&state)?;
        }
        reserved?
    };

    let plan = AttachPlan::new(a, conf.mtu, conf.runtime.mac, &reserved);
    let mut created = false;
    let outcome = configure(&net, &ns, &plan, conf.pod_device, &mut created).and_then(|macs| {
        commit(&store, a, owner, reserved.len())?;
        Ok(macs)
    });
    let (host_mac, pod_mac, device) = match outcome {
        Ok(m) => m,
        Err(e) => {
            rollback(&net, &store, a, owner, &plan, created);
            return Err(e);
        }
    };
    let ours = plan.result(
        &host_mac,
        &pod_mac,
        &netns_path.display().to_string(),
        conf.dns.clone(),
    );
    let result = match prev {
        Some(p) => p.chain(ours),
        None => ours,
    };
    info!(
        container = %a.container_id,
        ifname = %a.ifname,
        device = %plan.host_ifname,
        kind = device,
        ips = ?reserved.iter().map(|r| r.ip.to_string()).collect::<Vec<_>>(),
        took_ms = started.elapsed().as_secs_f64() * 1e3,
        "ADD"
    );
    Ok(result.render(conf.version))
}

/// Creates the pod's device pair of `kind`; returns the kind it made ("veth" or "netkit").
fn create_pair(
    net: &Net,
    ns: &NetnsFile,
    plan: &AttachPlan,
    kind: PodDeviceKind,
) -> Result<&'static str, CniError> {
    let (host, pod) = (&plan.host_ifname, &plan.container_ifname);
    if kind != PodDeviceKind::Veth {
        if net.create_netkit(host, pod, ns, plan.mtu, plan.mac)? {
            return Ok("netkit");
        }
        if kind == PodDeviceKind::Netkit {
            return Err(ConfigError::Invalid {
                field: "podDevice".into(),
                why: "netkit: this kernel has no netkit devices (Linux 6.7 or later); use veth or auto".into(),
            }
            .into());
        }
    }
    net.create_veth(host, pod, ns, plan.mtu, plan.mac)?;
    Ok("veth")
}

/// Builds everything; returns the MACs of the host and pod ends and the kind of pair.
fn configure(
    net: &Net,
    ns: &NetnsFile,
    plan: &AttachPlan,
    kind: PodDeviceKind,
    created: &mut bool,
) -> Result<(Vec<u8>, Vec<u8>, &'static str), CniError> {
    if net.link(net.host(), &plan.host_ifname)?.is_some() {
        return Err(NetError::Exists {
            name: plan.host_ifname.clone(),
            place: "on the host (this attachment was added before)",
        }
        .into());
    }
    let pod = net.enter(ns)?;
    if net.link(&pod, &plan.container_ifname)?.is_some() {
        return Err(NetError::Exists {
            name: plan.container_ifname.clone(),
            place: "in the container",
        }
        .into());
    }
    let kind = create_pair(net, ns, plan, kind)?;
    *created = true;

    // Host end: forwarding, gateway addresses, up, routes to the pod.
    let v4 = plan.addresses.iter().any(|a| a.addr.is_ipv4());
    if v4 {
        sysctl("net.ipv4.ip_forward", "1")?;
    }
    if plan.has_v6() {
        sysctl("net.ipv6.conf.all.forwarding", "1")?;
    }
    let host = net
        .link(net.host(), &plan.host_ifname)?
        .ok_or_else(|| vanished(&plan.host_ifname))?;
    for addr in plan.host_addresses() {
        net.add_address(net.host(), host.index, addr)?;
    }
    net.set_up(net.host(), host.index)?;
    for route in plan.host_routes() {
        net.add_route(net.host(), host.index, &route)?;
    }

    // Pod end: IPv6 on, addresses, up, gateway and default routes.
    let pod_link = net
        .link(&pod, &plan.container_ifname)?
        .ok_or_else(|| vanished(&plan.container_ifname))?;
    if plan.has_v6() {
        let key = format!("net.ipv6.conf.{}.disable_ipv6", plan.container_ifname);
        ns.run(|| sysctl(&key, "0"))??;
    }
    for a in &plan.addresses {
        net.add_address(&pod, pod_link.index, a.addr)?;
    }
    net.set_up(&pod, pod_link.index)?;
    for route in plan.container_routes() {
        net.add_route(&pod, pod_link.index, &route)?;
    }
    Ok((host.mac, pod_link.mac, kind))
}

fn vanished(name: &str) -> CniError {
    NetError::Io {
        what: format!("link {name} disappeared right after it was created"),
        source: std::io::ErrorKind::NotFound.into(),
    }
    .into()
}

fn commit(store: &Store, a: &Attachment, owner: Owner, expected: usize) -> Result<(), CniError> {
    let locked = store.lock(LOCK_TIMEOUT)?;
    let mut state = locked.load()?;
    let committed = state.commit(a, owner);
    if committed != expected {
        // Someone released our reservation (a DEL of the same attachment ran meanwhile):
        // keeping the interfaces could duplicate an address, so undo.
        return Err(IpamError::InFlight {
            attachment: format!("{}/{}", a.container_id, a.ifname),
            pid: owner.pid,
        }
        .into());
    }
    locked.save_atomic(&state)?;
    Ok(())
}

/// Undoes a failed ADD: the veth pair (the pod end goes with it), then the reservation.
/// Errors are logged; the original error is what the runtime sees.
fn rollback(
    net: &Net,
    store: &Store,
    a: &Attachment,
    owner: Owner,
    plan: &AttachPlan,
    created: bool,
) {
    if created && let Err(e) = net.del_link(net.host(), &plan.host_ifname) {
        warn!(error = %e, veth = %plan.host_ifname, "rollback: deleting the veth pair");
        // The reservation stays (pending, owned by this dying process): the next ADD, GC or
        // agent start reclaims it together with the veth.
        return;
    }
    let released = store.lock(LOCK_TIMEOUT).and_then(|locked| {
        let mut state = locked.load()?;
        let gone: Vec<Allocation> = state.take(|x| x.belongs_to(a) && x.pending == Some(owner));
        locked.save_atomic(&state)?;
        Ok(gone)
    });
    match released {
        Ok(gone) => {
            info!(released = gone.len(), container = %a.container_id, "rolled back a failed ADD");
        }
        Err(e) => warn!(error = %e, "rollback: releasing the reservation (reclaimed later)"),
    }
}
