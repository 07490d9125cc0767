//! Network namespaces for the plugin: open `CNI_NETNS`, run a closure on a thread inside it,
//! and write `net.*` sysctls (which resolve against the writing thread's namespace).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::netlink::NetError;

/// The container's namespace, opened.
#[derive(Debug)]
pub struct NetnsFile {
    pub path: PathBuf,
    pub file: File,
}

impl NetnsFile {
    /// Opens `path`; refuses the plugin's own namespace (the pod end would land on the host).
    pub fn open(path: &Path) -> Result<Self, NetError> {
        let file = File::open(path).map_err(|source| NetError::Netns {
            path: path.to_owned(),
            source,
        })?;
        let theirs = file.metadata().map_err(|source| NetError::Netns {
            path: path.to_owned(),
            source,
        })?;
        let ours =
            std::fs::metadata("/proc/thread-self/ns/net").map_err(|source| NetError::Io {
                what: "stat /proc/thread-self/ns/net".into(),
                source,
            })?;
        if theirs.dev() == ours.dev() && theirs.ino() == ours.ino() {
            return Err(NetError::SameNetns(path.to_owned()));
        }
        Ok(Self {
            path: path.to_owned(),
            file,
        })
    }

    /// Runs `f` on a new thread that has joined this namespace; sockets it opens (netlink
    /// included) stay bound to the namespace after the thread ends.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetError> {
        let fd = self.file.as_raw_fd();
        std::thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: setns on a descriptor we keep open for the whole scope; it changes
                // only this thread's namespace.
                if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                    return Err(NetError::Io {
                        what: format!("setns into {}", self.path.display()),
                        source: io::Error::last_os_error(),
                    });
                }
                Ok(f())
            })
            .join()
            .map_err(|_| NetError::Thread(self.path.clone()))?
        })
    }
}

/// Writes `value` to `/proc/sys/<key with dots as slashes>` in the calling thread's netns,
/// unless it already holds that value (no needless writes to shared host settings).
pub fn sysctl(key: &str, value: &str) -> Result<(), NetError> {
    let path = Path::new("/proc/sys").join(key.replace('.', "/"));
    let io = |source| NetError::Io {
        what: format!("sysctl {key}={value}"),
        source,
    };
    if std::fs::read_to_string(&path).is_ok_and(|cur| cur.trim() == value) {
        return Ok(());
    }
    std::fs::write(&path, value).map_err(io)
}

/// Whether interface `name` exists in the calling thread's netns (`if_nametoindex`).
#[must_use]
pub fn link_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}
