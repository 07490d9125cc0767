//! `ferrite status`'s summary, like `cilium status`: one line per subsystem with its health and
//! counts, built from the agent's readiness model (`subsystems` of `/v1/status`) and the L2 and
//! routing views. Pure: the CLI fetches, this decides.

use std::fmt::Write as _;

use serde::Serialize;

use crate::api::{HostRoutingView, L2View, Status, Subsystem};
use crate::routing::task::RoutesView;

/// A subsystem's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Ok,
    /// Working, with a problem worth a look (a route in error, a refused datagram …).
    Warning,
    /// Not ready / not working.
    Failure,
    /// Turned off by configuration.
    Disabled,
}

impl Health {
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Warning => "Warning",
            Self::Failure => "Failure",
            Self::Disabled => "Disabled",
        }
    }
}

/// One line of the summary, with the details `--verbose` adds below it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Line {
    pub subsystem: String,
    pub health: Health,
    pub summary: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

fn line(subsystem: &str, health: Health, summary: String, details: Vec<String>) -> Line {
    Line {
        subsystem: subsystem.into(),
        health,
        summary,
        details,
    }
}

fn subsystem<'a>(st: &'a Status, name: &str) -> Option<&'a Subsystem> {
    st.subsystems.iter().find(|s| s.name == name)
}

/// Health from a readiness entry (absent: `absent`), its detail and last error.
fn from_readiness(s: Option<&Subsystem>, absent: Health) -> (Health, Vec<String>) {
    let Some(s) = s else {
        return (absent, Vec::new());
    };
    let mut details = vec![s.detail.clone()];
    if let Some(e) = &s.last_error {
        details.push(format!("last error: {e}"));
    }
    let health = if s.ready { Health::Ok } else { Health::Failure };
    (health, details)
}

/// A line built from its own view, failed when its readiness entry is not ready (whose detail
/// and last error are added).
fn with_readiness(mut l: Line, s: Option<&Subsystem>) -> Line {
    if let Some(s) = s.filter(|s| !s.ready) {
        l.health = Health::Failure;
        let (_, details) = from_readiness(Some(s), Health::Ok);
        l.details.extend(details);
    }
    l
}

fn datapath(st: &Status) -> Vec<Line> {
    let dp = &st.datapath;
    let (mut health, details) = from_readiness(subsystem(st, "datapath"), Health::Ok);
    if !dp.ready {
        health = Health::Failure;
    }
    let mut out = vec![line(
        "datapath",
        health,
        format!(
            "pinned under {}{}",
            dp.bpf_root,
            if dp.adopted {
                " (adopted from a previous agent)"
            } else {
                ""
            }
        ),
        details,
    )];
    if !dp.tc_attach.is_empty() {
        out.push(line(
            "tc attach",
            Health::Ok,
            dp.tc_attach.clone(),
            Vec::new(),
        ));
    }
    for d in &dp.degraded {
        out.push(line("kernel", Health::Warning, d.clone(), Vec::new()));
    }
    let (ns_health, ns_details) = from_readiness(subsystem(st, "north-south"), Health::Disabled);
    if dp.devices.is_empty() {
        out.push(line(
            "north-south",
            ns_health,
            if ns_health == Health::Disabled {
                "off (--devices none)".into()
            } else {
                "no device".into()
            },
            ns_details.clone(),
        ));
    }
    for d in &dp.devices {
        let hook = dp
            .ingress
            .iter()
            .find(|i| i.device == d.name)
            .map_or("not attached", |i| i.hook.as_str());
        out.push(line(
            &format!("device {}", d.name),
            ns_health,
            format!(
                "{hook} ingress + tc egress ({}): {}",
                dp.device_selection,
                d.addresses.join(", ")
            ),
            ns_details.clone(),
        ));
    }
    out.extend(host_routing(&dp.host_routing));
    out
}

/// Cilium's "Host Routing" line: who forwards pod traffic, on which pod devices, and what
/// went past the stack. None from an agent that does not report it.
fn host_routing(h: &HostRoutingView) -> Option<Line> {
    let (health, summary) = match h.mode.as_str() {
        "" => return None,
        "bpf" => {
            let netkit = h.netkit_devices.len();
            let veth = h.pod_devices.len().saturating_sub(netkit);
            let overlay = h
                .overlay_device
                .as_ref()
                .map_or(String::new(), |d| format!(" and {d}"));
            (
                Health::Ok,
                format!(
                    "BPF on {} pod devices ({netkit} netkit, {veth} veth){overlay}: {} packets into pods, {} out of devices ({} neighbour-resolved), {} left to the stack",
                    h.pod_devices.len(),
                    h.to_pod_packets,
                    h.redirected_packets,
                    h.neigh_packets,
                    h.stack_packets
                ),
            )
        }
        "legacy" => (
            Health::Disabled,
            "legacy (--host-routing legacy): the stack forwards pod traffic".into(),
        ),
        other => (
            Health::Warning,
            format!("{other}: the program did not load, the stack forwards pod traffic"),
        ),
    };
    Some(line("host routing", health, summary, h.pod_devices.clone()))
}

fn socket_lb(st: &Status) -> Line {
    let (health, mut details) = from_readiness(subsystem(st, "datapath"), Health::Ok);
    let Some(a) = &st.last_apply else {
        return line(
            "socket-lb",
            Health::Failure,
            format!("cgroup {}: nothing applied yet", st.datapath.cgroup),
            details,
        );
    };
    details.push(format!(
        "generation {}: {} map operations in {} µs",
        a.generation, a.ops, a.duration_us
    ));
    let (health, summary) = match &a.error {
        Some(e) => (Health::Failure, format!("the last apply failed: {e}")),
        None => (
            health,
            format!(
                "cgroup {}: {} services, {} frontends, {} backends",
                st.datapath.cgroup, a.services, a.frontends, a.backends
            ),
        ),
    };
    line("socket-lb", health, summary, details)
}

fn routing(routes: &RoutesView) -> Line {
    if routes.mode.is_empty() || routes.mode == "off" {
        return line("routing", Health::Disabled, "off".into(), Vec::new());
    }
    let count = |mode: &str| routes.routes.iter().filter(|r| r.mode == mode).count();
    let failing: Vec<String> = routes
        .routes
        .iter()
        .filter(|r| r.state == "error")
        .map(|r| {
            format!(
                "{} {}: {}",
                r.node,
                r.cidr,
                r.error.as_deref().unwrap_or("error")
            )
        })
        .collect();
    let health = if routes.last_error.is_some() || !failing.is_empty() {
        Health::Warning
    } else {
        Health::Ok
    };
    let mut summary = format!(
        "{}: {} routes ({} native, {} vxlan)",
        routes.mode,
        routes.routes.len(),
        count("native"),
        count("vxlan")
    );
    if let Some(m) = routes.pod_mtu {
        let _ = write!(summary, ", pod MTU {m}");
    }
    let mut details: Vec<String> = routes
        .routes
        .iter()
        .map(|r| {
            format!(
                "{} {} {} via {} ({})",
                r.node,
                r.cidr,
                r.mode,
                r.via.as_deref().unwrap_or("-"),
                r.state
            )
        })
        .collect();
    details.extend(failing);
    details.extend(routes.problems.iter().cloned());
    details.extend(routes.last_error.iter().map(|e| format!("last error: {e}")));
    line("routing", health, summary, details)
}

fn masquerade(st: &Status) -> Line {
    match &st.masquerade {
        None => line(
            "masquerade",
            Health::Disabled,
            "off (no north-south devices)".into(),
            Vec::new(),
        ),
        Some(m) if !m.enabled => line("masquerade", Health::Disabled, "off".into(), Vec::new()),
        Some(m) => {
            let mut details = vec![format!("pod CIDRs: {}", m.pod_cidrs.join(", "))];
            if !m.exclude.is_empty() {
                details.push(format!("never masqueraded: {}", m.exclude.join(", ")));
            }
            line(
                "masquerade",
                Health::Ok,
                format!(
                    "on: {} SNAT flows, {} pod CIDRs",
                    m.snat_flows,
                    m.pod_cidrs.len()
                ),
                details,
            )
        }
    }
}

fn l2(v: &L2View) -> Line {
    let m = &v.membership;
    let owned: Vec<&str> = v
        .addresses
        .iter()
        .filter(|a| a.owner.as_deref() == Some(v.node.as_str()) && a.interface.is_some())
        .map(|a| a.address.as_str())
        .collect();
    let rejected = m.rejected.unauthenticated + m.rejected.bad_mac + m.rejected.replayed;
    let health = match (m.mode.as_str(), &m.error) {
        ("unbound", _) => Health::Failure,
        (_, Some(_)) => Health::Warning,
        _ if rejected > 0 => Health::Warning,
        _ => Health::Ok,
    };
    let mode = if m.mode.is_empty() { "off" } else { &m.mode };
    let mut summary = format!(
        "membership {mode}, {} members; {} of {} addresses announced here",
        v.members.len(),
        owned.len(),
        v.addresses.len()
    );
    if !owned.is_empty() {
        let _ = write!(summary, ": {}", owned.join(", "));
    }
    let mut details = Vec::new();
    if let Some(b) = &m.bind {
        details.push(format!(
            "bound to {b} ({})",
            m.bind_from.as_deref().unwrap_or("-")
        ));
    }
    details.push(format!("members: {}", v.members.join(", ")));
    if let Some(e) = &m.error {
        details.push(format!("error: {e}"));
    }
    if rejected + m.rejected.malformed > 0 {
        details.push(format!(
            "refused datagrams: {} unauthenticated, {} bad MAC, {} replayed, {} malformed",
            m.rejected.unauthenticated,
            m.rejected.bad_mac,
            m.rejected.replayed,
            m.rejected.malformed
        ));
    }
    if let Some(h) = &v.claim_hold {
        details.push(format!("claims held ({})", h.reason));
    }
    for a in &v.addresses {
        details.push(format!(
            "{} {} owner {} ({})",
            a.address,
            a.service,
            a.owner.as_deref().unwrap_or("-"),
            a.reason
        ));
    }
    line("l2", health, summary, details)
}

fn cni(st: &Status) -> Line {
    let (health, details) = from_readiness(subsystem(st, "cni"), Health::Disabled);
    let summary = match (health, details.first()) {
        (Health::Disabled, _) => "not installed by the agent (--cni-conf-dir none)".into(),
        (_, Some(d)) => d.clone(),
        (_, None) => String::new(),
    };
    line(
        "cni",
        health,
        summary,
        details.into_iter().skip(1).collect(),
    )
}

fn source(st: &Status) -> Line {
    let (mut health, mut details) = from_readiness(subsystem(st, "source"), Health::Failure);
    let noted = !st.source_errors.is_empty() || !st.unserved_ports.is_empty();
    if noted && health == Health::Ok {
        health = Health::Warning;
    }
    details.extend(
        st.source_errors
            .iter()
            .map(|e| format!("{}: {}", e.path, e.message)),
    );
    details.extend(st.unserved_ports.iter().cloned());
    let mut summary = format!("{}: {} errors", st.source, st.source_errors.len());
    if !st.unserved_ports.is_empty() {
        let _ = write!(summary, ", {} ports not served", st.unserved_ports.len());
    }
    line("source", health, summary, details)
}

fn api(st: &Status) -> Line {
    let a = &st.api;
    let mut summary = format!("unix {}", a.socket);
    if let Some(t) = &a.tls {
        let _ = write!(summary, ", TLS {t} (client certificates)");
    }
    if let Some(m) = &a.metrics {
        let _ = write!(summary, ", metrics {m}");
    }
    line("api", Health::Ok, summary, Vec::new())
}

/// Every line, in display order.
#[must_use]
pub fn report(st: &Status, l2_view: &L2View, routes: &RoutesView) -> Vec<Line> {
    let mut out = datapath(st);
    out.push(socket_lb(st));
    out.push(with_readiness(routing(routes), subsystem(st, "routing")));
    out.push(masquerade(st));
    out.push(with_readiness(l2(l2_view), subsystem(st, "l2")));
    out.push(cni(st));
    out.push(source(st));
    out.push(api(st));
    // Subsystems the readiness model knows that no line above covers.
    let covered = ["datapath", "north-south", "cni", "source", "l2", "routing"];
    for s in st
        .subsystems
        .iter()
        .filter(|s| !covered.contains(&s.name.as_str()))
    {
        let (health, details) = from_readiness(Some(s), Health::Ok);
        out.push(line(&s.name, health, s.detail.clone(), details));
    }
    out
}

/// `cilium status`'s layout: `Name:   Health   summary`, details indented under it.
#[must_use]
pub fn render(st: &Status, lines: &[Line], verbose: bool) -> String {
    let mut out = format!(
        "ferrite {} on node {}\n",
        if st.version.is_empty() {
            "?"
        } else {
            &st.version
        },
        st.node_name
    );
    let width = lines
        .iter()
        .map(|l| l.subsystem.chars().count())
        .max()
        .unwrap_or(0)
        + 1;
    for l in lines {
        let name = format!("{}:", l.subsystem);
        let _ = writeln!(
            out,
            "{name:<w$}  {:<8}  {}",
            l.health.label(),
            l.summary,
            w = width
        );
        if verbose || l.health == Health::Failure {
            for d in &l.details {
                let _ = writeln!(out, "{:<w$}    {d}", "", w = width + 8);
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "status_report_tests.rs"]
mod tests;
