//! bpffs and cgroup2 mounts: find them, mount them when missing.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use tracing::info;

use super::DatapathError;

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

fn fs_magic(path: &Path) -> Option<i64> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs fills the zeroed struct; c is a valid NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &raw mut st) };
    #[allow(
        clippy::unnecessary_cast,
        clippy::cast_possible_wrap,
        reason = "f_type is i64 on glibc and u64 on musl; the magics fit either way"
    )]
    (rc == 0).then_some(st.f_type as i64)
}

fn mount(fstype: &str, target: &Path) -> std::io::Result<()> {
    let src = CString::new(fstype).expect("static string");
    let tgt = CString::new(target.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: valid C strings; no mount data.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Makes sure `root` exists on a bpffs: if its nearest existing ancestor is not bpffs, a bpffs is
/// mounted at `/sys/fs/bpf` (when that is an ancestor) or at `root` itself.
pub fn ensure_bpffs(root: &Path) -> Result<(), DatapathError> {
    let mut probe = root.to_path_buf();
    while !probe.exists() {
        if !probe.pop() {
            break;
        }
    }
    if fs_magic(&probe) != Some(BPF_FS_MAGIC) {
        let sys = Path::new("/sys/fs/bpf");
        let target = if root.starts_with(sys) && fs_magic(sys) != Some(BPF_FS_MAGIC) {
            sys.to_path_buf()
        } else {
            root.to_path_buf()
        };
        std::fs::create_dir_all(&target).map_err(|e| DatapathError::io("creating", &target, e))?;
        mount("bpf", &target).map_err(|source| DatapathError::Bpffs {
            path: target.clone(),
            source,
        })?;
        info!(path = %target.display(), "mounted bpffs");
    }
    std::fs::create_dir_all(root).map_err(|e| DatapathError::io("creating", root, e))
}

/// The root of the cgroup v2 hierarchy: from /proc/mounts, or a fresh mount under /run/ferrite.
pub fn cgroup2_root() -> Result<PathBuf, DatapathError> {
    let mounts = std::fs::read_to_string("/proc/mounts")
        .map_err(|e| DatapathError::io("reading", "/proc/mounts", e))?;
    if let Some(p) = mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, target, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(target))
    }) {
        return Ok(p);
    }
    let target = PathBuf::from("/run/ferrite/cgroup2");
    std::fs::create_dir_all(&target).map_err(|e| DatapathError::io("creating", &target, e))?;
    if fs_magic(&target) != Some(CGROUP2_SUPER_MAGIC) {
        mount("cgroup2", &target).map_err(|source| DatapathError::NoCgroup2 {
            path: target.clone(),
            source,
        })?;
        info!(path = %target.display(), "mounted cgroup2");
    }
    Ok(target)
}
