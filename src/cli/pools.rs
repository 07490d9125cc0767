//! `ferrite pools`: LoadBalancer IP pools (blocks, counts, conditions) and what each
//! LoadBalancer service got, from a running agent.

use std::path::PathBuf;

use argh::FromArgs;

use super::output::{OutputFormat, table};
use super::query::{fetch, print_json};
use crate::api::{ConditionView, LbServiceView, PoolView, PoolsView};
use crate::model::{POOL_IPS_AVAILABLE, POOL_IPS_TOTAL, POOL_IPS_USED};

/// List LoadBalancer IP pools and the addresses LoadBalancer services got from them.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "pools")]
pub struct PoolsCmd {
    /// output format: table (default) or json
    #[argh(option, short = 'o', default = "OutputFormat::Table")]
    pub output: OutputFormat,
    /// the agent's API socket
    #[argh(option, default = "super::default_api_socket()")]
    pub api_socket: PathBuf,
}

pub fn run(cmd: &PoolsCmd) -> i32 {
    let view: PoolsView = match fetch(&cmd.api_socket, "/v1/pools") {
        Ok(view) => view,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    if cmd.output == OutputFormat::Json {
        return print_json(&view);
    }
    print!("{}", render(&view));
    0
}

/// The two tables: pools, then LoadBalancer services.
fn render(view: &PoolsView) -> String {
    let pools: Vec<Vec<String>> = view
        .pools
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                if p.blocks.is_empty() {
                    "-".into()
                } else {
                    p.blocks.join(",")
                },
                p.total.to_string(),
                p.used.to_string(),
                p.available.to_string(),
                conditions(p),
            ]
        })
        .collect();
    let mut out = table(
        &["POOL", "BLOCKS", "TOTAL", "USED", "AVAILABLE", "CONDITIONS"],
        &pools,
    );
    if !view.services.is_empty() {
        let services: Vec<Vec<String>> = view.services.iter().map(service_row).collect();
        out.push('\n');
        out.push_str(&table(
            &["SERVICE", "ADDRESSES", "POOL", "STATUS", "MESSAGE"],
            &services,
        ));
    }
    out
}

fn service_row(service: &LbServiceView) -> Vec<String> {
    let mut pools = service.pools.clone();
    pools.dedup();
    vec![
        service.service.clone(),
        if service.addresses.is_empty() {
            "(none)".into()
        } else {
            service.addresses.join(",")
        },
        if pools.is_empty() {
            "-".into()
        } else {
            pools.join(",")
        },
        service.reason.clone(),
        if service.satisfied {
            String::new()
        } else {
            service.message.clone()
        },
    ]
}

/// A condition worth a human's attention: the count conditions are already columns; others
/// show when they are True.
fn condition_note(condition: &ConditionView) -> Option<String> {
    let counted = [POOL_IPS_TOTAL, POOL_IPS_AVAILABLE, POOL_IPS_USED]
        .contains(&condition.condition_type.as_str());
    if counted || condition.status != "True" {
        return None;
    }
    let name = condition
        .condition_type
        .rsplit('/')
        .next()
        .unwrap_or_default();
    Some(format!("{name}: {}", condition.message))
}

/// The pool's notes (`ok` when none).
fn conditions(pool: &PoolView) -> String {
    let mut notes: Vec<String> = Vec::new();
    if pool.disabled {
        notes.push("disabled".into());
    }
    notes.extend(pool.conditions.iter().filter_map(condition_note));
    if notes.is_empty() {
        "ok".into()
    } else {
        notes.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(name: &str, conditions: Vec<ConditionView>) -> PoolView {
        PoolView {
            name: name.into(),
            blocks: vec!["10.0.0.0/30".into(), "10.0.1.1-10.0.1.2".into()],
            priority: 0,
            disabled: false,
            allow_first_last_ips: false,
            total: 4,
            used: 1,
            available: 3,
            conditions,
        }
    }

    fn condition(kind: &str, status: &str, message: &str) -> ConditionView {
        ConditionView {
            condition_type: kind.into(),
            status: status.into(),
            reason: "r".into(),
            message: message.into(),
        }
    }

    #[test]
    fn tables_show_pools_and_services() {
        let view = PoolsView {
            pools: vec![
                pool("lan", vec![condition(POOL_IPS_TOTAL, "Unknown", "4")]),
                pool(
                    "dup",
                    vec![condition(
                        "ferrite.dev/PoolConflict",
                        "True",
                        "overlaps lan",
                    )],
                ),
            ],
            services: vec![
                LbServiceView {
                    service: "ns/web".into(),
                    addresses: vec!["10.0.0.1".into()],
                    pools: vec!["lan".into()],
                    satisfied: true,
                    reason: "satisfied".into(),
                    message: "allocated".into(),
                },
                LbServiceView {
                    service: "ns/late".into(),
                    addresses: vec![],
                    pools: vec![],
                    satisfied: false,
                    reason: "out_of_ips".into(),
                    message: "every pool is full".into(),
                },
            ],
        };
        let text = render(&view);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("POOL") && lines[0].contains("CONDITIONS"),
            "{text}"
        );
        assert!(lines[1].contains("10.0.0.0/30,10.0.1.1-10.0.1.2") && lines[1].ends_with("ok"));
        assert!(lines[2].ends_with("PoolConflict: overlaps lan"), "{text}");
        assert!(lines[4].starts_with("SERVICE"), "{text}");
        assert!(lines[5].contains("10.0.0.1") && lines[5].trim_end().ends_with("satisfied"));
        assert!(lines[6].contains("(none)") && lines[6].ends_with("every pool is full"));
    }
}
