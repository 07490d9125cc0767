//! The flow reader: a thread that drains the pinned ring buffer into the history, and the
//! kernel-side counters (emitted, over the rate, ring full) the API reports with the flows.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use aya::maps::{Array, Map, MapData, PerCpuArray, RingBuf};
use ferrite_abi::{
    FLOW_KIND_MASQUERADE, FLOW_KIND_NORTH_SOUTH, FLOW_KIND_POLICY, FLOW_KIND_SOCK_LB,
    FLOW_STAT_EMITTED, FLOW_STAT_RATE_LIMITED, FLOW_STAT_RING_FULL, FLOW_VERDICT_REASONS,
    FlowConfig, FlowEvent, POLICY_EGRESS, POLICY_INGRESS, flow_verdict_slot, map_names,
    policy_stat_slot,
};
use tracing::{debug, info, warn};

use super::decode;
use super::history::FlowHistory;

/// Default `--flow-rate`: events per second and CPU before the programs stop sending.
pub const DEFAULT_RATE_PER_CPU: u32 = 2000;

#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("opening the pinned flow map {path}: {source}")]
    Open {
        path: PathBuf,
        source: aya::maps::MapError,
    },
    #[error("flow map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("starting the flow reader thread: {0}")]
    Thread(std::io::Error),
}

fn open(maps_dir: &Path, name: &'static str) -> Result<Map, FlowError> {
    let path = maps_dir.join(name);
    let data = MapData::from_pin(&path).map_err(|source| FlowError::Open {
        path: path.clone(),
        source,
    })?;
    Map::from_map_data(data).map_err(|source| FlowError::Map { name, source })
}

/// Packets NetworkPolicy allowed per policy slot (1-based) and denied (slot 0), as
/// `(slot, ingress, egress)`, summed over CPUs; slots with nothing counted are left out.
pub fn policy_verdicts(maps_dir: &Path, slots: usize) -> Result<Vec<(usize, u64, u64)>, FlowError> {
    let name = map_names::POLICY_STATS;
    let counts: PerCpuArray<MapData, u64> = PerCpuArray::try_from(open(maps_dir, name)?)
        .map_err(|source| FlowError::Map { name, source })?;
    let sum = |slot: u32| -> Result<u64, FlowError> {
        Ok(counts
            .get(&slot, 0)
            .map_err(|source| FlowError::Map { name, source })?
            .iter()
            .sum())
    };
    let mut out = Vec::new();
    for slot in 0..slots {
        let s = u32::try_from(slot).unwrap_or(u32::MAX);
        let ingress = sum(policy_stat_slot(s, POLICY_INGRESS))?;
        let egress = sum(policy_stat_slot(s, POLICY_EGRESS))?;
        if ingress + egress > 0 {
            out.push((slot, ingress, egress));
        }
    }
    Ok(out)
}

/// Writes the per-CPU rate (0: the programs send nothing).
pub fn set_rate(maps_dir: &Path, rate_per_cpu: u32) -> Result<(), FlowError> {
    let name = map_names::FLOW_CONFIG;
    let mut cfg: Array<MapData, FlowConfig> =
        Array::try_from(open(maps_dir, name)?).map_err(|source| FlowError::Map { name, source })?;
    cfg.set(
        0,
        FlowConfig {
            rate_per_cpu,
            _pad: 0,
        },
        0,
    )
    .map_err(|source| FlowError::Map { name, source })
}

/// What the programs counted, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounts {
    pub emitted: u64,
    pub rate_limited: u64,
    pub ring_full: u64,
}

/// `fe_flowstat_v1`, opened once and read on every `/v1/flows` answer.
pub struct StatsMap {
    map: PerCpuArray<MapData, u64>,
}

impl std::fmt::Debug for StatsMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsMap").finish_non_exhaustive()
    }
}

impl StatsMap {
    pub fn open(maps_dir: &Path) -> Result<Self, FlowError> {
        let name = map_names::FLOW_STATS;
        let map = PerCpuArray::try_from(open(maps_dir, name)?)
            .map_err(|source| FlowError::Map { name, source })?;
        Ok(Self { map })
    }

    /// What the programs counted, summed over CPUs.
    pub fn counts(&self) -> Result<KernelCounts, FlowError> {
        let name = map_names::FLOW_STATS;
        let sum = |i: u32| -> Result<u64, FlowError> {
            Ok(self
                .map
                .get(&i, 0)
                .map_err(|source| FlowError::Map { name, source })?
                .iter()
                .sum())
        };
        Ok(KernelCounts {
            emitted: sum(FLOW_STAT_EMITTED)?,
            rate_limited: sum(FLOW_STAT_RATE_LIMITED)?,
            ring_full: sum(FLOW_STAT_RING_FULL)?,
        })
    }
}

/// Flows the programs decided, by kind and drop reason (`None`: forwarded), counted whether or
/// not an event was sent; only non-zero counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerdictCount {
    pub kind: &'static str,
    pub drop_reason: Option<String>,
    pub flows: u64,
}

/// Reads `fe_flowverd_v1`, summed over CPUs.
pub fn verdict_counts(maps_dir: &Path) -> Result<Vec<VerdictCount>, FlowError> {
    let name = map_names::FLOW_VERDICTS;
    let counts: PerCpuArray<MapData, u64> = PerCpuArray::try_from(open(maps_dir, name)?)
        .map_err(|source| FlowError::Map { name, source })?;
    let mut out = Vec::new();
    for kind in [
        FLOW_KIND_SOCK_LB,
        FLOW_KIND_NORTH_SOUTH,
        FLOW_KIND_MASQUERADE,
        FLOW_KIND_POLICY,
    ] {
        for reason in 0..u8::try_from(FLOW_VERDICT_REASONS).unwrap_or(u8::MAX) {
            let flows: u64 = counts
                .get(&flow_verdict_slot(kind, reason), 0)
                .map_err(|source| FlowError::Map { name, source })?
                .iter()
                .sum();
            if flows > 0 {
                out.push(VerdictCount {
                    kind: super::kind_name(kind),
                    drop_reason: super::drop_reason(reason),
                    flows,
                });
            }
        }
    }
    Ok(out)
}

fn ifname(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer holds IF_NAMESIZE bytes as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into `buf`.
    Some(
        unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// Unix time minus CLOCK_MONOTONIC, in ns (re-read on every drain: the wall clock may step).
fn mono_to_unix_ns() -> i128 {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(0));
    unix - i128::from(crate::l2::heartbeat::monotonic_ns())
}

/// The running reader; dropping it stops the thread.
#[derive(Debug)]
pub struct FlowReader {
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FlowReader {
    /// Sets the rate and starts draining `fe_flows_v1` into `history`.
    pub fn start(
        maps_dir: &Path,
        node: &str,
        history: Arc<FlowHistory>,
        rate_per_cpu: u32,
    ) -> Result<Self, FlowError> {
        set_rate(maps_dir, rate_per_cpu)?;
        let name = map_names::FLOWS;
        let mut ring: RingBuf<MapData> = RingBuf::try_from(open(maps_dir, name)?)
            .map_err(|source| FlowError::Map { name, source })?;
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let (stop2, received2, node) = (stop.clone(), received.clone(), node.to_owned());
        let thread = std::thread::Builder::new()
            .name("flows".into())
            .spawn(move || {
                let fd = ring.as_raw_fd();
                while !stop2.load(Ordering::Relaxed) {
                    let mut pfd = libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd; a timeout so the stop flag is seen.
                    let rc = unsafe { libc::poll(&raw mut pfd, 1, 200) };
                    if rc < 0 {
                        let e = std::io::Error::last_os_error();
                        if e.kind() != std::io::ErrorKind::Interrupted {
                            warn!(error = %e, "polling the flow ring buffer");
                            std::thread::sleep(Duration::from_millis(200));
                        }
                        continue;
                    }
                    let offset = mono_to_unix_ns();
                    while let Some(item) = ring.next() {
                        if item.len() < size_of::<FlowEvent>() {
                            debug!(len = item.len(), "short flow record skipped");
                            continue;
                        }
                        // SAFETY: at least size_of::<FlowEvent>() bytes; FlowEvent is plain
                        // integers, any bit pattern is valid; the read tolerates misalignment.
                        let ev: FlowEvent =
                            unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                        received2.fetch_add(1, Ordering::Relaxed);
                        history.push(|seq| decode(&ev, seq, &node, offset, ifname));
                    }
                }
            })
            .map_err(FlowError::Thread)?;
        info!(rate_per_cpu, "flow events on");
        Ok(Self {
            stop,
            received,
            thread: Some(thread),
        })
    }

    /// Events taken from the ring so far, shared (for the API).
    #[must_use]
    pub fn received_counter(&self) -> Arc<AtomicU64> {
        self.received.clone()
    }
}

impl Drop for FlowReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
