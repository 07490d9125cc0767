use std::collections::HashMap;

use smol_str::SmolStr;

use super::*;
use crate::lb::external::ExtKind;
use crate::model::{Protocol, ServiceName};

fn fe(addr: Option<&str>, port: u16, backends: &[&str]) -> ExtFrontend {
    ExtFrontend {
        service: ServiceName::new("default", "web"),
        port_name: SmolStr::default(),
        kind: if addr.is_some() {
            ExtKind::LoadBalancer
        } else {
            ExtKind::NodePort
        },
        addr: addr.map(|a| a.parse().unwrap()),
        family_v4: true,
        port,
        protocol: Protocol::Tcp,
        backends: backends.iter().map(|b| b.parse().unwrap()).collect(),
        local_only: false,
        client_affinity: false,
        random: false,
        source_ranges: vec![],
    }
}

fn ids(all: &[&str]) -> HashMap<Backend, u32> {
    all.iter()
        .enumerate()
        .map(|(i, b)| {
            (
                backend_of(b.parse().unwrap()),
                u32::try_from(i).unwrap() + 1,
            )
        })
        .collect()
}

#[test]
fn frontends_sharing_backends_share_one_row() {
    let b = ["10.1.0.2:80", "10.2.0.2:80"];
    let desired = [fe(Some("192.168.1.200"), 80, &b), fe(None, 30080, &b)];
    let p = ext_plan(&desired, &ids(&b), &ExtState::default(), 251, 16);
    assert_eq!(p.write_rows.len(), 1);
    assert_eq!(p.write_rows[0].1.len(), 251);
    assert!(p.write_rows[0].1.iter().all(|id| *id == 1 || *id == 2));
    assert_eq!(p.upsert_frontends.len(), 2);
    assert!(
        p.upsert_frontends
            .iter()
            .all(|(_, v)| v.count == 2 && v.ext_id == 0)
    );
    let nodeport = p
        .upsert_frontends
        .iter()
        .find(|(k, _)| k.addr == [0; 4])
        .expect("nodeport key");
    assert_eq!(u16::from_be(nodeport.0.port), 30080);
}

#[test]
fn a_new_backend_set_gets_a_new_row_and_the_old_one_is_freed() {
    let b = ["10.1.0.2:80", "10.2.0.2:80", "10.2.0.3:80"];
    let all = ids(&b);
    let mut st = ExtState::default();
    let p = ext_plan(
        &[fe(Some("192.168.1.200"), 80, &b[..2])],
        &all,
        &st,
        251,
        16,
    );
    st.apply(&p);
    let p2 = ext_plan(&[fe(Some("192.168.1.200"), 80, &b)], &all, &st, 251, 16);
    assert_eq!(p2.write_rows[0].0, 1, "make before break: a fresh row");
    assert_eq!(p2.free_rows, vec![0]);
    st.apply(&p2);
    assert!(ext_plan(&[fe(Some("192.168.1.200"), 80, &b)], &all, &st, 251, 16).op_count() == 0);
    let p3 = ext_plan(&[], &all, &st, 251, 16);
    assert_eq!(p3.delete_frontends.len(), 1);
    assert_eq!(p3.free_rows, vec![1]);
}

#[test]
fn flags_ranges_and_empty_backends() {
    let mut f = fe(Some("192.168.1.200"), 80, &["10.1.0.2:80"]);
    f.local_only = true;
    f.random = true;
    f.source_ranges = vec![("192.168.1.0".parse().unwrap(), 24)];
    let p = ext_plan(
        std::slice::from_ref(&f),
        &ids(&["10.1.0.2:80"]),
        &ExtState::default(),
        251,
        4,
    );
    let v = p.upsert_frontends[0].1;
    assert_eq!(
        v.flags,
        EXT_FLAG_LOCAL | EXT_FLAG_RANDOM | EXT_FLAG_SOURCE_RANGES
    );
    assert_eq!(p.add_ranges.len(), 1);
    assert_eq!(p.add_ranges[0].3, 24);
    let empty = fe(Some("192.168.1.201"), 80, &[]);
    let p = ext_plan(&[empty], &HashMap::new(), &ExtState::default(), 251, 4);
    assert_eq!(
        p.upsert_frontends[0].1.count, 0,
        "no backend: packets are dropped"
    );
    assert!(p.write_rows.is_empty());
}
