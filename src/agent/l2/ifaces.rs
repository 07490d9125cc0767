//! The interfaces of this network namespace, for the L2 eligibility of each address.

use std::collections::BTreeMap;

use crate::l2::eligibility::LocalInterface;

/// This namespace's interfaces with their administrative+operational state.
pub(super) fn local_interfaces() -> Vec<LocalInterface> {
    let mut out: BTreeMap<String, bool> = BTreeMap::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list freed below.
    if unsafe { libc::getifaddrs(&raw mut head) } != 0 {
        return Vec::new();
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: a node of the list getifaddrs returned; ifa_name is NUL-terminated.
        let ifa = unsafe { &*cur };
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        let flags = ifa.ifa_flags;
        let up = flags & (libc::IFF_UP as u32) != 0 && flags & (libc::IFF_RUNNING as u32) != 0;
        if name != "lo" {
            *out.entry(name).or_insert(false) |= up;
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: head came from getifaddrs.
    unsafe { libc::freeifaddrs(head) };
    out.into_iter()
        .map(|(name, up)| LocalInterface { name, up })
        .collect()
}
