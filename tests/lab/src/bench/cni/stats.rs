//! The numbers of the CNI section: per-call latencies folded into percentiles, the ratios
//! ferrite/reference, and their markdown table.

use std::fmt::Write as _;

use ferrite_lab::report::LatencySummary;
use serde::Serialize;

use super::plugins::{Call, Set};
use crate::bench::results::{Cell, cell, ratio, times};

/// Calls of one verb of one set, as they come in.
#[derive(Debug, Default)]
pub struct Tally {
    ok_us: Vec<u64>,
    calls: usize,
    failed: usize,
    first_failure: Option<String>,
}

impl Tally {
    pub fn record(&mut self, call: &Call) {
        self.calls += 1;
        match &call.outcome {
            Ok(_) => self
                .ok_us
                .push(u64::try_from(call.elapsed.as_micros()).unwrap_or(u64::MAX)),
            Err(e) => {
                self.failed += 1;
                self.first_failure.get_or_insert_with(|| e.clone());
            }
        }
    }

    #[must_use]
    pub fn summary(mut self) -> Latency {
        Latency {
            calls: self.calls,
            failed: self.failed,
            percentiles: Percentiles::of(&mut self.ok_us),
            first_failure: self.first_failure,
        }
    }
}

/// Nearest-rank percentiles of the successful calls, all in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

impl Percentiles {
    /// `None` without samples. p50/p99/max come from [`LatencySummary`]; p90 by the same
    /// nearest-rank rule.
    #[must_use]
    pub fn of(samples: &mut [u64]) -> Option<Self> {
        let s = LatencySummary::from_samples(samples)?;
        // Sorted by from_samples.
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "rank is within 1..=len, and len is small"
        )]
        let rank = ((0.9 * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        Some(Self {
            p50: s.median_us,
            p90: samples[rank - 1],
            p99: s.p99_us,
            max: s.max_us,
        })
    }

    fn values(self) -> [u64; 4] {
        [self.p50, self.p90, self.p99, self.max]
    }
}

/// One verb of one set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Latency {
    pub calls: usize,
    /// Failed calls are counted here and left out of the percentiles.
    pub failed: usize,
    pub percentiles: Option<Percentiles>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_failure: Option<String>,
}

/// ferrite/reference at each percentile (lower is better).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Ratios {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

impl Ratios {
    #[must_use]
    pub fn of(ferrite: &Latency, reference: &Latency) -> Self {
        #[expect(clippy::cast_precision_loss, reason = "microseconds far below 2^52")]
        let at = |l: &Latency, i: usize| l.percentiles.map(|p| p.values()[i] as f64);
        let r = |i| ratio(at(ferrite, i), at(reference, i));
        Self {
            p50: r(0),
            p90: r(1),
            p99: r(2),
            max: r(3),
        }
    }
}

/// ADD or DEL at one concurrency, both sets side by side.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VerbRow {
    pub workers: usize,
    pub verb: String,
    pub ferrite: Latency,
    pub reference: Latency,
    pub ferrite_vs_reference: Ratios,
}

impl VerbRow {
    #[must_use]
    pub fn new(workers: usize, verb: &str, ferrite: Tally, reference: Tally) -> Self {
        let (ferrite, reference) = (ferrite.summary(), reference.summary());
        Self {
            workers,
            verb: verb.to_owned(),
            ferrite_vs_reference: Ratios::of(&ferrite, &reference),
            ferrite,
            reference,
        }
    }
}

/// What a set left on the node after its last DEL (all zero when DEL cleans up).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Leftover {
    pub set: Set,
    /// Addresses still allocated in its IPAM store.
    pub addresses: Cell<usize>,
    /// veth interfaces still in the node netns.
    pub veths: Cell<usize>,
}

/// The CNI section's results.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CniBench {
    /// ADD+DEL cycles per set in each row.
    pub cycles: usize,
    /// `containernetworking-plugins` package version.
    pub reference_version: String,
    pub rows: Vec<VerbRow>,
    pub leftovers: Vec<Leftover>,
}

impl CniBench {
    /// Something failed, was not measured, or was left behind.
    #[must_use]
    pub fn incomplete(&self) -> bool {
        let bad = |l: &Latency| l.failed > 0 || l.percentiles.is_none();
        self.rows.is_empty()
            || self
                .rows
                .iter()
                .any(|r| bad(&r.ferrite) || bad(&r.reference))
            || self.leftovers.iter().any(|l| {
                l.addresses.value().is_none_or(|&n| n > 0) || l.veths.value().is_none_or(|&n| n > 0)
            })
    }
}

fn ms(us: u64) -> String {
    #[expect(clippy::cast_precision_loss, reason = "microseconds far below 2^52")]
    let ms = us as f64 / 1000.0;
    format!("{ms:.2}")
}

fn latency_row(out: &mut String, workers: usize, verb: &str, plugin: &str, l: &Latency) {
    let p = l.percentiles.map_or_else(
        || {
            [
                "–".to_owned(),
                "–".to_owned(),
                "–".to_owned(),
                "–".to_owned(),
            ]
        },
        |p| p.values().map(ms),
    );
    let _ = writeln!(
        out,
        "| {workers} | {verb} | {plugin} | {} | {} | {} | {} | {} | {} |",
        l.calls, l.failed, p[0], p[1], p[2], p[3]
    );
}

/// The CNI section as markdown.
pub fn markdown(cni: &Cell<CniBench>, out: &mut String) {
    let _ = writeln!(out, "\n## CNI plugin ADD/DEL latency\n");
    let b = match cni {
        Cell::Value(b) => b,
        Cell::NotRun { not_run } => {
            let _ = writeln!(out, "not run: {not_run}");
            return;
        }
    };
    let _ = writeln!(
        out,
        "{} ADD+DEL cycles per plugin set and row; ferrite against bridge + host-local \
         (containernetworking-plugins {}). Times in ms from spawning the plugin to its exit; \
         failed calls are counted and left out of the percentiles.\n",
        b.cycles, b.reference_version
    );
    let _ = writeln!(
        out,
        "| workers | verb | plugin (ratio rows: ferrite/reference, lower is better) | calls | failed | p50 | p90 | p99 | max |"
    );
    let _ = writeln!(out, "|---:|---|---|---:|---:|---:|---:|---:|---:|");
    for r in &b.rows {
        latency_row(out, r.workers, &r.verb, Set::Ferrite.label(), &r.ferrite);
        latency_row(
            out,
            r.workers,
            &r.verb,
            Set::Reference.label(),
            &r.reference,
        );
        let x = r.ferrite_vs_reference;
        let _ = writeln!(
            out,
            "| {} | {} | **ferrite/reference** | | | {} | {} | {} | {} |",
            r.workers,
            r.verb,
            times(x.p50),
            times(x.p90),
            times(x.p99),
            times(x.max)
        );
    }
    let count = |c: &Cell<usize>| cell(c, usize::to_string);
    let left: Vec<String> = b
        .leftovers
        .iter()
        .map(|l| {
            format!(
                "{}: {} addresses allocated, {} veths on the node",
                l.set.label(),
                count(&l.addresses),
                count(&l.veths)
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "\nLeft behind after the last DEL: {}.",
        left.join("; ")
    );
    for r in &b.rows {
        for (set, l) in [(Set::Ferrite, &r.ferrite), (Set::Reference, &r.reference)] {
            if let Some(e) = &l.first_failure {
                let _ = writeln!(
                    out,
                    "\nFirst failed {} of {} ({} workers): {}",
                    r.verb,
                    set.label(),
                    r.workers,
                    e.replace('|', "/")
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn call(us: u64, ok: bool) -> Call {
        Call {
            elapsed: Duration::from_micros(us),
            outcome: if ok {
                Ok(serde_json::Value::Null)
            } else {
                Err(format!("failed after {us}"))
            },
        }
    }

    fn tally(us: impl IntoIterator<Item = u64>) -> Tally {
        let mut t = Tally::default();
        for u in us {
            t.record(&call(u, true));
        }
        t
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(Percentiles::of(&mut []), None);
        let mut v: Vec<u64> = (1..=200).rev().collect();
        assert_eq!(
            Percentiles::of(&mut v),
            Some(Percentiles {
                p50: 100,
                p90: 180,
                p99: 198,
                max: 200
            })
        );
        let one = Percentiles::of(&mut [7]).unwrap();
        assert_eq!(one.values(), [7; 4]);
    }

    #[test]
    fn failures_are_counted_not_timed() {
        let mut t = tally([1000, 3000]);
        t.record(&call(5, false));
        t.record(&call(9, false));
        let l = t.summary();
        assert_eq!((l.calls, l.failed), (4, 2));
        assert_eq!(l.first_failure.as_deref(), Some("failed after 5"));
        assert_eq!(l.percentiles.unwrap().values(), [1000, 3000, 3000, 3000]);
        let none = Tally::default().summary();
        assert_eq!((none.calls, none.percentiles), (0, None));
    }

    fn bench(ferrite_failed: bool) -> CniBench {
        let mut f = tally([2000, 2000, 4000, 8000]);
        if ferrite_failed {
            f.record(&call(1, false));
        }
        let reference = tally([4000, 8000, 8000, 16_000]);
        CniBench {
            cycles: 4,
            reference_version: "1.1.1+ds1-3+b5".into(),
            rows: vec![VerbRow::new(1, "ADD", f, reference)],
            leftovers: vec![Leftover {
                set: Set::Ferrite,
                addresses: Cell::Value(0),
                veths: Cell::not_run("ip failed"),
            }],
        }
    }

    #[test]
    fn ratios_and_table() {
        let b = bench(true);
        let x = b.rows[0].ferrite_vs_reference;
        assert_eq!(
            (x.p50, x.p90, x.p99, x.max),
            (Some(0.25), Some(0.5), Some(0.5), Some(0.5))
        );
        assert!(b.incomplete());
        let mut md = String::new();
        markdown(&Cell::Value(b), &mut md);
        assert!(md.contains("ferrite/reference, lower is better"), "{md}");
        assert!(
            md.contains("| 1 | ADD | ferrite | 5 | 1 | 2.00 | 8.00 | 8.00 | 8.00 |"),
            "{md}"
        );
        assert!(
            md.contains("| 1 | ADD | bridge + host-local | 4 | 0 | 8.00 | 16.00 | 16.00 | 16.00 |"),
            "{md}"
        );
        assert!(
            md.contains("| 1 | ADD | **ferrite/reference** | | | 0.25× | 0.50× | 0.50× | 0.50× |"),
            "{md}"
        );
        assert!(
            md.contains("ferrite: 0 addresses allocated, not run: ip failed veths"),
            "{md}"
        );
        assert!(
            md.contains("First failed ADD of ferrite (1 workers): failed after 1"),
            "{md}"
        );

        let mut clean = bench(false);
        assert!(
            clean.incomplete(),
            "a leftover count that could not be read is incomplete"
        );
        clean.leftovers[0].veths = Cell::Value(0);
        assert!(!clean.incomplete());
        let mut md = String::new();
        markdown(&Cell::<CniBench>::not_run("no --ferrite given"), &mut md);
        assert!(md.ends_with("not run: no --ferrite given\n"), "{md}");
    }
}
