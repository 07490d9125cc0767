use std::net::SocketAddr;

use smol_str::SmolStr;

use super::*;
use crate::model::{Protocol, ServiceName};

fn fe(addr: &str, port: u16, backends: &[&str]) -> Frontend {
    Frontend {
        service: ServiceName::new("default", format!("svc-{addr}-{port}")),
        port_name: SmolStr::default(),
        addr: addr.parse().unwrap(),
        port,
        protocol: Protocol::Tcp,
        backends: backends
            .iter()
            .map(|b| b.parse::<SocketAddr>().unwrap())
            .collect(),
        affinity_timeout: None,
    }
}

fn applied(desired: &[Frontend], state: &LbState) -> (Plan, LbState) {
    let p = plan(desired, state);
    let mut next = state.clone();
    next.apply(&p);
    (p, next)
}

/// Every slot of every frontend points at an existing backend; no orphan slots or backends.
fn assert_consistent(state: &LbState) {
    for v in state.services.values() {
        for slot in 0..v.count {
            let id = state.slots.get(&SlotKey {
                svc_id: v.svc_id,
                slot,
                _pad: 0,
            });
            let id = id.unwrap_or_else(|| panic!("svc {} slot {slot} missing", v.svc_id));
            assert!(
                state.backends.contains_key(id),
                "slot points at missing backend {id}"
            );
        }
    }
    let ids: BTreeSet<u32> = state.services.values().map(|v| v.svc_id).collect();
    assert_eq!(ids.len(), state.services.len(), "svc ids unique");
    for k in state.slots.keys() {
        assert!(ids.contains(&k.svc_id), "orphan slot {k:?}");
    }
    let used: BTreeSet<u32> = state.slots.values().copied().collect();
    for id in state.backends.keys() {
        assert!(used.contains(id), "orphan backend {id}");
    }
}

#[test]
fn fresh_plan_writes_backends_slots_then_service() {
    let desired = [fe("10.96.0.10", 80, &["10.1.0.2:8080", "10.1.0.3:8080"])];
    let (p, state) = applied(&desired, &LbState::default());
    assert_eq!(p.upsert_backends.len(), 2);
    assert_eq!(p.upsert_slots.len(), 2);
    assert_eq!(p.upsert_services.len(), 1);
    assert_eq!(p.upsert_services[0].1.count, 2);
    assert!(p.delete_services.is_empty() && p.delete_slots.is_empty());
    assert_eq!(
        p.upsert_backends
            .iter()
            .map(|(id, _)| *id)
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_consistent(&state);
}

#[test]
fn unchanged_model_is_an_empty_plan() {
    let desired = [
        fe("10.96.0.10", 80, &["10.1.0.2:8080"]),
        fe("fd00::10", 80, &["[fd01::2]:80"]),
    ];
    let (_, state) = applied(&desired, &LbState::default());
    let again = plan(&desired, &state);
    assert!(again.is_empty(), "{again:?}");
}

#[test]
fn removing_a_backend_shrinks_count_and_deletes_after() {
    let two = [fe("10.96.0.10", 80, &["10.1.0.2:8080", "10.1.0.3:8080"])];
    let (_, state) = applied(&two, &LbState::default());
    let one = [fe("10.96.0.10", 80, &["10.1.0.3:8080"])];
    let (p, next) = applied(&one, &state);
    assert_eq!(p.upsert_services[0].1.count, 1);
    assert_eq!(
        p.upsert_slots.len(),
        1,
        "slot 0 now points at the remaining backend"
    );
    assert_eq!(
        p.delete_slots,
        vec![SlotKey {
            svc_id: 1,
            slot: 1,
            _pad: 0
        }]
    );
    assert_eq!(p.delete_backends, vec![1]);
    assert_consistent(&next);
}

#[test]
fn zero_endpoints_keeps_the_frontend_with_count_zero() {
    let (_, state) = applied(
        &[fe("10.96.0.10", 80, &["10.1.0.2:8080"])],
        &LbState::default(),
    );
    let (p, next) = applied(&[fe("10.96.0.10", 80, &[])], &state);
    assert_eq!(p.upsert_services[0].1.count, 0);
    assert!(p.delete_services.is_empty());
    assert_eq!(next.services.len(), 1);
    assert_consistent(&next);
}

#[test]
fn deleted_service_goes_with_its_slots_and_unshared_backends() {
    let both = [
        fe("10.96.0.10", 80, &["10.1.0.2:8080", "10.1.0.9:80"]),
        fe("10.96.0.11", 80, &["10.1.0.2:8080"]),
    ];
    let (_, state) = applied(&both, &LbState::default());
    assert_eq!(state.backends.len(), 2, "shared backend stored once");
    let (p, next) = applied(&both[1..], &state);
    assert_eq!(p.delete_services.len(), 1);
    assert_eq!(p.delete_slots.len(), 2);
    assert_eq!(p.delete_backends.len(), 1);
    assert_consistent(&next);
}

#[test]
fn ids_are_reused_and_stable() {
    let a = [
        fe("10.96.0.10", 80, &["10.1.0.2:80"]),
        fe("10.96.0.11", 80, &["10.1.0.3:80"]),
    ];
    let (_, state) = applied(&a, &LbState::default());
    let (_, state) = applied(&a[1..], &state);
    let id11 = state.services[&svc_key(&a[1])].svc_id;
    let c = [fe("10.96.0.12", 80, &["10.1.0.4:80"]), a[1].clone()];
    let (_, state) = applied(&c, &state);
    assert_eq!(
        state.services[&svc_key(&a[1])].svc_id,
        id11,
        "kept service keeps its id"
    );
    assert_eq!(
        state.services[&svc_key(&c[0])].svc_id,
        1,
        "freed id 1 is reused"
    );
    assert_consistent(&state);
}

#[test]
fn affinity_flags_and_stale_entries() {
    let mut f = fe("10.96.0.10", 80, &["10.1.0.2:80", "10.1.0.3:80"]);
    f.affinity_timeout = Some(30);
    let (p, state) = applied(std::slice::from_ref(&f), &LbState::default());
    assert_eq!(p.upsert_services[0].1.flags, SVC_FLAG_AFFINITY);
    assert_eq!(p.upsert_services[0].1.affinity_timeout_s, 30);
    f.backends.remove(0);
    let (p, _) = applied(&[f], &state);
    assert_eq!(
        p.stale_affinity.into_iter().collect::<Vec<_>>(),
        vec![(1, 1)]
    );
}

#[test]
fn orphans_left_by_a_crash_are_removed() {
    let (_, mut state) = applied(
        &[fe("10.96.0.10", 80, &["10.1.0.2:80"])],
        &LbState::default(),
    );
    state.slots.insert(
        SlotKey {
            svc_id: 77,
            slot: 0,
            _pad: 0,
        },
        1,
    );
    state
        .backends
        .insert(42, backend_of("10.9.9.9:1".parse().unwrap()));
    let p = plan(&[fe("10.96.0.10", 80, &["10.1.0.2:80"])], &state);
    assert_eq!(
        p.delete_slots,
        vec![SlotKey {
            svc_id: 77,
            slot: 0,
            _pad: 0
        }]
    );
    assert_eq!(p.delete_backends, vec![42]);
}

#[test]
fn many_random_transitions_stay_consistent() {
    // Deterministic pseudo-random walk through models; each step must end consistent and a
    // replan of the same model must be empty.
    let mut seed = 0x9e37_79b9_u32;
    let mut rnd = move |n: u32| {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed % n
    };
    let mut state = LbState::default();
    for _ in 0..300 {
        let n = rnd(8);
        let desired: Vec<Frontend> = (0..n)
            .map(|i| {
                let bs: Vec<String> = (0..rnd(5))
                    .map(|b| format!("10.1.{}.{}:80", rnd(3), b + 1))
                    .collect();
                let refs: Vec<&str> = bs.iter().map(String::as_str).collect();
                fe(&format!("10.96.0.{}", i + rnd(3) * 10), 80, &refs)
            })
            .collect();
        let mut dedup = BTreeSet::new();
        let desired: Vec<Frontend> = desired
            .into_iter()
            .filter(|f| dedup.insert(f.addr))
            .collect();
        let (_, next) = applied(&desired, &state);
        assert_consistent(&next);
        assert!(plan(&desired, &next).is_empty());
        state = next;
    }
}
