//! The `kube` section's markdown.

use std::fmt::Write as _;

use super::{EVENT_SERVICES, KubeBench, Latency, TARGET_KB_AT_1K};
use crate::bench::results::Cell;

fn cell<T>(c: &Cell<T>, f: impl Fn(&T) -> String) -> String {
    match c {
        Cell::Value(v) => f(v),
        Cell::NotRun { not_run } => format!("not run: {}", not_run.replace('|', "/")),
    }
}

fn mib(kb: u64) -> String {
    #[expect(clippy::cast_precision_loss, reason = "memory sizes")]
    let mib = kb as f64 / 1024.0;
    format!("{mib:.1} MiB")
}

fn latency(l: &Latency) -> String {
    format!("{:.1} / {:.1} / {:.1}", l.p50_ms, l.p99_ms, l.max_ms)
}

/// The section's markdown.
pub fn markdown(bench: &Cell<KubeBench>, out: &mut String) {
    let _ = writeln!(out, "\n## Kubernetes source (fake API server)\n");
    let Some(bench) = bench.value() else {
        let _ = writeln!(out, "{}", cell(bench, |_| String::new()));
        return;
    };
    let _ = writeln!(
        out,
        "| services | endpoints | start → all in maps | VmRSS | VmHWM | target | dir: VmRSS | \
         watch → map p50 / p99 / max (ms) | dir: file → map p50 / p99 / max (ms) | kube / dir p50 |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|");
    for r in &bench.rows {
        let target = if r.services <= 1_000 {
            format!("≤ {} (DESIGN)", mib(TARGET_KB_AT_1K))
        } else {
            "—".to_owned()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {target} | {} | {} | {} | {} |",
            r.services,
            r.endpoints,
            cell(&r.sync_ms, |ms| format!("{ms:.0} ms")),
            cell(&r.rss_kb, |kb| mib(*kb)),
            cell(&r.hwm_kb, |kb| mib(*kb)),
            cell(&r.dir_rss_kb, |kb| mib(*kb)),
            cell(&r.watch_to_map, latency),
            cell(&r.dir_file_to_map, latency),
            r.kube_vs_dir_p50
                .map_or_else(|| "—".to_owned(), |x| format!("{x:.2}×")),
        );
    }
    let poll = bench
        .rows
        .iter()
        .filter_map(|r| r.watch_to_map.value().map(|l| l.poll_us))
        .fold(0.0, f64::max);
    let _ = writeln!(
        out,
        "\nAnchor: cilium-agent uses 150–450 MB RSS. Latency: an EndpointSlice gets one \
         endpoint added, then removed ({EVENT_SERVICES} services in turn), through the fake \
         server's store (watchers get the event over HTTPS); the end is the first read of the \
         agent's pinned frontend map (aya, map lookup every {poll:.0} µs on average: the \
         detection resolution) showing the new slot count. Baseline (same run, same change): a \
         `dir:` agent with the same objects, the slice rewritten in its own file (write + \
         rename) → map; the `dir:` source polls its folder every 200 ms, so its latency is \
         mostly that interval (not a measure of parsing or programming speed). Agent start → \
         all in maps includes process start, the initial lists and the first programming of \
         every frontend."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_has_one_line_per_row_and_not_run_reasons() {
        let settings = super::super::KubeSettings::new(true);
        let bench = KubeBench {
            rows: vec![super::super::failed_row(200, &settings, "no | agent")],
        };
        assert!(bench.incomplete());
        let mut out = String::new();
        markdown(&Cell::Value(bench), &mut out);
        assert!(
            out.contains("| 200 | 1000 | not run: no / agent |"),
            "{out}"
        );
    }
}
