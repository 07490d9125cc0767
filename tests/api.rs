//! The agent's API end to end, as root, with the real agent on a `dir:` source: `/metrics`
//! read by the Prometheus project's own Python parser (every family, counters moving with
//! ClusterIP traffic, snapshots and real CNI ADD/DEL), the unix socket's mode, and the TCP
//! listener: TLS with client certificates only (plain TCP, no certificate and a foreign CA
//! refused), `/openapi.json` validated and the API fuzzed against it with schemathesis.

#![expect(
    clippy::float_cmp,
    reason = "the samples compared exactly are small integer counts, exact in f64"
)]

mod cni_common;
mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::pki::Pki;
use common::{AgentLab, PodLab, curl, require_root, require_tools, service_yaml, slice_yaml};
use ferrite_lab::wait_until;
use serde_json::{Value, json};

/// setup.sh installs schemathesis and the OpenAPI validator (pinned, from PyPI) here.
const API_VENV: &str = "/opt/ferrite-apitest";
/// Debian's python3 (python3-prometheus-client lives in its dist-packages).
const PYTHON: &str = "/usr/bin/python3";
const METRICS_ADDR: &str = "127.0.0.1:19962";
const TLS_ADDR: &str = "127.0.0.1:19443";

fn require_python() {
    require_tools(&["curl", "openssl"], "apt-get install curl openssl");
    let ok = Command::new(PYTHON)
        .args(["-c", "import prometheus_client.openmetrics.parser"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{PYTHON} cannot import prometheus_client: run `make setup` \
         (apt-get install python3-prometheus-client)"
    );
}

fn require_venv() {
    for tool in ["schemathesis", "openapi-spec-validator"] {
        let path = Path::new(API_VENV).join("bin").join(tool);
        assert!(
            path.exists(),
            "{} missing: run `make setup` (it installs schemathesis and openapi-spec-validator \
             into {API_VENV})",
            path.display()
        );
    }
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// An exposition parsed by the Prometheus project's Python client: family name → (type,
/// samples as (name, labels, value)).
type Families = BTreeMap<String, (String, Vec<(String, BTreeMap<String, String>, f64)>)>;

/// Which parser of `prometheus_client` reads it.
#[derive(Clone, Copy, Debug)]
enum Format {
    /// `prometheus_client.openmetrics.parser` (strict: `# EOF`, types, histogram series).
    OpenMetrics,
    /// `prometheus_client.parser`, the classic text format (`Accept: text/plain`).
    Classic,
}

fn parse(text: &str, format: Format) -> Families {
    let module = match format {
        Format::OpenMetrics => "prometheus_client.openmetrics.parser",
        Format::Classic => "prometheus_client.parser",
    };
    let script = format!(
        r"
import json, sys
from {module} import text_string_to_metric_families
out = {{}}
for f in text_string_to_metric_families(sys.stdin.read()):
    out[f.name] = [f.type, [[s.name, s.labels, s.value] for s in f.samples]]
print(json.dumps(out))
"
    );
    let mut child = Command::new(PYTHON)
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write exposition");
    let out = child.wait_with_output().expect("python3");
    assert!(
        out.status.success(),
        "the {format:?} parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("parser output")
}

/// The value of `sample{labels ⊇ want}` in `families`.
fn value(f: &Families, family: &str, sample: &str, want: &[(&str, &str)]) -> f64 {
    let (_, samples) = f
        .get(family)
        .unwrap_or_else(|| panic!("no family {family}"));
    samples
        .iter()
        .find(|(name, labels, _)| {
            name == sample
                && want
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map_or_else(
            || panic!("no sample {sample}{want:?} in {family}: {samples:?}"),
            |s| s.2,
        )
}

/// Every family the agent exports without north-south devices, with its OpenMetrics type
/// (`ferrite_flows_forwarded`/`_dropped` appear with their first flow: checked after traffic).
const FAMILIES: [(&str, &str); 26] = [
    ("ferrite_source_events", "counter"),
    ("ferrite_reconcile_duration_seconds", "histogram"),
    ("ferrite_reconcile_errors", "counter"),
    ("ferrite_l2_gratuitous_announcements", "counter"),
    ("ferrite_l2_takeovers", "counter"),
    ("ferrite_l2_releases", "counter"),
    ("ferrite_l2_failover_duration_seconds", "histogram"),
    ("ferrite_cni_operations", "counter"),
    ("ferrite_cni_operation_duration_seconds", "histogram"),
    ("ferrite_cni_events_malformed", "counter"),
    ("ferrite_services", "gauge"),
    ("ferrite_frontends", "gauge"),
    ("ferrite_backends", "gauge"),
    ("ferrite_apply_generation", "gauge"),
    ("ferrite_bpf_map_pressure", "gauge"),
    ("ferrite_bpf_map_entries", "gauge"),
    ("ferrite_l2_members", "gauge"),
    ("ferrite_l2_owned_addresses", "gauge"),
    ("ferrite_l2_membership_rejected", "counter"),
    ("ferrite_subsystem_ready", "gauge"),
    ("ferrite_source_errors", "gauge"),
    ("process_resident_memory_bytes", "gauge"),
    ("process_virtual_memory_bytes", "gauge"),
    ("process_cpu_seconds", "counter"),
    ("process_open_fds", "gauge"),
    ("process_start_time_seconds", "gauge"),
];

fn scrape() -> Families {
    let (rc, code, body) = curl(&[], &format!("http://{METRICS_ADDR}/metrics"));
    assert_eq!((rc, code), (0, 200), "{body}");
    parse(&body, Format::OpenMetrics)
}

/// Every family is there with its type.
fn assert_families(f: &Families) {
    for (name, kind) in FAMILIES {
        let got = f
            .get(name)
            .unwrap_or_else(|| panic!("family {name} missing: {:?}", f.keys()));
        assert_eq!(got.0, kind, "{name}");
    }
}

/// Runs the real plugin (CNI_COMMAND) in `lab`'s node netns reporting to `agent`.
fn cni(lab: &cni_common::NodeLab, agent: &AgentLab, command: &str, netns: &Path) -> i32 {
    let mut conf = cni_common::conf("1.1.0", "ob", agent.work.path(), &["10.66.0.0/24"]);
    conf["apiSocket"] = json!(agent.socket);
    let env = cni_common::Env::attach(command, "ob-cid-1", netns, "eth0");
    cni_common::ferrite(lab.node.ns(), &env, &conf).status
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario: scrape, traffic, snapshot, CNI, scrape again"
)]
fn metrics_have_every_family_and_move_with_traffic_snapshots_and_cni() {
    require_root();
    require_python();
    let pods = PodLab::new("ob1", 1);
    let mut agent = AgentLab::new("ob1");
    let web = service_yaml("web", &["10.96.0.10"], None)
        + &slice_yaml("web-v4", "web", "IPv4", &[(&pods.pod_v4(0), true)]);
    agent.write("web.yaml", &web);
    let source = format!("dir:{}", agent.manifests.display());
    agent.start_with(&source, &["--metrics-listen", METRICS_ADDR], &[], true);
    agent.wait_for_backends("10.96.0.10:80", 1);

    let mode = std::fs::metadata(&agent.socket)
        .expect("API socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the API socket's mode");

    let before = scrape();
    assert_families(&before);
    // The classic text format for a scraper that does not take OpenMetrics.
    let (rc, code, classic) = curl(
        &["-H", "Accept: text/plain;version=0.0.4"],
        &format!("http://{METRICS_ADDR}/metrics"),
    );
    assert_eq!((rc, code), (0, 200), "{classic}");
    assert_families(&parse(&classic, Format::Classic));
    assert!(
        value(
            &before,
            "process_resident_memory_bytes",
            "process_resident_memory_bytes",
            &[]
        ) > 1e6
    );
    assert_eq!(
        value(&before, "ferrite_services", "ferrite_services", &[]),
        1.0
    );
    let revnat = |f: &Families| {
        value(
            f,
            "ferrite_bpf_map_entries",
            "ferrite_bpf_map_entries",
            &[("map_name", "fe_revnat_v1")],
        )
    };
    let svc_pressure = value(
        &before,
        "ferrite_bpf_map_pressure",
        "ferrite_bpf_map_pressure",
        &[("map_name", "fe_svc_v1")],
    );
    assert!(svc_pressure > 0.0 && svc_pressure < 0.01, "{svc_pressure}");

    // Traffic: every ClusterIP connect leaves a reverse-translation entry (socket cookie).
    let tcp = agent.client(
        &pods.node,
        &[
            "--target",
            "10.96.0.10:80",
            "--proto",
            "tcp",
            "--count",
            "25",
        ],
    );
    assert_eq!(tcp.ok, 25, "{tcp:?}");
    // A snapshot: a second service.
    agent.write(
        "db.yaml",
        &(service_yaml("db", &["10.96.0.11"], None)
            + &slice_yaml("db-v4", "db", "IPv4", &[(&pods.pod_v4(0), true)])),
    );
    agent.wait_for_backends("10.96.0.11:80", 1);
    // CNI: a real ADD into a pod netns, its DEL, and an ADD that fails (no such netns).
    let cni_lab = cni_common::NodeLab::new("ob1c", 1);
    assert_eq!(cni(&cni_lab, &agent, "ADD", &cni_lab.pod_path(0)), 0);
    assert_eq!(cni(&cni_lab, &agent, "DEL", &cni_lab.pod_path(0)), 0);
    assert_ne!(
        cni(&cni_lab, &agent, "ADD", Path::new("/run/netns/ob-none")),
        0
    );

    let mut after = scrape();
    let ok = wait_until(Duration::from_secs(3), Duration::from_millis(50), || {
        after = scrape();
        value(
            &after,
            "ferrite_cni_operations",
            "ferrite_cni_operations_total",
            &[("command", "ADD"), ("outcome", "failure")],
        ) >= 1.0
    });
    assert!(
        ok.is_ok(),
        "CNI events not counted: {:?}",
        after.get("ferrite_cni_operations")
    );
    assert!(
        revnat(&after) >= revnat(&before) + 25.0,
        "{} → {}",
        revnat(&before),
        revnat(&after)
    );
    assert_eq!(
        value(&after, "ferrite_services", "ferrite_services", &[]),
        2.0
    );
    // The programs count every translated connect (events or not).
    let forwarded = |f: &Families| {
        f.get("ferrite_flows_forwarded")
            .and_then(|(_, samples)| {
                samples.iter().find(|(name, labels, _)| {
                    name == "ferrite_flows_forwarded_total"
                        && labels.get("flow_type").map(String::as_str) == Some("sock-lb")
                })
            })
            .map_or(0.0, |s| s.2)
    };
    assert!(
        forwarded(&after) >= forwarded(&before) + 25.0,
        "{} → {}",
        forwarded(&before),
        forwarded(&after)
    );
    let events = |f: &Families| {
        value(
            f,
            "ferrite_source_events",
            "ferrite_source_events_total",
            &[("source", "dir")],
        )
    };
    assert!(
        events(&after) > events(&before),
        "{} → {}",
        events(&before),
        events(&after)
    );
    let lb = |f: &Families| {
        value(
            f,
            "ferrite_reconcile_duration_seconds",
            "ferrite_reconcile_duration_seconds_count",
            &[("reconciler", "lb")],
        )
    };
    assert!(lb(&after) > lb(&before));
    for (command, outcome) in [("ADD", "success"), ("DEL", "success"), ("ADD", "failure")] {
        assert_eq!(
            value(
                &after,
                "ferrite_cni_operations",
                "ferrite_cni_operations_total",
                &[("command", command), ("outcome", outcome)]
            ),
            1.0,
            "{command} {outcome}"
        );
    }
    assert_eq!(
        value(
            &after,
            "ferrite_cni_operation_duration_seconds",
            "ferrite_cni_operation_duration_seconds_count",
            &[("command", "ADD")]
        ),
        2.0
    );

    // The same exposition on the unix socket; the metrics port serves nothing else.
    let sock = agent.socket.display().to_string();
    let (rc, code, body) = curl(&["--unix-socket", &sock], "http://ferrite/metrics");
    assert_eq!((rc, code), (0, 200));
    assert_families(&parse(&body, Format::OpenMetrics));
    let (_, code, body) = curl(&[], &format!("http://{METRICS_ADDR}/v1/status"));
    assert_eq!(code, 404, "{body}");
    let error: Value = serde_json::from_str(&body).expect("404 body is JSON");
    assert!(error["error"].is_string(), "{error}");
}

/// A CA, the server's certificate for 127.0.0.1, a client certificate from that CA and one
/// from another CA.
fn api_pki() -> Pki {
    let pki = Pki::new("ob-pki");
    pki.ca("ca");
    pki.ca("other-ca");
    pki.leaf(
        "server",
        "ca",
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth",
    );
    pki.leaf("client", "ca", "extendedKeyUsage=clientAuth");
    pki.leaf("stranger", "other-ca", "extendedKeyUsage=clientAuth");
    pki
}

#[test]
fn the_tcp_api_serves_only_tls_clients_of_its_ca_and_matches_its_openapi_spec() {
    require_root();
    require_python();
    require_venv();
    let pki = api_pki();
    let mut agent = AgentLab::new("ob2");
    agent.write(
        "web.yaml",
        &(service_yaml("web", &["10.96.0.20"], None)
            + &slice_yaml("web-v4", "web", "IPv4", &[("10.244.9.2", true)])),
    );
    // The agent runs in the root netns: its Node's InternalIP is the loopback address, so the
    // L2 membership binds and the agent becomes ready (`/healthz`, `/readyz` answer 200).
    agent.write(
        "node.yaml",
        &ferrite_lab::manifest::node_yaml("test-node", "127.0.0.1".parse().unwrap(), &[]),
    );
    let source = format!("dir:{}", agent.manifests.display());
    let (cert, key, ca) = (pki.s("server.pem"), pki.s("server.key"), pki.s("ca.pem"));
    agent.start_with(
        &source,
        &[
            "--api-listen",
            TLS_ADDR,
            "--api-tls-cert",
            &cert,
            "--api-tls-key",
            &key,
            "--api-client-ca",
            &ca,
        ],
        &[],
        true,
    );
    let ready = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        agent.ferrite(&["status", "--check"]).status.success()
    });
    assert!(
        ready.is_ok(),
        "agent never ready: {}\n{}",
        String::from_utf8_lossy(&agent.ferrite(&["status"]).stdout),
        agent.log()
    );
    let url = format!("https://{TLS_ADDR}/v1/status");
    let trust = ["--cacert", ca.as_str()];
    let (client, client_key) = (pki.s("client.pem"), pki.s("client.key"));
    let mine = [trust[0], trust[1], "--cert", &client, "--key", &client_key];

    // Right certificate: served.
    let (rc, code, body) = curl(&mine, &url);
    assert_eq!((rc, code), (0, 200), "{body}\n{}", agent.log());
    let st: Value = serde_json::from_str(&body).expect("status JSON");
    assert_eq!(st["api"]["tls"], TLS_ADDR, "{st}");
    // No client certificate, one from another CA, plain HTTP: no answer at all.
    let (stranger, stranger_key) = (pki.s("stranger.pem"), pki.s("stranger.key"));
    let refused: [(&str, Vec<&str>, String); 3] = [
        ("no client certificate", trust.to_vec(), url.clone()),
        (
            "a certificate from another CA",
            vec![
                trust[0],
                trust[1],
                "--cert",
                &stranger,
                "--key",
                &stranger_key,
            ],
            url.clone(),
        ),
        (
            "plain TCP",
            Vec::new(),
            format!("http://{TLS_ADDR}/v1/status"),
        ),
    ];
    for (what, args, url) in &refused {
        let (rc, code, body) = curl(args, url);
        assert!(
            rc != 0 && code == 0,
            "{what}: curl {rc}, HTTP {code}: {body}"
        );
        assert!(!body.contains("node_name"), "{what}: {body}");
    }
    assert!(
        agent.log().contains("API connection refused"),
        "{}",
        agent.log()
    );

    // Bad requests: JSON errors with 4xx.
    for (args, path, want) in [
        (vec![], "/nope", 404),
        (vec![], "/v1/status?verbose=1", 400),
        (vec!["-X", "POST"], "/v1/status", 405),
    ] {
        let mut a = mine.to_vec();
        a.extend(args);
        let (_, code, body) = curl(&a, &format!("https://{TLS_ADDR}{path}"));
        assert_eq!(code, want, "{path}: {body}");
        let e: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
        assert!(e["error"].as_str().is_some_and(|s| !s.is_empty()), "{e}");
    }

    // The spec: valid OpenAPI 3.0, and every answer of the API conforms to it.
    let (rc, code, spec) = curl(&mine, &format!("https://{TLS_ADDR}/openapi.json"));
    assert_eq!((rc, code), (0, 200));
    fuzz(&spec, &agent, &pki);
}

/// `spec` validated by openapi-spec-validator, then the API fuzzed against it by schemathesis
/// over the TLS listener with `pki`'s client certificate.
fn fuzz(spec: &str, agent: &AgentLab, pki: &Pki) {
    let (ca, client, client_key) = (pki.s("ca.pem"), pki.s("client.pem"), pki.s("client.key"));
    let spec_file = agent.work.path().join("openapi.json");
    std::fs::write(&spec_file, spec).expect("write the spec");
    let venv = |tool: &str| Path::new(API_VENV).join("bin").join(tool);
    let out = run(Command::new(venv("openapi-spec-validator")).arg(&spec_file));
    assert!(out.status.success(), "openapi-spec-validator: {out:?}");
    let out = run(Command::new(venv("schemathesis"))
        .arg("run")
        .arg(&spec_file)
        .args(["--url", &format!("https://{TLS_ADDR}")])
        .args([
            "--tls-verify",
            &ca,
            "--request-cert",
            &client,
            "--request-cert-key",
            &client_key,
        ])
        .args([
            "--checks",
            "all",
            "--max-examples",
            "25",
            "--seed",
            "14",
            "--no-color",
        ])
        // The flow stream stays open until the client goes away, which schemathesis (it
        // reads whole bodies) would wait for; tests/flows.rs reads it line by line.
        .args(["--exclude-path", "/v1/flows/stream"])
        .env_remove("SCHEMATHESIS_HOOKS")
        .current_dir(agent.work.path()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis found failures:\n{text}");
    // Every operation was exercised.
    let operations = spec.matches("\"operationId\"").count();
    assert!(operations >= 9, "{spec}");
    assert!(!text.contains("No operations"), "{text}");
}
