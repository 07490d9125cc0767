//! Flow events end to end, as root: the agent's socket LB (cgroup hooks) sends one event per
//! translated or refused `connect()`/`sendmsg()` through the pinned ring buffer, and
//! `ferrite observe` shows them — with the service, the chosen backend, the verdict and the
//! drop reason — within a second; its filters and outputs work; a flood of refused connects is
//! capped at `--flow-rate` per CPU and counted, with the agent's memory bounded.

mod common;

use std::time::{Duration, Instant};

use common::{AgentLab, PodLab, lab_bin, require_root, service_yaml, slice_yaml};
use ferrite_lab::wait_until;
use serde_json::Value;

fn lab(prefix: &str, args: &[&str]) -> (PodLab, AgentLab) {
    require_root();
    let pods = PodLab::new(prefix, 2);
    let mut agent = AgentLab::new(prefix);
    let web = service_yaml("web", &["10.96.0.10"], None)
        + &slice_yaml(
            "web-v4",
            "web",
            "IPv4",
            &[(&pods.pod_v4(0), true), (&pods.pod_v4(1), true)],
        );
    agent.write("web.yaml", &web);
    let empty = service_yaml("empty", &["10.96.0.11"], None)
        + &slice_yaml("empty-v4", "empty", "IPv4", &[]);
    agent.write("empty.yaml", &empty);
    // The backends as pods of the model (their flows name them).
    for i in 0..2 {
        agent.write(
            &format!("pod{i}.yaml"),
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: web-{i}, namespace: test, labels: \
                 {{app: web, idx: '{i}'}}}}\nspec: {{nodeName: test-node}}\n\
                 status: {{phase: Running, podIP: {}}}\n",
                pods.pod_v4(i)
            ),
        );
    }
    let source = format!("dir:{}", agent.manifests.display());
    agent.start_with(&source, args, &[], true);
    agent.wait_for_backends("10.96.0.10:80", 2);
    (pods, agent)
}

/// `ferrite observe ARGS -o json`: one flow per line.
fn observe(agent: &AgentLab, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["observe", "-o", "json"];
    all.extend_from_slice(args);
    let out = agent.ferrite(&all);
    assert!(out.status.success(), "ferrite observe {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn observe_text(agent: &AgentLab, args: &[&str]) -> String {
    let mut all = vec!["observe"];
    all.extend_from_slice(args);
    let out = agent.ferrite(&all);
    assert!(out.status.success(), "ferrite observe {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits (≤ `limit`) until `observe ARGS` shows at least `n` flows; returns them and the wait.
fn wait_flows(
    agent: &AgentLab,
    args: &[&str],
    n: usize,
    limit: Duration,
) -> (Vec<Value>, Duration) {
    let t0 = Instant::now();
    let mut flows = Vec::new();
    let _ = wait_until(limit, Duration::from_millis(50), || {
        flows = observe(agent, args);
        flows.len() >= n
    });
    (flows, t0.elapsed())
}

#[test]
fn socket_lb_translations_and_refusals_show_in_observe_within_a_second() {
    let (pods, agent) = lab("fl1", &[]);
    let backends = [pods.pod_v4(0), pods.pod_v4(1)];
    let r = agent.client(
        &pods.node,
        &[
            "--target",
            "10.96.0.10:80",
            "--count",
            "5",
            "--timeout-ms",
            "500",
        ],
    );
    assert_eq!(r.ok, 5, "{r:?}");
    let (flows, waited) = wait_flows(
        &agent,
        &[
            "--type",
            "sock-lb",
            "--to-ip",
            "10.96.0.10",
            "--protocol",
            "TCP",
        ],
        5,
        Duration::from_secs(5),
    );
    assert_eq!(flows.len(), 5, "{flows:?}\n{}", agent.log());
    assert!(
        waited <= Duration::from_secs(1),
        "the flows took {waited:?} to show"
    );
    for f in &flows {
        assert_eq!(f["verdict"], "FORWARDED", "{f}");
        assert_eq!(f["service"], "test/web", "{f}");
        assert_eq!(f["destination_ip"], "10.96.0.10", "{f}");
        assert_eq!(f["destination_port"], 80, "{f}");
        assert_eq!(f["translated_port"], 8080, "{f}");
        assert_eq!(f["node"], "test-node", "{f}");
        assert!(f["socket_cookie"].as_u64().is_some(), "{f}");
        assert_backend_pod(f, &backends);
    }

    // UDP (sendmsg) to the dns port, and a refused connect to the service without endpoints.
    let r = agent.client(
        &pods.node,
        &[
            "--target",
            "10.96.0.10:53",
            "--proto",
            "udp",
            "--count",
            "2",
            "--timeout-ms",
            "500",
        ],
    );
    assert_eq!(r.ok, 2, "{r:?}");
    let r = agent.client(
        &pods.node,
        &[
            "--target",
            "10.96.0.11:80",
            "--count",
            "3",
            "--timeout-ms",
            "300",
        ],
    );
    assert_eq!(r.ok, 0, "{r:?}");
    let (udp, _) = wait_flows(
        &agent,
        &["--protocol", "UDP", "--port", "53"],
        2,
        Duration::from_secs(2),
    );
    assert!(udp.len() >= 2, "{udp:?}");
    assert!(udp.iter().all(|f| f["translated_port"] == 5353), "{udp:?}");
    let (dropped, waited) =
        wait_flows(&agent, &["--verdict", "DROPPED"], 3, Duration::from_secs(5));
    assert_eq!(dropped.len(), 3, "{dropped:?}");
    assert!(waited <= Duration::from_secs(1), "drops took {waited:?}");
    for f in &dropped {
        assert_eq!(f["drop_reason"], "no-backend", "{f}");
        assert_eq!(f["service"], "test/empty", "{f}");
        assert!(f.get("translated_ip").is_none(), "{f}");
    }
    assert_filters_and_outputs(&agent);
    assert_pod_filters(&agent, &flows[0]);
    assert_follow_prints_new_flows(&pods, &agent);
    assert_stream_writes_new_flows_and_ends_with_the_client(&pods, &agent);
}

/// `--to-pod`, `--pod`, `--namespace`, `--label` select by the pods of the model; the compact
/// output names the backend pod.
fn assert_pod_filters(agent: &AgentLab, seen: &Value) {
    let pod = seen["destination_pod"].as_str().expect("a destination pod");
    let idx = pod.strip_prefix("test/web-").expect("a web pod");
    let to_it = observe(agent, &["--to-pod", pod, "--last", "100"]);
    assert!(!to_it.is_empty(), "--to-pod {pod}");
    assert!(
        to_it.iter().all(|f| f["destination_pod"] == pod),
        "{to_it:?}"
    );
    let by_label = observe(
        agent,
        &["--label", &format!("app=web,idx={idx}"), "--last", "100"],
    );
    assert_eq!(by_label.len(), to_it.len(), "{by_label:?}");
    let in_ns = observe(agent, &["--to-namespace", "test", "--last", "100"]);
    assert!(
        in_ns.len() >= to_it.len() && in_ns.iter().all(|f| f["destination_pod"] != Value::Null)
    );
    // No namespace means `default` (as in Hubble): none of these pods.
    assert!(observe(agent, &["--pod", "web", "--last", "100"]).is_empty());
    assert!(observe(agent, &["--from-namespace", "test"]).is_empty());
    let not_it = observe(agent, &["--not", "--to-pod", pod, "--last", "100"]);
    assert!(
        not_it.iter().all(|f| f["destination_pod"] != pod),
        "{not_it:?}"
    );
    let compact = observe_text(
        agent,
        &["--to-pod", pod, "--type", "sock-lb", "--last", "1"],
    );
    assert!(compact.contains(&format!("=> {pod}:")), "{compact}");
    let out = agent.ferrite(&["observe", "--label", "=web"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// `/v1/flows/stream` over the unix socket: NDJSON, a new matching flow is written within a
/// second, others are not, and the stream ends when the client goes away.
fn assert_stream_writes_new_flows_and_ends_with_the_client(pods: &PodLab, agent: &AgentLab) {
    use std::io::BufRead as _;
    let headers = agent.work.path().join("stream-headers");
    let mut curl = std::process::Command::new("curl")
        .args(["-sN", "-D"])
        .arg(&headers)
        .arg("--unix-socket")
        .arg(&agent.socket)
        .arg("http://ferrite/v1/flows/stream?type=sock-lb&to_pod=test%2Fweb")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl (apt-get install curl)");
    let stdout = curl.stdout.take().expect("curl stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let open = wait_until(Duration::from_secs(3), Duration::from_millis(50), || {
        stats(agent)["streams"] == 1
    });
    assert!(open.is_ok(), "the stream did not open: {}", stats(agent));
    let head = std::fs::read_to_string(&headers).unwrap_or_default();
    assert!(
        head.starts_with("HTTP/1.1 200") && head.contains("application/x-ndjson"),
        "{head}"
    );
    // Opened without `last`: only what happens from now on.
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    // A refused connect (no pod) is filtered out; the connect to a web pod is written.
    let connect = |target: &str, ok: u64| {
        let r = agent.client(
            &pods.node,
            &["--target", target, "--count", "1", "--timeout-ms", "500"],
        );
        assert_eq!(r.ok, ok, "{target}: {r:?}");
        Instant::now()
    };
    connect("10.96.0.11:80", 0);
    let done = connect("10.96.0.10:80", 1);
    let (at, line) = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("a flow line on the stream");
    let line = line.expect("a stream line");
    let waited = at.saturating_duration_since(done);
    assert!(waited <= Duration::from_secs(1), "the line took {waited:?}");
    let f: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(f["verdict"], "FORWARDED", "{f}");
    assert_eq!(f["service"], "test/web", "{f}");
    assert!(
        f["destination_pod"]
            .as_str()
            .unwrap_or_default()
            .starts_with("test/web-"),
        "{f}"
    );
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "one line a flow"
    );
    // The client goes away: the agent ends the stream.
    let _ = curl.kill();
    let _ = curl.wait();
    let closed = wait_until(Duration::from_secs(3), Duration::from_millis(50), || {
        stats(agent)["streams"] == 0
    });
    assert!(
        closed.is_ok(),
        "the stream outlived its client: {}",
        stats(agent)
    );
    // A bad filter is a 400 with a JSON error, before any streaming.
    let out = std::process::Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(&agent.socket)
        .arg("http://ferrite/v1/flows/stream?verdict=maybe")
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.ends_with("\n400") && text.contains("\"error\""),
        "{text}"
    );
}

/// A socket-LB flow went to one of `backends`, named as its pod with its labels (from the
/// model); the client is a socket (no pod).
fn assert_backend_pod(f: &Value, backends: &[String]) {
    let to = f["translated_ip"].as_str().unwrap_or_default();
    let i = backends
        .iter()
        .position(|b| b == to)
        .unwrap_or_else(|| panic!("{f}: not a backend"));
    assert_eq!(f["destination_pod"], format!("test/web-{i}"), "{f}");
    assert_eq!(
        f["destination_labels"],
        serde_json::json!(["app=web", format!("idx={i}")]),
        "{f}"
    );
    assert_eq!(f["traffic_direction"], "egress", "{f}");
    assert_eq!(f["is_reply"], false, "a connect() opens its flow: {f}");
    assert!(f.get("source_pod").is_none(), "{f}");
}

/// `--not`, `--service`, `--last`, the compact and table outputs, bad filters.
fn assert_filters_and_outputs(agent: &AgentLab) {
    // Filters: --not inverts, --service matches by name, --last bounds the answer.
    let forwarded = observe(agent, &["--not", "--verdict", "DROPPED", "--last", "100"]);
    assert!(forwarded.len() >= 7 && forwarded.iter().all(|f| f["verdict"] == "FORWARDED"));
    assert_eq!(observe(agent, &["--service", "empty"]).len(), 3);
    assert_eq!(observe(agent, &["--last", "2"]).len(), 2);
    assert!(observe(agent, &["--from-ip", "192.0.2.1"]).is_empty());
    // The human outputs.
    let compact = observe_text(agent, &["--verdict", "DROPPED", "--last", "1"]);
    assert!(
        compact.contains("sock-lb: socket -> 10.96.0.11:80 (test/empty) TCP DROPPED (no-backend)"),
        "{compact}"
    );
    let table = observe_text(
        agent,
        &[
            "-o",
            "table",
            "--type",
            "sock-lb",
            "--verdict",
            "FORWARDED",
            "--last",
            "3",
        ],
    );
    assert!(
        table.starts_with("TIME") && table.contains("test/web"),
        "{table}"
    );
    // Bad filters fail before any request, with the reason.
    let out = agent.ferrite(&["observe", "--verdict", "maybe"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("verdict"),
        "{out:?}"
    );
}

/// A flow made after `observe -f` started is printed by it, once.
fn assert_follow_prints_new_flows(pods: &PodLab, agent: &AgentLab) {
    // Follow: a flow made after `observe -f` started is printed by it.
    let mut follow = std::process::Command::new(common::FERRITE)
        .args([
            "observe",
            "-f",
            "-o",
            "json",
            "--type",
            "sock-lb",
            "--api-socket",
        ])
        .arg(&agent.socket)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn observe -f");
    std::thread::sleep(Duration::from_millis(600));
    let r = agent.client(
        &pods.node,
        &[
            "--target",
            "10.96.0.10:80",
            "--count",
            "1",
            "--timeout-ms",
            "500",
        ],
    );
    assert_eq!(r.ok, 1);
    std::thread::sleep(Duration::from_secs(1));
    let _ = follow.kill();
    let out = follow.wait_with_output().expect("observe -f output");
    let followed: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(followed.len(), 1, "observe -f printed {followed:?}");
    assert!(followed[0].contains("\"FORWARDED\""), "{followed:?}");
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("agent status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// The counters `/v1/flows` answers with (the CLI prints only flows).
fn stats(agent: &AgentLab) -> Value {
    let route = std::process::Command::new("curl")
        .args(["-s", "--unix-socket"])
        .arg(&agent.socket)
        .arg("http://ferrite/v1/flows?last=1")
        .output()
        .expect("curl (apt-get install curl)");
    let v: Value = serde_json::from_slice(&route.stdout).expect("flows JSON");
    v["stats"].clone()
}

/// One sample of the agent's `/metrics` (0 when absent).
fn metric(agent: &AgentLab, sample: &str) -> u64 {
    let out = std::process::Command::new("curl")
        .args(["-s", "--unix-socket"])
        .arg(&agent.socket)
        .arg("http://ferrite/metrics")
        .output()
        .expect("curl (apt-get install curl)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_flood_of_refused_connects_is_capped_at_the_rate_and_counted() {
    let rate = 200u64;
    let (pods, agent) = lab("fl2", &["--flow-rate", "200"]);
    let pid = agent.agent.as_ref().expect("agent").id();
    let rss_before = rss_kb(pid);
    let t0 = Instant::now();
    let out = agent
        .cgroup
        .command(lab_bin(), Some(pods.node.ns()))
        .expect("connect-rate command")
        .args([
            "connect-rate",
            "--target",
            "10.96.0.11:80",
            "--duration-ms",
            "3000",
            "--threads",
            "2",
        ])
        .output()
        .expect("run connect-rate");
    let took = t0.elapsed();
    let secs = took.as_secs_f64();
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("connect-rate JSON");
    let refused = report["errors"].as_u64().unwrap_or(0);
    assert!(
        refused >= 20_000,
        "only {refused} refused connects: not a flood ({report})"
    );
    // Let the reader drain what was sent.
    std::thread::sleep(Duration::from_millis(500));
    let s = stats(&agent);
    let cpus =
        std::thread::available_parallelism().map_or(2, |n| u64::try_from(n.get()).unwrap_or(2));
    let emitted = s["emitted"].as_u64().unwrap();
    let limited = s["rate_limited"].as_u64().unwrap();
    eprintln!(
        "flood: {refused} refused connects in {secs:.1} s; emitted {emitted}, rate-limited {limited}, \
         ring full {}, received {}, history {}/{}",
        s["ring_full"], s["received"], s["in_history"], s["capacity"]
    );
    // Per CPU at most `rate` per started second (windows are per CPU and not aligned).
    let bound = rate * cpus * (took.as_secs() + 3);
    assert!(
        emitted <= bound,
        "{emitted} events sent, bound {bound}: {s}"
    );
    assert!(emitted >= rate, "the first window's events were sent: {s}");
    let ring_full = s["ring_full"].as_u64().unwrap();
    assert!(
        limited + emitted + ring_full >= refused,
        "every refusal was sent or counted: {s}"
    );
    assert!(limited > 0, "{s}");
    // /metrics counts every refusal, over the cap or not.
    let dropped = metric(
        &agent,
        "ferrite_flows_dropped_total{flow_type=\"sock-lb\",reason=\"no-backend\"}",
    );
    assert!(
        dropped >= refused,
        "ferrite_flows_dropped_total counted {dropped} of {refused} refusals"
    );
    assert_eq!(
        s["received"], s["emitted"],
        "the agent read everything sent: {s}"
    );
    assert!(s["in_history"].as_u64().unwrap() <= s["capacity"].as_u64().unwrap());
    let rss_after = rss_kb(pid);
    assert!(
        rss_after < rss_before + 16 * 1024,
        "agent RSS grew from {rss_before} kB to {rss_after} kB"
    );
    // The agent still serves, and flows still show.
    let r = agent.client(
        &pods.node,
        &[
            "--target",
            "10.96.0.10:80",
            "--count",
            "3",
            "--timeout-ms",
            "500",
        ],
    );
    assert_eq!(r.ok, 3, "{r:?}");
}
