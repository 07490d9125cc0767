//! `ferrite policy`: NetworkPolicy as the agent enforces it for this node's pods.

use std::fmt::Write as _;
use std::path::PathBuf;

use argh::FromArgs;

use super::output::{OutputFormat, table};
use super::query::show;
use crate::policy::EndpointReport;

/// Show, per local pod, whether it is isolated, the policies that select it and its allow rules.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "policy")]
pub struct PolicyCmd {
    /// output format: table (default) or json
    #[argh(option, short = 'o', default = "OutputFormat::Table")]
    pub output: OutputFormat,
    /// the agent's API socket
    #[argh(option, default = "super::default_api_socket()")]
    pub api_socket: PathBuf,
}

fn isolation(e: &EndpointReport) -> &'static str {
    match (e.ingress_isolated, e.egress_isolated) {
        (false, false) => "-",
        (true, false) => "ingress",
        (false, true) => "egress",
        (true, true) => "ingress,egress",
    }
}

/// The human view: one row per pod, then its rules.
#[must_use]
pub fn render(endpoints: &[EndpointReport]) -> String {
    let rows: Vec<Vec<String>> = endpoints
        .iter()
        .map(|e| {
            vec![
                e.pod.clone(),
                e.identity.to_string(),
                e.addresses
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                isolation(e).to_owned(),
                if e.policies.is_empty() {
                    "-".to_owned()
                } else {
                    e.policies.join(",")
                },
            ]
        })
        .collect();
    let mut out = table(
        &["POD", "IDENTITY", "ADDRESSES", "ISOLATED", "POLICIES"],
        &rows,
    );
    for e in endpoints.iter().filter(|e| !e.rules.is_empty()) {
        let _ = writeln!(out, "\n{}:", e.pod);
        for r in &e.rules {
            let _ = writeln!(out, "  allow {r}");
        }
    }
    out
}

pub fn run(cmd: &PolicyCmd) -> i32 {
    show(
        &cmd.api_socket,
        "/v1/policy",
        cmd.output,
        |v: &Vec<EndpointReport>| render(v),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolated_pods_show_their_policies_and_rules() {
        let e = EndpointReport {
            pod: "x/a".into(),
            endpoint: 7,
            identity: 300,
            addresses: vec!["10.0.0.1".parse().unwrap()],
            ingress_isolated: true,
            egress_isolated: false,
            policies: vec!["x/deny".into()],
            rules: vec!["ingress from 2 pods on TCP/80 (x/deny)".into()],
        };
        let text = render(&[e]);
        assert!(text.contains("x/a") && text.contains("ingress") && text.contains("x/deny"));
        assert!(text.contains("allow ingress from 2 pods on TCP/80"));
    }
}
