//! The CNI protocol against the real binary in fresh network namespaces: every verb in every
//! supported spec version, and the error codes (with nothing left behind) for bad input.

mod cni_common;
mod common;

use std::path::Path;
use std::time::Duration;

use cni_common::{Env, NodeLab, addresses, conf, ferrite, links, require, stored};
use ferrite_lab::{kernel_has_netkit, link_kind, wait_until};
use serde_json::{Value, json};

const VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];

fn tools() {
    require(&[("ip", "iproute2")]);
}

/// One row of the table: what a verb answered in one version.
fn row(version: &str, verb: &str, code: i64) -> String {
    format!("{version:>6} {verb:<12} {code}")
}

fn code_of(r: &cni_common::Reply) -> i64 {
    if r.status == 0 {
        0
    } else {
        r.json()["code"].as_i64().unwrap_or(-1)
    }
}

#[test]
fn every_verb_in_every_version() {
    tools();
    let mut table = Vec::new();
    let mut expected = Vec::new();
    for version in VERSIONS {
        let lab = NodeLab::new("cniv", 2);
        let work = common::TempDir::new("cni-verbs");
        let node = lab.node.ns();
        let state = work.path();
        let c = conf(version, "verbs", state, &["10.60.0.0/24", "fd00:60::/64"]);
        let new_api = version == "1.1.0";

        // VERSION answers in the version asked about and lists all three.
        let v = ferrite(node, &Env::new("VERSION"), &json!({"cniVersion": version}));
        let vj = v.ok();
        assert_eq!(vj["cniVersion"], version);
        assert_eq!(vj["supportedVersions"], json!(VERSIONS));
        table.push(row(version, "VERSION", code_of(&v)));
        expected.push(row(version, "VERSION", 0));

        // ADD: result in the requested version, interfaces, addresses and routes in place.
        let pod0 = lab.pod_path(0);
        let add = ferrite(node, &Env::attach("ADD", "c0", &pod0, "eth0"), &c);
        let res = add.ok();
        assert_eq!(res["cniVersion"], version);
        assert_eq!(res["ips"].as_array().unwrap().len(), 2, "{res}");
        assert_eq!(
            res["ips"][0]["version"].is_string(),
            version == "0.4.0",
            "{res}"
        );
        assert_eq!(res["interfaces"][1]["sandbox"], pod0.display().to_string());
        assert_eq!(res["interfaces"][1]["mtu"].is_u64(), new_api, "{res}");
        let host = res["interfaces"][0]["name"].as_str().unwrap().to_owned();
        assert!(links(node).contains(&host));
        let pod_addrs = addresses(lab.pods[0].ns(), "eth0");
        assert_eq!(pod_addrs, ["10.60.0.2/32", "fd00:60::2/128"]);
        let gw = addresses(node, &host);
        assert_eq!(gw, ["10.60.0.1/32", "fd00:60::1/128"]);
        table.push(row(version, "ADD", code_of(&add)));
        expected.push(row(version, "ADD", 0));

        // A second ADD of the same attachment fails and changes nothing.
        let again = ferrite(node, &Env::attach("ADD", "c0", &pod0, "eth0"), &c);
        again.err(101);
        assert_eq!(addresses(lab.pods[0].ns(), "eth0"), pod_addrs);

        // CHECK with the ADD result as prevResult.
        let mut with_prev = c.clone();
        with_prev["prevResult"] = res.clone();
        let check = ferrite(node, &Env::attach("CHECK", "c0", &pod0, "eth0"), &with_prev);
        check.ok();
        table.push(row(version, "CHECK", code_of(&check)));
        expected.push(row(version, "CHECK", 0));

        // STATUS: 1.1.0 only; no agent behind apiSocket, so "not available".
        let status = ferrite(node, &Env::new("STATUS"), &c);
        status.err(if new_api { 50 } else { 1 });
        table.push(row(version, "STATUS", code_of(&status)));
        expected.push(row(version, "STATUS", if new_api { 50 } else { 1 }));

        // GC: 1.1.0 only. Keeps c0 (valid), removes c1 (not listed).
        let pod1 = lab.pod_path(1);
        let add1 = ferrite(node, &Env::attach("ADD", "c1", &pod1, "eth0"), &c).ok();
        let host1 = add1["interfaces"][0]["name"].as_str().unwrap().to_owned();
        let mut gc = c.clone();
        gc["cni.dev/valid-attachments"] = json!([{"containerID": "c0", "ifname": "eth0"}]);
        let gcr = ferrite(node, &Env::new("GC"), &gc);
        table.push(row(version, "GC", code_of(&gcr)));
        if new_api {
            gcr.ok();
            expected.push(row(version, "GC", 0));
            assert!(!links(node).contains(&host1), "GC left {host1}");
            assert!(links(node).contains(&host), "GC removed a valid attachment");
            assert!(addresses(lab.pods[1].ns(), "eth0").is_empty());
            let left: Vec<Value> = stored(&state.join("ipam"), "verbs");
            assert!(left.iter().all(|a| a["containerId"] == "c0"), "{left:?}");
            assert_eq!(left.len(), 2);
        } else {
            gcr.err(1);
            expected.push(row(version, "GC", 1));
            ferrite(node, &Env::attach("DEL", "c1", &pod1, "eth0"), &c).ok();
        }

        // DEL: idempotent; releases the addresses; also fine once the netns is gone.
        let mut del_conf = c.clone();
        del_conf["prevResult"] = res.clone();
        let del = ferrite(node, &Env::attach("DEL", "c0", &pod0, "eth0"), &del_conf);
        assert_eq!(del.ok(), Value::Null, "DEL prints nothing");
        table.push(row(version, "DEL", code_of(&del)));
        expected.push(row(version, "DEL", 0));
        assert!(!links(node).contains(&host));
        assert!(stored(&state.join("ipam"), "verbs").is_empty());
        let del2 = ferrite(node, &Env::attach("DEL", "c0", &pod0, "eth0"), &del_conf);
        del2.ok();
        table.push(row(version, "DEL again", code_of(&del2)));
        expected.push(row(version, "DEL again", 0));
        let gone = Env::attach(
            "DEL",
            "c0",
            Path::new("/run/netns/ferrite-no-such-netns"),
            "eth0",
        );
        ferrite(node, &gone, &c).ok();
        let mut no_netns = Env::new("DEL");
        no_netns.container_id = Some("c0".into());
        no_netns.ifname = Some("eth0".into());
        ferrite(node, &no_netns, &c).ok();

        // CHECK after DEL reports what is missing.
        let after_del = ferrite(node, &Env::attach("CHECK", "c0", &pod0, "eth0"), &with_prev);
        after_del.err(102);
        table.push(row(version, "CHECK stale", code_of(&after_del)));
        expected.push(row(version, "CHECK stale", 102));
    }
    eprintln!("version   verb        code\n{}", table.join("\n"));
    assert_eq!(table, expected);
}

/// Every invalid invocation answers its spec code and leaves the host as it was.
#[test]
#[expect(clippy::too_many_lines, reason = "one table of cases")]
fn errors_have_the_spec_codes_and_create_nothing() {
    tools();
    let lab = NodeLab::new("cnie", 1);
    let work = common::TempDir::new("cni-errors");
    let node = lab.node.ns();
    let pod = lab.pod_path(0);
    let good = conf("1.1.0", "errs", work.path(), &["10.61.0.0/24"]);
    let before = links(node);
    let add =
        |env: &Env, stdin: &str| cni_common::exec(Path::new(cni_common::FERRITE), node, env, stdin);
    let env = Env::attach("ADD", "c0", &pod, "eth0");
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c.to_string()
    };
    let cases: Vec<(&str, Env, String, u64)> = vec![
        ("not JSON", env.clone(), "{not json".into(), 6),
        ("JSON but not an object", env.clone(), "[]".into(), 6),
        (
            "field of the wrong type",
            env.clone(),
            with("mtu", json!("big")),
            6,
        ),
        (
            "unknown version",
            env.clone(),
            with("cniVersion", json!("0.3.1")),
            1,
        ),
        (
            "future version",
            env.clone(),
            with("cniVersion", json!("2.0.0")),
            1,
        ),
        (
            "no version",
            env.clone(),
            json!({"name": "errs"}).to_string(),
            1,
        ),
        (
            "no name",
            env.clone(),
            json!({"cniVersion": "1.1.0"}).to_string(),
            7,
        ),
        (
            "bad pod CIDR",
            env.clone(),
            with("podCIDRs", json!(["10.61.0/24"])),
            7,
        ),
        ("MTU out of range", env.clone(), with("mtu", json!(20)), 7),
        (
            "missing CNI_NETNS",
            Env {
                netns: None,
                ..env.clone()
            },
            good.to_string(),
            4,
        ),
        (
            "missing CNI_CONTAINERID",
            Env {
                container_id: None,
                ..env.clone()
            },
            good.to_string(),
            4,
        ),
        (
            "bad CNI_CONTAINERID",
            Env {
                container_id: Some("../x".into()),
                ..env.clone()
            },
            good.to_string(),
            4,
        ),
        (
            "bad CNI_IFNAME",
            Env {
                ifname: Some("way-too-long-ifname".into()),
                ..env.clone()
            },
            good.to_string(),
            4,
        ),
        (
            "bad CNI_ARGS",
            Env {
                args: Some("novalue".into()),
                ..env.clone()
            },
            good.to_string(),
            4,
        ),
        (
            "unknown CNI_COMMAND",
            Env {
                command: "FROB".into(),
                ..env.clone()
            },
            good.to_string(),
            4,
        ),
        (
            "netns does not exist",
            Env {
                netns: Some("/run/netns/ferrite-none".into()),
                ..env.clone()
            },
            good.to_string(),
            4,
        ),
        (
            "netns is the plugin's own",
            Env {
                netns: Some(node.path()),
                ..env.clone()
            },
            good.to_string(),
            4,
        ),
        (
            "GC without CNI_PATH",
            Env {
                path: None,
                ..Env::new("GC")
            },
            good.to_string(),
            4,
        ),
        (
            "GC without valid-attachments",
            Env::new("GC"),
            good.to_string(),
            7,
        ),
        (
            "no pod CIDR and no node state yet",
            env.clone(),
            with("podCIDRs", json!([])),
            11,
        ),
        (
            "requested IP outside the CIDR",
            env.clone(),
            with("runtimeConfig", json!({"ips": ["10.99.0.5/24"]})),
            103,
        ),
    ];
    for (what, env, stdin, code) in cases {
        let r = add(&env, &stdin);
        let j = r.err(code);
        assert!(
            j["details"].as_str().is_some_and(|d| !d.is_empty()),
            "{what}: {j}"
        );
        assert_eq!(links(node), before, "{what} created a link");
        assert!(addresses(lab.pods[0].ns(), "eth0").is_empty(), "{what}");
        assert!(
            stored(&work.path().join("ipam"), "errs").is_empty(),
            "{what} left an allocation"
        );
    }
}

/// An ADD that fails half-way (CNI_IFNAME already taken in the pod) rolls back: no host veth,
/// no allocation, the pod's own interface untouched.
#[test]
fn failed_add_rolls_back() {
    tools();
    let lab = NodeLab::new("cnir", 1);
    let work = common::TempDir::new("cni-rollback");
    let node = lab.node.ns();
    let pod = lab.pods[0].ns();
    pod.ip_run([
        "link", "add", "eth0", "type", "veth", "peer", "name", "other0",
    ])
    .expect("pre-existing eth0");
    let before = links(node);
    let c = conf("1.0.0", "rb", work.path(), &["10.62.0.0/24"]);
    let r = ferrite(
        node,
        &Env::attach("ADD", "c0", &lab.pod_path(0), "eth0"),
        &c,
    );
    r.err(101);
    assert_eq!(links(node), before);
    assert!(stored(&work.path().join("ipam"), "rb").is_empty());
    assert!(links(pod).contains("other0"));
    // The same pod with a free name works; the store holds only that attachment.
    let ok = ferrite(
        node,
        &Env::attach("ADD", "c0", &lab.pod_path(0), "net1"),
        &c,
    )
    .ok();
    assert!(
        ok["ips"][0]["address"]
            .as_str()
            .unwrap()
            .starts_with("10.62.0.")
    );
    let held = stored(&work.path().join("ipam"), "rb");
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0]["ifname"], "net1");
}

/// Without podCIDRs in the config, ADD waits (code 11) for the agent's node state file, then
/// uses it; runtimeConfig ips/mac are honoured.
#[test]
fn node_state_file_and_capabilities() {
    tools();
    let lab = NodeLab::new("cnin", 1);
    let work = common::TempDir::new("cni-node");
    let node = lab.node.ns();
    let mut c = conf("1.1.0", "ns", work.path(), &[]);
    let env = Env::attach("ADD", "c0", &lab.pod_path(0), "eth0");
    ferrite(node, &env, &c).err(11);
    std::fs::write(
        work.path().join("node.json"),
        json!({"nodeName": "n1", "podCIDRs": ["10.63.4.0/24"], "source": "flag", "updatedUnixMs": 0}).to_string(),
    )
    .unwrap();
    c["runtimeConfig"] = json!({"ips": ["10.63.4.77/24"], "mac": "02:00:00:aa:bb:cc"});
    let r = ferrite(node, &env, &c).ok();
    assert_eq!(r["ips"][0]["address"], "10.63.4.77/32");
    assert_eq!(r["interfaces"][1]["mac"], "02:00:00:aa:bb:cc");
    let link = lab.pods[0]
        .ns()
        .ip_run(["-j", "link", "show", "eth0"])
        .unwrap();
    assert!(String::from_utf8_lossy(&link.stdout).contains("02:00:00:aa:bb:cc"));
}

/// STATUS follows the real agent: not available before it runs, not ready while a subsystem
/// is not (L2 membership unbound: no Node object gives it an address), ready once it is.
#[test]
fn status_follows_the_agent() {
    tools();
    common::require_root();
    let lab = NodeLab::new("cnis", 0);
    let mut agent = common::AgentLab::new("cnis");
    let mut c = conf("1.1.0", "st", agent.work.path(), &["10.64.0.0/24"]);
    c["apiSocket"] = json!(agent.socket);
    let status = || ferrite(lab.node.ns(), &Env::new("STATUS"), &c);
    let down = status().err(50);
    assert!(
        down["details"].as_str().unwrap().contains("agent"),
        "{down}"
    );
    agent.start();
    let unbound = status().err(50);
    assert!(
        unbound["details"]
            .as_str()
            .is_some_and(|d| d.contains("l2: membership not bound")),
        "{unbound}"
    );
    // The agent runs in the root netns: its Node's InternalIP is the loopback address.
    agent.write(
        "node.yaml",
        &ferrite_lab::manifest::node_yaml("test-node", "127.0.0.1".parse().unwrap(), &[]),
    );
    let ready = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        status().status == 0
    });
    assert!(
        ready.is_ok(),
        "STATUS not ready with the membership bound: {}\n{}",
        status().json(),
        agent.log()
    );
    agent.kill9();
    let ok = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        status().status != 0
    });
    assert!(ok.is_ok(), "STATUS still ready after the agent died");
}

/// What a restart finds: a reservation of an ADD that was killed and an allocation whose pod
/// vanished without DEL are reclaimed when the agent (here `ferrite cni install`, the same
/// code) starts; a live attachment is kept. `ferrite cni allocations` lists what is left.
#[test]
fn restart_reclaims_leaks_and_keeps_live_pods() {
    tools();
    let lab = NodeLab::new("cnil", 1);
    let work = common::TempDir::new("cni-reclaim");
    let state = work.path().join("state");
    let node = lab.node.ns();
    let mut c = conf("1.1.0", "reclaimnet", work.path(), &["10.69.0.0/24"]);
    c["stateDir"] = json!(state.join("cni"));
    let live = ferrite(
        node,
        &Env::attach("ADD", "live", &lab.pod_path(0), "eth0"),
        &c,
    )
    .ok();
    let store = state.join("cni").join("reclaimnet").join("state.json");
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&store).unwrap()).unwrap();
    let template = doc["allocations"][0].clone();
    let leak = |ip: &str, cid: &str, pending: Option<Value>| {
        let mut a = template.clone();
        a["ip"] = json!(ip);
        a["containerId"] = json!(cid);
        a["hostIfname"] = json!(format!("ferdead{cid}"));
        if let Some(p) = pending {
            a["pending"] = p;
        }
        a
    };
    let list = doc["allocations"].as_array_mut().unwrap();
    list.push(leak(
        "10.69.0.50",
        "killed",
        Some(json!({"pid": 2_147_483_000_u32, "startTime": 1})),
    ));
    list.push(leak("10.69.0.51", "vanished", None));
    std::fs::write(&store, doc.to_string()).unwrap();

    let mut install = node.command(cni_common::FERRITE).unwrap();
    install
        .args([
            "cni",
            "install",
            "--pod-cidr",
            "10.69.0.0/24",
            "--node-name",
            "n1",
        ])
        .arg("--conf-dir")
        .arg(work.path().join("net.d"))
        .arg("--bin-dir")
        .arg(work.path().join("bin"))
        .arg("--state-dir")
        .arg(&state);
    let out = install.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("reclaimed 2 leaked addresses"),
        "{out:?}"
    );
    assert!(work.path().join("net.d/05-ferrite.conflist").is_file());
    assert!(work.path().join("bin/ferrite").is_file());

    let out = std::process::Command::new(cni_common::FERRITE)
        .args(["cni", "allocations", "-o", "json", "--state-dir"])
        .arg(state.join("cni"))
        .output()
        .unwrap();
    let left: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ips: Vec<&str> = left
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["ip"].as_str().unwrap())
        .collect();
    assert_eq!(
        ips,
        [live["ips"][0]["address"]
            .as_str()
            .unwrap()
            .trim_end_matches("/32")]
    );
    assert_eq!(left[0]["network"], "reclaimnet");
}

fn kind(ns: &ferrite_lab::Ns, dev: &str) -> String {
    link_kind(ns, dev).unwrap_or_else(|e| panic!("ip link show {dev}: {e}"))
}

/// `podDevice`: `auto` builds a netkit pair where the kernel can (a netkit made in a throwaway
/// netns tells) and a veth pair elsewhere, and the pod reaches its node either way; `netkit`
/// builds one or, on a kernel without netkit, fails with code 7 naming the field and leaves no
/// link and no address behind; an unknown kind is code 7 before anything is made.
#[test]
fn pod_device_kind_follows_the_kernel() {
    tools();
    let lab = NodeLab::new("cnik", 2);
    let work = common::TempDir::new("cni-podDevice");
    let node = lab.node.ns();
    let has_netkit = kernel_has_netkit();
    let mut c = conf("1.0.0", "pd", work.path(), &["10.64.0.0/24"]);
    c["podDevice"] = json!("sideways");
    ferrite(
        node,
        &Env::attach("ADD", "c0", &lab.pod_path(0), "eth0"),
        &c,
    )
    .err(7);

    c["podDevice"] = json!("auto");
    let r = ferrite(
        node,
        &Env::attach("ADD", "c0", &lab.pod_path(0), "eth0"),
        &c,
    )
    .ok();
    let host = r["interfaces"][0]["name"]
        .as_str()
        .expect("host interface")
        .to_owned();
    let want = if has_netkit { "netkit" } else { "veth" };
    assert_eq!(kind(node, &host), want, "auto on this kernel: {r}");
    assert_eq!(kind(lab.pods[0].ns(), "eth0"), want);
    let gw = r["ips"][0]["gateway"].as_str().expect("gateway").to_owned();
    let ping = lab.pods[0]
        .ns()
        .command("busybox")
        .expect("busybox")
        .args(["ping", "-c", "1", "-W", "2", &gw])
        .output()
        .expect("busybox ping (make setup installs busybox-static)");
    assert!(
        ping.status.success(),
        "the {want} pod cannot reach its node at {gw}: {ping:?}"
    );

    c["podDevice"] = json!("netkit");
    let before = links(node);
    let held = stored(&work.path().join("ipam"), "pd").len();
    let r = ferrite(
        node,
        &Env::attach("ADD", "c1", &lab.pod_path(1), "eth0"),
        &c,
    );
    if has_netkit {
        let r = r.ok();
        let host = r["interfaces"][0]["name"].as_str().expect("host interface");
        assert_eq!(kind(node, host), "netkit");
    } else {
        let e = r.err(7);
        assert!(
            e["details"]
                .as_str()
                .unwrap_or_default()
                .contains("podDevice"),
            "{e}"
        );
        assert_eq!(links(node), before, "a failed netkit ADD left a link");
        assert!(!links(lab.pods[1].ns()).contains("eth0"));
        assert_eq!(
            stored(&work.path().join("ipam"), "pd").len(),
            held,
            "an address stayed reserved"
        );
    }
}
