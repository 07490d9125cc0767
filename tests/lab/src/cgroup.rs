//! [`Cgroup`]: a uniquely named cgroup v2 directory for attaching socket programs and placing
//! test clients, removed (its processes killed) on drop.

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::child::Child;
use crate::cmd::{self, CommandError};
use crate::name::{self, NameError};
use crate::netns::{NetnsError, Ns};
use crate::wait::wait_until;

/// Where the hybrid-mode hosts mount cgroup v2.
pub const UNIFIED_MOUNT: &str = "/sys/fs/cgroup/unified";

/// Failure to create, use or remove a cgroup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(
        "no cgroup2 mount in /proc/mounts: mount -t cgroup2 none {UNIFIED_MOUNT} (kernel needs CONFIG_CGROUPS)"
    )]
    NoCgroup2,
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("processes still in cgroup {path} after SIGKILL: {pids:?}")]
    Busy { path: PathBuf, pids: Vec<u32> },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CgroupError {
    let path = path.to_owned();
    move |source| CgroupError::Io { what, path, source }
}

/// The first cgroup2 mount point listed in a `/proc/mounts`-formatted text.
#[must_use]
pub fn cgroup2_mount_in(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_source, target, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(unescape_mount(target)))
    })
}

/// Undoes the octal escapes (`\040` for space) that /proc/mounts uses.
fn unescape_mount(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Some(v) = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|digits| u8::from_str_radix(digits, 8).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup2 mount: [`UNIFIED_MOUNT`] if it is one, else the first from /proc/mounts.
pub fn cgroup2_root() -> Result<PathBuf, CgroupError> {
    let mounts = std::fs::read_to_string("/proc/mounts")
        .map_err(io_err("read", Path::new("/proc/mounts")))?;
    let unified = Path::new(UNIFIED_MOUNT);
    let listed = mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(UNIFIED_MOUNT) && l.contains(" cgroup2 "));
    if listed {
        return Ok(unified.to_owned());
    }
    cgroup2_mount_in(&mounts).ok_or(CgroupError::NoCgroup2)
}

/// Pids listed in a cgroup's `cgroup.procs`.
pub fn procs(path: &Path) -> Result<Vec<u32>, CgroupError> {
    let file = path.join("cgroup.procs");
    let text = std::fs::read_to_string(&file).map_err(io_err("read", &file))?;
    Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// A cgroup v2 directory `ROOT/PREFIX-PID-N`. On drop, this process (if inside) moves back to
/// the parent, every other process inside is killed (`SIGKILL`), and the tree is removed.
#[derive(Debug)]
pub struct Cgroup {
    path: PathBuf,
    closed: bool,
}

impl Cgroup {
    /// Creates a new cgroup under the cgroup2 mount.
    pub fn new(prefix: &str) -> Result<Self, CgroupError> {
        Self::new_under(&cgroup2_root()?, prefix)
    }

    /// Creates a new cgroup under `parent` (a cgroup2 directory).
    pub fn new_under(parent: &Path, prefix: &str) -> Result<Self, CgroupError> {
        let path = parent.join(name::unique(prefix)?);
        std::fs::create_dir(&path).map_err(io_err("mkdir", &path))?;
        Ok(Self {
            path,
            closed: false,
        })
    }

    /// The cgroup directory (what `ferrite agent --cgroup` takes).
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves process `pid` into this cgroup.
    pub fn add_pid(&self, pid: u32) -> Result<(), CgroupError> {
        let file = self.path.join("cgroup.procs");
        std::fs::write(&file, pid.to_string()).map_err(io_err("write", &file))
    }

    /// Pids currently in this cgroup (not its children).
    pub fn pids(&self) -> Result<Vec<u32>, CgroupError> {
        procs(&self.path)
    }

    /// Makes `cmd` join this cgroup between fork and exec, so it never runs outside it.
    pub fn join_on_spawn<'c>(&self, cmd: &'c mut Command) -> Result<&'c mut Command, CgroupError> {
        let path = self.path.join("cgroup.procs");
        let file = Arc::new(
            OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io_err("open", &path))?,
        );
        // SAFETY: the closure only calls write(2), which is async-signal-safe; "0" means the
        // writing process itself. The Arc keeps the descriptor open while the Command lives.
        unsafe {
            cmd.pre_exec(move || {
                let fd = file.as_raw_fd();
                if libc::write(fd, b"0".as_ptr().cast(), 1) == 1 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            });
        }
        Ok(cmd)
    }

    /// A `Command` for `program` that runs in this cgroup and, if given, inside `netns`.
    pub fn command(
        &self,
        program: impl AsRef<OsStr>,
        netns: Option<&Ns>,
    ) -> Result<Command, CgroupError> {
        let mut cmd = Command::new(program);
        self.join_on_spawn(&mut cmd)?;
        if let Some(ns) = netns {
            ns.enter_on_spawn(&mut cmd)?;
        }
        Ok(cmd)
    }

    /// Spawns `cmd` in this cgroup (and in `netns` if given); the guard kills it on drop.
    pub fn spawn(&self, cmd: &mut Command, netns: Option<&Ns>) -> Result<Child, CgroupError> {
        self.join_on_spawn(cmd)?;
        if let Some(ns) = netns {
            ns.enter_on_spawn(cmd)?;
        }
        Ok(Child::spawn(cmd)?)
    }

    /// Empties and removes the cgroup, reporting the first failure.
    pub fn close(mut self) -> Result<(), CgroupError> {
        self.closed = true;
        remove(&self.path)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if !self.closed
            && let Err(e) = remove(&self.path)
        {
            crate::report_drop_failure(&format!("cgroup {}", self.path.display()), &e);
        }
    }
}

fn evacuate(path: &Path) -> Result<(), CgroupError> {
    let me = std::process::id();
    let parent = path.parent().unwrap_or(path);
    for pid in procs(path)? {
        if pid == me {
            let file = parent.join("cgroup.procs");
            std::fs::write(&file, pid.to_string()).map_err(io_err("write", &file))?;
        } else {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(i32::try_from(pid).unwrap_or(i32::MAX), libc::SIGKILL) };
        }
    }
    let mut left = Vec::new();
    let empty = wait_until(Duration::from_secs(5), Duration::from_millis(5), || {
        left = procs(path).unwrap_or_default();
        left.is_empty()
    });
    if empty.is_err() {
        return Err(CgroupError::Busy {
            path: path.to_owned(),
            pids: left,
        });
    }
    Ok(())
}

/// Removes cgroup `path` and its descendants, evacuating each first (see [`Cgroup`]).
pub fn remove(path: &Path) -> Result<(), CgroupError> {
    let entries = std::fs::read_dir(path).map_err(io_err("read", path))?;
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove(&entry.path())?;
        }
    }
    evacuate(path)?;
    // An exiting process can hold the cgroup busy for a moment after cgroup.procs is empty.
    let mut last = None;
    let removed =
        wait_until(
            Duration::from_secs(2),
            Duration::from_millis(5),
            || match std::fs::remove_dir(path) {
                Ok(()) => true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => true,
                Err(e) => {
                    last = Some(e);
                    false
                }
            },
        );
    match (removed, last) {
        (Err(_), Some(e)) => Err(io_err("rmdir", path)(e)),
        _ => Ok(()),
    }
}

/// Checks that `bpftool` can list programs attached to `cgroup` (for diagnostics in tests).
pub fn attached_programs(cgroup: &Path) -> Result<String, CommandError> {
    let out = cmd::run(
        Command::new("bpftool")
            .arg("cgroup")
            .arg("show")
            .arg(cgroup),
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_in_mounts() {
        let mounts = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n\
                      cgroup2 /sys/fs/cgroup/uni\\040fied cgroup2 rw 0 0\n";
        assert_eq!(
            cgroup2_mount_in(mounts),
            Some(PathBuf::from("/sys/fs/cgroup/uni fied"))
        );
        assert_eq!(cgroup2_mount_in("proc /proc proc rw 0 0\n"), None);
    }
}
