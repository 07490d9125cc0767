//! Benchmark results: the JSON document and its markdown rendering.

use std::fmt::Write;

use serde::Serialize;

/// A measurement, or why it was not taken.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Cell<T> {
    Value(T),
    NotRun { not_run: String },
}

impl<T> Cell<T> {
    pub fn not_run(reason: impl Into<String>) -> Self {
        Self::NotRun {
            not_run: reason.into(),
        }
    }

    pub fn value(&self) -> Option<&T> {
        match self {
            Self::Value(v) => Some(v),
            Self::NotRun { .. } => None,
        }
    }

    pub fn is_not_run(&self) -> bool {
        matches!(self, Self::NotRun { .. })
    }
}

impl<T> From<Result<T, String>> for Cell<T> {
    fn from(r: Result<T, String>) -> Self {
        match r {
            Ok(v) => Self::Value(v),
            Err(e) => Self::not_run(e),
        }
    }
}

/// A measurement repeated over runs (connects/s, Gbit/s, requests/s).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Rate {
    pub median: f64,
    pub runs: Vec<f64>,
    /// Failed connects summed over the runs.
    pub errors: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ConnectRow {
    pub services: usize,
    pub direct: Cell<Rate>,
    pub iptables: Cell<Rate>,
    pub ferrite: Cell<Rate>,
    pub ferrite_vs_direct: Option<f64>,
    pub ferrite_vs_iptables: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProgrammeRow {
    pub services: usize,
    pub backends: usize,
    pub iptables_rules: usize,
    pub iptables_restore_ms: Cell<f64>,
    pub ferrite_wall_ms: Cell<f64>,
    pub ferrite_agent_ms: Cell<f64>,
    /// iptables-restore wall time / ferrite wall time.
    pub iptables_vs_ferrite: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct MemoryRow {
    pub services: usize,
    pub rss_kb: Cell<u64>,
    pub hwm_kb: Cell<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Meta {
    pub unix_time: u64,
    pub kernel: String,
    pub cpus: usize,
    pub iptables: String,
    pub quick: bool,
    pub run_ms: u64,
    pub runs: usize,
    pub client_threads: u32,
    pub ferrite: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Results {
    pub meta: Meta,
    pub connect: Vec<ConnectRow>,
    pub programme: Vec<ProgrammeRow>,
    pub memory: Vec<MemoryRow>,
    /// North-south rows (`None` when the section was not asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub northsouth: Option<Cell<super::northsouth::NorthSouth>>,
    /// L2 announcement failover (`None` when the section was not asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l2: Option<Cell<super::l2::L2Bench>>,
    /// CNI ADD/DEL latency (`None` when the section was not asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cni: Option<Cell<super::cni::CniBench>>,
    /// The Kubernetes source against the fake API server (`None` when not asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kube: Option<Cell<super::kube::KubeBench>>,
    /// The pod network across nodes (`None` when not asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pods: Option<Cell<super::pods::PodsBench>>,
    pub policy: Option<Cell<super::policy::PolicyBench>>,
    /// Flow export cost (`None` when not asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flows: Option<Cell<super::flows::FlowsBench>>,
    /// Binary and image sizes (`None` when not asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sizes: Option<super::sizes::SizesBench>,
    pub notes: Vec<String>,
}

/// `a / b` when both exist and `b` is positive.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// Median of `values` (mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        f64::midpoint(v[mid - 1], v[mid])
    }
}

/// min / median / max of repeated runs, and the runs themselves.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
    pub runs: Vec<f64>,
}

impl Spread {
    pub fn of(values: &[f64]) -> Self {
        Self {
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            median: median(values),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            runs: values.to_vec(),
        }
    }
}

/// `12345.6` → `12,346`.
pub(super) fn thousands_f(value: f64) -> String {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "rounded, non-negative, and far below u64::MAX"
    )]
    let n = value.max(0.0).round() as u64;
    thousands(&n)
}

/// `12345` → `12,345`.
pub(super) fn thousands(n: &impl ToString) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(super) fn cell<T>(c: &Cell<T>, show: impl Fn(&T) -> String) -> String {
    match c {
        Cell::Value(v) => show(v),
        Cell::NotRun { not_run } => format!("not run: {}", not_run.replace('|', "/")),
    }
}

pub(super) fn times(r: Option<f64>) -> String {
    r.map_or_else(|| "–".to_owned(), |r| format!("{r:.2}×"))
}

fn rate(r: &Rate) -> String {
    let mut s = thousands_f(r.median);
    if r.errors > 0 {
        let _ = write!(s, " ({} errors)", thousands(&r.errors));
    }
    s
}

/// The `ClusterIP` sections: connect rate, programming time, agent memory.
fn clusterip_markdown(r: &Results, out: &mut String) {
    let _ = writeln!(out, "## TCP connect rate to a ClusterIP (connects/s)\n");
    let _ = writeln!(
        out,
        "| services | direct to pod | iptables (kube-proxy rules) | ferrite | ferrite/direct | ferrite/iptables |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|");
    for row in &r.connect {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            thousands(&row.services),
            cell(&row.direct, rate),
            cell(&row.iptables, rate),
            cell(&row.ferrite, rate),
            times(row.ferrite_vs_direct),
            times(row.ferrite_vs_iptables),
        );
    }
    let _ = writeln!(out, "\n## Time to programme services (ms)\n");
    let _ = writeln!(
        out,
        "| services × backends | iptables rules | iptables-restore | ferrite (wall) | ferrite (agent's own) | iptables/ferrite |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|");
    let ms = |v: &f64| format!("{v:.1}");
    for row in &r.programme {
        let _ = writeln!(
            out,
            "| {} × {} | {} | {} | {} | {} | {} |",
            thousands(&row.services),
            row.backends,
            thousands(&row.iptables_rules),
            cell(&row.iptables_restore_ms, ms),
            cell(&row.ferrite_wall_ms, ms),
            cell(&row.ferrite_agent_ms, ms),
            times(row.iptables_vs_ferrite),
        );
    }
    let _ = writeln!(out, "\n## ferrite agent memory\n");
    let _ = writeln!(out, "| services | VmRSS (MB) | VmHWM (MB) |");
    let _ = writeln!(out, "|---:|---:|---:|");
    #[expect(
        clippy::cast_precision_loss,
        reason = "kilobyte counts are far below 2^52"
    )]
    let mb = |kb: &u64| format!("{:.1}", *kb as f64 / 1024.0);
    for row in &r.memory {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            thousands(&row.services),
            cell(&row.rss_kb, mb),
            cell(&row.hwm_kb, mb),
        );
    }
}

/// Renders the results as markdown.
#[must_use]
pub fn markdown(r: &Results) -> String {
    let m = &r.meta;
    let mut out = String::new();
    let _ = writeln!(out, "# ferrite benchmark\n");
    let clusterip = !(r.connect.is_empty() && r.programme.is_empty() && r.memory.is_empty());
    let connect = if clusterip {
        format!(
            ", {} ms per connect-rate run, median of {} run(s), {} client thread(s)",
            m.run_ms, m.runs, m.client_threads
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "Kernel {}, {} CPUs, {}{connect}{}.\n",
        m.kernel,
        m.cpus,
        m.iptables,
        if m.quick { ", --quick" } else { "" }
    );
    if clusterip {
        clusterip_markdown(r, &mut out);
    }
    if let Some(ns) = &r.northsouth {
        super::northsouth::markdown(ns, &mut out);
    }
    if let Some(l2) = &r.l2 {
        super::l2::markdown(l2, &mut out);
    }
    if let Some(cni) = &r.cni {
        super::cni::markdown(cni, &mut out);
    }
    if let Some(kube) = &r.kube {
        super::kube::markdown(kube, &mut out);
    }
    if let Some(pods) = &r.pods {
        super::pods::markdown(pods, &mut out);
    }
    if let Some(policy) = &r.policy {
        super::policy::markdown(policy, &mut out);
    }
    if let Some(flows) = &r.flows {
        super::flows::markdown(flows, &mut out);
    }
    if let Some(sizes) = &r.sizes {
        super::sizes::markdown(sizes, &mut out);
    }
    if !r.notes.is_empty() {
        let _ = writeln!(out, "\n## Notes\n");
        for note in &r.notes {
            let _ = writeln!(out, "- {note}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_cells_render() {
        assert_eq!(thousands_f(0.4), "0");
        assert_eq!(thousands(&999), "999");
        assert_eq!(thousands_f(1234.5), "1,235");
        assert_eq!(thousands(&10_000_000_usize), "10,000,000");
        assert!((median(&[3.0, 1.0, 2.0]) - 2.0).abs() < f64::EPSILON);
        assert!((median(&[4.0, 1.0]) - 2.5).abs() < f64::EPSILON);
        assert_eq!(ratio(Some(2.0), Some(4.0)), Some(0.5));
        assert_eq!(ratio(Some(2.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
        let c: Cell<u64> = Cell::not_run("no --ferrite | given");
        assert_eq!(cell(&c, u64::to_string), "not run: no --ferrite / given");
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"not_run":"no --ferrite | given"}"#
        );
        assert_eq!(serde_json::to_string(&Cell::Value(5u64)).unwrap(), "5");
    }
}
