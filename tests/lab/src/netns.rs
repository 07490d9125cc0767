//! Network namespaces: [`Ns`] says where something runs (root or a named netns), [`Netns`] is
//! a uniquely named netns that is deleted, with every process inside it killed, on drop.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use crate::child::Child;
use crate::cmd::{self, CommandError};
use crate::name::{self, NameError};
use crate::wait::wait_until;

/// Where named network namespaces live (`ip netns add` bind-mounts them here).
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Failure to create, enter or delete a network namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("a thread running inside netns {0} panicked")]
    Panicked(String),
    #[error("processes still inside netns {name} after SIGKILL: {pids:?}")]
    Busy { name: String, pids: Vec<u32> },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> NetnsError {
    let what = what.into();
    move |source| NetnsError::Io { what, source }
}

/// A network namespace to run commands in: `Root` (the one this process was started in, i.e.
/// its main thread's) or a named one under `/run/netns`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Ns {
    Root,
    Named(String),
}

impl Ns {
    /// The netns name, `None` for the root namespace.
    #[must_use]
    pub fn name(&self) -> Option<&str> {
        match self {
            Self::Root => None,
            Self::Named(name) => Some(name),
        }
    }

    /// `/run/netns/NAME`, or `/proc/self/ns/net` (the main thread's) for `Root`.
    #[must_use]
    pub fn path(&self) -> PathBuf {
        match self {
            Self::Root => PathBuf::from("/proc/self/ns/net"),
            Self::Named(name) => Path::new(NETNS_RUN_DIR).join(name),
        }
    }

    fn open(&self) -> Result<File, NetnsError> {
        let path = self.path();
        File::open(&path).map_err(io_err(format!("open {}", path.display())))
    }

    /// `ip` (root) or `ip -n NAME`, ready for more arguments.
    #[must_use]
    pub fn ip(&self) -> Command {
        let mut cmd = Command::new("ip");
        if let Self::Named(name) = self {
            cmd.args(["-n", name]);
        }
        cmd
    }

    /// Runs `ip [-n NAME] ARGS...`, failing unless it exits 0.
    pub fn ip_run<I, S>(&self, args: I) -> Result<Output, CommandError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        cmd::run(self.ip().args(args))
    }

    /// Makes `cmd` enter this namespace (`setns` between fork and exec).
    pub fn enter_on_spawn<'c>(&self, cmd: &'c mut Command) -> Result<&'c mut Command, NetnsError> {
        let file = Arc::new(self.open()?);
        // SAFETY: the closure only calls setns(2), which is async-signal-safe; the Arc keeps the
        // descriptor open for as long as the Command exists.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            });
        }
        Ok(cmd)
    }

    /// A `Command` for `program` that runs inside this namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Result<Command, NetnsError> {
        let mut cmd = Command::new(program);
        self.enter_on_spawn(&mut cmd)?;
        Ok(cmd)
    }

    /// Runs `cmd` inside this namespace to completion; fails unless it exits 0.
    pub fn exec(&self, cmd: &mut Command) -> Result<Output, NetnsError> {
        Ok(cmd::run(self.enter_on_spawn(cmd)?)?)
    }

    /// Starts `cmd` inside this namespace; the returned guard kills it on drop.
    pub fn spawn(&self, cmd: &mut Command) -> Result<Child, NetnsError> {
        Ok(Child::spawn(self.enter_on_spawn(cmd)?)?)
    }

    /// Runs `f` on a thread that has entered this namespace (sockets it opens live there).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        let file = self.open()?;
        let label = self.name().unwrap_or("root").to_owned();
        std::thread::scope(|scope| {
            let handle = scope.spawn(move || {
                // SAFETY: setns on a valid descriptor affects only this thread.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(NetnsError::Io {
                        what: format!("setns into {label}"),
                        source: io::Error::last_os_error(),
                    });
                }
                Ok(f())
            });
            handle
                .join()
                .map_err(|_| NetnsError::Panicked(self.name().unwrap_or("root").to_owned()))?
        })
    }

    /// Writes a `net.*` sysctl (`key` like `net.ipv4.ip_forward`) in this namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), NetnsError> {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        self.run(|| std::fs::write(&path, value))?
            .map_err(io_err(format!("sysctl {key}={value}")))
    }

    /// Reads a `net.*` sysctl in this namespace.
    pub fn read_sysctl(&self, key: &str) -> Result<String, NetnsError> {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        let value = self
            .run(|| std::fs::read_to_string(&path))?
            .map_err(io_err(format!("read sysctl {key}")))?;
        Ok(value.trim().to_owned())
    }

    /// Pids of the processes whose network namespace is this one (what `ip netns pids` prints).
    pub fn pids(&self) -> Result<Vec<u32>, NetnsError> {
        let path = self.path();
        let target =
            std::fs::metadata(&path).map_err(io_err(format!("stat {}", path.display())))?;
        let mut pids = Vec::new();
        let proc = std::fs::read_dir("/proc").map_err(io_err("read /proc"))?;
        for entry in proc.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            // Processes may exit while we look; those simply are not inside any more.
            if let Ok(meta) = std::fs::metadata(entry.path().join("ns/net"))
                && meta.dev() == target.dev()
                && meta.ino() == target.ino()
            {
                pids.push(pid);
            }
        }
        Ok(pids)
    }
}

/// A uniquely named network namespace (`PREFIX-PID-N`), deleted on drop after killing every
/// process inside it. Loopback is up from the start.
#[derive(Debug)]
pub struct Netns {
    ns: Ns,
    closed: bool,
}

impl Netns {
    /// Creates `PREFIX-PID-N` (prefix: 1–4 of `a-z0-9`) and brings its `lo` up.
    pub fn new(prefix: &str) -> Result<Self, NetnsError> {
        let name = name::unique(prefix)?;
        cmd::run(Command::new("ip").args(["netns", "add", &name]))?;
        let netns = Self {
            ns: Ns::Named(name),
            closed: false,
        };
        netns.ns.ip_run(["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    #[must_use]
    pub fn name(&self) -> &str {
        self.ns.name().expect("a Netns is always named")
    }

    /// This namespace as an [`Ns`], for the helpers that work on root or named namespaces.
    #[must_use]
    pub fn ns(&self) -> &Ns {
        &self.ns
    }

    /// See [`Ns::command`].
    pub fn command(&self, program: impl AsRef<OsStr>) -> Result<Command, NetnsError> {
        self.ns.command(program)
    }

    /// See [`Ns::exec`].
    pub fn exec(&self, cmd: &mut Command) -> Result<Output, NetnsError> {
        self.ns.exec(cmd)
    }

    /// See [`Ns::spawn`].
    pub fn spawn(&self, cmd: &mut Command) -> Result<Child, NetnsError> {
        self.ns.spawn(cmd)
    }

    /// See [`Ns::run`].
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        self.ns.run(f)
    }

    /// See [`Ns::sysctl`].
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), NetnsError> {
        self.ns.sysctl(key, value)
    }

    /// See [`Ns::ip_run`].
    pub fn ip_run<I, S>(&self, args: I) -> Result<Output, CommandError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.ns.ip_run(args)
    }

    /// Kills everything inside and deletes the namespace, reporting the first failure.
    pub fn close(mut self) -> Result<(), NetnsError> {
        self.closed = true;
        delete(self.name())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.closed
            && let Err(e) = delete(self.name())
        {
            crate::report_drop_failure(&format!("netns {}", self.name()), &e);
        }
    }
}

/// SIGKILLs every process inside netns `name`, waits for them to leave, and deletes it.
pub fn delete(name: &str) -> Result<(), NetnsError> {
    let ns = Ns::Named(name.to_owned());
    let mut pids = ns.pids()?;
    if !pids.is_empty() {
        for &pid in &pids {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(i32::try_from(pid).unwrap_or(i32::MAX), libc::SIGKILL) };
        }
        // A killed process leaves the namespace when it exits, before its parent reaps it.
        let gone = wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
            pids = ns.pids().unwrap_or_default();
            pids.is_empty()
        });
        if gone.is_err() {
            return Err(NetnsError::Busy {
                name: name.to_owned(),
                pids,
            });
        }
    }
    cmd::run(Command::new("ip").args(["netns", "delete", name]))?;
    Ok(())
}

/// Names of the existing named network namespaces.
pub fn list() -> Result<Vec<String>, NetnsError> {
    let dir = match std::fs::read_dir(NETNS_RUN_DIR) {
        Ok(dir) => dir,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(format!("read {NETNS_RUN_DIR}"))(e)),
    };
    Ok(dir
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_command_targets_the_namespace() {
        assert_eq!(cmd::describe(&Ns::Root.ip()), "ip");
        let named = Ns::Named("flt-1-2".into());
        assert_eq!(cmd::describe(&named.ip()), "ip -n flt-1-2");
        assert_eq!(named.path(), PathBuf::from("/run/netns/flt-1-2"));
        assert_eq!(Ns::Root.name(), None);
    }
}
