use std::time::Duration;

use super::*;

fn scrape() -> Scrape {
    Scrape {
        services: 3,
        frontends: 4,
        backends: 6,
        generation: 2,
        maps: vec![MapFill {
            name: "fe_svc_v1".into(),
            entries: 16_384,
            max_entries: 65_536,
        }],
        flows: vec![
            FlowCount {
                kind: "sock-lb".into(),
                drop_reason: None,
                flows: 12,
            },
            FlowCount {
                kind: "north-south".into(),
                drop_reason: Some("source-range".into()),
                flows: 3,
            },
        ],
        policy: vec![PolicyCount {
            policy: "x/allow-y".into(),
            direction: "ingress".into(),
            verdict: "allowed".into(),
            packets: 9,
        }],
        snat_flows: Some(7),
        l2_members: 2,
        l2_owned: 1,
        l2_rejected: vec![("bad_mac".into(), 5)],
        subsystems: vec![("datapath".into(), true), ("cni".into(), false)],
        source_errors: 0,
        process: ProcessStats {
            resident_memory_bytes: 4096,
            ..ProcessStats::default()
        },
    }
}

#[test]
fn the_exposition_has_events_then_state_and_one_eof() {
    let m = Metrics::new();
    m.source_event("dir");
    m.reconciled(RECONCILE_LB, Duration::from_millis(3), true);
    m.reconciled(RECONCILE_LB, Duration::from_millis(5), false);
    m.l2_announced("10.0.0.1".parse().unwrap());
    m.l2_takeover(Some(Duration::from_millis(400)));
    m.l2_takeover(None);
    let text = m.encode(&scrape());
    for line in [
        "ferrite_source_events_total{source=\"dir\"} 1",
        "ferrite_reconcile_duration_seconds_count{reconciler=\"lb\"} 2",
        "ferrite_reconcile_duration_seconds_count{reconciler=\"routing\"} 0",
        "ferrite_reconcile_errors_total{reconciler=\"lb\"} 1",
        "ferrite_l2_gratuitous_announcements_total{family=\"ipv4\"} 1",
        "ferrite_l2_gratuitous_announcements_total{family=\"ipv6\"} 0",
        "ferrite_l2_takeovers_total 2",
        "ferrite_l2_failover_duration_seconds_count 1",
        "ferrite_l2_failover_duration_seconds_bucket{le=\"0.4\"} 1",
        "ferrite_cni_operations_total{command=\"ADD\",outcome=\"success\"} 0",
        "ferrite_services 3",
        "ferrite_backends 6",
        "ferrite_bpf_map_pressure{map_name=\"fe_svc_v1\"} 0.25",
        "ferrite_bpf_map_entries{map_name=\"fe_svc_v1\"} 16384",
        "ferrite_masquerade_snat_flows 7",
        "ferrite_flows_forwarded_total{flow_type=\"sock-lb\"} 12",
        "ferrite_flows_dropped_total{flow_type=\"north-south\",reason=\"source-range\"} 3",
        "ferrite_policy_verdicts_total{policy=\"x/allow-y\",direction=\"ingress\",verdict=\"allowed\"} 9",
        "ferrite_l2_members 2",
        "ferrite_l2_membership_rejected_total{reason=\"bad_mac\"} 5",
        "ferrite_subsystem_ready{subsystem=\"cni\"} 0",
        "process_resident_memory_bytes 4096",
        "# TYPE ferrite_l2_takeovers counter",
        "# TYPE ferrite_bpf_map_pressure gauge",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert_eq!(text.matches("# EOF").count(), 1);
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[test]
fn without_north_south_there_is_no_snat_family() {
    let text = Metrics::new().encode(&Scrape {
        snat_flows: None,
        ..scrape()
    });
    assert!(!text.contains("ferrite_masquerade_snat_flows"), "{text}");
}

#[test]
fn the_classic_format_names_counters_with_total_and_has_no_eof() {
    let m = Metrics::new();
    m.l2_takeover(None);
    let classic = to_classic(&m.encode(&scrape()));
    assert!(
        classic.contains("# TYPE ferrite_l2_takeovers_total counter\n"),
        "{classic}"
    );
    assert!(
        classic.contains("# HELP ferrite_l2_takeovers_total Addresses"),
        "{classic}"
    );
    assert!(
        classic.contains("\nferrite_l2_takeovers_total 1\n"),
        "{classic}"
    );
    assert!(
        classic.contains("# TYPE ferrite_services gauge\n"),
        "{classic}"
    );
    assert!(!classic.contains("# EOF"), "{classic}");
    assert!(accepts_openmetrics(None));
    assert!(accepts_openmetrics(Some(
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    )));
    assert!(!accepts_openmetrics(Some("text/plain;version=0.0.4")));
}
