//! Device hooks by pin: attach a TC program through the ladder's backend, tell whether a
//! pinned hook is still in place, and remove one (a `bpf_link` pin goes with its link; a
//! netlink attachment's filter or XDP program is taken off the device first, and only when it
//! is ferrite's).
//!
//! Under the legacy backend the pin is the program itself (`BPF_OBJ_PIN`): the record that the
//! hook is ours and what a restarted agent adopts. Its filter is created at ferrite's
//! (priority, handle), or replaced in place when it is already there: never a gap.

use std::os::fd::BorrowedFd;
use std::path::Path;

use tracing::{debug, info, warn};

use super::DatapathError;
use super::ladder::PinName;
use super::tcnl::{Direction, FILTER_HANDLE, Rtnl};

const XDP_FLAGS_SKB_MODE: u32 = 2;
const XDP_FLAGS_DRV_MODE: u32 = 4;

fn rtnl(pin: &Path) -> Result<Rtnl, DatapathError> {
    Rtnl::open().map_err(|e| DatapathError::io("opening rtnetlink for", pin, e))
}

fn ifindex(dev: &str) -> Option<u32> {
    let c = std::ffi::CString::new(dev).ok()?;
    // SAFETY: c is a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// The priority and hook of a legacy TC pin.
fn legacy_tc(pin: &PinName) -> Option<(Direction, u16)> {
    match pin {
        PinName::LegacyHost { dir, .. } => Some((*dir, super::ladder::PRIO_HOST)),
        PinName::LegacyL2 { .. } => Some((Direction::Ingress, super::ladder::PRIO_L2)),
        PinName::LegacyPod { .. }
        | PinName::LegacyPodPolicy { .. }
        | PinName::LegacyTunnel { .. } => Some((Direction::Ingress, super::ladder::PRIO_HOST)),
        PinName::LegacyPodEgress { .. } => Some((Direction::Egress, super::ladder::PRIO_HOST)),
        _ => None,
    }
}

fn parse(pin: &Path) -> Option<PinName> {
    PinName::parse(pin.file_name()?.to_str()?)
}

/// (Re)pins `prog` at `pin` as the record of a netlink attachment.
fn pin_prog(prog: BorrowedFd<'_>, pin: &Path) -> Result<(), DatapathError> {
    match std::fs::remove_file(pin) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(DatapathError::io("removing", pin, e)),
    }
    super::link::obj_pin(prog, pin).map_err(|e| DatapathError::io("pinning program at", pin, e))
}

/// Attaches `prog` (named `name`) to the legacy TC hook `pin` stands for, creating the clsact
/// qdisc when needed, or atomically replaces the program of ferrite's filter already there.
/// Returns true when an existing attachment of ours was adopted.
pub fn attach_tc(
    name: &'static str,
    prog: BorrowedFd<'_>,
    ifindex: u32,
    pin: &Path,
) -> Result<bool, DatapathError> {
    let parsed = parse(pin).and_then(|p| legacy_tc(&p));
    let Some((dir, prio)) = parsed else {
        return Err(DatapathError::io(
            "attaching",
            pin,
            std::io::Error::other("not a legacy TC pin name"),
        ));
    };
    let mut nl = rtnl(pin)?;
    let tc_err = |what: &'static str| move |e| DatapathError::io(what, pin, e);
    nl.ensure_clsact(ifindex)
        .map_err(tc_err("adding the clsact qdisc for"))?;
    let before = nl
        .bpf_filters(ifindex, dir)
        .map_err(tc_err("listing tc filters for"))?
        .into_iter()
        .find(|f| f.priority == prio && f.handle == FILTER_HANDLE);
    if let Some(f) = &before
        && !f.name.starts_with(super::PROGRAM_PREFIX)
    {
        return Err(DatapathError::io(
            "attaching",
            pin,
            std::io::Error::other(format!(
                "tc filter priority {prio} handle {FILTER_HANDLE:#x} on {} is taken by {:?}, \
                 not a ferrite program",
                dir.as_str(),
                f.name
            )),
        ));
    }
    nl.replace_filter(ifindex, dir, prio, prog, name)
        .map_err(tc_err("attaching a cls_bpf filter for"))?;
    let adopted = before.is_some() && pin.exists();
    pin_prog(prog, pin)?;
    if adopted {
        debug!(program = name, pin = %pin.display(), "replaced the program of our tc filter");
    } else {
        info!(program = name, pin = %pin.display(), priority = prio, "attached tc filter (legacy)");
    }
    Ok(adopted)
}

/// Sets `prog` as `ifindex`'s XDP program over netlink in the pin's mode (replacing ours in
/// place) and pins it.
pub fn attach_xdp(prog: BorrowedFd<'_>, ifindex: u32, pin: &Path) -> Result<(), DatapathError> {
    let Some(PinName::XdpNetlink { generic, .. }) = parse(pin) else {
        return Err(DatapathError::io(
            "attaching",
            pin,
            std::io::Error::other("not a netlink XDP pin name"),
        ));
    };
    let flags = if generic {
        XDP_FLAGS_SKB_MODE
    } else {
        XDP_FLAGS_DRV_MODE
    };
    rtnl(pin)?
        .set_xdp(ifindex, Some(prog), flags)
        .map_err(|e| DatapathError::io("setting XDP over netlink for", pin, e))?;
    pin_prog(prog, pin)
}

/// The id of the program pinned at `pin`.
fn pinned_prog_id(pin: &Path) -> Option<u32> {
    aya::programs::ProgramInfo::from_pin(pin)
        .ok()
        .map(|i| i.id())
}

/// Whether the hook `pin` records is in place: a link pin exists; a netlink pin exists and its
/// device still runs the pinned program there.
#[must_use]
pub fn attached(pin: &Path) -> bool {
    if !pin.exists() {
        return false;
    }
    let Some(name) = parse(pin).filter(PinName::is_netlink) else {
        return true;
    };
    let (Some(ifindex), Some(id)) = (ifindex(name.device()), pinned_prog_id(pin)) else {
        return false;
    };
    let Ok(mut nl) = Rtnl::open() else {
        // Cannot look: assume it is there rather than re-attach in a loop.
        return true;
    };
    if let Some((dir, prio)) = legacy_tc(&name) {
        nl.bpf_filters(ifindex, dir).is_ok_and(|fs| {
            fs.iter()
                .any(|f| f.priority == prio && f.handle == FILTER_HANDLE && f.prog_id == id)
        })
    } else {
        nl.xdp_prog_id(ifindex).is_ok_and(|p| p == Some(id))
    }
}

/// Removes the hook `pin` records: the link with its pin, or ferrite's netlink attachment
/// (left alone when the device now runs another program there) and then the pin.
/// A pin that does not exist is not an error.
pub fn remove(pin: &Path) -> Result<bool, DatapathError> {
    if !pin.exists() {
        return Ok(false);
    }
    if let Some(name) = parse(pin).filter(PinName::is_netlink)
        && let Some(ifindex) = ifindex(name.device())
    {
        let id = pinned_prog_id(pin);
        let mut nl = rtnl(pin)?;
        let detach_err = |e| DatapathError::io("detaching", pin, e);
        if let Some((dir, prio)) = legacy_tc(&name) {
            let ours = nl
                .bpf_filters(ifindex, dir)
                .map_err(detach_err)?
                .iter()
                .any(|f| {
                    f.priority == prio
                        && f.handle == FILTER_HANDLE
                        && f.name.starts_with(super::PROGRAM_PREFIX)
                });
            if ours {
                nl.delete_filter(ifindex, dir, prio).map_err(detach_err)?;
            }
        } else if let PinName::XdpNetlink { generic, .. } = name {
            let on_dev = nl.xdp_prog_id(ifindex).map_err(detach_err)?;
            if on_dev.is_some() && on_dev == id {
                let flags = if generic {
                    XDP_FLAGS_SKB_MODE
                } else {
                    XDP_FLAGS_DRV_MODE
                };
                nl.set_xdp(ifindex, None, flags).map_err(detach_err)?;
            } else if on_dev.is_some() {
                warn!(pin = %pin.display(), "the device runs another XDP program; left in place");
            }
        }
    }
    std::fs::remove_file(pin).map_err(|e| DatapathError::io("removing", pin, e))?;
    Ok(true)
}

/// [`remove`], logged; for teardown paths that keep going.
pub fn remove_logged(pin: &Path, why: &str) {
    match remove(pin) {
        Ok(true) => info!(pin = %pin.display(), why, "detached"),
        Ok(false) => {}
        Err(e) => warn!(pin = %pin.display(), error = %e, why, "cannot detach"),
    }
}
