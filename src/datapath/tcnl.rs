//! Legacy attach over rtnetlink, for kernels without TCX (< 6.6): a `clsact` qdisc with a
//! `cls_bpf` direct-action filter at a priority and handle ferrite owns, and XDP set on the
//! link (`IFLA_XDP`) where no XDP `bpf_link` can be made. Blocking requests on a netlink socket
//! of the caller's network namespace (the attach paths are synchronous).
//!
//! A filter add without `NLM_F_EXCL` on an existing (priority, handle) replaces the filter's
//! program in place (cls_bpf swaps it under RCU), so an upgrade never leaves the hook empty;
//! the same holds for `IFLA_XDP` without `XDP_FLAGS_UPDATE_IF_NOEXIST`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkMessage, LinkXdp};
use netlink_packet_route::tc::{
    TcAttribute, TcBpfFlags, TcFilterBpfOption, TcHandle, TcMessage, TcOption,
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// Which clsact hook of a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    fn parent(self) -> TcHandle {
        TcHandle {
            major: u16::MAX,
            minor: match self {
                Self::Ingress => TcHandle::MIN_INGRESS,
                Self::Egress => TcHandle::MIN_EGRESS,
            },
        }
    }

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        }
    }
}

/// The handle of every ferrite filter (one filter per priority).
pub const FILTER_HANDLE: u32 = 0xfe;

/// `htons(ETH_P_ALL)` in `tcm_info`'s low half: the filter sees every protocol.
const ETH_P_ALL_BE: u32 = 0x0300;

/// One cls_bpf filter on a hook, as the kernel dumps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BpfFilter {
    pub priority: u16,
    pub handle: u32,
    /// The program's name (`TCA_BPF_NAME`), e.g. `fe_host_ingress`.
    pub name: String,
    pub prog_id: u32,
    pub direct_action: bool,
}

/// A blocking rtnetlink socket of this network namespace.
pub struct Rtnl {
    sock: Socket,
    seq: u32,
}

fn nl_error(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code.abs())
}

impl Rtnl {
    pub fn open() -> io::Result<Self> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(Self { sock, seq: 0 })
    }

    /// Sends `msg` and collects the replies until the ACK (or the end of a dump).
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.sock.send(&buf, 0)?;
        let mut out = Vec::new();
        loop {
            let (data, _) = self.sock.recv_from_full()?;
            let mut offset = 0;
            while offset < data.len() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[offset..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = usize::try_from(reply.header.length).map_err(io::Error::other)?;
                offset += len.max(16).next_multiple_of(4);
                if reply.header.sequence_number != self.seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            Some(code) => Err(nl_error(code.get())),
                            None => Ok(out),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    _ => {}
                }
            }
        }
    }

    /// Adds the `clsact` qdisc to `ifindex` unless it has one.
    pub fn ensure_clsact(&mut self, ifindex: u32) -> io::Result<()> {
        let mut msg = TcMessage::with_index(ifindex_i32(ifindex)?);
        msg.header.parent = TcHandle::CLSACT;
        msg.header.handle = TcHandle {
            major: u16::MAX,
            minor: 0,
        };
        msg.attributes.push(TcAttribute::Kind("clsact".into()));
        match self.request(
            RouteNetlinkMessage::NewQueueDiscipline(msg),
            NLM_F_CREATE | netlink_packet_core::NLM_F_EXCL,
        ) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// The cls_bpf filters on `ifindex`'s `dir` hook (none when it has no clsact qdisc).
    pub fn bpf_filters(&mut self, ifindex: u32, dir: Direction) -> io::Result<Vec<BpfFilter>> {
        let mut msg = TcMessage::with_index(ifindex_i32(ifindex)?);
        msg.header.parent = dir.parent();
        let replies = match self.request(RouteNetlinkMessage::GetTrafficFilter(msg), NLM_F_DUMP) {
            // No clsact qdisc (or no such device): no filters.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) => {
                return Ok(Vec::new());
            }
            other => other?,
        };
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewTrafficFilter(m) => parse_bpf_filter(&m),
                _ => None,
            })
            .collect())
    }

    /// Creates ferrite's filter at `priority` on `ifindex`'s `dir` hook, or atomically replaces
    /// the program of the one already there.
    pub fn replace_filter(
        &mut self,
        ifindex: u32,
        dir: Direction,
        priority: u16,
        prog: BorrowedFd<'_>,
        name: &str,
    ) -> io::Result<()> {
        let mut msg = filter_msg(ifindex, dir, priority)?;
        msg.attributes.push(TcAttribute::Kind("bpf".into()));
        msg.attributes.push(TcAttribute::Options(vec![
            TcOption::Bpf(TcFilterBpfOption::ProgFd(
                u32::try_from(prog.as_raw_fd()).map_err(io::Error::other)?,
            )),
            TcOption::Bpf(TcFilterBpfOption::ProgName(name.to_owned())),
            TcOption::Bpf(TcFilterBpfOption::Flags(TcBpfFlags::DirectAction)),
        ]));
        self.request(RouteNetlinkMessage::NewTrafficFilter(msg), NLM_F_CREATE)
            .map(|_| ())
    }

    /// Deletes ferrite's filter at `priority` (nothing when it is not there).
    pub fn delete_filter(&mut self, ifindex: u32, dir: Direction, priority: u16) -> io::Result<()> {
        let msg = filter_msg(ifindex, dir, priority)?;
        match self.request(RouteNetlinkMessage::DelTrafficFilter(msg), 0) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EINVAL)) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// The id of the XDP program on `ifindex` (either mode), if any.
    pub fn xdp_prog_id(&mut self, ifindex: u32) -> io::Result<Option<u32>> {
        let mut msg = LinkMessage::default();
        msg.header.index = ifindex;
        let replies = self.request(RouteNetlinkMessage::GetLink(msg), 0)?;
        Ok(replies.into_iter().find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => l.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::Xdp(x) => x.into_iter().find_map(|x| match x {
                    LinkXdp::ProgId(id) if id != 0 => Some(id),
                    _ => None,
                }),
                _ => None,
            }),
            _ => None,
        }))
    }

    /// Sets (or atomically replaces) the XDP program of `ifindex` with `xdp_flags` (the mode);
    /// `None` removes it.
    pub fn set_xdp(
        &mut self,
        ifindex: u32,
        prog: Option<BorrowedFd<'_>>,
        xdp_flags: u32,
    ) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = ifindex;
        msg.attributes.push(LinkAttribute::Xdp(vec![
            LinkXdp::Fd(prog.map_or(-1, |p| p.as_raw_fd())),
            LinkXdp::Flags(xdp_flags),
        ]));
        self.request(RouteNetlinkMessage::SetLink(msg), 0)
            .map(|_| ())
    }
}

fn ifindex_i32(ifindex: u32) -> io::Result<i32> {
    i32::try_from(ifindex).map_err(io::Error::other)
}

fn filter_msg(ifindex: u32, dir: Direction, priority: u16) -> io::Result<TcMessage> {
    let mut msg = TcMessage::with_index(ifindex_i32(ifindex)?);
    msg.header.parent = dir.parent();
    msg.header.handle = FILTER_HANDLE.into();
    msg.header.info = (u32::from(priority) << 16) | ETH_P_ALL_BE;
    Ok(msg)
}

fn parse_bpf_filter(m: &TcMessage) -> Option<BpfFilter> {
    let is_bpf = m
        .attributes
        .iter()
        .any(|a| matches!(a, TcAttribute::Kind(k) if k == "bpf"));
    let handle: u32 = m.header.handle.into();
    // The dump lists each priority's (empty) head too, with handle 0.
    if !is_bpf || handle == 0 {
        return None;
    }
    let mut f = BpfFilter {
        priority: u16::try_from(m.header.info >> 16).unwrap_or(0),
        handle,
        name: String::new(),
        prog_id: 0,
        direct_action: false,
    };
    for a in &m.attributes {
        if let TcAttribute::Options(opts) = a {
            for o in opts {
                match o {
                    TcOption::Bpf(TcFilterBpfOption::ProgName(n)) => f.name.clone_from(n),
                    TcOption::Bpf(TcFilterBpfOption::ProgId(id)) => f.prog_id = *id,
                    TcOption::Bpf(TcFilterBpfOption::Flags(fl)) => {
                        f.direct_action = fl.contains(TcBpfFlags::DirectAction);
                    }
                    _ => {}
                }
            }
        }
    }
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_messages_carry_our_priority_handle_and_every_protocol() {
        let m = filter_msg(7, Direction::Egress, 0x1234).unwrap();
        assert_eq!(m.header.index, 7);
        assert_eq!(u32::from(m.header.parent), 0xffff_fff3);
        assert_eq!(u32::from(m.header.handle), FILTER_HANDLE);
        assert_eq!(m.header.info, 0x1234_0300);
        let m = filter_msg(7, Direction::Ingress, 1).unwrap();
        assert_eq!(u32::from(m.header.parent), 0xffff_fff2);
    }

    #[test]
    fn only_bpf_filters_with_a_handle_are_parsed() {
        let mut m = filter_msg(3, Direction::Ingress, 9).unwrap();
        assert_eq!(parse_bpf_filter(&m), None, "no kind");
        m.attributes.push(TcAttribute::Kind("bpf".into()));
        m.attributes.push(TcAttribute::Options(vec![
            TcOption::Bpf(TcFilterBpfOption::ProgName("fe_x".into())),
            TcOption::Bpf(TcFilterBpfOption::ProgId(42)),
            TcOption::Bpf(TcFilterBpfOption::Flags(TcBpfFlags::DirectAction)),
        ]));
        assert_eq!(
            parse_bpf_filter(&m),
            Some(BpfFilter {
                priority: 9,
                handle: FILTER_HANDLE,
                name: "fe_x".into(),
                prog_id: 42,
                direct_action: true,
            })
        );
        m.header.handle = 0.into();
        assert_eq!(parse_bpf_filter(&m), None, "a priority's head");
    }
}
