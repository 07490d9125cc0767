//! The status plan without IO: desired values, what objects carry, and the steps between.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use smol_str::SmolStr;

use super::{Carried, Desired, Known, Step, Target, cleanup_candidates, desired, plan, refresh};
use crate::lbipam::allocate;
use crate::model::{
    IpBlock, IpPool, IpamReason, Protocol, Service, ServiceName, ServicePort, ServiceType,
    Snapshot, TargetPort,
};

const MANAGER: &str = "ferrite";
const NOW: &str = "2026-01-01T00:00:00Z";
const LATER: &str = "2026-01-02T00:00:00Z";

fn pool(name: &str, cidr: &str) -> IpPool {
    IpPool {
        name: SmolStr::new(name),
        blocks: vec![IpBlock::parse(Some(cidr), None, None).expect("cidr")],
        ..IpPool::default()
    }
}

fn lb(name: &str) -> Service {
    Service {
        name: ServiceName::new("default", name),
        service_type: ServiceType::LoadBalancer,
        ports: vec![ServicePort {
            name: SmolStr::new("http"),
            protocol: Protocol::Tcp,
            port: 80,
            target_port: TargetPort::Number(80),
            node_port: None,
        }],
        ..Service::default()
    }
}

fn snapshot(pools: Vec<IpPool>, services: Vec<Service>) -> Snapshot {
    Snapshot {
        pools: pools.into_iter().map(|p| (p.name.clone(), p)).collect(),
        services: services.into_iter().map(|s| (s.name.clone(), s)).collect(),
        ..Snapshot::default()
    }
}

fn allocation(snapshot: &Snapshot) -> crate::lbipam::Allocation {
    allocate(
        snapshot.pools.values(),
        snapshot.services.values(),
        &BTreeMap::new(),
    )
}

fn svc(name: &str) -> Target {
    Target::Service(ServiceName::new("default", name))
}

/// The object the server would hold after applying `status` as [`MANAGER`].
fn object_after(status: &Value, generation: i64) -> Value {
    let mut fields = serde_json::Map::new();
    if status.pointer("/loadBalancer/ingress").is_some() {
        fields.insert("f:loadBalancer".into(), json!({"f:ingress": {}}));
    }
    let conditions: serde_json::Map<String, Value> = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                format!("k:{}", json!({"type": c["type"]})),
                json!({".": {}}),
            )
        })
        .collect();
    if !conditions.is_empty() {
        fields.insert("f:conditions".into(), Value::Object(conditions));
    }
    json!({
        "metadata": {"generation": generation, "managedFields": [
            {"manager": MANAGER, "operation": "Apply", "subresource": "status",
             "fieldsV1": {"f:status": fields}},
            {"manager": "someone-else", "operation": "Apply", "subresource": "status",
             "fieldsV1": {"f:status": {"f:conditions": {"k:{\"type\":\"Other\"}": {}}}}},
        ]},
        "status": status,
    })
}

/// The status written on `target`, `Value::Null` for a removal.
fn written(steps: &[Step], target: &Target) -> Option<Value> {
    steps.iter().find_map(|s| match s {
        Step::Write { target: t, status } if t == target => {
            Some(status.clone().unwrap_or(Value::Null))
        }
        _ => None,
    })
}

#[test]
fn desired_status_of_services_and_pools() {
    let mut full = lb("late");
    full.created_unix = Some(10);
    let mut bad = lb("bad");
    bad.annotations
        .insert("ferrite.dev/ips".into(), "not-an-ip".into());
    let mut first = lb("web");
    first.created_unix = Some(1);
    let snap = snapshot(
        vec![pool("one", "10.0.0.1/32")],
        vec![
            first,
            full,
            bad,
            Service {
                service_type: ServiceType::ClusterIp,
                ..lb("plain")
            },
        ],
    );
    let want = desired(&allocation(&snap), &snap);
    let web = &want[&svc("web")];
    assert_eq!(
        web.ingress,
        ["10.0.0.1".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(web.conditions[0].reason, IpamReason::Satisfied.as_str());
    assert_eq!(want[&svc("late")].conditions[0].reason, "out_of_ips");
    assert!(want[&svc("late")].ingress.is_empty());
    assert_eq!(want[&svc("bad")].conditions[0].reason, "invalid_request");
    assert!(!want.contains_key(&svc("plain")), "not handled");
    let pool = &want[&Target::Pool("one".into())];
    let counts: Vec<(&str, &str)> = pool
        .conditions
        .iter()
        .map(|c| (c.condition_type, c.message.as_str()))
        .take(3)
        .collect();
    assert_eq!(
        counts,
        [
            ("ferrite.dev/IPsTotal", "1"),
            ("ferrite.dev/IPsAvailable", "0"),
            ("ferrite.dev/IPsUsed", "1")
        ]
    );
}

#[test]
fn unknown_objects_are_read_first_then_written_once() {
    let snap = snapshot(vec![pool("lan", "10.0.0.0/30")], vec![lb("web")]);
    let want = desired(&allocation(&snap), &snap);
    let mut known = BTreeMap::new();
    let steps = plan(&want, &BTreeSet::new(), &known, NOW);
    assert_eq!(
        steps,
        [
            Step::Fetch(svc("web")),
            Step::Fetch(Target::Pool("lan".into()))
        ]
    );

    // A fresh object (only someone else's condition on it) gets the full status.
    let bare =
        json!({"metadata": {"generation": 3}, "status": {"conditions": [{"type": "Other"}]}});
    known.insert(
        svc("web"),
        Known::Fresh(Carried::from_object(&bare, MANAGER)),
    );
    let steps = plan(&want, &BTreeSet::new(), &known, NOW);
    let status = written(&steps, &svc("web")).expect("written");
    assert_eq!(
        status["loadBalancer"]["ingress"],
        json!([{"ip": "10.0.0.1", "ipMode": "VIP"}])
    );
    let condition = &status["conditions"][0];
    assert_eq!(condition["type"], "ferrite.dev/IPAMRequestSatisfied");
    assert_eq!(condition["status"], "True");
    assert_eq!(condition["reason"], "satisfied");
    assert_eq!(condition["observedGeneration"], 3);
    assert_eq!(condition["lastTransitionTime"], NOW);

    // What the server returned after the write is what the plan compares with: nothing to do.
    let after = object_after(&status, 3);
    known.insert(
        svc("web"),
        Known::Fresh(Carried::from_object(&after, MANAGER)),
    );
    let steps = plan(&want, &BTreeSet::new(), &known, LATER);
    assert_eq!(written(&steps, &svc("web")), None, "{steps:?}");
}

#[test]
fn transition_time_changes_only_with_status_or_reason() {
    let snap = snapshot(vec![pool("lan", "10.0.0.0/30")], vec![lb("web")]);
    let alloc = allocation(&snap);
    let want = desired(&alloc, &snap);
    let first = super::status_json(&want[&svc("web")], &Carried::default(), NOW);
    let carried = Carried::from_object(&object_after(&first, 1), MANAGER);

    // Same reason, another message (another address): the time stays.
    let mut moved = want[&svc("web")].clone();
    moved.ingress = vec!["10.0.0.2".parse().unwrap()];
    moved.conditions[0].message = "allocated 10.0.0.2 (pool lan)".into();
    let status = super::status_json(&moved, &carried, LATER);
    assert_eq!(status["conditions"][0]["lastTransitionTime"], NOW);

    // Another reason: the time moves.
    let mut failed = moved.clone();
    failed.ingress.clear();
    failed.conditions[0].status = crate::model::ConditionStatus::False;
    failed.conditions[0].reason = "out_of_ips".into();
    let status = super::status_json(&failed, &carried, LATER);
    assert_eq!(status["conditions"][0]["lastTransitionTime"], LATER);
    assert!(
        status.get("loadBalancer").is_none(),
        "no ingress applied, so the one ferrite wrote is removed: {status}"
    );
}

#[test]
fn a_service_no_longer_handled_loses_what_ferrite_wrote() {
    let snap = snapshot(vec![pool("lan", "10.0.0.0/30")], vec![lb("web")]);
    let want = desired(&allocation(&snap), &snap);
    let status = super::status_json(&want[&svc("web")], &Carried::default(), NOW);
    let mut known = BTreeMap::new();
    known.insert(
        svc("web"),
        Known::Fresh(Carried::from_object(&object_after(&status, 1), MANAGER)),
    );

    let mut cluster_ip = lb("web");
    cluster_ip.service_type = ServiceType::ClusterIp;
    cluster_ip.status_ingress = vec!["10.0.0.1".parse().unwrap()];
    let next = snapshot(vec![pool("lan", "10.0.0.0/30")], vec![cluster_ip]);
    refresh(&mut known, &snap, &next);
    assert!(
        matches!(known[&svc("web")], Known::Stale(_)),
        "spec changed"
    );
    let alloc = allocation(&next);
    let candidates = cleanup_candidates(&alloc, &next);
    assert!(candidates.contains(&svc("web")), "it still has ingress");
    let want = desired(&alloc, &next);
    let steps = plan(&want, &candidates, &known, LATER);
    assert!(steps.contains(&Step::Fetch(svc("web"))), "{steps:?}");

    // Read again: ferrite still owns its fields there → an empty apply removes them.
    known.insert(
        svc("web"),
        Known::Fresh(Carried::from_object(&object_after(&status, 2), MANAGER)),
    );
    let steps = plan(&want, &candidates, &known, LATER);
    assert_eq!(written(&steps, &svc("web")), Some(Value::Null));

    // After that the object carries nothing of ferrite's: nothing more to do.
    let cleaned = json!({"metadata": {"generation": 2}, "status": {}});
    known.insert(
        svc("web"),
        Known::Fresh(Carried::from_object(&cleaned, MANAGER)),
    );
    let steps = plan(&want, &candidates, &known, LATER);
    assert_eq!(written(&steps, &svc("web")), None, "{steps:?}");
}

#[test]
fn refresh_forgets_deleted_objects_and_reads_changed_ones() {
    let web = lb("web");
    let snap = snapshot(vec![pool("lan", "10.0.0.0/30")], vec![web.clone()]);
    let want = desired(&allocation(&snap), &snap);
    let status = super::status_json(&want[&svc("web")], &Carried::default(), NOW);
    let fresh = Known::Fresh(Carried::from_object(&object_after(&status, 1), MANAGER));
    let mut known = BTreeMap::from([
        (svc("web"), fresh.clone()),
        (Target::Pool("lan".into()), Known::Fresh(Carried::default())),
    ]);

    // The watch brings back exactly what was written: still fresh.
    let mut echoed = web.clone();
    echoed.status_ingress = vec!["10.0.0.1".parse().unwrap()];
    let next = snapshot(vec![pool("lan", "10.0.0.0/30")], vec![echoed.clone()]);
    refresh(&mut known, &snap, &next);
    assert_eq!(known[&svc("web")], fresh);

    // Someone else rewrote the ingress: read again.
    let mut rewritten = echoed.clone();
    rewritten.status_ingress = vec!["10.0.0.3".parse().unwrap()];
    let after = snapshot(vec![pool("lan", "10.0.0.0/29")], vec![rewritten]);
    refresh(&mut known, &next, &after);
    assert!(matches!(known[&svc("web")], Known::Stale(_)));
    assert!(matches!(
        known[&Target::Pool("lan".into())],
        Known::Stale(_)
    ));

    // Deleted objects are forgotten.
    refresh(&mut known, &after, &Snapshot::default());
    assert!(known.is_empty());
}

#[test]
fn conditions_the_manager_owns_but_no_longer_wants_are_rewritten() {
    let want = Desired {
        ingress: Vec::new(),
        conditions: Vec::new(),
    };
    let mut carried = Carried::default();
    carried.owned_conditions.insert("ferrite.dev/Old".into());
    let target = Target::Pool("p".into());
    let known = BTreeMap::from([(target.clone(), Known::Fresh(carried))]);
    let desired = BTreeMap::from([(target.clone(), want)]);
    let steps = plan(&desired, &BTreeSet::new(), &known, NOW);
    assert_eq!(written(&steps, &target), Some(json!({"conditions": []})));
}

#[test]
fn gone_objects_are_skipped() {
    let target = svc("web");
    let known = BTreeMap::from([(target.clone(), Known::Gone)]);
    let candidates = BTreeSet::from([target]);
    assert!(plan(&BTreeMap::new(), &candidates, &known, NOW).is_empty());
}
