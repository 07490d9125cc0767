//! Tests of the frame catalog and the frame builders.

use super::*;
use crate::raw::frame::pseudo_header;
use crate::raw::socket::mac_of;

fn aim(src: &str, dst: &str) -> Aim {
    Aim {
        src_mac: Mac([2, 0, 0, 0, 0, 1]),
        dst_mac: Mac([2, 0, 0, 0, 0, 2]),
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        tcp_port: 30080,
        udp_port: 30053,
    }
}

#[test]
fn checksums_match_known_values() {
    // RFC 1071's example words sum to 0xddf2; the checksum is its complement.
    assert_eq!(
        checksum(&[&[0x00, 0x01, 0xf2, 0x03], &[0xf4, 0xf5, 0xf6, 0xf7]]),
        !0xddf2
    );
    let h = ipv4(
        "192.168.50.3".parse().unwrap(),
        "192.168.50.1".parse().unwrap(),
        &V4::new(PROTO_TCP),
        1,
        &[],
    );
    // A correct header sums to zero.
    assert_eq!(checksum(&[&h]), 0);
    let src: IpAddr = "192.168.50.3".parse().unwrap();
    let dst: IpAddr = "192.168.50.1".parse().unwrap();
    let t = syn(src, dst, 1000, 80);
    assert_eq!(
        checksum(&[&pseudo_header(src, dst, PROTO_TCP, t.len()), &t]),
        0
    );
    let src6: IpAddr = "fd00:50::3".parse().unwrap();
    let dst6: IpAddr = "fd00:50::1".parse().unwrap();
    let u = udp(src6, dst6, 1000, 53, None);
    assert_eq!(
        checksum(&[&pseudo_header(src6, dst6, PROTO_UDP, u.len()), &u]),
        0
    );
}

#[test]
fn catalog_frames_are_what_they_say() {
    let frames = catalog(&aim("192.168.50.3", "192.168.50.1"), 0);
    let get = |k: &str| {
        frames
            .iter()
            .find(|f| f.kind == k)
            .unwrap_or_else(|| panic!("{k} missing"))
    };
    let kinds: std::collections::BTreeSet<_> = frames.iter().map(|f| &f.kind).collect();
    assert_eq!(kinds.len(), frames.len(), "kinds are unique");
    for class in [Class::Malformed, Class::UnknownPort, Class::Questionable] {
        assert!(frames.iter().filter(|f| f.class == class).count() >= 5);
    }
    assert_eq!(get("eth-header-only").bytes.len(), 14);
    assert_eq!(&get("eth-header-only").bytes[12..14], &[0x08, 0x00]);
    assert_eq!(get("ipv4-header-truncated").bytes.len(), 14 + 12);
    assert_eq!(get("ipv4-ihl-3").bytes[14], 0x43);
    assert_eq!(get("ipv4-version-5").bytes[14] >> 4, 5);
    let short = &get("ipv4-total-length-excludes-l4").bytes;
    assert_eq!(u16::from_be_bytes([short[16], short[17]]), 20);
    assert_eq!(short.len(), 14 + 40);
    assert_eq!(get("tcp-header-truncated-8").bytes.len(), 14 + 28);
    let frag = &get("ipv4-later-fragment-tcp").bytes;
    assert_eq!(u16::from_be_bytes([frag[20], frag[21]]) & 0x1fff, 8);
    // The bytes after a later fragment's header look like the service port.
    assert_eq!(u16::from_be_bytes([frag[36], frag[37]]), 30080);
    let syn = &get("tcp-syn-port-30081").bytes;
    assert_eq!(u16::from_be_bytes([syn[36], syn[37]]), 30081);
    assert_eq!(syn[47], SYN);
    assert!(!kinds.contains(&"tcp-syn-port-30080".to_owned()));
    let vlan = &get("vlan-tagged-syn").bytes;
    assert_eq!(&vlan[12..14], &[0x81, 0x00]);
    // Every frame has its own source port (so its own 5-tuple).
    let source_port = |k: &str| {
        let b = &get(k).bytes;
        u16::from_be_bytes([b[34], b[35]])
    };
    assert_ne!(
        source_port("tcp-data-offset-2"),
        source_port("ipv4-total-length-excludes-l4")
    );
    assert_ne!(source_port("tcp-syn-port-1"), source_port("tcp-syn-port-0"));
    // Different rounds use different source ports.
    let again = catalog(&aim("192.168.50.3", "192.168.50.1"), 1);
    assert_ne!(
        again
            .iter()
            .find(|f| f.kind == "tcp-syn-port-1")
            .unwrap()
            .bytes,
        get("tcp-syn-port-1").bytes
    );
}

#[test]
fn ipv6_catalog() {
    let frames = catalog(&aim("fd00:50::3", "fd00:50::1"), 0);
    let get = |k: &str| &frames.iter().find(|f| f.kind == k).unwrap().bytes;
    assert_eq!(get("ipv6-header-truncated").len(), 14 + 20);
    assert_eq!(&get("ipv6-eth-header-only")[12..14], &[0x86, 0xdd]);
    let chain = get("ipv6-eight-destination-options-syn");
    // Eight 8-byte option headers, then the TCP header with the service port.
    let tcp_at = 14 + 40 + 64;
    assert_eq!(
        u16::from_be_bytes([chain[tcp_at + 2], chain[tcp_at + 3]]),
        30080
    );
    assert_eq!(chain[14 + 40 + 56], PROTO_TCP);
    assert_eq!(chain[14 + 40], V6_DEST_OPTS);
    assert!(frames.iter().all(|f| f.kind.starts_with("ipv6-")));
}

#[test]
fn macs_parse_and_print() {
    let m: Mac = "02:aB:00:01:ff:10".parse().unwrap();
    assert_eq!(m.to_string(), "02:ab:00:01:ff:10");
    assert!("02:ab:00".parse::<Mac>().is_err());
    assert!("02:ab:00:01:ff:10:11".parse::<Mac>().is_err());
    assert_eq!(mac_of("lo").unwrap(), Mac([0; 6]));
}
