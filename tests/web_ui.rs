//! The agent's web page in a real browser, as root: the L2 lab (three node netns on a LAN, the
//! `web` LoadBalancer service with pods on every node, agents from the shipped DaemonSet's
//! args), `ferrite ui` on a loopback port in front of the owner's API socket, and Debian's
//! Chromium headless reading `/ui`. The DOM must show the service, its backends with their
//! nodes, the LoadBalancer IP with its owner, the routes to the other nodes and the flows the
//! client's requests made; screenshots at desktop and phone widths are kept under
//! `target/web-ui/`.
//!
//! Run as root: `cargo test --test web_ui`.

mod common;
mod l2_common;

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ferrite_lab::l2lab::{L2Lab, LB_V4, NODES_FILE};
use ferrite_lab::manifest::node_with_pod_cidrs_yaml;
use ferrite_lab::probe::Proto;
use ferrite_lab::wait_until;
use l2_common::{build_with_manifests, owner};

const CHROMIUM: &str = "/usr/bin/chromium";
const UI_ADDR: &str = "127.0.0.1:19880";

/// Kills `ferrite ui` when the test ends, however it ends.
struct Ui(Child);

impl Drop for Ui {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/web-ui");
    std::fs::create_dir_all(&dir).expect("target/web-ui");
    dir
}

/// Headless Chromium with a fresh profile: `args` and the page's URL.
fn chromium(profile: &Path, args: &[&str]) -> std::process::Output {
    Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--hide-scrollbars",
            // Timers and fetches run until the page has refreshed a few times.
            "--virtual-time-budget=6000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("http://{UI_ADDR}/ui"))
        .stdin(Stdio::null())
        .output()
        .expect("run chromium")
}

fn text_of(dom: &str, id: &str) -> String {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the DOM:\n{dom}"));
    let end = dom[start..]
        .find("</table>")
        .map_or(dom.len(), |e| start + e);
    dom[start..end].to_owned()
}

/// The L2 lab with Node objects carrying their PodCIDRs (as k3s assigns them), so the page
/// can tell which node each backend runs on.
fn start_with_pod_cidrs() -> L2Lab {
    let mut lab = build_with_manifests("wui", &["arping"]);
    let nodes: String = lab
        .lab()
        .nodes()
        .iter()
        .map(|n| node_with_pod_cidrs_yaml(&n.name, IpAddr::V4(n.v4()), &[n.pod_cidr_v4()]))
        .collect();
    lab.lab().write_manifest(NODES_FILE, &nodes).unwrap();
    // The backends as Pod objects: the flow table names them.
    let per_node = lab.lab().config().pods_per_node;
    let mut pods = String::new();
    for n in lab.lab().nodes() {
        for i in 0..per_node {
            let _ = write!(
                pods,
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {}, namespace: default, \
                 labels: {{app: web}}}}\nspec: {{nodeName: {}}}\nstatus: {{phase: Running, \
                 podIP: {}}}\n",
                n.pod_name(i),
                n.name,
                n.pod_v4(i)
            );
        }
    }
    lab.lab().write_manifest("pods.yaml", &pods).unwrap();
    if let Err(e) = lab.start_agents() {
        panic!("starting ferrite agents: {e}");
    }
    lab
}

#[test]
fn the_web_page_shows_services_backends_the_lb_owner_routes_and_flows_in_chromium() {
    common::require_root();
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} missing: run `make setup` (apt-get install chromium)"
    );
    let lab = start_with_pod_cidrs();
    let own = owner(&lab, IpAddr::V4(LB_V4));
    let target = SocketAddr::new(IpAddr::V4(LB_V4), 80);
    let r = lab.lab().attempts(0, target, Proto::Tcp, 10, 1000).unwrap();
    assert_eq!(r.ok, 10, "{r:?}{}", lab.lab().agent_logs(20));

    let socket = lab.lab().agent(own).socket.clone();
    let ui = Ui(Command::new(common::FERRITE)
        .args(["ui", "--listen", UI_ADDR, "--api-socket"])
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ferrite ui"));
    let up = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        Command::new("curl")
            .args(["-sf", "-o", "/dev/null", &format!("http://{UI_ADDR}/ui")])
            .status()
            .is_ok_and(|s| s.success())
    });
    assert!(up.is_ok(), "ferrite ui did not answer on {UI_ADDR}");

    let profile = std::env::temp_dir().join(format!("ferrite-wui-chromium-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    let out = chromium(&profile, &["--dump-dom"]);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success() && !dom.is_empty(), "chromium: {out:?}");
    let _ = std::fs::write(artifacts().join("dom.html"), &dom);

    let owner_name = &lab.lab().node(own).name;
    let services = text_of(&dom, "services");
    assert!(services.contains("test/web"), "{services}");
    for node in lab.lab().nodes() {
        let pod = node.pod_v4(0).to_string();
        assert!(
            services.contains(&pod),
            "backend {pod} missing:\n{services}"
        );
        assert!(
            services.contains(&format!(" on {}", node.name)),
            "the backends' node {} is not shown:\n{services}",
            node.name
        );
    }
    let lbips = text_of(&dom, "lbips");
    assert!(
        lbips.contains(&LB_V4.to_string()) && lbips.contains(&format!(">{owner_name}<")),
        "the LB IP and its owner {owner_name}:\n{lbips}"
    );
    let routes = text_of(&dom, "routes");
    for node in lab.lab().nodes().iter().filter(|n| n.name != *owner_name) {
        assert!(routes.contains(&format!(">{}<", node.name)), "{routes}");
    }
    let flows = text_of(&dom, "flows");
    assert!(
        flows.contains("north-south") && flows.contains(&format!("{LB_V4}:80")),
        "the client's requests to {target} are not in the flow table:\n{flows}"
    );
    assert!(flows.contains("FORWARDED"), "{flows}");
    // The backend of a translated flow shows as its pod.
    assert!(
        flows.contains("default/") && flows.contains("-pod-"),
        "no backend pod in the flow table:\n{flows}"
    );

    // Screenshots: desktop and phone widths (kept as artifacts, checked to be real images).
    for (name, size) in [("desktop", "1280,1100"), ("phone", "390,1400")] {
        let png = artifacts().join(format!("{name}.png"));
        let _ = std::fs::remove_file(&png);
        let out = chromium(
            &profile,
            &[
                &format!("--screenshot={}", png.display()),
                &format!("--window-size={size}"),
            ],
        );
        let bytes = std::fs::read(&png).unwrap_or_default();
        assert!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
            "{name} screenshot {} ({} bytes): {out:?}",
            png.display(),
            bytes.len()
        );
    }
    drop(ui);
    let _ = std::fs::remove_dir_all(&profile);
}
