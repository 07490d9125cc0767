//! `ferrite observe`: flow events with `hubble observe`'s habits — filters, `--last`,
//! `--since`, `-f` to follow, compact lines by default, `-o json` (one JSON object a line) or
//! `-o table`.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use argh::FromArgs;

use super::output::table;
use super::query::fetch;
use crate::api::FlowsView;
use crate::flows::filter::{FlowFilter, FlowQuery, Labels};
use crate::flows::{Flow, compact};

/// Show flow events: what the datapath did to each new flow (like `hubble observe`).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "observe")]
pub struct ObserveCmd {
    /// keep printing new flows as they happen
    #[argh(switch, short = 'f')]
    pub follow: bool,
    /// the newest N flows first (default 20; with -f only new ones unless set)
    #[argh(option)]
    pub last: Option<usize>,
    /// only flows newer than this (e.g. 30s, 5m, 2h)
    #[argh(option)]
    pub since: Option<String>,
    /// FORWARDED or DROPPED
    #[argh(option)]
    pub verdict: Option<String>,
    /// sock-lb, north-south, masquerade or l2
    #[argh(option, long = "type")]
    pub kind: Option<String>,
    /// TCP, UDP, ICMP, ICMPv6, ARP or NDP
    #[argh(option)]
    pub protocol: Option<String>,
    /// a source, destination or translated port
    #[argh(option)]
    pub port: Option<u16>,
    /// the source address
    #[argh(option)]
    pub from_ip: Option<String>,
    /// the destination or translated address
    #[argh(option)]
    pub to_ip: Option<String>,
    /// any address of the flow
    #[argh(option)]
    pub ip: Option<String>,
    /// the service (namespace/name or name)
    #[argh(option)]
    pub service: Option<String>,
    /// the source pod: [namespace/]name-prefix (no namespace: default)
    #[argh(option)]
    pub from_pod: Option<String>,
    /// the destination pod (the backend): [namespace/]name-prefix
    #[argh(option)]
    pub to_pod: Option<String>,
    /// the source or destination pod: [namespace/]name-prefix
    #[argh(option)]
    pub pod: Option<String>,
    /// the source pod's namespace
    #[argh(option)]
    pub from_namespace: Option<String>,
    /// the destination pod's namespace
    #[argh(option)]
    pub to_namespace: Option<String>,
    /// the source or destination pod's namespace
    #[argh(option)]
    pub namespace: Option<String>,
    /// the source pod's labels: k=v or k, comma-separated
    #[argh(option)]
    pub from_label: Option<String>,
    /// the destination pod's labels: k=v or k, comma-separated
    #[argh(option)]
    pub to_label: Option<String>,
    /// the source's or the destination's labels: k=v or k, comma-separated
    #[argh(option)]
    pub label: Option<String>,
    /// invert the filter
    #[argh(switch)]
    pub not: bool,
    /// output: compact (default), json (one object a line) or table
    #[argh(option, short = 'o', default = "String::from(\"compact\")")]
    pub output: String,
    /// the agent's API socket
    #[argh(option, default = "super::default_api_socket()")]
    pub api_socket: PathBuf,
    /// ask every node's agent (its TLS listener, --api-listen) and merge by time, like
    /// hubble-relay; the nodes come from this node's agent
    #[argh(switch)]
    pub all_nodes: bool,
    /// with --all-nodes: the agents' TLS port (default 9443)
    #[argh(option, default = "9443")]
    pub api_port: u16,
    /// with --all-nodes: this client's certificate (PEM), signed by the agents' --api-client-ca
    #[argh(option)]
    pub tls_cert: Option<PathBuf>,
    /// with --all-nodes: this client's private key (PEM)
    #[argh(option)]
    pub tls_key: Option<PathBuf>,
    /// with --all-nodes: the CA (PEM) that signed the agents' server certificates
    #[argh(option)]
    pub tls_ca: Option<PathBuf>,
}

/// `30s`, `5m`, `2h`, `1d` (a bare number is seconds).
pub fn parse_since(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("--since {text:?}: a number with s, m, h or d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("--since {text:?}: unit s, m, h or d")),
    };
    Ok(Duration::from_secs(secs))
}

fn query_of(cmd: &ObserveCmd) -> Result<FlowQuery, String> {
    let ip = |flag: &str, v: &Option<String>| {
        v.as_deref()
            .map(|s| {
                s.parse()
                    .map_err(|_| format!("{flag} {s:?}: not an IP address"))
            })
            .transpose()
    };
    let labels =
        |flag: &str, v: &Option<String>| v.as_deref().map(|s| Labels::parse(flag, s)).transpose();
    let q = FlowQuery {
        after: None,
        last: None,
        filter: FlowFilter {
            verdict: cmd.verdict.as_deref().map(str::to_ascii_uppercase),
            kind: cmd.kind.as_deref().map(str::to_ascii_lowercase),
            protocol: cmd.protocol.as_deref().map(|p| {
                if p.eq_ignore_ascii_case("icmpv6") {
                    "ICMPv6".to_owned()
                } else {
                    p.to_ascii_uppercase()
                }
            }),
            port: cmd.port,
            from_ip: ip("--from-ip", &cmd.from_ip)?,
            to_ip: ip("--to-ip", &cmd.to_ip)?,
            ip: ip("--ip", &cmd.ip)?,
            service: cmd.service.clone(),
            from_pod: cmd.from_pod.clone(),
            to_pod: cmd.to_pod.clone(),
            pod: cmd.pod.clone(),
            from_namespace: cmd.from_namespace.clone(),
            to_namespace: cmd.to_namespace.clone(),
            namespace: cmd.namespace.clone(),
            from_label: labels("--from-label", &cmd.from_label)?,
            to_label: labels("--to-label", &cmd.to_label)?,
            label: labels("--label", &cmd.label)?,
            not: cmd.not,
        },
    };
    // The agent checks the values; the same parser runs here so a typo fails before any request.
    FlowQuery::parse(Some(&q.to_query()))
}

fn clock(ms: u64) -> String {
    let secs = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60,
        ms % 1000
    )
}

fn row(f: &Flow) -> Vec<String> {
    let opt = |ip: &Option<String>, port: Option<u16>| match (ip, port) {
        (Some(ip), Some(p)) => format!("{ip}:{p}"),
        (Some(ip), None) => ip.clone(),
        _ => "-".into(),
    };
    vec![
        clock(f.time_unix_ms),
        f.node.clone(),
        f.kind.clone(),
        opt(&f.source_ip, f.source_port),
        format!("{}:{}", f.destination_ip, f.destination_port),
        opt(&f.translated_ip, f.translated_port),
        f.service.clone().unwrap_or_else(|| "-".into()),
        f.protocol.clone(),
        f.verdict.clone(),
        f.drop_reason.clone().unwrap_or_default(),
    ]
}

const HEADER: [&str; 10] = [
    "TIME",
    "NODE",
    "TYPE",
    "SOURCE",
    "DESTINATION",
    "TRANSLATED",
    "SERVICE",
    "PROTO",
    "VERDICT",
    "REASON",
];

fn print(flows: &[Flow], output: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match output {
        "json" => {
            for f in flows {
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string(f).map_err(std::io::Error::other)?
                )?;
            }
        }
        "table" => {
            let rows: Vec<Vec<String>> = flows.iter().map(row).collect();
            write!(out, "{}", table(&HEADER, &rows))?;
        }
        _ => {
            for f in flows {
                writeln!(out, "{}", compact(f, &clock(f.time_unix_ms)))?;
            }
        }
    }
    out.flush()
}

/// Prints one answer's flows; `Some(exit code)` when the command is done (not following, or
/// stdout closed).
pub(super) fn show(
    cmd: &ObserveCmd,
    mut flows: Vec<Flow>,
    first: bool,
    cutoff: Option<u64>,
) -> Option<i32> {
    if first && cmd.follow && cmd.last.is_none() && cmd.since.is_none() {
        // Following without --last: only what happens from now on.
        flows.clear();
    }
    if let Some(c) = cutoff {
        flows.retain(|f| f.time_unix_ms >= c);
    }
    if let Err(e) = print(&flows, &cmd.output) {
        // A closed pipe (`| head`) ends the command quietly.
        return Some(i32::from(e.kind() != std::io::ErrorKind::BrokenPipe));
    }
    (!cmd.follow).then_some(0)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub fn run(cmd: &ObserveCmd) -> i32 {
    if !["compact", "json", "table"].contains(&cmd.output.as_str()) {
        eprintln!("error: -o {:?}: compact, json or table", cmd.output);
        return 2;
    }
    let (mut q, since) = match query_of(cmd).and_then(|q| {
        let since = cmd.since.as_deref().map(parse_since).transpose()?;
        Ok((q, since))
    }) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let cutoff = since.map(|d| now_ms().saturating_sub(u64::try_from(d.as_millis()).unwrap_or(0)));
    q.last = Some(match (cmd.last, since, cmd.follow) {
        (Some(n), _, _) => n,
        (None, Some(_), _) => crate::flows::filter::MAX_LAST,
        (None, None, true) => 1,
        (None, None, false) => 20,
    });
    if cmd.all_nodes {
        return super::observe_all::run(cmd, q, cutoff);
    }
    let mut first = true;
    loop {
        let v: FlowsView = match fetch(&cmd.api_socket, &format!("/v1/flows?{}", q.to_query())) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        };
        if first && !v.stats.enabled {
            eprintln!("flow events are off on this agent (--flow-rate 0)");
        }
        if let Some(code) = show(cmd, v.flows, first, cutoff) {
            return code;
        }
        q.after = Some(v.stats.latest_seq.max(q.after.unwrap_or(0)));
        q.last = Some(crate::flows::filter::MAX_LAST);
        first = false;
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_hubble_style_durations() {
        assert_eq!(parse_since("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_since("5m").unwrap(), Duration::from_mins(5));
        assert_eq!(parse_since("2h").unwrap(), Duration::from_hours(2));
        assert_eq!(parse_since("45").unwrap(), Duration::from_secs(45));
        assert!(parse_since("5y").is_err());
        assert!(parse_since("m").is_err());
    }

    #[test]
    fn clock_shows_utc_time_of_day_with_milliseconds() {
        assert_eq!(clock(1_700_000_000_123), "22:13:20.123");
    }
}
