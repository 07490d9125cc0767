//! Pinned links: attach a program once, then on every restart swap the new program into the
//! existing link (`BPF_LINK_UPDATE`) so the hook is never absent, not even for a syscall.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use aya::programs::{
    CgroupAttachMode, CgroupSockAddr, LinkOrder, ProgramError, ProgramFd, SchedClassifier,
    TcAttachType, links::FdLink, tc::TcAttachOptions,
};
use tracing::{debug, info, warn};

use super::DatapathError;

/// `enum bpf_cmd` value of BPF_LINK_UPDATE (uapi/linux/bpf.h).
const BPF_LINK_UPDATE: libc::c_long = 29;

#[repr(C)]
struct LinkUpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

fn link_update(link: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> std::io::Result<()> {
    let attr = LinkUpdateAttr {
        link_fd: u32::try_from(link.as_raw_fd()).unwrap_or(u32::MAX),
        new_prog_fd: u32::try_from(prog.as_raw_fd()).unwrap_or(u32::MAX),
        flags: 0,
        old_prog_fd: 0,
    };
    // SAFETY: attr is a valid, fully initialised prefix of `union bpf_attr` for this command;
    // the kernel zero-extends the rest.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_UPDATE,
            &raw const attr,
            std::mem::size_of::<LinkUpdateAttr>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `enum bpf_cmd` values (uapi/linux/bpf.h).
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_LINK_CREATE: libc::c_long = 28;
/// `enum bpf_attach_type` BPF_NETKIT_PEER: a netkit pair's program run as its peer (the pod's
/// end) transmits, attached through the primary (the host's end).
const BPF_NETKIT_PEER: u32 = 55;

#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

#[repr(C)]
struct ObjPinAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// `BPF_LINK_CREATE` of a device link (`attach_type` on `ifindex`, with `flags`).
pub fn link_create(
    prog: BorrowedFd<'_>,
    ifindex: u32,
    attach_type: u32,
    flags: u32,
) -> std::io::Result<OwnedFd> {
    let attr = LinkCreateAttr {
        prog_fd: u32::try_from(prog.as_raw_fd()).map_err(std::io::Error::other)?,
        target_ifindex: ifindex,
        attach_type,
        flags,
    };
    // SAFETY: attr is a valid, fully initialised prefix of `union bpf_attr` for this command;
    // the kernel zero-extends the rest (for netkit: no relative program, any revision).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_CREATE,
            &raw const attr,
            std::mem::size_of::<LinkCreateAttr>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(rc).map_err(std::io::Error::other)?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `BPF_OBJ_PIN` of `fd` at `path`.
pub fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> std::io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let attr = ObjPinAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: u32::try_from(fd.as_raw_fd()).map_err(std::io::Error::other)?,
        file_flags: 0,
    };
    // SAFETY: attr is a valid prefix of `union bpf_attr`; `c` outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_PIN,
            &raw const attr,
            std::mem::size_of::<ObjPinAttr>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `enum bpf_cmd` value of BPF_OBJ_GET.
const BPF_OBJ_GET: libc::c_long = 7;

#[repr(C)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// Opens a pinned bpffs object (here: a link) and returns its fd.
pub(crate) fn obj_get(pin: &Path) -> std::io::Result<OwnedFd> {
    let c = CString::new(pin.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let attr = ObjGetAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: attr is a valid prefix of `union bpf_attr`; `c` outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &raw const attr,
            std::mem::size_of::<ObjGetAttr>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(rc).map_err(std::io::Error::other)?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Swaps `prog` into the link pinned at `pin`. Returns false when there is no usable pinned
/// link (the pin, if any, is removed): the caller then attaches and calls [`pin_link`].
pub fn adopt(name: &'static str, prog: BorrowedFd<'_>, pin: &Path) -> Result<bool, DatapathError> {
    if !pin.exists() {
        return Ok(false);
    }
    match obj_get(pin).and_then(|link| link_update(link.as_fd(), prog)) {
        Ok(()) => {
            debug!(program = name, pin = %pin.display(), "adopted pinned link");
            return Ok(true);
        }
        Err(e) => warn!(program = name, pin = %pin.display(), error = %e,
                        "pinned link cannot be updated; replacing it"),
    }
    std::fs::remove_file(pin).map_err(|e| DatapathError::io("removing", pin, e))?;
    Ok(false)
}

/// Pins a freshly created link so it outlives the agent.
pub fn pin_link(name: &'static str, link: FdLink, pin: &Path) -> Result<(), DatapathError> {
    link.pin(pin).map_err(|source| DatapathError::Pin {
        path: pin.into(),
        source: Box::new(source),
    })?;
    info!(program = name, pin = %pin.display(), "attached and pinned");
    Ok(())
}

fn program_err(name: &'static str) -> impl Fn(ProgramError) -> DatapathError {
    move |source| DatapathError::Program {
        name,
        source: Box::new(source),
    }
}

/// An owned copy of a loaded program's fd (aya keeps its own).
fn owned_prog_fd(
    name: &'static str,
    prog_fd: Result<&ProgramFd, ProgramError>,
    pin: &Path,
) -> Result<OwnedFd, DatapathError> {
    prog_fd
        .map_err(program_err(name))?
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| DatapathError::Link {
            path: pin.into(),
            source: e,
        })
}

/// [`adopt`] the link pinned at `pin` for `prog`, or else `attach` and pin the new link.
/// Returns true when adopted.
fn adopt_or_attach<L>(
    name: &'static str,
    prog: &OwnedFd,
    pin: &Path,
    attach: impl FnOnce() -> Result<L, ProgramError>,
) -> Result<bool, DatapathError>
where
    FdLink: TryFrom<L>,
    <FdLink as TryFrom<L>>::Error: std::error::Error + Send + Sync + 'static,
{
    if adopt(name, prog.as_fd(), pin)? {
        return Ok(true);
    }
    let link = attach().map_err(program_err(name))?;
    let fd_link = FdLink::try_from(link).map_err(|e| DatapathError::Link {
        path: pin.into(),
        source: std::io::Error::other(e),
    })?;
    pin_link(name, fd_link, pin)?;
    Ok(false)
}

/// [`adopt`] or attach a cgroup sock_addr program. Returns true when adopted.
pub fn attach_pinned(
    name: &'static str,
    prog: &mut CgroupSockAddr,
    cgroup: BorrowedFd<'_>,
    pin: &Path,
) -> Result<bool, DatapathError> {
    let fd = owned_prog_fd(name, prog.fd(), pin)?;
    adopt_or_attach(name, &fd, pin, || {
        let id = prog.attach(cgroup, CgroupAttachMode::Single)?;
        prog.take_link(id)
    })
}

/// [`adopt`] or attach a TC classifier to `ifname` through TCX at `order`. Returns true when
/// adopted.
pub fn attach_tcx_pinned(
    name: &'static str,
    prog: &mut SchedClassifier,
    ifname: &str,
    attach: TcAttachType,
    order: LinkOrder,
    pin: &Path,
) -> Result<bool, DatapathError> {
    let fd = owned_prog_fd(name, prog.fd(), pin)?;
    adopt_or_attach(name, &fd, pin, || {
        let id = prog.attach_with_options(ifname, attach, TcAttachOptions::TcxOrder(order))?;
        prog.take_link(id)
    })
}

/// Attaches a TC classifier to `dev`'s `attach` hook through `backend`, adopting (and
/// upgrading in place) what a previous agent attached there, at `order` under TCX or at the
/// legacy priority `pin` implies. The same hook under the other backend (a changed
/// `--tc-attach`, a kernel upgrade) is removed only once this one is in place. Returns true
/// when adopted.
#[expect(
    clippy::too_many_arguments,
    reason = "one hook's full description; every caller passes each part explicitly"
)]
pub fn attach_tc_hook(
    backend: super::TcBackend,
    name: &'static str,
    prog: &mut SchedClassifier,
    dev: &super::Device,
    attach: TcAttachType,
    order: LinkOrder,
    links_dir: &Path,
    pin: &super::ladder::PinName,
) -> Result<bool, DatapathError> {
    let path = links_dir.join(pin.file_name());
    let adopted = match backend {
        super::TcBackend::Tcx => attach_tcx_pinned(name, prog, &dev.name, attach, order, &path)?,
        super::TcBackend::Legacy => {
            let fd = owned_prog_fd(name, prog.fd(), &path)?;
            super::legacy::attach_tc(name, fd.as_fd(), dev.ifindex, &path)?
        }
    };
    super::legacy::remove(&links_dir.join(pin.counterpart().file_name()))?;
    Ok(adopted)
}

/// [`adopt`] or attach a TC classifier as the pod-side program of netkit primary `ifindex`
/// (`BPF_NETKIT_PEER`), and pin the link at `pin` under `links_dir`; then, as
/// [`attach_tc_hook`] does, remove the hook `pin` replaces (its counterpart). Returns true when
/// adopted.
pub fn attach_netkit_peer_pinned(
    name: &'static str,
    prog: &SchedClassifier,
    (dev, ifindex): (&str, u32),
    links_dir: &Path,
    pin: &super::ladder::PinName,
) -> Result<bool, DatapathError> {
    let path = links_dir.join(pin.file_name());
    let fd = owned_prog_fd(name, prog.fd(), &path)?;
    let adopted = adopt(name, fd.as_fd(), &path)?;
    if !adopted {
        let link = link_create(fd.as_fd(), ifindex, BPF_NETKIT_PEER, 0).map_err(|e| {
            DatapathError::Link {
                path: path.clone(),
                source: std::io::Error::new(
                    e.kind(),
                    format!("attaching {name} to netkit device {dev}: {e}"),
                ),
            }
        })?;
        obj_pin(link.as_fd(), &path).map_err(|e| DatapathError::io("pinning link at", &path, e))?;
        info!(program = name, device = dev, pin = %path.display(), "attached to netkit and pinned");
    }
    super::legacy::remove(&links_dir.join(pin.counterpart().file_name()))?;
    Ok(adopted)
}
