//! Tests of the L2 frame builders, the parser, the catalog and the watch log.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use crate::raw::{Mac, checksum, pseudo_header};

use super::*;

fn aim4() -> L2Aim {
    L2Aim {
        src: "192.168.50.9".parse().unwrap(),
        target: "192.168.50.200".parse().unwrap(),
        owner_mac: Mac([2, 0, 0, 0, 0, 3]),
    }
}

fn aim6() -> L2Aim {
    L2Aim {
        src: "fd00:50::9".parse().unwrap(),
        target: "fd00:50::200".parse().unwrap(),
        owner_mac: Mac([2, 0, 0, 0, 0, 3]),
    }
}

/// What an announcer would send back for a well-formed request (for parser tests).
fn arp_reply(req: &[u8], mac: Mac) -> Vec<u8> {
    let sha = mac_at(req, 22);
    let a = Arp {
        op: 2,
        sha: mac,
        spa: v4_at(req, 38),
        tha: sha,
        tpa: v4_at(req, 28),
        ..Arp::request(mac, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED)
    };
    eth(sha, mac, ETH_P_ARP, &a.bytes())
}

#[test]
fn requests_are_well_formed() {
    let mac = Mac([2, 0, 0, 0, 0, 9]);
    let f = arp_request(
        mac,
        "192.168.50.9".parse().unwrap(),
        "192.168.50.200".parse().unwrap(),
    );
    assert_eq!(f.len(), 42);
    assert_eq!(&f[..6], &[0xff; 6]);
    assert_eq!(&f[12..22], &[8, 6, 0, 1, 8, 0, 6, 4, 0, 1]);
    assert_eq!(&f[38..42], &[192, 168, 50, 200]);

    let src: Ipv6Addr = "fd00:50::9".parse().unwrap();
    let t: Ipv6Addr = "fd00:50::12:3456".parse().unwrap();
    let f = neighbor_solicitation(mac, src, t);
    assert_eq!(f.len(), 86);
    assert_eq!(&f[..6], &[0x33, 0x33, 0xff, 0x12, 0x34, 0x56]);
    assert_eq!(f[21], 255, "hop limit");
    let group: Ipv6Addr = "ff02::1:ff12:3456".parse().unwrap();
    assert_eq!(v6_at(&f, 38), group);
    let msg = &f[54..];
    assert_eq!(msg[0], ND_SOLICIT);
    assert_eq!(
        checksum(&[
            &pseudo_header(IpAddr::V6(src), IpAddr::V6(group), PROTO_ICMPV6, msg.len()),
            msg
        ]),
        0
    );
    assert_eq!(&msg[24..26], &[OPT_SOURCE_LL, 1]);
    assert_eq!(&msg[26..32], &mac.0);
}

#[test]
fn answers_parse() {
    let me = Mac([2, 0, 0, 0, 0, 9]);
    let owner = Mac([2, 0, 0, 0, 0, 3]);
    let req = arp_request(
        me,
        "192.168.50.9".parse().unwrap(),
        "192.168.50.200".parse().unwrap(),
    );
    let a = parse_answer(&arp_reply(&req, owner)).unwrap();
    assert_eq!(a.kind, AnswerKind::Reply);
    assert_eq!(a.ip, "192.168.50.200".parse::<IpAddr>().unwrap());
    assert_eq!((a.mac, a.eth_dst), (owner, me));
    assert!(parse_answer(&req).is_none(), "a plain request is no answer");
    let garp = arp_request(
        owner,
        "192.168.50.200".parse().unwrap(),
        "192.168.50.200".parse().unwrap(),
    );
    assert_eq!(parse_answer(&garp).unwrap().kind, AnswerKind::Announcement);

    // An unsolicited NA as ferrite's announcer builds it.
    let t: Ipv6Addr = "fd00:50::200".parse().unwrap();
    let all = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let body = nd_message(
        ND_ADVERT,
        0,
        0x20,
        t,
        &ll_option(OPT_TARGET_LL, owner),
        (t, all),
    );
    let na = eth(
        Mac([0x33, 0x33, 0, 0, 0, 1]),
        owner,
        ETH_P_IPV6,
        &V6::icmp(t, all).packet(&body),
    );
    let a = parse_answer(&na).unwrap();
    assert_eq!(a.kind, AnswerKind::Announcement);
    assert!(a.well_formed && a.override_flag);
    assert_eq!(a.mac, owner);
    let mut bad = na.clone();
    bad[14 + 40 + 2] ^= 1;
    assert!(!parse_answer(&bad).unwrap().well_formed);
    let solicited = nd_message(
        ND_ADVERT,
        0,
        0x60,
        t,
        &ll_option(OPT_TARGET_LL, owner),
        (t, t),
    );
    let a = parse_answer(&eth(
        me,
        owner,
        ETH_P_IPV6,
        &V6::icmp(t, t).packet(&solicited),
    ))
    .unwrap();
    assert_eq!(a.kind, AnswerKind::Reply);
}

#[test]
fn catalogs_have_unique_kinds_and_sender_macs() {
    for aim in [aim4(), aim6()] {
        let frames = catalog(&aim, 3);
        let kinds: BTreeSet<_> = frames.iter().map(|f| &f.kind).collect();
        assert_eq!(kinds.len(), frames.len());
        let macs: BTreeSet<_> = frames.iter().map(|f| f.reply_to).collect();
        assert!(
            macs.len() >= frames.len() - 2,
            "reply-to MACs mostly unique"
        );
        for e in [Expect::Answer, Expect::Silent, Expect::Either] {
            assert!(
                frames.iter().any(|f| f.expect == e),
                "{e} in {:?}",
                aim.target
            );
        }
        assert!(frames.iter().filter(|f| f.expect == Expect::Silent).count() >= 10);
        // Every frame's Ethernet source is a catalog MAC of this round.
        for f in &frames {
            if f.bytes.len() >= 12 {
                assert_eq!(&f.bytes[6..8], &[0x02, 0x1b], "{}", f.kind);
                assert_eq!(&f.bytes[8..10], &3u16.to_be_bytes(), "{}", f.kind);
            }
        }
    }
    let f = catalog(&aim4(), 0);
    let get = |k: &str| f.iter().find(|x| x.kind == k).unwrap();
    assert_eq!(get("arp-truncated-27").bytes.len(), 14 + 27);
    assert_eq!(get("arp-request-padded-60").bytes.len(), 60);
    assert_eq!(&get("arp-hlen-8").bytes[18..20], &[8, 4]);
    let f6 = catalog(&aim6(), 0);
    let get6 = |k: &str| f6.iter().find(|x| x.kind == k).unwrap();
    assert_eq!(get6("ns-ipv6-header-truncated").bytes.len(), 34);
    assert_eq!(get6("ns-hop-limit-64").bytes[21], 64);
    assert_eq!(get6("ns-multicast").bytes.len(), 86);
    assert_eq!(&get6("ns-unicast-to-owner").bytes[..6], &[2, 0, 0, 0, 0, 3]);
    let dad = get6("ns-dad");
    assert_eq!(dad.expect, Expect::Defend);
    assert_eq!(dad.bytes.len(), 14 + 40 + 24, "a DAD probe has no option");
    assert_eq!(&dad.bytes[22..38], &[0; 16], "from ::");
    assert_eq!(dad.bytes[38], 0xff, "to the solicited-node group");
    let nud = get6("ns-unicast-without-source-link-layer");
    assert_eq!(nud.expect, Expect::Answer);
    assert_eq!(
        &nud.bytes[38..54],
        &"fd00:50::200".parse::<Ipv6Addr>().unwrap().octets()
    );
}

#[test]
fn watch_log_counts_double_answers() {
    let t0 = Instant::now();
    let me = Mac([2, 0, 0, 0, 0, 9]);
    let reply = |mac: Mac| Answer {
        kind: AnswerKind::Reply,
        ip: "192.168.50.200".parse().unwrap(),
        mac,
        eth_src: mac,
        eth_dst: me,
        ip_dst: None,
        well_formed: true,
        override_flag: false,
    };
    let ms = |n| t0 + Duration::from_millis(n);
    let (a, b) = (Mac([2, 0, 0, 0, 0, 1]), Mac([2, 0, 0, 0, 0, 2]));
    let log = WatchLog {
        mac: me,
        requests: vec![ms(0), ms(20), ms(40)],
        answers: vec![
            Seen {
                at: ms(1),
                answer: reply(a),
            },
            Seen {
                at: ms(21),
                answer: reply(a),
            },
            Seen {
                at: ms(22),
                answer: reply(b),
            },
        ],
    };
    assert_eq!(log.double_answered(t0, ms(100)), 1);
    assert_eq!(log.double_answered_span(t0, ms(100)), Some(Duration::ZERO));
    assert_eq!(log.double_answered_span(ms(30), ms(100)), None);
    assert_eq!(log.unanswered(t0, ms(100)), 1);
    assert_eq!(log.first(ms(2), |x| x.mac == b).unwrap().at, ms(22));
    assert_eq!(log.last(t0, ms(100), |x| x.mac == a).unwrap().at, ms(21));
}
