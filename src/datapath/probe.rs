//! Kernel feature probes at agent start: which of the eBPF features ferrite uses this kernel
//! has, tested by loading minimal programs and creating tiny maps (what libbpf's probes do),
//! and what the agent does about each ([`decide`], pure): load the variant of a program this
//! kernel supports, leave an optional part off with one warning, or refuse to start with one
//! line naming the missing feature and the first kernel that has it.

use std::os::fd::{FromRawFd, OwnedFd};

use aya::maps::MapType;
use aya::programs::ProgramType;
use aya::sys::{BpfHelper, is_helper_supported, is_map_supported};
use serde::Serialize;

/// One kernel feature ferrite uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Feature {
    /// Kernel BTF (`/sys/kernel/btf/vmlinux`).
    Btf,
    LruHash,
    LpmTrie,
    /// The cgroup `connect`/`sendmsg` sock_addr hooks.
    SockAddrConnect,
    /// `BPF_CGROUP_UDP4_RECVMSG` / `UDP6_RECVMSG`.
    SockAddrRecvmsg,
    /// `BPF_CGROUP_INET4_GETPEERNAME` / `INET6_GETPEERNAME`.
    SockAddrGetpeername,
    /// `bpf_set_retval` from cgroup sock_addr programs.
    SetRetval,
    RingBuf,
    /// `bpf_xdp_load_bytes` (and `store_bytes`, `get_buff_len`) from XDP programs.
    XdpLoadBytes,
    /// TCX links.
    Tcx,
}

/// What a missing feature costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Impact {
    /// The agent cannot run without it.
    Required,
    /// A variant of a program (or another attach) is used instead.
    Degrades,
    /// Not used by this agent (reported for `ferrite doctor`).
    Informational,
}

impl Feature {
    pub const ALL: [Self; 10] = [
        Self::Btf,
        Self::LruHash,
        Self::LpmTrie,
        Self::SockAddrConnect,
        Self::SockAddrRecvmsg,
        Self::SockAddrGetpeername,
        Self::SetRetval,
        Self::RingBuf,
        Self::XdpLoadBytes,
        Self::Tcx,
    ];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Btf => "kernel BTF",
            Self::LruHash => "LRU hash maps",
            Self::LpmTrie => "LPM trie maps",
            Self::SockAddrConnect => "cgroup connect/sendmsg sock_addr hooks",
            Self::SockAddrRecvmsg => "cgroup recvmsg sock_addr hooks",
            Self::SockAddrGetpeername => "cgroup getpeername sock_addr hooks",
            Self::SetRetval => "bpf_set_retval",
            Self::RingBuf => "BPF ring buffer",
            Self::XdpLoadBytes => "bpf_xdp_load_bytes",
            Self::Tcx => "TCX",
        }
    }

    /// The first mainline kernel that has it.
    #[must_use]
    pub fn since(self) -> &'static str {
        match self {
            Self::LruHash => "4.10",
            Self::LpmTrie => "4.11",
            Self::SockAddrConnect => "4.17",
            Self::SockAddrRecvmsg => "5.2",
            Self::Btf => "5.4",
            Self::SockAddrGetpeername | Self::RingBuf => "5.8",
            Self::SetRetval | Self::XdpLoadBytes => "5.18",
            Self::Tcx => "6.6",
        }
    }

    #[must_use]
    pub fn impact(self) -> Impact {
        match self {
            Self::LruHash
            | Self::LpmTrie
            | Self::SockAddrConnect
            | Self::SockAddrRecvmsg
            | Self::SockAddrGetpeername => Impact::Required,
            Self::SetRetval | Self::XdpLoadBytes | Self::Tcx => Impact::Degrades,
            Self::Btf | Self::RingBuf => Impact::Informational,
        }
    }

    /// What uses it, and what happens without it.
    #[must_use]
    pub fn without(self) -> &'static str {
        match self {
            Self::LruHash => "conntrack, SNAT and affinity tables cannot be created",
            Self::LpmTrie => "loadBalancerSourceRanges and masquerade CIDRs cannot be created",
            Self::SockAddrConnect => "the ClusterIP socket load balancer cannot attach",
            Self::SockAddrRecvmsg => "UDP replies from ClusterIPs cannot be translated back",
            Self::SockAddrGetpeername => "getpeername() of ClusterIP sockets cannot be translated",
            Self::SetRetval => {
                "a connect() to a service without endpoints fails with EPERM instead of ECONNREFUSED"
            }
            Self::XdpLoadBytes => "--xdp is unavailable; the ingress translation runs in TC",
            Self::Tcx => "programs attach as clsact/cls_bpf filters (and XDP over netlink)",
            Self::Btf => "not needed by ferrite's programs (no CO-RE)",
            Self::RingBuf => "not needed by this agent",
        }
    }
}

/// One probe's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Probed {
    pub feature: Feature,
    pub available: bool,
    /// A probe that could not decide (e.g. not root), with why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The variants the agent loads on this kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Choices {
    /// The socket LB refuses a service without endpoints with `bpf_set_retval(-ECONNREFUSED)`.
    pub set_retval: bool,
    /// The XDP program can load (`--xdp`).
    pub xdp: bool,
    pub tcx: bool,
}

/// The one line an agent that cannot run here exits with.
#[must_use]
pub fn missing_line(f: Feature) -> String {
    format!(
        "this kernel lacks {} (Linux {}+): {}; ferrite needs Linux 5.15 or newer",
        f.name(),
        f.since(),
        f.without()
    )
}

/// One line per feature this kernel lacks that changes what the agent does (for the status).
#[must_use]
pub fn degraded(probes: &[Probed]) -> Vec<String> {
    probes
        .iter()
        .filter(|p| !p.available && p.error.is_none() && p.feature.impact() == Impact::Degrades)
        .map(|p| {
            format!(
                "no {} (Linux {}+): {}",
                p.feature.name(),
                p.feature.since(),
                p.feature.without()
            )
        })
        .collect()
}

/// What to load given the probes; the first missing required feature is the error.
pub fn decide(probes: &[Probed]) -> Result<Choices, String> {
    let has = |f: Feature| probes.iter().any(|p| p.feature == f && p.available);
    if let Some(p) = probes
        .iter()
        .find(|p| p.feature.impact() == Impact::Required && !p.available && p.error.is_none())
    {
        return Err(missing_line(p.feature));
    }
    Ok(Choices {
        set_retval: has(Feature::SetRetval),
        xdp: has(Feature::XdpLoadBytes),
        tcx: has(Feature::Tcx),
    })
}

/// `enum bpf_attach_type` values of the sock_addr hooks probed.
const BPF_CGROUP_INET4_CONNECT: u32 = 10;
const BPF_CGROUP_UDP4_RECVMSG: u32 = 19;
const BPF_CGROUP_INET4_GETPEERNAME: u32 = 29;
const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
const BPF_PROG_LOAD: libc::c_long = 5;

/// The `BPF_PROG_LOAD` prefix of `union bpf_attr` up to `expected_attach_type`.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// Loads `r0 = 1; exit` as a cgroup sock_addr program for `attach_type`.
fn sock_addr_hook(attach_type: u32) -> std::io::Result<bool> {
    // BPF_ALU64|BPF_MOV|BPF_K dst r0 imm 1; BPF_JMP|BPF_EXIT.
    let insns: [u64; 2] = [
        u64::from_le_bytes([0xb7, 0, 0, 0, 1, 0, 0, 0]),
        u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]),
    ];
    let license = c"GPL";
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
        insn_cnt: 2,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        prog_name: [0; 16],
        prog_ifindex: 0,
        expected_attach_type: attach_type,
    };
    // SAFETY: attr is a valid prefix of `union bpf_attr` for BPF_PROG_LOAD; the pointers in it
    // outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &raw const attr,
            std::mem::size_of::<ProgLoadAttr>(),
        )
    };
    if rc >= 0 {
        let fd = i32::try_from(rc).map_err(std::io::Error::other)?;
        // SAFETY: a new fd the kernel returned; closed on drop.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        // An attach type the kernel does not know.
        Some(libc::EINVAL) => Ok(false),
        _ => Err(e),
    }
}

fn probed(feature: Feature, r: Result<bool, String>) -> Probed {
    match r {
        Ok(available) => Probed {
            feature,
            available,
            error: None,
        },
        Err(e) => Probed {
            feature,
            available: false,
            error: Some(e),
        },
    }
}

/// Probes every [`Feature`] on the running kernel (needs CAP_BPF/root).
#[must_use]
pub fn probe_kernel() -> Vec<Probed> {
    let map = |t| is_map_supported(t).map_err(|e| e.to_string());
    let helper = |p, h| is_helper_supported(p, h).map_err(|e| e.to_string());
    let hook = |t| sock_addr_hook(t).map_err(|e| e.to_string());
    Feature::ALL
        .into_iter()
        .map(|f| {
            let r = match f {
                Feature::Btf => Ok(std::path::Path::new("/sys/kernel/btf/vmlinux").exists()),
                Feature::LruHash => map(MapType::LruHash),
                Feature::LpmTrie => map(MapType::LpmTrie),
                Feature::RingBuf => map(MapType::RingBuf),
                Feature::SockAddrConnect => hook(BPF_CGROUP_INET4_CONNECT),
                Feature::SockAddrRecvmsg => hook(BPF_CGROUP_UDP4_RECVMSG),
                Feature::SockAddrGetpeername => hook(BPF_CGROUP_INET4_GETPEERNAME),
                Feature::SetRetval => {
                    helper(ProgramType::CgroupSockAddr, BpfHelper::BPF_FUNC_set_retval)
                }
                Feature::XdpLoadBytes => {
                    helper(ProgramType::Xdp, BpfHelper::BPF_FUNC_xdp_load_bytes)
                }
                Feature::Tcx => Ok(super::ladder::tcx_available()),
            };
            probed(f, r)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_but(missing: &[Feature]) -> Vec<Probed> {
        Feature::ALL
            .into_iter()
            .map(|f| probed(f, Ok(!missing.contains(&f))))
            .collect()
    }

    #[test]
    fn a_full_kernel_gets_every_variant() {
        assert_eq!(
            decide(&all_but(&[])),
            Ok(Choices {
                set_retval: true,
                xdp: true,
                tcx: true
            })
        );
    }

    #[test]
    fn debian_12s_6_1_degrades_but_runs() {
        // 6.1: no TCX; set_retval and xdp_load_bytes are there (5.18).
        let c = decide(&all_but(&[Feature::Tcx])).unwrap();
        assert!(c.set_retval && c.xdp && !c.tcx);
        assert_eq!(
            degraded(&all_but(&[Feature::Tcx, Feature::Btf])),
            [
                "no TCX (Linux 6.6+): programs attach as clsact/cls_bpf filters (and XDP over netlink)"
            ]
        );
    }

    #[test]
    fn ubuntu_22_04s_5_15_runs_without_set_retval_and_xdp() {
        let c = decide(&all_but(&[
            Feature::Tcx,
            Feature::SetRetval,
            Feature::XdpLoadBytes,
        ]))
        .unwrap();
        assert_eq!(
            c,
            Choices {
                set_retval: false,
                xdp: false,
                tcx: false
            }
        );
        // Informational features never stop the agent.
        assert!(decide(&all_but(&[Feature::Btf, Feature::RingBuf])).is_ok());
    }

    #[test]
    fn a_missing_required_feature_is_one_line_naming_it_and_its_kernel() {
        let e = decide(&all_but(&[Feature::SockAddrGetpeername])).unwrap_err();
        assert_eq!(
            e,
            "this kernel lacks cgroup getpeername sock_addr hooks (Linux 5.8+): getpeername() \
             of ClusterIP sockets cannot be translated; ferrite needs Linux 5.15 or newer"
        );
        assert!(!e.contains('\n'));
        // A probe that could not decide is not taken for a missing feature.
        let mut p = all_but(&[]);
        p[1] = probed(Feature::LruHash, Err("EPERM".into()));
        assert!(decide(&p).is_ok());
    }

    #[test]
    fn every_feature_names_a_kernel_and_a_consequence() {
        for f in Feature::ALL {
            assert!(f.since().starts_with(['4', '5', '6']), "{f:?}");
            assert!(!f.without().is_empty() && !f.name().is_empty());
        }
    }
}
