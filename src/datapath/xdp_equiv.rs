//! As root: the TC ingress program and the XDP program, loaded over the same pinned maps, turn
//! the same input frames into byte-identical output frames (`BPF_PROG_TEST_RUN`), and those
//! frames carry valid IPv4 and TCP/UDP checksums. Runs in a fresh network namespace so the FIB
//! answers nothing (no SNAT, no redirect): only the translation itself is compared.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap};
use aya::programs::{SchedClassifier, Xdp};
use aya::{Ebpf, EbpfLoader};
use ferrite_abi::{
    Backend, CtKey, CtValue, DevInfo, EXT_FLAG_LOCAL, ExtSvcValue, FAMILY_V4, FAMILY_V6,
    NodeAddrKey, PROTO_TCP, PROTO_UDP, SvcKey, XdpDev, map_names,
};

const M: u32 = 251;
const BPF_PROG_TEST_RUN: libc::c_long = 10;

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
}

/// Runs `prog` once on `frame`; returns (verdict, output frame).
fn test_run(prog: BorrowedFd<'_>, frame: &[u8]) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; frame.len() + 256];
    let mut attr = TestRunAttr {
        prog_fd: u32::try_from(prog.as_raw_fd()).unwrap(),
        data_size_in: u32::try_from(frame.len()).unwrap(),
        data_size_out: u32::try_from(out.len()).unwrap(),
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ..TestRunAttr::default()
    };
    // SAFETY: attr is a valid prefix of `union bpf_attr`; the buffers outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &raw mut attr,
            std::mem::size_of::<TestRunAttr>(),
        )
    };
    assert_eq!(
        rc,
        0,
        "BPF_PROG_TEST_RUN: {}",
        std::io::Error::last_os_error()
    );
    out.truncate(attr.data_size_out as usize);
    (attr.retval, out)
}

fn words(ip: IpAddr) -> ([u32; 4], u8) {
    match ip {
        IpAddr::V4(a) => ([u32::from_ne_bytes(a.octets()), 0, 0, 0], FAMILY_V4),
        IpAddr::V6(a) => {
            let o = a.octets();
            let mut w = [0u32; 4];
            for (i, c) in o.chunks(4).enumerate() {
                w[i] = u32::from_ne_bytes(c.try_into().unwrap());
            }
            (w, FAMILY_V6)
        }
    }
}

fn sum16(data: &[u8], mut acc: u32) -> u32 {
    for c in data.chunks(2) {
        let hi = u32::from(c[0]) << 8;
        let lo = c.get(1).map_or(0, |b| u32::from(*b));
        acc += hi | lo;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !u16::try_from(acc).expect("folded to 16 bits")
}

/// The L4 checksum over the pseudo header of `frame` (0 means valid when already filled).
fn l4_check(frame: &[u8]) -> u16 {
    let (src, dst, proto, l4) = if frame[12..14] == [0x08, 0x00] {
        let ihl = usize::from(frame[14] & 0x0f) * 4;
        (
            &frame[26..30],
            &frame[30..34],
            frame[23],
            &frame[14 + ihl..],
        )
    } else {
        (&frame[22..38], &frame[38..54], frame[20], &frame[54..])
    };
    let mut acc = sum16(src, 0);
    acc = sum16(dst, acc);
    acc += u32::from(proto) + u32::try_from(l4.len()).unwrap();
    fold(sum16(l4, acc))
}

/// An Ethernet frame (destination MAC zero: loopback's, where test runs happen) carrying TCP
/// (a SYN) or UDP with valid checksums; `udp_csum` false sends a zero UDP checksum.
fn frame(src: (IpAddr, u16), dst: (IpAddr, u16), proto: u8, udp_csum: bool) -> Vec<u8> {
    let payload = b"ferrite says hi";
    let l4_len = if proto == PROTO_TCP { 20 } else { 8 } + payload.len();
    let mut f = vec![0u8; 6];
    f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
    match (src.0, dst.0) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
            f.extend_from_slice(&u16::try_from(20 + l4_len).unwrap().to_be_bytes());
            f.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, proto, 0, 0]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
            let c = fold(sum16(&f[14..34], 0));
            f[24..26].copy_from_slice(&c.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend_from_slice(&u16::try_from(l4_len).unwrap().to_be_bytes());
            f.extend_from_slice(&[proto, 64]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
        }
        _ => unreachable!("mixed families"),
    }
    let l4 = f.len();
    f.extend_from_slice(&src.1.to_be_bytes());
    f.extend_from_slice(&dst.1.to_be_bytes());
    let csum_at = if proto == PROTO_TCP {
        f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        l4 + 16
    } else {
        f.extend_from_slice(&u16::try_from(l4_len).unwrap().to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        l4 + 6
    };
    f.extend_from_slice(payload);
    if proto == PROTO_TCP || udp_csum {
        let c = l4_check(&f);
        f[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    }
    f
}

/// The test's pin directory on bpffs, removed on drop (declared last in [`Lab`], so after the
/// objects that use it are gone).
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Lab {
    host: Ebpf,
    xdp: Ebpf,
    _pins: PinDir,
}

fn load(pins: &Path, object: &[u8]) -> Ebpf {
    EbpfLoader::new()
        .default_map_pin_directory(pins)
        .map_max_entries(map_names::MAGLEV, 2 * M)
        .override_global("MAGLEV_M", &M, true)
        .load(object)
        .expect("loading the eBPF object")
}

fn map<'a>(ebpf: &'a mut Ebpf, name: &str) -> &'a mut aya::maps::Map {
    ebpf.map_mut(name)
        .unwrap_or_else(|| panic!("map {name} missing"))
}

impl Lab {
    fn new() -> Self {
        assert!(
            // SAFETY: plain getter.
            unsafe { libc::geteuid() } == 0,
            "the TC/XDP equivalence test loads eBPF programs: run it as root"
        );
        let pins = PathBuf::from(format!(
            "/sys/fs/bpf/ferrite-xdp-equiv-{}",
            std::process::id()
        ));
        super::ensure_bpffs(&pins).expect("bpffs");
        let pins = PinDir(pins);
        let mut host = load(&pins.0, super::HOST_OBJECT);
        let mut xdp = load(&pins.0, super::XDP_OBJECT);
        let tc: &mut SchedClassifier = host
            .program_mut("fe_host_ingress")
            .unwrap()
            .try_into()
            .unwrap();
        tc.load().expect("loading fe_host_ingress");
        let x: &mut Xdp = xdp
            .program_mut("fe_xdp_ingress")
            .unwrap()
            .try_into()
            .unwrap();
        x.load().expect("loading fe_xdp_ingress (verifier)");
        Self {
            host,
            xdp,
            _pins: pins,
        }
    }

    /// A frontend with one backend (the whole Maglev row points at it), ETP=Local so the
    /// (empty) FIB is never asked about SNAT.
    fn frontend(&mut self, row: u32, fe: (IpAddr, u16), proto: u8, be: (IpAddr, u16)) {
        let (addr, family) = words(fe.0);
        let key = SvcKey {
            addr,
            port: fe.1.to_be(),
            proto,
            family,
        };
        let value = ExtSvcValue {
            ext_id: row,
            count: 1,
            flags: EXT_FLAG_LOCAL,
            _pad: 0,
        };
        let mut ext: HashMap<_, SvcKey, ExtSvcValue> =
            HashMap::try_from(map(&mut self.host, map_names::EXTERNAL)).unwrap();
        ext.insert(key, value, 0).unwrap();
        let (baddr, bfamily) = words(be.0);
        let backend_id = 100 + row;
        let mut backends: HashMap<_, u32, Backend> =
            HashMap::try_from(map(&mut self.host, map_names::BACKENDS)).unwrap();
        backends
            .insert(
                backend_id,
                Backend {
                    addr: baddr,
                    port: be.1.to_be(),
                    family: bfamily,
                    _pad: 0,
                },
                0,
            )
            .unwrap();
        let mut maglev: Array<_, u32> =
            Array::try_from(map(&mut self.host, map_names::MAGLEV)).unwrap();
        for i in row * M..(row + 1) * M {
            maglev.set(i, backend_id, 0).unwrap();
        }
    }

    fn device(&mut self, ifindex: u32, v4: Ipv4Addr, v6: Ipv6Addr) {
        let mut devs: HashMap<_, u32, DevInfo> =
            HashMap::try_from(map(&mut self.host, map_names::DEVICES)).unwrap();
        devs.insert(
            ifindex,
            DevInfo {
                v4: u32::from_ne_bytes(v4.octets()),
                flags: ferrite_abi::DEV_HAS_V4 | ferrite_abi::DEV_HAS_V6,
                v6: words(IpAddr::V6(v6)).0,
            },
            0,
        )
        .unwrap();
        let mut addrs: HashMap<_, NodeAddrKey, u32> =
            HashMap::try_from(map(&mut self.host, map_names::NODE_ADDRS)).unwrap();
        for ip in [IpAddr::V4(v4), IpAddr::V6(v6)] {
            let (addr, family) = words(ip);
            let key = NodeAddrKey {
                family: u32::from(family),
                addr,
            };
            addrs.insert(key, ifindex, 0).unwrap();
        }
        let mut xdevs: HashMap<_, u32, XdpDev> =
            HashMap::try_from(map(&mut self.xdp, map_names::XDP_DEVS)).unwrap();
        xdevs
            .insert(
                ifindex,
                XdpDev {
                    mac: [0; 6],
                    flags: 0,
                },
                0,
            )
            .unwrap();
    }

    fn clear_ct(&mut self) {
        let mut ct: HashMap<_, CtKey, CtValue> =
            HashMap::try_from(map(&mut self.host, map_names::CONNTRACK)).unwrap();
        let keys: Vec<CtKey> = ct.keys().map(Result::unwrap).collect();
        for k in keys {
            ct.remove(&k).unwrap();
        }
    }

    fn ct_len(&mut self) -> usize {
        let ct: HashMap<_, CtKey, CtValue> =
            HashMap::try_from(map(&mut self.host, map_names::CONNTRACK)).unwrap();
        ct.keys().count()
    }

    fn run(&mut self, tc: bool, frame: &[u8]) -> (u32, Vec<u8>) {
        let fd = if tc {
            let p: &SchedClassifier = self
                .host
                .program("fe_host_ingress")
                .unwrap()
                .try_into()
                .unwrap();
            p.fd().unwrap().as_fd().try_clone_to_owned().unwrap()
        } else {
            let p: &Xdp = self
                .xdp
                .program("fe_xdp_ingress")
                .unwrap()
                .try_into()
                .unwrap();
            p.fd().unwrap().as_fd().try_clone_to_owned().unwrap()
        };
        test_run(fd.as_fd(), frame)
    }
}

fn in_fresh_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: unshare affects only this thread's network namespace.
            assert_eq!(
                unsafe { libc::unshare(libc::CLONE_NEWNET) },
                0,
                "unshare(CLONE_NEWNET): {}",
                std::io::Error::last_os_error()
            );
            f()
        })
        .join()
        .expect("test thread")
    })
}

#[test]
fn tc_and_xdp_translate_identically_with_valid_checksums() {
    in_fresh_netns(|| {
        let mut lab = Lab::new();
        let node4 = Ipv4Addr::new(192, 168, 50, 11);
        let node6: Ipv6Addr = "fd00:50::11".parse().unwrap();
        let client4 = IpAddr::V4(Ipv4Addr::new(192, 168, 50, 200));
        let client6 = IpAddr::V6("fd00:50::200".parse().unwrap());
        lab.device(1, node4, node6);
        // Row 0: v4 frontends (LB IP over TCP, NodePort over UDP); row 1: the same in v6.
        let lb4 = IpAddr::V4(Ipv4Addr::new(172, 30, 0, 10));
        let pod4 = IpAddr::V4(Ipv4Addr::new(10, 244, 1, 2));
        lab.frontend(0, (lb4, 80), PROTO_TCP, (pod4, 8080));
        let any4 = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        lab.frontend(0, (any4, 30053), PROTO_UDP, (pod4, 8080));
        let lb6 = IpAddr::V6("fd00:30::10".parse().unwrap());
        let pod6 = IpAddr::V6("fd00:10:244:1::2".parse().unwrap());
        lab.frontend(1, (lb6, 80), PROTO_TCP, (pod6, 8080));
        let any6 = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        lab.frontend(1, (any6, 30053), PROTO_UDP, (pod6, 8080));

        let cases = [
            (
                "v4 TCP SYN to the LB IP",
                frame((client4, 40000), (lb4, 80), PROTO_TCP, true),
            ),
            (
                "v4 UDP to a NodePort",
                frame(
                    (client4, 40001),
                    (IpAddr::V4(node4), 30053),
                    PROTO_UDP,
                    true,
                ),
            ),
            (
                "v4 UDP without checksum",
                frame(
                    (client4, 40002),
                    (IpAddr::V4(node4), 30053),
                    PROTO_UDP,
                    false,
                ),
            ),
            (
                "v6 TCP SYN to the LB IP",
                frame((client6, 40003), (lb6, 80), PROTO_TCP, true),
            ),
            (
                "v6 UDP to a NodePort",
                frame(
                    (client6, 40004),
                    (IpAddr::V6(node6), 30053),
                    PROTO_UDP,
                    true,
                ),
            ),
        ];
        for (what, input) in &cases {
            lab.clear_ct();
            let (tc_rc, tc_out) = lab.run(true, input);
            assert_eq!(
                lab.ct_len(),
                2,
                "{what}: TC must create the flow (2 entries)"
            );
            lab.clear_ct();
            let (xdp_rc, xdp_out) = lab.run(false, input);
            assert_eq!(
                lab.ct_len(),
                2,
                "{what}: XDP must create the flow (2 entries)"
            );
            // No route in this namespace: TC hands the packet on (TC_ACT_OK), XDP to the stack.
            assert_eq!((tc_rc, xdp_rc), (0, 2), "{what}: verdicts");
            assert_ne!(&tc_out, input, "{what}: TC did not translate");
            assert_eq!(tc_out, xdp_out, "{what}: TC and XDP output differ");
            if input[12..14] == [0x08, 0x00] {
                assert_eq!(fold(sum16(&tc_out[14..34], 0)), 0, "{what}: IPv4 checksum");
                assert_eq!(&tc_out[30..34], &[10, 244, 1, 2], "{what}: destination");
            }
            let has_csum = !(what.contains("without"));
            if has_csum {
                assert_eq!(l4_check(&tc_out), 0, "{what}: L4 checksum");
            } else {
                assert_eq!(
                    &tc_out[40..42],
                    &[0, 0],
                    "{what}: a zero UDP checksum stays zero"
                );
            }
            // The established flow: the next packet hits conntrack in both programs alike.
            let (_, tc_again) = lab.run(true, input);
            let (_, xdp_again) = lab.run(false, input);
            assert_eq!(tc_again, xdp_again, "{what}: established flow");
        }
        replies_and_foreign_frames(&mut lab, &cases[0].1, &cases[1].1);
    });
}

/// A reply of the backend through ingress (a remote backend's reply) gets its source rewritten
/// back to the frontend, identically; frames for another MAC are left alone by both.
fn replies_and_foreign_frames(lab: &mut Lab, syn: &[u8], udp: &[u8]) {
    let client4 = IpAddr::V4(Ipv4Addr::new(192, 168, 50, 200));
    let pod4 = IpAddr::V4(Ipv4Addr::new(10, 244, 1, 2));
    lab.clear_ct();
    lab.run(true, syn);
    let reply = frame((pod4, 8080), (client4, 40000), PROTO_TCP, true);
    let (_, tc_reply) = lab.run(true, &reply);
    let (_, xdp_reply) = lab.run(false, &reply);
    assert_eq!(tc_reply, xdp_reply, "reverse translation differs");
    assert_eq!(
        &tc_reply[26..30],
        &[172, 30, 0, 10],
        "reply source is the LB IP"
    );
    assert_eq!(l4_check(&tc_reply), 0, "reply L4 checksum");
    // Frames for another MAC are left alone by both.
    let mut other = udp.to_vec();
    other[0..6].copy_from_slice(&[2, 9, 9, 9, 9, 9]);
    lab.clear_ct();
    let (_, tc_other) = lab.run(true, &other);
    let (_, xdp_other) = lab.run(false, &other);
    assert_eq!((tc_other == other, xdp_other == other), (true, true));
    assert_eq!(
        lab.ct_len(),
        0,
        "no state for frames addressed to another host"
    );
}
