//! The north-south section as markdown, with the note on whether XDP changed anything.

use std::fmt::Write as _;

use super::super::results::{Cell, Rate, cell, thousands, thousands_f, times};
use super::{NorthSouth, NsVersus};

/// Renders the section as markdown.
pub fn markdown(ns: &Cell<NorthSouth>, out: &mut String) {
    let _ = writeln!(
        out,
        "\n## North-south: client outside the cluster → backend pod\n"
    );
    let ns = match ns {
        Cell::Value(ns) => ns,
        Cell::NotRun { not_run } => {
            let _ = writeln!(out, "not run: {not_run}");
            return;
        }
    };
    let _ = writeln!(
        out,
        "iperf3 (one TCP stream, {} s) and wrk (HTTP/1.1 keep-alive, {} thread(s), {} connections, {} s); median of {} run(s); load average {} before, {} after.\n",
        ns.seconds,
        ns.wrk_threads,
        ns.wrk_connections,
        ns.seconds,
        ns.runs,
        ns.loadavg[0],
        ns.loadavg[1]
    );
    let _ = writeln!(
        out,
        "| path | Gbit/s | ×direct | requests/s | ×direct | p99 latency (µs) |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    let gbps = |r: &Rate| {
        let mut s = format!("{:.2}", r.median);
        if r.errors > 0 {
            let _ = write!(s, " ({} errors)", r.errors);
        }
        s
    };
    let rps = |r: &Rate| {
        let mut s = thousands_f(r.median);
        if r.errors > 0 {
            let _ = write!(s, " ({} errors)", thousands(&r.errors));
        }
        s
    };
    for row in &ns.rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            row.path,
            cell(&row.gbps, gbps),
            times(row.gbps_vs_direct),
            cell(&row.rps, rps),
            times(row.rps_vs_direct),
            cell(&row.p99_us, |v| format!("{v:.0}")),
        );
    }
    versus_table(
        out,
        &format!(
            "ferrite over iptables ({} kube-proxy rules on the iptables node)",
            ns.iptables_rules
        ),
        &ns.ferrite_vs_iptables,
    );
    versus_table(
        out,
        "ferrite with the ingress translation in native XDP (node4) over ferrite with TC (node1)",
        &ns.xdp_vs_tc,
    );
    let _ = writeln!(out, "\n{}", xdp_note(&ns.xdp_vs_tc));
    versus_table(
        out,
        "ferrite attached the legacy way (node5: clsact + cls_bpf, kernels before 6.6) over TCX links (node1)",
        &ns.legacy_vs_tcx,
    );
}

/// Within this band XDP/TC counts as "no change": run-to-run noise on a shared machine.
const NOISE: f64 = 0.05;

/// A titled table of throughput and request-rate ratios, one row per frontend.
fn versus_table(out: &mut String, title: &str, rows: &[NsVersus]) {
    let _ = writeln!(out, "\n{title}:\n");
    let _ = writeln!(out, "| frontend | Gbit/s | requests/s |");
    let _ = writeln!(out, "|---|---:|---:|");
    for v in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            v.frontend,
            times(v.gbps),
            times(v.rps)
        );
    }
}

/// Whether XDP changed the numbers, in one sentence.
#[must_use]
pub fn xdp_note(xdp_vs_tc: &[NsVersus]) -> String {
    let ratios: Vec<(String, f64)> = xdp_vs_tc
        .iter()
        .flat_map(|v| {
            [("Gbit/s", v.gbps), ("requests/s", v.rps)]
                .into_iter()
                .filter_map(move |(what, r)| r.map(|r| (format!("{} {what}", v.frontend), r)))
        })
        .collect();
    if ratios.is_empty() {
        return "XDP: not measured.".into();
    }
    let changed: Vec<String> = ratios
        .iter()
        .filter(|(_, r)| (r - 1.0).abs() > NOISE)
        .map(|(what, r)| format!("{what} {r:.2}×"))
        .collect();
    if changed.is_empty() {
        format!(
            "XDP did not change it: every XDP/TC ratio is within ±{:.0} % (noise) on this veth lab.",
            NOISE * 100.0
        )
    } else {
        format!(
            "XDP changed it (XDP/TC beyond ±{:.0} %): {}.",
            NOISE * 100.0,
            changed.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(gbps: Option<f64>, rps: Option<f64>) -> NsVersus {
        NsVersus {
            frontend: "LoadBalancer IP".into(),
            gbps,
            rps,
        }
    }

    #[test]
    fn the_note_says_whether_xdp_changed_anything() {
        assert_eq!(xdp_note(&[]), "XDP: not measured.");
        assert!(xdp_note(&[v(Some(1.02), Some(0.97))]).starts_with("XDP did not change it"));
        let changed = xdp_note(&[v(Some(1.30), Some(1.01))]);
        assert!(changed.starts_with("XDP changed it"), "{changed}");
        assert!(
            changed.contains("LoadBalancer IP Gbit/s 1.30×"),
            "{changed}"
        );
        assert!(!changed.contains("requests/s"), "{changed}");
    }
}
