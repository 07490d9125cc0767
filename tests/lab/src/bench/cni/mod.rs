//! `cni`: ADD and DEL latency of ferrite's CNI plugin against the reference `bridge` +
//! `host-local` plugins, in the same run. Each plugin set gets its own "node" netns (where the
//! runtime would run it) and state under a temporary folder; every ADD goes into a fresh pod
//! netns created before the clock starts, and the clock covers exactly the plugin process
//! (spawn → exit), called as a runtime calls it (CNI_* environment, config on stdin, DEL with
//! the ADD result as `prevResult`). The sets alternate call by call (ABAB…) so machine load hits
//! both alike. Everything lives in namespaces and the temporary folder, which guards remove on
//! return, error or Ctrl-C.

mod plugins;
mod stats;

use std::path::Path;
use std::sync::Barrier;

use ferrite_lab::{Netns, Ns};

pub use stats::{CniBench, markdown};

use super::{check_interrupted, progress};
use plugins::{Attachment, Install, Set};
use stats::{Leftover, Tally, VerbRow};

const PREFIX: &str = "flb";

/// How much to measure.
pub struct CniSettings {
    /// ADD+DEL cycles per plugin set, sequentially and again with `workers` in parallel.
    pub cycles: usize,
    /// Parallel workers of the concurrent rows (1: sequential rows only).
    pub workers: usize,
}

/// ADD and DEL tallies of both sets at one concurrency.
#[derive(Default)]
struct Tallies {
    add: [Tally; 2],
    del: [Tally; 2],
}

impl Tallies {
    fn record(&mut self, set: Set, (add, del): &(plugins::Call, plugins::Call)) {
        let i = set.index();
        self.add[i].record(add);
        self.del[i].record(del);
    }

    fn rows(self, workers: usize) -> [VerbRow; 2] {
        let [fa, ra] = self.add;
        let [fd, rd] = self.del;
        [
            VerbRow::new(workers, "ADD", fa, ra),
            VerbRow::new(workers, "DEL", fd, rd),
        ]
    }
}

/// The node netns of each set and the installed plugins.
struct Bench {
    install: Install,
    nodes: [Netns; 2],
    next_id: usize,
}

impl Bench {
    fn node(&self, set: Set) -> &Ns {
        self.nodes[set.index()].ns()
    }

    /// The next container of `set`, in `pod`.
    fn attachment<'a>(&'a self, set: Set, pod: &'a Ns, id: usize) -> Attachment<'a> {
        Attachment {
            install: &self.install,
            set,
            node: self.node(set),
            pod,
            container_id: format!("bench{id}"),
        }
    }

    fn next_ids(&mut self, n: usize) -> std::ops::Range<usize> {
        self.next_id += n;
        self.next_id - n..self.next_id
    }

    /// One ADD+DEL cycle in a fresh pod netns (created and deleted outside the clock).
    fn cycle(&mut self, set: Set) -> Result<(plugins::Call, plugins::Call), String> {
        let pod = Netns::new(PREFIX).map_err(|e| format!("pod netns: {e}"))?;
        let id = self.next_ids(1).start;
        let calls = self.attachment(set, pod.ns(), id).cycle();
        pod.close().map_err(|e| format!("delete pod netns: {e}"))?;
        Ok(calls)
    }

    /// `workers` cycles of `set` at once, each in its own fresh pod netns.
    fn parallel(
        &mut self,
        set: Set,
        workers: usize,
    ) -> Result<Vec<(plugins::Call, plugins::Call)>, String> {
        let pods = (0..workers)
            .map(|_| Netns::new(PREFIX).map_err(|e| format!("pod netns: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let ids = self.next_ids(workers);
        let attachments: Vec<Attachment<'_>> = pods
            .iter()
            .zip(ids)
            .map(|(pod, id)| self.attachment(set, pod.ns(), id))
            .collect();
        let start = Barrier::new(workers);
        let calls = std::thread::scope(|s| {
            let handles: Vec<_> = attachments
                .iter()
                .map(|a| {
                    let start = &start;
                    s.spawn(move || {
                        start.wait();
                        a.cycle()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().map_err(|_| "a worker thread panicked".to_owned()))
                .collect::<Result<Vec<_>, _>>()
        })?;
        drop(attachments);
        for pod in pods {
            pod.close().map_err(|e| format!("delete pod netns: {e}"))?;
        }
        Ok(calls)
    }

    fn leftover(&self, set: Set) -> Leftover {
        let veths = self
            .node(set)
            .ip_run(["-o", "link", "show", "type", "veth"])
            .map(|out| String::from_utf8_lossy(&out.stdout).lines().count())
            .map_err(|e| e.to_string());
        Leftover {
            set,
            addresses: self.install.allocated(set).into(),
            veths: veths.into(),
        }
    }
}

fn reference_version() -> String {
    ferrite_lab::cmd::stdout_of(
        "dpkg-query",
        ["-W", "-f", "${Version}", "containernetworking-plugins"],
    )
    .map_or_else(|_| "version unknown".to_owned(), |v| v.trim().to_owned())
}

/// Runs the section. `Err` when it could not start (no ferrite binary, reference plugins
/// missing, lab setup failed) or was interrupted; failed plugin calls are counted instead.
pub fn measure(
    ferrite: Result<&Path, &String>,
    settings: &CniSettings,
) -> Result<CniBench, String> {
    let ferrite = ferrite.map_err(Clone::clone)?;
    plugins::check_reference_plugins()?;
    let cycles = settings.cycles.max(1);
    let workers = settings.workers.clamp(1, cycles);
    let mut bench = Bench {
        install: Install::new(ferrite)?,
        nodes: [
            Netns::new(PREFIX).map_err(|e| format!("node netns: {e}"))?,
            Netns::new(PREFIX).map_err(|e| format!("node netns: {e}"))?,
        ],
        next_id: 0,
    };
    // Page both sets in and check they work before the clock matters.
    for set in Set::BOTH {
        let (add, del) = bench.cycle(set)?;
        if let Err(e) = add.outcome.and(del.outcome) {
            progress(&format!(
                "cni: warm-up cycle of {} failed: {e}",
                set.label()
            ));
        }
    }

    progress(&format!(
        "cni: {cycles} sequential ADD+DEL cycles per plugin set"
    ));
    let mut seq = Tallies::default();
    for _ in 0..cycles {
        check_interrupted()?;
        for set in Set::BOTH {
            let calls = bench.cycle(set)?;
            seq.record(set, &calls);
        }
    }
    let mut rows: Vec<VerbRow> = seq.rows(1).into();

    if workers > 1 {
        progress(&format!(
            "cni: {cycles} cycles per plugin set, {workers} at a time"
        ));
        let mut par = Tallies::default();
        let mut done = 0;
        while done < cycles {
            check_interrupted()?;
            let n = workers.min(cycles - done);
            for set in Set::BOTH {
                for calls in bench.parallel(set, n)? {
                    par.record(set, &calls);
                }
            }
            done += n;
        }
        rows.extend(par.rows(workers));
    }
    let leftovers = Set::BOTH.map(|s| bench.leftover(s)).into();
    Ok(CniBench {
        cycles,
        reference_version: reference_version(),
        rows,
        leftovers,
    })
}

/// Runs the section for `ferrite-lab bench` (200 cycles per set and row, `--quick` 20, or
/// `--cni-cycles`; 8 parallel workers) into `results`; `Err` only when interrupted.
pub fn section(
    args: &super::BenchArgs,
    ferrite: Result<&Path, &String>,
    results: &mut super::results::Results,
) -> Result<(), String> {
    let settings = CniSettings {
        cycles: args.cni_cycles.unwrap_or(if args.quick { 20 } else { 200 }),
        workers: 8,
    };
    let measured = measure(ferrite, &settings);
    if let Err(e) = &measured {
        progress(&format!("cni: {e}"));
    }
    results.cni = Some(measured.into());
    check_interrupted()?;
    results.notes.extend(notes());
    Ok(())
}

/// Notes for the results page.
fn notes() -> Vec<String> {
    vec![
        format!(
            "CNI: each plugin set runs in its own node netns with a temporary CNI bin dir (`ferrite` hard-linked or copied from --ferrite, `bridge` and `host-local` from {}) and state; ferrite reads its PodCIDR ({}) from a node state file as when the agent writes it, the reference is `bridge` (isGateway, ipMasq false) with `host-local` over {}; cniVersion 1.0.0, one warm-up cycle per set before measuring",
            plugins::REFERENCE_DIR,
            plugins::FERRITE_SUBNET,
            plugins::REFERENCE_SUBNET,
        ),
        format!(
            "CNI state lives under {} (set TMPDIR to move it): ferrite fsyncs the IPAM file when it reserves addresses (crash safety), host-local does not, so a busy disk there shows in ferrite's ADD tail",
            std::env::temp_dir().display()
        ),
        "CNI timing: a fresh pod netns per ADD, created before and deleted after the timed calls; each call is timed from spawning the plugin (setns into the node netns, CNI_* environment, config on stdin) until it exited and its output was read; DEL gets the ADD result as prevResult (libcni's cached result); the sets alternate cycle by cycle; the concurrent rows start that many cycles of one set at once, alternating sets per batch".into(),
    ]
}
