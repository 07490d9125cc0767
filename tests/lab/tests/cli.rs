//! The `ferrite-lab` binary end to end, as root: serve/client/connect-rate across a pod lab,
//! and a quick baseline-only bench.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use ferrite_lab::report::{ClientReport, ConnectRateReport};
use ferrite_lab::{Child, Netns, PodNet, PodNetConfig, wait_until};

const EXE: &str = env!("CARGO_BIN_EXE_ferrite-lab");

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "these tests need root (CI runs them as root)"
    );
}

fn run_json<T: serde::de::DeserializeOwned>(netns: &Netns, args: &[&str]) -> T {
    let out = netns.exec(Command::new(EXE).args(args)).unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn serve_client_and_connect_rate_across_pods() {
    require_root();
    let host = Netns::new("flc").unwrap();
    let net = PodNet::build(
        host.ns(),
        PodNetConfig {
            prefix: "flc".into(),
            pods: 2,
            ..PodNetConfig::default()
        },
    )
    .unwrap();
    let [client, server] = net.pods() else {
        panic!("two pods")
    };
    let mut serve = server.netns.command(EXE).unwrap();
    serve
        .args(["serve", "--name", "backend", "--port", "8080"])
        .args(["--udp", "0.0.0.0:5300", "--udp", "[::]:5300"])
        .stdout(Stdio::null());
    let _serve = Child::spawn(&mut serve).unwrap();
    let tcp4 = SocketAddr::from((server.v4, 8080)).to_string();
    let ready = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        let r: ClientReport = run_json(
            &client.netns,
            &["client", "--target", &tcp4, "--count", "1", "--json"],
        );
        r.ok == 1
    });
    assert!(ready.is_ok(), "server never answered");

    let tcp6 = SocketAddr::from((server.v6, 8080)).to_string();
    let r: ClientReport = run_json(
        &client.netns,
        &["client", "--target", &tcp6, "--count", "5", "--json"],
    );
    assert_eq!(r.names.get("backend"), Some(&5), "{r:?}");
    assert_eq!(r.peers.iter().collect::<Vec<_>>(), [&tcp6]);

    let udp6 = SocketAddr::from((server.v6, 8080)).to_string();
    let r: ClientReport = run_json(
        &client.netns,
        &[
            "client", "--target", &udp6, "--proto", "udp", "--count", "2", "--json",
        ],
    );
    assert_eq!((r.ok, r.mode.as_str()), (2, "connected"), "{r:?}");
    let udp4 = SocketAddr::from((server.v4, 5300)).to_string();
    let r: ClientReport = run_json(
        &client.netns,
        &[
            "client",
            "--target",
            &udp4,
            "--proto",
            "udp",
            "--udp-unconnected",
            "--count",
            "3",
            "--json",
        ],
    );
    assert_eq!((r.ok, r.mode.as_str()), (3, "unconnected"), "{r:?}");
    assert_eq!(r.reply_sources.iter().collect::<Vec<_>>(), [&udp4]);

    // A closed port: refused quickly, with the time to error reported; still exit 0.
    let closed = SocketAddr::from((server.v4, 9)).to_string();
    let r: ClientReport = run_json(
        &client.netns,
        &[
            "client",
            "--target",
            &closed,
            "--duration-ms",
            "100",
            "--json",
        ],
    );
    assert!(r.attempts > 0 && r.ok == 0);
    assert_eq!(r.failures.get("ECONNREFUSED"), Some(&r.attempts));
    assert!(r.refused_us.unwrap().median_us < 100_000);

    let rate: ConnectRateReport = run_json(
        &client.netns,
        &[
            "connect-rate",
            "--target",
            &tcp4,
            "--target",
            &tcp6,
            "--duration-ms",
            "300",
            "--threads",
            "2",
        ],
    );
    assert!(rate.connects > 100 && rate.errors == 0, "{rate:?}");
    assert!(rate.rate > 0.0);
}

#[test]
fn quick_bench_produces_baseline_rows_without_ferrite() {
    require_root();
    let out = std::env::temp_dir().join(format!("ferrite-lab-bench-{}", std::process::id()));
    let status = Command::new(EXE)
        .args(["bench", "--quick", "--scales", "1,100", "--out"])
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    // Ferrite columns are "not run", which makes the exit status 2.
    assert_eq!(status.code(), Some(2));
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains("| 100 |"), "{md}");
    assert!(md.contains("not run: no --ferrite given"), "{md}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    for row in json["connect"].as_array().unwrap() {
        assert!(row["direct"]["median"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["iptables"]["median"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["ferrite"]["not_run"].is_string(), "{row}");
    }
    let programme = &json["programme"][1];
    assert_eq!(programme["iptables_rules"], 100 * 11 + 8);
    assert!(programme["iptables_restore_ms"].as_f64().unwrap() > 0.0);
    let _ = std::fs::remove_dir_all(&out);
}
