//! Privileged tests of the lab guards and topologies (run as root, like CI).

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ferrite_lab::probe::{Limit, ProbeConfig, Proto, probe};
use ferrite_lab::serve::{Server, ServerConfig};
use ferrite_lab::{Cgroup, Cidr, Lan, Netns, Ns, PodNet, PodNetConfig, Route, wait_until};

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "these tests need root (CI runs them as root)"
    );
}

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

fn same_netns(pid: u32, ns: &Ns) -> bool {
    let a = std::fs::metadata(format!("/proc/{pid}/ns/net")).unwrap();
    let b = std::fs::metadata(ns.path()).unwrap();
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

#[test]
fn netns_runs_things_inside_and_cleans_up() {
    require_root();
    let netns = Netns::new("flt").unwrap();
    let name = netns.name().to_owned();
    assert!(netns_exists(&name));

    // exec: output of a command inside.
    let out = netns.exec(Command::new("ip").args(["-o", "link"])).unwrap();
    let links = String::from_utf8_lossy(&out.stdout);
    assert!(links.contains("lo:") && links.contains("UP"), "{links}");
    assert!(!links.contains("eth0"), "{links}");

    // spawn: a long-running child whose netns is this one.
    let child = netns
        .spawn(Command::new("sleep").arg("60").stdout(Stdio::null()))
        .unwrap();
    assert!(same_netns(child.id(), netns.ns()));
    assert_eq!(netns.ns().pids().unwrap(), vec![child.id()]);

    // run: sysctls written on a thread inside stay inside.
    let root_forward = Ns::Root.read_sysctl("net.ipv4.conf.lo.forwarding").unwrap();
    netns.sysctl("net.ipv4.conf.lo.forwarding", "1").unwrap();
    assert_eq!(
        netns
            .ns()
            .read_sysctl("net.ipv4.conf.lo.forwarding")
            .unwrap(),
        "1"
    );
    assert_eq!(
        Ns::Root.read_sysctl("net.ipv4.conf.lo.forwarding").unwrap(),
        root_forward
    );

    // A process we did not spawn (not our child) is killed on drop too.
    let orphan = netns
        .exec(Command::new("sh").args(["-c", "sleep 60 >/dev/null 2>&1 & echo $!"]))
        .unwrap();
    let orphan: u32 = String::from_utf8_lossy(&orphan.stdout)
        .trim()
        .parse()
        .unwrap();
    drop(netns);
    assert!(!netns_exists(&name));
    let gone = wait_until(Duration::from_secs(2), Duration::from_millis(10), || {
        !Path::new(&format!("/proc/{orphan}")).exists()
    });
    assert!(gone.is_ok(), "orphan {orphan} survived");
    drop(child);
}

#[test]
fn guards_clean_up_when_a_test_panics() {
    require_root();
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::panic::catch_unwind(move || {
        let netns = Netns::new("flt").unwrap();
        let cgroup = Cgroup::new("flt").unwrap();
        tx.send((netns.name().to_owned(), cgroup.path().to_owned()))
            .unwrap();
        panic!("test failure inside the lab");
    });
    assert!(result.is_err());
    let (name, cgroup) = rx.recv().unwrap();
    assert!(!netns_exists(&name), "{name} leaked");
    assert!(!cgroup.exists(), "{} leaked", cgroup.display());
}

#[test]
fn pod_net_routes_v4_and_v6_between_pods() {
    require_root();
    let host = Netns::new("flh").unwrap();
    let net = PodNet::build(
        host.ns(),
        PodNetConfig {
            prefix: "flp".into(),
            pods: 2,
            ..PodNetConfig::default()
        },
    )
    .unwrap();
    let [a, b] = net.pods() else {
        panic!("two pods")
    };
    assert_eq!(a.v4.to_string(), "10.244.0.2");
    assert_eq!(b.v6.to_string(), "fd00:10:244::3");
    assert_eq!(host.ns().read_sysctl("net.ipv4.ip_forward").unwrap(), "1");
    assert!(a.host_iface().exists() && a.iface().exists());

    let server = b
        .netns
        .run(|| {
            Server::start(&ServerConfig {
                name: "pod-b".into(),
                tcp: vec![
                    "0.0.0.0:8080".parse().unwrap(),
                    "[::]:8080".parse().unwrap(),
                ],
                udp: vec![
                    "0.0.0.0:5353".parse().unwrap(),
                    "[::]:5353".parse().unwrap(),
                ],
                ..ServerConfig::default()
            })
        })
        .unwrap()
        .unwrap();
    for ip in [IpAddr::V4(b.v4), IpAddr::V6(b.v6)] {
        let tcp = SocketAddr::new(ip, 8080);
        let report = a
            .netns
            .run(|| probe(&ProbeConfig::new(tcp, Proto::Tcp, Limit::Count(3))))
            .unwrap();
        assert_eq!(report.names.get("pod-b"), Some(&3), "{report:?}");
        assert!(report.peers.contains(&tcp.to_string()));
        let udp = SocketAddr::new(ip, 5353);
        let mut cfg = ProbeConfig::new(udp, Proto::Udp, Limit::Count(2));
        cfg.udp_unconnected = true;
        let report = a.netns.run(|| probe(&cfg)).unwrap();
        assert_eq!(report.ok, 2, "{report:?}");
        assert!(
            report.reply_sources.contains(&udp.to_string()),
            "{report:?}"
        );
    }
    drop(server);

    // Host-side veth names derive from the pod netns name and fit IFNAMSIZ.
    assert!(a.host_iface().name.len() <= 15);
    let host_name = a.host_iface().name.clone();
    let host_ns = host.ns().clone();
    drop(net);
    assert!(!ferrite_lab::Iface::new(&host_ns, &host_name).exists());
}

#[test]
fn cgroup_places_spawned_processes_and_cleans_up() {
    require_root();
    let netns = Netns::new("flt").unwrap();
    let cgroup = Cgroup::new("flt").unwrap();
    assert!(cgroup.path().join("cgroup.procs").exists());

    let mut cmd = Command::new("sleep");
    cmd.arg("60");
    let child = cgroup.spawn(&mut cmd, Some(netns.ns())).unwrap();
    assert_eq!(cgroup.pids().unwrap(), vec![child.id()]);
    assert!(same_netns(child.id(), netns.ns()));

    // A process moved in by pid, and a nested cgroup with a process of its own.
    let mut other = ferrite_lab::Child::spawn(Command::new("sleep").arg("60")).unwrap();
    cgroup.add_pid(other.id()).unwrap();
    let nested = Cgroup::new_under(cgroup.path(), "sub").unwrap();
    let mut nested_child = nested.spawn(Command::new("sleep").arg("60"), None).unwrap();
    // Leak the nested guard: the parent's drop must remove the whole tree.
    std::mem::forget(nested);
    let path = cgroup.path().to_owned();
    drop(cgroup);
    assert!(!path.exists());
    assert!(
        other
            .wait_timeout(Duration::from_secs(2))
            .unwrap()
            .is_some()
    );
    assert!(
        nested_child
            .wait_timeout(Duration::from_secs(2))
            .unwrap()
            .is_some()
    );
    drop(child);
}

#[test]
fn lan_connects_pods_on_two_nodes() {
    require_root();
    let mut lan = Lan::new(
        "fll",
        "192.168.77.0/24".parse().unwrap(),
        "fd00:77::/64".parse().unwrap(),
    )
    .unwrap();
    let node1 = Netns::new("fln").unwrap();
    let node2 = Netns::new("fln").unwrap();
    let port1 = lan.attach(node1.ns(), "eth0").unwrap();
    let port2 = lan.attach(node2.ns(), "eth0").unwrap();
    assert_eq!(port1.v4.to_string(), "192.168.77.1/24");
    assert_eq!(port2.v6.to_string(), "fd00:77::2/64");
    let pod_cfg = |v4: &str, v6: &str| PodNetConfig {
        prefix: "flp".into(),
        pods: 1,
        v4: v4.parse().unwrap(),
        v6: v6.parse().unwrap(),
        ..PodNetConfig::default()
    };
    let pods1 = PodNet::build(node1.ns(), pod_cfg("10.244.1.0/24", "fd00:10:244:1::/64")).unwrap();
    let pods2 = PodNet::build(node2.ns(), pod_cfg("10.244.2.0/24", "fd00:10:244:2::/64")).unwrap();
    // Each node routes the other's pod CIDRs via the other's LAN address.
    let cidr = |s: &str| s.parse::<Cidr>().unwrap();
    Route::via(cidr("10.244.2.0/24"), port2.v4.addr())
        .add(node1.ns())
        .unwrap();
    Route::via(cidr("fd00:10:244:2::/64"), port2.v6.addr())
        .add(node1.ns())
        .unwrap();
    Route::via(cidr("10.244.1.0/24"), port1.v4.addr())
        .add(node2.ns())
        .unwrap();
    Route::via(cidr("fd00:10:244:1::/64"), port1.v6.addr())
        .add(node2.ns())
        .unwrap();

    let target = &pods2.pods()[0];
    let server = target
        .netns
        .run(|| {
            Server::start(&ServerConfig {
                name: "node2-pod".into(),
                tcp: vec!["0.0.0.0:80".parse().unwrap(), "[::]:80".parse().unwrap()],
                ..ServerConfig::default()
            })
        })
        .unwrap()
        .unwrap();
    let client = &pods1.pods()[0];
    for ip in [IpAddr::V4(target.v4), IpAddr::V6(target.v6)] {
        let mut cfg = ProbeConfig::new(SocketAddr::new(ip, 80), Proto::Tcp, Limit::Count(2));
        cfg.timeout = Duration::from_secs(3);
        let report = client.netns.run(|| probe(&cfg)).unwrap();
        assert_eq!(report.names.get("node2-pod"), Some(&2), "{ip}: {report:?}");
    }
    drop(server);
}

#[test]
fn cleanup_stale_removes_leftovers_of_dead_processes() {
    require_root();
    // A pid that is not running: a reaped child's.
    let mut child = Command::new("true").spawn().unwrap();
    child.wait().unwrap();
    let dead = child.id();
    let name = format!("flz-{}-0", ferrite_lab::name::base36(u64::from(dead)));
    ferrite_lab::cmd::run(Command::new("ip").args(["netns", "add", &name])).unwrap();
    let cg = ferrite_lab::cgroup::cgroup2_root().unwrap().join(&name);
    std::fs::create_dir(&cg).unwrap();
    // Ours (alive) must survive.
    let mine = Netns::new("flz").unwrap();
    let removed = ferrite_lab::cleanup_stale("flz").unwrap();
    assert!(removed.contains(&format!("netns {name}")), "{removed:?}");
    assert!(
        removed.iter().any(|r| r.starts_with("cgroup ")),
        "{removed:?}"
    );
    assert!(!netns_exists(&name) && !cg.exists());
    assert!(netns_exists(mine.name()));
}
