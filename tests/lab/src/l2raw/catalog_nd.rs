//! The Neighbor Discovery half of the catalog.

use std::net::Ipv6Addr;

use crate::raw::Mac;

use super::{
    Catalog, ETH_P_IPV6, ETH_P_VLAN, Expect, L2Aim, ND_ADVERT, ND_SOLICIT, OPT_NONCE,
    OPT_SOURCE_LL, OPT_TARGET_LL, PROTO_ICMPV6, PROTO_UDP, UNKNOWN_UNICAST, V6, V6_HOP_BY_HOP, eth,
    ll_option, nd_message, next_v6, solicited_node,
};

#[expect(
    clippy::many_single_char_names,
    clippy::too_many_lines,
    reason = "a flat list of frames reads best with short names for the fixed parts"
)]
pub(crate) fn nd_catalog(c: &mut Catalog, aim: &L2Aim, s: Ipv6Addr, t: Ipv6Addr) {
    use Expect::{Answer, Either, Silent};
    let (group, group_mac) = solicited_node(t);
    // A Neighbor Solicitation from `m`: IPv6 header `h`, ICMPv6 type/code, options.
    let ns = |m: Mac, h: V6, code: u8, target: Ipv6Addr, options: &[u8]| {
        let body = nd_message(ND_SOLICIT, code, 0, target, options, (h.src, h.dst));
        eth(group_mac, m, ETH_P_IPV6, &h.packet(&body))
    };
    let slla = |m: Mac| ll_option(OPT_SOURCE_LL, m);
    let h = V6::icmp(s, group);

    // Controls.
    let m = c.mac();
    c.push("ns-multicast", Answer, ns(m, h, 0, t, &slla(m)));
    let m = c.mac();
    let mut f = ns(m, V6::icmp(s, t), 0, t, &slla(m));
    f[..6].copy_from_slice(&aim.owner_mac.0);
    c.push("ns-unicast-to-owner", Answer, f);
    // Neighbor unreachability detection: unicast, no option; answered to the frame's source.
    let m = c.mac();
    let mut f = ns(m, V6::icmp(s, t), 0, t, &[]);
    f[..6].copy_from_slice(&aim.owner_mac.0);
    c.push("ns-unicast-without-source-link-layer", Answer, f);
    // Duplicate address detection: the owner defends the address to all-nodes.
    let m = c.mac();
    let dad = V6 {
        src: Ipv6Addr::UNSPECIFIED,
        ..h
    };
    c.push("ns-dad", Expect::Defend, ns(m, dad, 0, t, &[]));

    // Truncated.
    let m = c.mac();
    c.push(
        "ns-ethernet-header-only",
        Silent,
        eth(group_mac, m, ETH_P_IPV6, &[]),
    );
    let m = c.mac();
    let full = ns(m, h, 0, t, &slla(m));
    c.push("ns-ipv6-header-truncated", Silent, full[..14 + 20].to_vec());
    let m = c.mac();
    let full = ns(m, h, 0, t, &slla(m));
    c.push(
        "ns-icmp-truncated-16",
        Silent,
        full[..14 + 40 + 16].to_vec(),
    );
    let m = c.mac();
    let full = ns(m, h, 0, t, &slla(m));
    c.push(
        "ns-option-truncated",
        Silent,
        full[..full.len() - 2].to_vec(),
    );
    let m = c.mac();
    c.push(
        "ns-payload-length-past-frame",
        Silent,
        ns(
            m,
            V6 {
                plen: Some(40),
                ..h
            },
            0,
            t,
            &slla(m),
        ),
    );
    // Not a valid solicitation (RFC 4861 7.1.1 says discard).
    let m = c.mac();
    c.push(
        "ns-hop-limit-64",
        Silent,
        ns(m, V6 { hop: 64, ..h }, 0, t, &slla(m)),
    );
    let m = c.mac();
    c.push("ns-code-1", Silent, ns(m, h, 1, t, &slla(m)));
    let m = c.mac();
    let mut f = ns(m, h, 0, t, &slla(m));
    f[14 + 40 + 2] ^= 0x5a;
    c.push("ns-bad-checksum", Silent, f);
    let m = c.mac();
    let mut zero_len = slla(m);
    zero_len[1] = 0;
    c.push("ns-option-length-0", Silent, ns(m, h, 0, t, &zero_len));
    let m = c.mac();
    c.push(
        "ns-dad-with-source-link-layer",
        Silent,
        ns(
            m,
            V6 {
                src: Ipv6Addr::UNSPECIFIED,
                ..h
            },
            0,
            t,
            &slla(m),
        ),
    );
    let m = c.mac();
    c.push(
        "ns-multicast-without-source-link-layer",
        Silent,
        ns(m, h, 0, t, &[]),
    );
    let m = c.mac();
    let mut f = ns(m, V6::icmp(Ipv6Addr::UNSPECIFIED, t), 0, t, &[]);
    f[..6].copy_from_slice(&aim.owner_mac.0);
    c.push("ns-dad-unicast-to-target", Silent, f);
    let m = c.mac();
    let mut f = ns(m, dad, 0, t, &[]);
    f.truncate(f.len() - 4);
    c.push("ns-dad-truncated", Silent, f);
    let m = c.mac();
    let mut f = ns(m, dad, 0, t, &[]);
    f[14 + 40 + 2] ^= 0x5a;
    c.push("ns-dad-bad-checksum", Silent, f);
    let m = c.mac();
    c.push(
        "ns-dad-hop-limit-1",
        Silent,
        ns(m, V6 { hop: 1, ..dad }, 0, t, &[]),
    );
    let m = c.mac();
    c.push(
        "ns-source-multicast",
        Silent,
        ns(
            m,
            V6 {
                src: Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
                ..h
            },
            0,
            t,
            &slla(m),
        ),
    );
    let m = c.mac();
    c.push(
        "ns-ip-version-4",
        Silent,
        ns(m, V6 { version: 4, ..h }, 0, t, &slla(m)),
    );
    // Not a solicitation for the address, or not for this host.
    let m = c.mac();
    c.push("ns-other-target", Silent, ns(m, h, 0, next_v6(t), &slla(m)));
    let m = c.mac();
    c.push("ns-target-multicast", Silent, ns(m, h, 0, group, &slla(m)));
    let m = c.mac();
    let body = nd_message(
        ND_ADVERT,
        0,
        0x20,
        t,
        &ll_option(OPT_TARGET_LL, m),
        (s, group),
    );
    c.push(
        "na-for-target",
        Silent,
        eth(group_mac, m, ETH_P_IPV6, &h.packet(&body)),
    );
    let m = c.mac();
    let body = nd_message(ND_SOLICIT, 0, 0, t, &slla(m), (s, group));
    c.push(
        "ns-body-as-udp",
        Silent,
        eth(
            group_mac,
            m,
            ETH_P_IPV6,
            &V6 {
                next: PROTO_UDP,
                ..h
            }
            .packet(&body),
        ),
    );
    let m = c.mac();
    let mut f = ns(m, h, 0, t, &slla(m));
    f[..6].copy_from_slice(&UNKNOWN_UNICAST.0);
    c.push("ns-unicast-to-other-host", Silent, f);

    // Arguable.
    let m = c.mac();
    let mut f = ns(m, h, 0, t, &slla(m));
    f.extend_from_slice(&[0; 16]);
    c.push("ns-trailing-padding", Either, f);

    let m = c.mac();
    let mut opts = slla(m);
    opts.extend_from_slice(&[OPT_NONCE, 1, 1, 2, 3, 4, 5, 6]);
    c.push("ns-with-nonce-option", Either, ns(m, h, 0, t, &opts));

    let m = c.mac();
    let mut all_nodes = ns(
        m,
        V6::icmp(s, Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1)),
        0,
        t,
        &slla(m),
    );
    all_nodes[..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    c.push("ns-to-all-nodes", Either, all_nodes);
    let m = c.mac();
    let body = nd_message(ND_SOLICIT, 0, 0, t, &slla(m), (s, group));
    let mut hbh = vec![PROTO_ICMPV6, 0, 1, 4, 0, 0, 0, 0];
    hbh.extend_from_slice(&body);
    c.push(
        "ns-hop-by-hop-header",
        Either,
        eth(
            group_mac,
            m,
            ETH_P_IPV6,
            &V6 {
                next: V6_HOP_BY_HOP,
                ..h
            }
            .packet(&hbh),
        ),
    );
    let m = c.mac();
    let mut f = Vec::new();
    f.extend_from_slice(&group_mac.0);
    f.extend_from_slice(&m.0);
    f.extend_from_slice(&ETH_P_VLAN.to_be_bytes());
    f.extend_from_slice(&7u16.to_be_bytes());
    f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
    let body = nd_message(ND_SOLICIT, 0, 0, t, &slla(m), (s, group));
    f.extend_from_slice(&h.packet(&body));
    c.push("ns-vlan-tagged", Silent, f);
}
