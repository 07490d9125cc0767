//! Finding and detaching BPF links: the facts of a link (`BPF_OBJ_GET_INFO_BY_FD`), every link
//! in the system (`BPF_LINK_GET_NEXT_ID` / `BPF_LINK_GET_FD_BY_ID`) and `BPF_LINK_DETACH`, which
//! detaches a link's program even while some process still holds the link open.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `enum bpf_cmd` values (uapi/linux/bpf.h).
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
const BPF_LINK_GET_NEXT_ID: libc::c_long = 31;
const BPF_LINK_DETACH: libc::c_long = 34;

/// `enum bpf_link_type` BPF_LINK_TYPE_CGROUP.
pub const LINK_TYPE_CGROUP: u32 = 3;

pub use crate::datapath::PROGRAM_PREFIX;

/// The `start_id`/`link_id` form of `union bpf_attr` (GET_NEXT_ID, GET_FD_BY_ID).
#[repr(C)]
struct IdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

/// The `info` form of `union bpf_attr` (OBJ_GET_INFO_BY_FD).
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The `link_detach` form of `union bpf_attr`.
#[repr(C)]
struct DetachAttr {
    link_fd: u32,
}

/// `struct bpf_link_info`: type, id, prog_id, then the per-type union, 8-byte aligned (for a
/// cgroup link its first field is the u64 cgroup id; for XDP and TCX the u32 ifindex).
#[repr(C, align(8))]
struct RawLinkInfo {
    kind: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    target: [u8; 8],
    attach_type: u32,
    _rest: [u32; 13],
}

/// What the kernel says about one link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkFacts {
    pub id: u32,
    pub prog_id: u32,
    /// `enum bpf_link_type`.
    pub kind: u32,
    /// For a cgroup link, the cgroup's id (its inode in cgroup2).
    pub cgroup_id: Option<u64>,
}

fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: every attr type here is a valid, fully initialised prefix of `union bpf_attr` for
    // its command; the kernel zero-extends the rest, reads and writes no further than the size
    // given, and pointers inside the attr point at live buffers of the stated length.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            std::mem::size_of::<T>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// The facts of the link behind `fd`.
pub fn info(fd: BorrowedFd<'_>) -> io::Result<LinkFacts> {
    let mut raw = RawLinkInfo {
        kind: 0,
        id: 0,
        prog_id: 0,
        _pad: 0,
        target: [0; 8],
        attach_type: 0,
        _rest: [0; 13],
    };
    let mut attr = InfoAttr {
        bpf_fd: u32::try_from(fd.as_raw_fd()).map_err(io::Error::other)?,
        info_len: u32::try_from(std::mem::size_of::<RawLinkInfo>()).map_err(io::Error::other)?,
        info: std::ptr::from_mut(&mut raw) as u64,
    };
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(LinkFacts {
        id: raw.id,
        prog_id: raw.prog_id,
        kind: raw.kind,
        cgroup_id: (raw.kind == LINK_TYPE_CGROUP).then(|| u64::from_ne_bytes(raw.target)),
    })
}

/// Detaches the link's program from its hook; the link object lives on, defunct, until its last
/// fd or pin goes away.
pub fn detach(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = DetachAttr {
        link_fd: u32::try_from(fd.as_raw_fd()).map_err(io::Error::other)?,
    };
    sys_bpf(BPF_LINK_DETACH, &mut attr).map(|_| ())
}

/// Every link in the system with its fd, skipping links that vanish while we look.
pub fn all() -> io::Result<Vec<(OwnedFd, LinkFacts)>> {
    let mut out = Vec::new();
    let mut attr = IdAttr {
        id: 0,
        next_id: 0,
        open_flags: 0,
    };
    loop {
        // The kernel writes the next id into the attr.
        match sys_bpf(BPF_LINK_GET_NEXT_ID, &mut attr) {
            Ok(_) => attr.id = attr.next_id,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            Err(e) => return Err(e),
        }
        let mut by_id = IdAttr {
            id: attr.id,
            next_id: 0,
            open_flags: 0,
        };
        let fd = match sys_bpf(BPF_LINK_GET_FD_BY_ID, &mut by_id) {
            Ok(fd) => i32::try_from(fd).map_err(io::Error::other)?,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e),
        };
        // SAFETY: the kernel returned a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let facts = info(fd.as_fd())?;
        out.push((fd, facts));
    }
}

/// Program id → name of every loaded program.
pub fn program_names() -> BTreeMap<u32, String> {
    aya::programs::loaded_programs()
        .flatten()
        .map(|p| (p.id(), p.name_as_str().unwrap_or_default().to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_and_info_layouts_match_the_uapi() {
        assert_eq!(std::mem::size_of::<IdAttr>(), 12);
        assert_eq!(std::mem::size_of::<InfoAttr>(), 16);
        assert_eq!(std::mem::offset_of!(InfoAttr, info), 8);
        assert_eq!(std::mem::size_of::<DetachAttr>(), 4);
        // type, id, prog_id, then the union at offset 16 (aligned for the cgroup id's u64).
        assert_eq!(std::mem::offset_of!(RawLinkInfo, prog_id), 8);
        assert_eq!(std::mem::offset_of!(RawLinkInfo, target), 16);
        assert_eq!(std::mem::offset_of!(RawLinkInfo, attach_type), 24);
        assert_eq!(std::mem::align_of::<RawLinkInfo>(), 8);
    }
}
