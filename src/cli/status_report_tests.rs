use super::*;
use crate::api::{
    ApiListeners, ApplyReport, DatapathStatus, DeviceIngress, DeviceView, L2AddressView,
    L2MembershipView, MasqStatus,
};
use crate::routing::task::RouteView;

fn ready(name: &str, detail: &str) -> Subsystem {
    Subsystem {
        name: name.into(),
        ready: true,
        detail: detail.into(),
        ..Subsystem::default()
    }
}

fn status() -> Status {
    Status {
        version: "0.1.0".into(),
        node_name: "n1".into(),
        source: "dir:/etc/ferrite".into(),
        datapath: DatapathStatus {
            ready: true,
            bpf_root: "/sys/fs/bpf/ferrite".into(),
            cgroup: "/sys/fs/cgroup".into(),
            ingress: vec![DeviceIngress {
                device: "eth0".into(),
                hook: "tc".into(),
            }],
            devices: vec![DeviceView {
                name: "eth0".into(),
                ifindex: 2,
                addresses: vec!["192.168.1.10".into()],
            }],
            device_selection: "detected".into(),
            ..DatapathStatus::default()
        },
        last_apply: Some(ApplyReport {
            generation: 4,
            services: 3,
            frontends: 5,
            backends: 7,
            ..ApplyReport::default()
        }),
        subsystems: vec![
            ready("datapath", "pins and links present"),
            ready("source", "dir:/etc/ferrite: generation 4 applied"),
            ready("north-south", "attached on eth0"),
            ready("cni", "installed /etc/cni/net.d/05-ferrite.conflist"),
        ],
        masquerade: Some(MasqStatus {
            enabled: true,
            pod_cidrs: vec!["10.244.0.0/24".into()],
            exclude: Vec::new(),
            snat_flows: 2,
        }),
        api: ApiListeners {
            socket: "/run/ferrite/ferrite.sock".into(),
            tls: Some("0.0.0.0:9443".into()),
            metrics: Some("0.0.0.0:9962".into()),
        },
        ..Status::default()
    }
}

fn l2_view() -> L2View {
    L2View {
        node: "n1".into(),
        members: vec!["n1".into(), "n2".into()],
        addresses: vec![L2AddressView {
            address: "192.168.50.209".into(),
            service: "demo/web".into(),
            owner: Some("n1".into()),
            interface: Some("eth0".into()),
            since_unix_ms: Some(1),
            eligible: true,
            reason: "eligible".into(),
            claim_held: false,
        }],
        membership: L2MembershipView {
            mode: "bound".into(),
            bind: Some("192.168.1.10:7946".into()),
            ..L2MembershipView::default()
        },
        ..L2View::default()
    }
}

fn routes() -> RoutesView {
    RoutesView {
        mode: "auto".into(),
        node: "n1".into(),
        routes: vec![RouteView {
            node: "n2".into(),
            cidr: "10.244.1.0/24".into(),
            mode: "native".into(),
            via: Some("192.168.1.11".into()),
            state: "ok".into(),
            ..RouteView::default()
        }],
        ..RoutesView::default()
    }
}

fn by_name<'a>(lines: &'a [Line], name: &str) -> &'a Line {
    lines
        .iter()
        .find(|l| l.subsystem == name)
        .unwrap_or_else(|| panic!("no line {name}: {lines:?}"))
}

#[test]
fn a_healthy_node_has_one_ok_line_per_subsystem_with_counts() {
    let lines = report(&status(), &l2_view(), &routes());
    let names: Vec<&str> = lines.iter().map(|l| l.subsystem.as_str()).collect();
    assert_eq!(
        names,
        [
            "datapath",
            "device eth0",
            "socket-lb",
            "routing",
            "masquerade",
            "l2",
            "cni",
            "source",
            "api"
        ]
    );
    assert!(lines.iter().all(|l| l.health == Health::Ok), "{lines:#?}");
    assert_eq!(
        by_name(&lines, "socket-lb").summary,
        "cgroup /sys/fs/cgroup: 3 services, 5 frontends, 7 backends"
    );
    assert_eq!(
        by_name(&lines, "l2").summary,
        "membership bound, 2 members; 1 of 1 addresses announced here: 192.168.50.209"
    );
    assert_eq!(
        by_name(&lines, "routing").summary,
        "auto: 1 routes (1 native, 0 vxlan)"
    );
    assert!(
        by_name(&lines, "device eth0")
            .summary
            .starts_with("tc ingress")
    );
    let text = render(&status(), &lines, false);
    assert!(text.starts_with("ferrite 0.1.0 on node n1\n"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("masquerade:") && l.contains("OK") && l.contains("2 SNAT")),
        "{text}"
    );
    // Details only with --verbose when healthy.
    assert!(!text.contains("192.168.1.11"), "{text}");
    assert!(render(&status(), &lines, true).contains("n2 10.244.1.0/24 native via 192.168.1.11"));
}

#[test]
fn failures_and_warnings_show_with_their_reason() {
    let mut st = status();
    st.subsystems[0].ready = false;
    st.subsystems[0].detail = "missing pinned links: tcx_eth0_ingress".into();
    st.subsystems[0].last_error = Some("pin removed".into());
    st.datapath.ready = false;
    let mut l2 = l2_view();
    l2.membership.mode = "unbound".into();
    l2.membership.error = Some("no address to bind".into());
    let mut r = routes();
    r.routes[0].state = "error".into();
    r.routes[0].error = Some("no InternalIP".into());
    let lines = report(&st, &l2, &r);
    assert_eq!(by_name(&lines, "datapath").health, Health::Failure);
    assert_eq!(by_name(&lines, "l2").health, Health::Failure);
    assert_eq!(by_name(&lines, "routing").health, Health::Warning);
    let text = render(&st, &lines, false);
    // A failure prints its details without --verbose.
    assert!(text.contains("last error: pin removed"), "{text}");
    assert!(text.contains("error: no address to bind"), "{text}");
}

#[test]
fn unserved_ports_warn_on_the_source_line() {
    let mut st = status();
    let note = "Service ns/web: port sig 9999/SCTP not served: TCP and UDP only";
    st.unserved_ports = vec![note.into()];
    let lines = report(&st, &l2_view(), &routes());
    let source = by_name(&lines, "source");
    assert_eq!(source.health, Health::Warning);
    assert!(
        source.summary.ends_with("0 errors, 1 ports not served"),
        "{}",
        source.summary
    );
    assert!(
        source.details.iter().any(|d| d == note),
        "{:?}",
        source.details
    );
}

#[test]
fn what_is_turned_off_says_so() {
    let mut st = status();
    st.datapath.devices.clear();
    st.datapath.ingress.clear();
    st.masquerade = None;
    st.subsystems
        .retain(|s| s.name != "north-south" && s.name != "cni");
    let lines = report(
        &st,
        &L2View::default(),
        &RoutesView {
            mode: "off".into(),
            ..RoutesView::default()
        },
    );
    for name in ["north-south", "masquerade", "routing", "cni"] {
        assert_eq!(by_name(&lines, name).health, Health::Disabled, "{name}");
    }
    let json = serde_json::to_value(&lines).unwrap();
    assert_eq!(json[1]["subsystem"], "north-south");
    assert_eq!(json[1]["health"], "disabled");
}

#[test]
fn host_routing_says_who_forwards_pod_traffic() {
    let mut st = status();
    st.datapath.host_routing = HostRoutingView {
        mode: "bpf".into(),
        pod_devices: vec!["fer1".into(), "fer2".into()],
        netkit_devices: vec!["fer2".into()],
        overlay_device: Some("ferrite.vxlan".into()),
        to_pod_packets: 10,
        redirected_packets: 20,
        neigh_packets: 1,
        stack_packets: 3,
    };
    let lines = report(&st, &l2_view(), &routes());
    let hr = by_name(&lines, "host routing");
    assert_eq!(hr.health, Health::Ok);
    assert_eq!(
        hr.summary,
        "BPF on 2 pod devices (1 netkit, 1 veth) and ferrite.vxlan: 10 packets into pods, 20 out of devices (1 neighbour-resolved), 3 left to the stack"
    );
    assert_eq!(hr.details, ["fer1", "fer2"]);
    st.datapath.host_routing.mode = "legacy".into();
    let lines = report(&st, &l2_view(), &routes());
    assert_eq!(by_name(&lines, "host routing").health, Health::Disabled);
    st.datapath.host_routing.mode = "unavailable".into();
    let lines = report(&st, &l2_view(), &routes());
    let hr = by_name(&lines, "host routing");
    assert_eq!(hr.health, Health::Warning);
    assert!(hr.summary.contains("did not load"), "{}", hr.summary);
    st.datapath.host_routing.mode = String::new();
    let lines = report(&st, &l2_view(), &routes());
    assert!(lines.iter().all(|l| l.subsystem != "host routing"));
}
