//! CHECK: compares the attachment with `prevResult` and the IPAM store — the reservation, both
//! veth ends (up; the host end's MTU), the pod's addresses and default routes, the host routes —
//! and reports every difference. The pod end's MTU is not checked: a later plugin in the chain
//! (`tuning`) may change it, which the spec allows.

use std::collections::HashSet;
use std::net::IpAddr;

use crate::cni::cidr::IpNet;
use crate::cni::config::{ConfigError, NetConf};
use crate::cni::env::CniEnv;
use crate::cni::error::CniError;
use crate::cni::ipam::{LOCK_TIMEOUT, Store};
use crate::cni::netlink::{LinkState, Net, Nl};
use crate::cni::netns::NetnsFile;
use crate::cni::plan::host_ifname;
use crate::cni::result::AddResult;

use super::attachment;

pub fn run(env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
    let a = attachment(env)?;
    let netns = env
        .netns
        .as_deref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let invalid = |why: String| ConfigError::Invalid {
        field: "prevResult".into(),
        why,
    };
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| invalid("missing: CHECK needs the result of the ADD".into()))?;
    let prev = AddResult::parse(prev).map_err(|e| invalid(e.to_string()))?;
    let Some(idx) = prev.sandbox_interface(&a.ifname, &netns) else {
        return Err(CniError::Check(vec![format!(
            "prevResult has no interface {} in {netns}",
            a.ifname
        )]));
    };
    let expected: Vec<(IpNet, Option<IpAddr>)> = prev
        .ips
        .iter()
        .filter(|ip| ip.interface == Some(idx))
        .map(|ip| (ip.address, ip.gateway))
        .collect();
    let mut problems = Vec::new();

    let store = Store::new(&conf.state_dir, &conf.name);
    let held: HashSet<IpAddr> = {
        let locked = store.lock(LOCK_TIMEOUT)?;
        let state = locked.load()?;
        state
            .of(a)
            .filter(|x| x.pending.is_none())
            .map(|x| x.ip)
            .collect()
    };
    for (ip, _) in &expected {
        if !held.contains(&ip.addr()) {
            problems.push(format!("{} is not reserved for this attachment", ip.addr()));
        }
    }
    if held.len() != expected.len() {
        problems.push(format!(
            "the store holds {} addresses for it, prevResult lists {}",
            held.len(),
            expected.len()
        ));
    }

    let net = Net::new()?;
    check_host(&net, &host_ifname(a), conf.mtu, &expected, &mut problems)?;

    let ns = NetnsFile::open(std::path::Path::new(&netns))?;
    let pod = net.enter(&ns)?;
    if let Some(link) = check_link(&net, &pod, &a.ifname, None, "pod end", &mut problems)? {
        let addrs = net.addresses(&pod, link.index)?;
        for (ip, gw) in &expected {
            if !addrs.contains(ip) {
                problems.push(format!("{} does not carry {ip}", a.ifname));
            }
            let routes = net.routes(&pod, ip.is_ipv4())?;
            let default = routes
                .iter()
                .any(|r| r.dst.prefix() == 0 && r.gw == *gw && r.oif == Some(link.index));
            if gw.is_some() && !default {
                problems.push(format!(
                    "no default route via {} on {}",
                    gw.map_or(String::new(), |g| g.to_string()),
                    a.ifname
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CniError::Check(problems))
    }
}

/// The host end: up, MTU, and a route to each pod address through it.
fn check_host(
    net: &Net,
    veth: &str,
    mtu: u32,
    expected: &[(IpNet, Option<IpAddr>)],
    problems: &mut Vec<String>,
) -> Result<(), CniError> {
    let Some(host) = check_link(net, net.host(), veth, Some(mtu), "host end", problems)? else {
        return Ok(());
    };
    for v4 in [true, false] {
        let routes = net.routes(net.host(), v4)?;
        for (ip, _) in expected.iter().filter(|(ip, _)| ip.is_ipv4() == v4) {
            let dst = IpNet::host(ip.addr());
            if !routes
                .iter()
                .any(|r| r.dst == dst && r.oif == Some(host.index))
            {
                problems.push(format!("the host has no route {dst} via {veth}"));
            }
        }
    }
    Ok(())
}

fn check_link(
    net: &Net,
    nl: &Nl,
    name: &str,
    mtu: Option<u32>,
    what: &str,
    problems: &mut Vec<String>,
) -> Result<Option<LinkState>, CniError> {
    let Some(link) = net.link(nl, name)? else {
        problems.push(format!("the {what} {name} is missing"));
        return Ok(None);
    };
    if !link.up {
        problems.push(format!("the {what} {name} is down"));
    }
    if let Some(mtu) = mtu.filter(|m| *m != link.mtu) {
        problems.push(format!(
            "the {what} {name} has MTU {}, the config says {mtu}",
            link.mtu
        ));
    }
    Ok(Some(link))
}
