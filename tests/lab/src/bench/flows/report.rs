//! The `flows` section's numbers without IO: on/off spreads and their ratio, the intake of
//! one flood, and the markdown table.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use crate::bench::results::{Cell, Spread, cell, thousands, thousands_f, times};

/// One measurement with flows on next to flows off, over interleaved runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OnOff {
    pub on: Spread,
    pub off: Spread,
    /// Median on / median off (1.0: flows cost nothing).
    pub on_vs_off: Option<f64>,
}

impl OnOff {
    /// From the runs of both sides; an error when a side has none.
    pub fn of(on: &[f64], off: &[f64]) -> Result<Self, String> {
        if on.is_empty() || off.is_empty() {
            return Err(format!(
                "{} runs with flows on, {} with flows off",
                on.len(),
                off.len()
            ));
        }
        let (on, off) = (Spread::of(on), Spread::of(off));
        let on_vs_off = (off.median > 0.0).then(|| on.median / off.median);
        Ok(Self { on, off, on_vs_off })
    }
}

/// What one agent took of a flood of flow events with the rate cap lifted.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Intake {
    /// The flood's length (s) and the refused connects it made (one event each).
    pub seconds: f64,
    pub attempts: u64,
    /// `/v1/flows` stats after it: sent by the programs, read by the agent, lost to a full
    /// ring, over the (lifted) cap.
    pub emitted: u64,
    pub received: u64,
    pub ring_full: u64,
    pub rate_limited: u64,
    /// Events read per second.
    pub received_per_sec: f64,
    /// Whether the ring ever filled: if so, `received_per_sec` is what the agent keeps up
    /// with; if not, the flood was the limit and the agent takes at least that.
    pub ring_filled: bool,
    /// The agent's CPU time over the flood, and the events it read per second of it: what
    /// one CPU given to the agent alone would take.
    pub agent_cpu_seconds: f64,
    pub per_agent_cpu_second: Option<f64>,
}

impl Intake {
    /// From the flood's length and attempts, the agent's CPU time over it and its `/v1/flows`
    /// `stats` after it.
    pub fn of(seconds: f64, attempts: u64, cpu: f64, stats: &Value) -> Result<Self, String> {
        let n = |k: &str| {
            stats[k]
                .as_u64()
                .ok_or_else(|| format!("no {k} in the flow stats: {stats}"))
        };
        if seconds <= 0.0 {
            return Err("the flood took no time".into());
        }
        let (emitted, received, ring_full) = (n("emitted")?, n("received")?, n("ring_full")?);
        #[expect(
            clippy::cast_precision_loss,
            reason = "event counts are far below 2^52"
        )]
        let received_per_sec = received as f64 / seconds;
        Ok(Self {
            seconds,
            attempts,
            emitted,
            received,
            ring_full,
            rate_limited: n("rate_limited")?,
            received_per_sec,
            ring_filled: ring_full > 0,
            agent_cpu_seconds: cpu,
            #[expect(
                clippy::cast_precision_loss,
                reason = "event counts are far below 2^52"
            )]
            per_agent_cpu_second: (cpu > 0.0).then(|| received as f64 / cpu),
        })
    }
}

/// The section in `results.json`.
#[derive(Clone, Debug, Serialize)]
pub struct FlowsBench {
    /// ClusterIP connects/s (socket LB, one event per connect).
    pub clusterip_connects: Cell<OnOff>,
    /// North-south through the LoadBalancer IP: iperf3 Gbit/s (one TCP stream) and new
    /// connections/s (one event each).
    pub northsouth_gbps: Cell<OnOff>,
    pub northsouth_connects: Cell<OnOff>,
    /// With the cap lifted.
    pub intake: Cell<Intake>,
    /// The default `--flow-rate` (per CPU) and what it makes on this machine: where sampling
    /// starts.
    pub default_rate_per_cpu: u32,
    pub sampling_from_per_sec: u64,
    pub runs: usize,
}

impl FlowsBench {
    pub fn incomplete(&self) -> bool {
        self.clusterip_connects.is_not_run()
            || self.northsouth_gbps.is_not_run()
            || self.northsouth_connects.is_not_run()
            || self.intake.is_not_run()
    }
}

fn spread(s: &Spread, digits: usize) -> String {
    let f = |v: f64| {
        if digits == 0 {
            thousands_f(v)
        } else {
            format!("{v:.digits$}")
        }
    };
    format!("{} ({}–{})", f(s.median), f(s.min), f(s.max))
}

fn on_off_row(out: &mut String, what: &str, c: &Cell<OnOff>, digits: usize) {
    let _ = match c {
        Cell::Value(v) => writeln!(
            out,
            "| {what} | {} | {} | {} |",
            spread(&v.on, digits),
            spread(&v.off, digits),
            times(v.on_vs_off)
        ),
        Cell::NotRun { .. } => writeln!(out, "| {what} | {} | | |", cell(c, |_| String::new())),
    };
}

/// The markdown of the section.
pub fn markdown(c: &Cell<FlowsBench>, out: &mut String) {
    let _ = writeln!(out, "\n## Flow export cost\n");
    let Cell::Value(b) = c else {
        let _ = writeln!(out, "{}", cell(c, |_| String::new()));
        return;
    };
    let _ = writeln!(
        out,
        "Median (min–max) of {} interleaved runs; flows on is the default `--flow-rate {}` \
         per CPU, off is `--flow-rate 0`.\n",
        b.runs, b.default_rate_per_cpu
    );
    let _ = writeln!(out, "| measurement | flows on | flows off | on / off |");
    let _ = writeln!(out, "|---|---|---|---|");
    on_off_row(out, "ClusterIP connects/s", &b.clusterip_connects, 0);
    on_off_row(
        out,
        "north-south LB IP Gbit/s (iperf3)",
        &b.northsouth_gbps,
        2,
    );
    on_off_row(
        out,
        "north-south LB IP connects/s",
        &b.northsouth_connects,
        0,
    );
    let _ = writeln!(
        out,
        "\nSampling starts at {} events/s on this machine (the default rate × CPUs).",
        thousands(&b.sampling_from_per_sec)
    );
    let _ = match &b.intake {
        Cell::Value(i) => writeln!(
            out,
            "With the cap lifted, a flood of {} refused connects in {:.1} s: the agent read {} \
             events/s ({} sent, {} read, {} lost to a full ring){}. It used {:.2} s of CPU for \
             them: {} events per CPU-second.",
            thousands(&i.attempts),
            i.seconds,
            thousands_f(i.received_per_sec),
            thousands(&i.emitted),
            thousands(&i.received),
            thousands(&i.ring_full),
            if i.ring_filled {
                ": the ring filled, this is what the reader keeps up with"
            } else {
                ": the ring never filled, the flood was the limit (the agent takes at least this)"
            },
            i.agent_cpu_seconds,
            i.per_agent_cpu_second
                .map_or_else(|| "–".into(), thousands_f)
        ),
        Cell::NotRun { .. } => writeln!(
            out,
            "Intake with the cap lifted: {}",
            cell(&b.intake, |_| String::new())
        ),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_off_is_the_spread_of_each_side_and_the_median_ratio() {
        let v = OnOff::of(&[90.0, 100.0, 95.0], &[100.0, 110.0, 90.0]).unwrap();
        assert_eq!((v.on.min, v.on.median, v.on.max), (90.0, 95.0, 100.0));
        assert!((v.off.median - 100.0).abs() < f64::EPSILON);
        assert_eq!(v.on_vs_off, Some(0.95));
        assert!(OnOff::of(&[], &[1.0]).is_err());
        assert!(
            OnOff::of(&[1.0], &[])
                .unwrap_err()
                .contains("0 with flows off")
        );
        assert_eq!(OnOff::of(&[1.0], &[0.0]).unwrap().on_vs_off, None);
    }

    #[test]
    fn intake_is_what_was_read_per_second_and_whether_the_ring_filled() {
        let stats = serde_json::json!({
            "emitted": 150_000, "received": 150_000, "ring_full": 2_000, "rate_limited": 0
        });
        let i = Intake::of(2.0, 160_000, 0.5, &stats).unwrap();
        assert!((i.received_per_sec - 75_000.0).abs() < 1e-9);
        assert_eq!(i.per_agent_cpu_second.map(f64::round), Some(300_000.0));
        assert!(i.ring_filled);
        let calm = serde_json::json!({
            "emitted": 10, "received": 10, "ring_full": 0, "rate_limited": 0
        });
        assert!(!Intake::of(1.0, 10, 0.1, &calm).unwrap().ring_filled);
        assert_eq!(
            Intake::of(1.0, 10, 0.0, &calm)
                .unwrap()
                .per_agent_cpu_second,
            None
        );
        assert!(Intake::of(0.0, 10, 0.1, &calm).is_err());
        assert!(
            Intake::of(1.0, 10, 0.1, &serde_json::json!({}))
                .unwrap_err()
                .contains("emitted")
        );
    }

    #[test]
    fn the_markdown_has_a_row_per_measurement_and_says_what_limited_the_intake() {
        let b = FlowsBench {
            clusterip_connects: Cell::Value(OnOff::of(&[9000.0], &[10_000.0]).unwrap()),
            northsouth_gbps: Cell::Value(OnOff::of(&[9.5], &[10.0]).unwrap()),
            northsouth_connects: Cell::not_run("wrk missing"),
            intake: Cell::Value(
                Intake::of(
                    1.0,
                    5,
                    0.001,
                    &serde_json::json!({"emitted": 5, "received": 5, "ring_full": 0, "rate_limited": 0}),
                )
                .unwrap(),
            ),
            default_rate_per_cpu: 2000,
            sampling_from_per_sec: 4000,
            runs: 1,
        };
        assert!(b.incomplete());
        let mut out = String::new();
        markdown(&Cell::Value(b), &mut out);
        assert!(
            out.contains(
                "| ClusterIP connects/s | 9,000 (9,000–9,000) | 10,000 (10,000–10,000) | 0.90× |"
            ),
            "{out}"
        );
        assert!(
            out.contains("| north-south LB IP Gbit/s (iperf3) | 9.50 (9.50–9.50) | 10.00"),
            "{out}"
        );
        assert!(
            out.contains("| north-south LB IP connects/s | not run: wrk missing"),
            "{out}"
        );
        assert!(out.contains("Sampling starts at 4,000 events/s"), "{out}");
        assert!(out.contains("the flood was the limit"), "{out}");
        assert!(
            out.contains("0.00 s of CPU for them: 5,000 events per CPU-second"),
            "{out}"
        );
        let mut out = String::new();
        markdown(&Cell::not_run("no --ferrite given"), &mut out);
        assert!(out.contains("not run: no --ferrite given"), "{out}");
    }
}
