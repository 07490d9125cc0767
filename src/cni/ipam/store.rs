//! The on-disk IPAM store of one network: `<stateDir>/<network>/state.json`, guarded by an
//! exclusive `flock` on `<stateDir>/<network>/lock`.
//!
//! * The lock is held only while reading, changing and writing the state (never while
//!   talking netlink on the ADD path), so concurrent plugins serialise on a few milliseconds.
//! * The kernel drops a `flock` when its holder dies, so `kill -9` cannot wedge the store.
//! * Writes go to `state.json.tmp` and are renamed over `state.json`: a killed process leaves
//!   the old or the new state, never a torn one. Writes that reserve addresses are also fsynced
//!   (file, then directory) before the interfaces exist, so the reservation — and every change
//!   before it, the state being one file — is on disk. Commits and releases are not fsynced:
//!   they matter only until the next reboot, after which every allocation is void anyway
//!   (boot id check), and a state file torn by a power cut is older than the boot and ignored.
//! * An ADD first records its reservation as pending (with its pid and start time), then
//!   configures the interfaces, then commits. A reservation whose process is gone is
//!   reclaimed (with its half-built veth) by the next plugin run, GC or the agent.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use tracing::warn;

use super::IpamError;
use super::state::{IpamState, Owner};

const STATE: &str = "state.json";
const LOCK: &str = "lock";

/// How long a plugin waits for the lock before answering "try again later".
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(30);

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> IpamError {
    let path = path.to_owned();
    move |source| IpamError::Io { what, path, source }
}

/// The store of one network.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    #[must_use]
    pub fn new(state_dir: &Path, network: &str) -> Self {
        Self {
            dir: state_dir.join(network),
        }
    }

    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The stores under `state_dir` (one per network that ever allocated).
    pub fn all(state_dir: &Path) -> Result<Vec<Self>, IpamError> {
        let entries = match std::fs::read_dir(state_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("read", state_dir)(e)),
        };
        Ok(entries
            .flatten()
            .filter(|e| e.path().join(STATE).is_file())
            .map(|e| Self { dir: e.path() })
            .collect())
    }

    /// Takes the exclusive lock, waiting up to `timeout`.
    pub fn lock(&self, timeout: Duration) -> Result<Locked, IpamError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io_err("create", &self.dir))?;
        let path = self.dir.join(LOCK);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("open", &path))?;
        match file.try_lock() {
            Ok(()) => {
                return Ok(Locked {
                    _file: file,
                    dir: self.dir.clone(),
                });
            }
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err("flock", &path)(e)),
        }
        // flock(2) has no timeout: wait on a helper thread. If we give up, the thread still
        // gets the lock eventually, finds nobody listening and drops it.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let res = file.lock().map(|()| file);
            let _ = tx.send(res);
        });
        match rx.recv_timeout(timeout) {
            Ok(Ok(file)) => Ok(Locked {
                _file: file,
                dir: self.dir.clone(),
            }),
            Ok(Err(e)) => Err(io_err("flock", &path)(e)),
            Err(_) => Err(IpamError::Busy {
                path,
                waited: timeout,
            }),
        }
    }
}

/// The store while this process holds its lock (released on drop).
#[derive(Debug)]
pub struct Locked {
    _file: File,
    dir: PathBuf,
}

impl Locked {
    /// The current state; empty if none was written yet. After a reboot (another boot id)
    /// every allocation is void — no veth survives a reboot — and is dropped.
    pub fn load(&self) -> Result<IpamState, IpamError> {
        let path = self.dir.join(STATE);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(IpamState::default()),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let mut state: IpamState = match serde_json::from_slice(&text) {
            Ok(s) => s,
            // A power cut can leave a half-written file behind; it predates this boot, when
            // every allocation it could hold became void.
            Err(_) if written_before_boot(&path) => {
                warn!(store = %self.dir.display(), "state file from before the last boot is unreadable: starting empty");
                return Ok(IpamState::default());
            }
            Err(source) => {
                return Err(IpamError::Corrupt {
                    path: path.clone(),
                    source,
                });
            }
        };
        let boot = boot_id();
        if !boot.is_empty() && !state.boot_id.is_empty() && state.boot_id != boot {
            warn!(
                store = %self.dir.display(),
                dropped = state.allocations.len(),
                "the node rebooted since the last write: releasing every allocation"
            );
            state.allocations.clear();
        }
        Ok(state)
    }

    /// Writes `state` durably: temp file, fsync, rename, fsync of the directory. For writes
    /// that reserve addresses.
    pub fn save(&self, state: &IpamState) -> Result<(), IpamError> {
        self.write(state, true)
    }

    /// Writes `state` atomically (temp file, rename) without waiting for the disk: for commits
    /// and releases (see the module docs).
    pub fn save_atomic(&self, state: &IpamState) -> Result<(), IpamError> {
        self.write(state, false)
    }

    fn write(&self, state: &IpamState, durable: bool) -> Result<(), IpamError> {
        let mut state = state.clone();
        state.boot_id = boot_id();
        let json = serde_json::to_vec_pretty(&state).map_err(|source| IpamError::Corrupt {
            path: self.dir.join(STATE),
            source,
        })?;
        let tmp = self.dir.join(format!("{STATE}.tmp"));
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        f.write_all(&json).map_err(io_err("write", &tmp))?;
        if durable {
            f.sync_all().map_err(io_err("fsync", &tmp))?;
        }
        drop(f);
        let path = self.dir.join(STATE);
        std::fs::rename(&tmp, &path).map_err(io_err("rename to", &path))?;
        if !durable {
            return Ok(());
        }
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("fsync", &self.dir))
    }
}

/// Whether `path` was last modified before the machine booted.
fn written_before_boot(path: &Path) -> bool {
    let uptime = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|u| u.split_whitespace().next()?.parse::<f64>().ok());
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    match (uptime, modified) {
        (Some(up), Some(m)) => std::time::SystemTime::now()
            .checked_sub(Duration::from_secs_f64(up))
            .is_some_and(|boot| m < boot),
        _ => false,
    }
}

/// This boot's id (empty when the kernel does not say).
#[must_use]
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The start time of process `pid` (clock ticks since boot), `None` if it is gone.
#[must_use]
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    start_time_of(&stat)
}

/// Field 22 of a `/proc/PID/stat` line (the command may contain spaces and parentheses).
fn start_time_of(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

impl Owner {
    /// This process.
    #[must_use]
    pub fn current() -> Self {
        let pid = std::process::id();
        Self {
            pid,
            start_time: process_start_time(pid).unwrap_or(0),
        }
    }

    /// Whether the process that made the reservation still runs (a reused pid does not count).
    #[must_use]
    pub fn alive(&self) -> bool {
        process_start_time(self.pid) == Some(self.start_time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_start_time_past_odd_command_names() {
        let stat = "1234 (we ird) cmd)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 50";
        assert_eq!(start_time_of(stat), Some(987_654));
        assert_eq!(start_time_of("garbage"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_made_up_one_is_not() {
        let me = Owner::current();
        assert!(me.alive());
        assert!(
            !Owner {
                pid: me.pid,
                start_time: me.start_time + 1
            }
            .alive()
        );
    }

    #[test]
    fn save_then_load_roundtrips_and_locks_exclude_each_other() {
        let dir = std::env::temp_dir().join(format!("ferrite-ipam-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::new(&dir, "net1");
        let held = store.lock(Duration::from_secs(1)).unwrap();
        assert_eq!(held.load().unwrap(), IpamState::default());
        let mut st = IpamState::default();
        st.last
            .insert("10.0.0.0/24".into(), "10.0.0.9".parse().unwrap());
        held.save(&st).unwrap();
        assert!(matches!(
            store.lock(Duration::from_millis(50)),
            Err(IpamError::Busy { .. })
        ));
        drop(held);
        let again = store.lock(Duration::from_secs(1)).unwrap();
        let loaded = again.load().unwrap();
        assert_eq!(loaded.last, st.last);
        assert_eq!(loaded.boot_id, boot_id());
        assert_eq!(Store::all(&dir).unwrap().len(), 1);
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
