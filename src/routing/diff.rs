//! Desired plan vs the kernel's ferrite-owned state → the netlink operations that make it true
//! (pure). Nothing already right is rewritten, so a restarted agent changes nothing and open
//! connections never see a flap.

use std::net::IpAddr;

use ipnet::IpNet;

use super::plan::{DesiredFdb, DesiredNeigh, DesiredRoute, Plan, RouteDev, VxlanDevice};

/// A route carrying ferrite's protocol number, as dumped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CurrentRoute {
    pub dst: IpNet,
    pub gateway: Option<IpAddr>,
    pub ifindex: u32,
    pub onlink: bool,
}

/// ferrite's VXLAN device as dumped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurrentVxlan {
    pub ifindex: u32,
    pub vni: Option<u32>,
    pub port: Option<u16>,
    pub local: Option<IpAddr>,
    pub mtu: u32,
    pub mac: Option<[u8; 6]>,
    pub up: bool,
    pub addrs: Vec<IpNet>,
}

/// What the kernel holds now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Current {
    pub routes: Vec<CurrentRoute>,
    pub vxlan: Option<CurrentVxlan>,
    /// Permanent neighbours on the VXLAN device.
    pub neighs: Vec<(IpAddr, [u8; 6])>,
    /// Permanent FDB entries (with a destination) on the VXLAN device.
    pub fdb: Vec<([u8; 6], IpAddr)>,
    /// Destinations of main-table routes ferrite did not add: never touched.
    pub foreign: Vec<IpNet>,
}

/// One netlink change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    CreateVxlan(VxlanDevice),
    /// Delete ferrite's VXLAN device (no longer needed, or its VNI/port/local changed: then a
    /// `CreateVxlan` follows).
    DeleteVxlan {
        ifindex: u32,
    },
    /// MTU, MAC and up state of the existing device.
    SetVxlan {
        ifindex: u32,
        mtu: u32,
        mac: [u8; 6],
    },
    AddVxlanAddr(IpNet),
    DelVxlanAddr(IpNet),
    ReplaceFdb(DesiredFdb),
    DelFdb {
        mac: [u8; 6],
        dst: IpAddr,
    },
    ReplaceNeigh(DesiredNeigh),
    DelNeigh {
        ip: IpAddr,
        mac: [u8; 6],
    },
    ReplaceRoute(DesiredRoute),
    DelRoute(CurrentRoute),
}

/// The ops and the routes left out because someone else's route holds their destination.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    pub ops: Vec<Op>,
    pub blocked: Vec<DesiredRoute>,
}

fn vxlan_matches(want: &VxlanDevice, have: &CurrentVxlan) -> bool {
    have.vni == Some(want.vni) && have.port == Some(want.port) && have.local == Some(want.local)
}

fn route_matches(want: &DesiredRoute, have: &CurrentRoute, vxlan_ifindex: Option<u32>) -> bool {
    let ifindex = match want.dev {
        RouteDev::Index(i) => Some(i),
        RouteDev::Vxlan => vxlan_ifindex,
    };
    have.dst == want.dst
        && have.gateway == Some(want.gateway)
        && Some(have.ifindex) == ifindex
        && have.onlink == want.onlink
}

/// Computes the operations turning `current` into `plan`, in a safe order: the device and its
/// entries first, then routes (replaced in place, never deleted and re-added), stale entries
/// last.
#[must_use]
#[expect(
    clippy::too_many_lines,
    reason = "one ordered sequence of steps; splitting it would hide the order"
)]
pub fn diff(plan: &Plan, current: &Current) -> Diff {
    let mut out = Diff::default();
    let mut ops = Vec::new();
    // Is the existing device kept (so its routes, neighbours and FDB entries count)?
    let mut kept_vxlan: Option<&CurrentVxlan> = None;
    match (&plan.vxlan, &current.vxlan) {
        (Some(want), Some(have)) if vxlan_matches(want, have) => {
            kept_vxlan = Some(have);
            if have.mtu != want.mtu || have.mac != Some(want.mac) || !have.up {
                ops.push(Op::SetVxlan {
                    ifindex: have.ifindex,
                    mtu: want.mtu,
                    mac: want.mac,
                });
            }
            for a in &want.addrs {
                if !have.addrs.contains(a) {
                    ops.push(Op::AddVxlanAddr(*a));
                }
            }
            for a in &have.addrs {
                if !want.addrs.contains(a) {
                    ops.push(Op::DelVxlanAddr(*a));
                }
            }
        }
        (Some(want), have) => {
            if let Some(have) = have {
                ops.push(Op::DeleteVxlan {
                    ifindex: have.ifindex,
                });
            }
            ops.push(Op::CreateVxlan(want.clone()));
            ops.extend(want.addrs.iter().map(|a| Op::AddVxlanAddr(*a)));
        }
        (None, _) => {}
    }
    let (have_neighs, have_fdb): (&[_], &[_]) = if kept_vxlan.is_some() {
        (&current.neighs, &current.fdb)
    } else {
        (&[], &[])
    };
    let vxlan_ifindex = kept_vxlan.map(|v| v.ifindex);
    // Routes through a device about to be deleted go with it.
    let doomed = match (&plan.vxlan, &current.vxlan) {
        (_, Some(have)) if kept_vxlan.is_none() => Some(have.ifindex),
        _ => None,
    };
    if plan.vxlan.is_some() {
        for f in &plan.fdb {
            if !have_fdb.contains(&(f.mac, f.dst)) {
                ops.push(Op::ReplaceFdb(*f));
            }
        }
        for n in &plan.neighs {
            if !have_neighs.contains(&(n.ip, n.mac)) {
                ops.push(Op::ReplaceNeigh(*n));
            }
        }
    }
    for r in &plan.routes {
        if current
            .routes
            .iter()
            .any(|h| route_matches(r, h, vxlan_ifindex))
        {
            continue;
        }
        if current.foreign.contains(&r.dst) && !current.routes.iter().any(|h| h.dst == r.dst) {
            out.blocked.push(*r);
            continue;
        }
        ops.push(Op::ReplaceRoute(*r));
    }
    for h in &current.routes {
        if Some(h.ifindex) == doomed {
            continue;
        }
        // A replaced route has the same destination: it is gone already.
        if !plan.routes.iter().any(|r| r.dst == h.dst) {
            ops.push(Op::DelRoute(*h));
        }
    }
    if kept_vxlan.is_some() {
        for (ip, mac) in have_neighs {
            // A neighbour replaced with a new MAC is keyed by its address: already right.
            if !plan.neighs.iter().any(|n| n.ip == *ip) {
                ops.push(Op::DelNeigh { ip: *ip, mac: *mac });
            }
        }
        for (mac, dst) in have_fdb {
            // An entry replaced with a new destination is keyed by its MAC: already right.
            if !plan.fdb.iter().any(|f| f.mac == *mac) {
                ops.push(Op::DelFdb {
                    mac: *mac,
                    dst: *dst,
                });
            }
        }
    }
    if plan.vxlan.is_none()
        && let Some(have) = &current.vxlan
    {
        ops.push(Op::DeleteVxlan {
            ifindex: have.ifindex,
        });
    }
    out.ops = ops;
    out
}
