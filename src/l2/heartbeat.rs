//! The responder's heartbeat, independent of reconciling.
//!
//! The eBPF responder answers only while the heartbeat it reads (CLOCK_MONOTONIC ns) is at most
//! [`ferrite_abi::L2_HEARTBEAT_GRACE_NS`] (250 ms) old. A dedicated thread writes it every
//! [`BEAT`] (50 ms), but only while the agent's main loop shows *progress* (it bumps a shared
//! timestamp every time it handles the 100 ms interface poll or a model update):
//!
//! - `kill -9` ends the thread with the process, SIGSTOP freezes it with every other thread: the
//!   responder goes silent within the grace (250 ms), before the other members declare the
//!   node dead (≈0.5 s median), so a dead or frozen node never overlaps with its successor;
//! - a long reconcile (a 10k-service apply takes seconds) stops the main loop's progress but
//!   not the thread: the node keeps answering for up to [`STALL_LIMIT`] (10 s) of no progress,
//!   after which a deadlocked loop is treated like a dead agent and goes silent;
//! - after a freeze (the thread itself missed the grace, so the responder already went silent
//!   and the others may have taken the addresses over), the thread writes again only after the
//!   main loop made progress *after* the thread resumed: the loop first sees the freeze
//!   ([`Progress::freezes`]), drops its claims and holds new ones until membership has synced
//!   (see [`crate::l2::hold`]), so the stale address map is never answered from.
//!
//! Beat and grace: 5 beats per grace, so a 200 ms scheduling hiccup of the thread on a loaded
//! machine does not close the gate, while the grace stays below the failure detection time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ferrite_abi::L2_HEARTBEAT_GRACE_NS;

/// How often the heartbeat thread writes.
pub const BEAT: Duration = Duration::from_millis(50);
/// How long the main loop may make no progress before the responder goes silent.
pub const STALL_LIMIT: Duration = Duration::from_secs(10);

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns`.
#[must_use]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Shared between the main loop and the heartbeat thread.
#[derive(Debug, Default)]
pub struct Progress {
    /// When the main loop last made progress (monotonic ns).
    last: AtomicU64,
    /// Freezes the heartbeat thread noticed (its own tick came later than the grace).
    freezes: AtomicU64,
}

impl Progress {
    #[must_use]
    pub fn new() -> Arc<Self> {
        let p = Self::default();
        p.last.store(monotonic_ns(), Ordering::Release);
        Arc::new(p)
    }

    /// The main loop did something: keep the responder answering.
    pub fn bump(&self) {
        self.last.store(monotonic_ns(), Ordering::Release);
    }

    pub fn last_ns(&self) -> u64 {
        self.last.load(Ordering::Acquire)
    }

    /// How many freezes the heartbeat thread saw so far.
    pub fn freezes(&self) -> u64 {
        self.freezes.load(Ordering::Acquire)
    }

    fn note_freeze(&self) {
        self.freezes.fetch_add(1, Ordering::AcqRel);
    }
}

/// What one tick of the heartbeat thread does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Beat {
    /// Refresh the responder's heartbeat.
    Write,
    /// The main loop made no progress for longer than the stall limit.
    Stalled,
    /// This thread (the process) was frozen past the grace: wait for the main loop to make
    /// progress after the resume (it drops stale claims first).
    Resumed,
}

/// The pure decision of the heartbeat thread.
#[derive(Clone, Debug)]
pub struct Gate {
    grace_ns: u64,
    stall_ns: u64,
    last_tick: Option<u64>,
    /// Set after a freeze: progress must be newer than this.
    resumed_at: Option<u64>,
}

impl Default for Gate {
    fn default() -> Self {
        Self::new(Duration::from_nanos(L2_HEARTBEAT_GRACE_NS), STALL_LIMIT)
    }
}

impl Gate {
    #[must_use]
    pub fn new(grace: Duration, stall_limit: Duration) -> Self {
        Self {
            grace_ns: ns(grace),
            stall_ns: ns(stall_limit),
            last_tick: None,
            resumed_at: None,
        }
    }

    /// A tick at `now` with the main loop's last progress at `progress` (both monotonic ns).
    /// Returns the decision and whether this tick found a freeze.
    pub fn tick(&mut self, now: u64, progress: u64) -> (Beat, bool) {
        let froze = self
            .last_tick
            .is_some_and(|t| now.saturating_sub(t) > self.grace_ns);
        self.last_tick = Some(now);
        if froze {
            self.resumed_at = Some(now);
        }
        if let Some(at) = self.resumed_at {
            if progress <= at {
                return (Beat::Resumed, froze);
            }
            self.resumed_at = None;
        }
        if now.saturating_sub(progress) > self.stall_ns {
            return (Beat::Stalled, froze);
        }
        (Beat::Write, froze)
    }
}

/// Runs the heartbeat thread until `stop` is set: `write` refreshes the responder.
pub fn spawn(
    progress: Arc<Progress>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    mut write: impl FnMut(u64) -> Result<(), String> + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("l2-heartbeat".into())
        .spawn(move || {
            let mut gate = Gate::default();
            let mut last = Beat::Write;
            let mut complained = false;
            while !stop.load(Ordering::Acquire) {
                let now = monotonic_ns();
                let (beat, froze) = gate.tick(now, progress.last_ns());
                if froze {
                    progress.note_freeze();
                    tracing::info!("heartbeat resumed after a freeze; waiting for the agent loop");
                }
                if beat != last && beat == Beat::Stalled {
                    tracing::error!(
                        limit_s = STALL_LIMIT.as_secs(),
                        "the agent loop made no progress: the L2 responder goes silent"
                    );
                }
                last = beat;
                if beat == Beat::Write {
                    match write(now) {
                        Ok(()) => complained = false,
                        Err(e) if !complained => {
                            complained = true;
                            tracing::warn!(error = %e, "L2 responder heartbeat");
                        }
                        Err(_) => {}
                    }
                }
                std::thread::sleep(BEAT);
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn gate() -> Gate {
        Gate::new(Duration::from_millis(250), Duration::from_secs(10))
    }

    #[test]
    fn writes_while_the_loop_makes_progress() {
        let mut g = gate();
        for i in 0..10 {
            let now = 1_000 * MS + i * 50 * MS;
            assert_eq!(g.tick(now, now - 20 * MS), (Beat::Write, false));
        }
    }

    #[test]
    fn a_long_reconcile_keeps_the_heartbeat_but_a_stuck_loop_does_not() {
        let mut g = gate();
        let progress = 1_000 * MS;
        // 10 s without progress (a 10k-service apply): still writing.
        let mut now = progress;
        while now <= progress + 10_000 * MS {
            assert_eq!(g.tick(now, progress).0, Beat::Write, "at {now}");
            now += 50 * MS;
        }
        // Past the stall limit: silent, until the loop moves again.
        assert_eq!(g.tick(now, progress).0, Beat::Stalled);
        assert_eq!(
            g.tick(progress + 10_100 * MS, progress + 10_090 * MS).0,
            Beat::Write
        );
    }

    #[test]
    fn after_a_freeze_only_progress_made_after_the_resume_reopens_the_gate() {
        let mut g = gate();
        assert_eq!(g.tick(1_000 * MS, 990 * MS), (Beat::Write, false));
        // Frozen 2 s (SIGSTOP): the loop's last progress predates the resume.
        assert_eq!(g.tick(3_000 * MS, 995 * MS), (Beat::Resumed, true));
        // The loop bumped before the thread noticed: still older than the resume.
        assert_eq!(g.tick(3_050 * MS, 2_999 * MS), (Beat::Resumed, false));
        // The loop handled the resume (dropped its claims) and bumped.
        assert_eq!(g.tick(3_100 * MS, 3_060 * MS), (Beat::Write, false));
        assert_eq!(g.tick(3_150 * MS, 3_060 * MS), (Beat::Write, false));
    }

    #[test]
    fn a_late_tick_within_the_grace_is_not_a_freeze() {
        let mut g = gate();
        assert_eq!(g.tick(1_000 * MS, 990 * MS), (Beat::Write, false));
        assert_eq!(g.tick(1_240 * MS, 990 * MS), (Beat::Write, false));
    }

    #[test]
    fn progress_counts_freezes() {
        let p = Progress::new();
        assert_eq!(p.freezes(), 0);
        p.note_freeze();
        assert_eq!(p.freezes(), 1);
        let before = p.last_ns();
        std::thread::sleep(Duration::from_millis(2));
        p.bump();
        assert!(p.last_ns() > before);
    }
}
