//! `ferrite routes`: the pod network between nodes as the agent programmed it.

use std::fmt::Write as _;
use std::path::PathBuf;

use argh::FromArgs;

use super::output::{OutputFormat, table};
use super::query::show;
use crate::routing::task::RoutesView;

/// Show how every other node's PodCIDRs are reached (native route or VXLAN), and their state.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "routes")]
pub struct RoutesCmd {
    /// output format: table (default) or json
    #[argh(option, short = 'o', default = "OutputFormat::Table")]
    pub output: OutputFormat,
    /// the agent's API socket
    #[argh(option, default = "super::default_api_socket()")]
    pub api_socket: PathBuf,
}

/// The human view.
pub fn render(v: &RoutesView) -> String {
    let mut out = format!("node {}; routing {}", v.node, v.mode);
    if let Some(x) = &v.vxlan {
        let _ = write!(
            out,
            "; {} vni {} port {} local {} mtu {}",
            x.device, x.vni, x.port, x.local, x.mtu
        );
    }
    if let Some(m) = v.pod_mtu {
        let _ = write!(out, "; pod MTU {m}");
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = v
        .routes
        .iter()
        .map(|r| {
            vec![
                r.node.clone(),
                r.cidr.clone(),
                r.mode.clone(),
                r.via.clone().unwrap_or_else(|| "-".into()),
                r.device.clone().unwrap_or_else(|| "-".into()),
                r.state.clone(),
                r.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["NODE", "PODCIDR", "MODE", "VIA", "DEVICE", "STATE", "ERROR"],
        &rows,
    ));
    for p in &v.problems {
        let _ = writeln!(out, "problem: {p}");
    }
    if let Some(e) = &v.last_error {
        let _ = writeln!(out, "last error: {e}");
    }
    out
}

pub fn run(cmd: &RoutesCmd) -> i32 {
    show(&cmd.api_socket, "/v1/routes", cmd.output, render)
}

#[cfg(test)]
mod tests {
    use crate::routing::task::{RouteView, RoutesView};

    #[test]
    fn the_table_shows_every_cidr_with_mode_next_hop_and_error() {
        let v = RoutesView {
            mode: "auto".into(),
            node: "n1".into(),
            routes: vec![
                RouteView {
                    node: "n2".into(),
                    cidr: "10.244.2.0/24".into(),
                    mode: "native".into(),
                    via: Some("192.168.50.2".into()),
                    device: Some("eth0".into()),
                    state: "ok".into(),
                    error: None,
                },
                RouteView {
                    node: "n4".into(),
                    cidr: "10.244.4.0/24".into(),
                    mode: "none".into(),
                    state: "error".into(),
                    error: Some("no InternalIP".into()),
                    ..RouteView::default()
                },
            ],
            pod_mtu: Some(1450),
            ..RoutesView::default()
        };
        let t = super::render(&v);
        assert!(
            t.starts_with("node n1; routing auto; pod MTU 1450\n"),
            "{t}"
        );
        assert!(
            t.contains("n2    10.244.2.0/24  native  192.168.50.2  eth0    ok"),
            "{t}"
        );
        assert!(t.contains("error  no InternalIP"), "{t}");
    }
}
