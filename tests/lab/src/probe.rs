//! The lab client: repeated attempts against one address, each on a new socket, tallying which
//! backend answered, how attempts failed, and what addresses the socket layer reported.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::errno::error_kind;
use crate::report::{ClientReport, LatencySummary};

/// Transport to probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl FromStr for Proto {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tcp" => Ok(Self::Tcp),
            "udp" => Ok(Self::Udp),
            other => Err(format!("unknown protocol {other:?} (expected tcp or udp)")),
        }
    }
}

/// When to stop probing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Count(u64),
    Duration(Duration),
}

/// A probe run.
#[derive(Clone, Debug)]
pub struct ProbeConfig {
    pub target: SocketAddr,
    pub proto: Proto,
    pub limit: Limit,
    /// Pause between attempts.
    pub interval: Duration,
    /// Per attempt: connect, and reading the reply.
    pub timeout: Duration,
    /// UDP only: `sendto`/`recvfrom` on an unconnected socket instead of `connect` + send/recv.
    pub udp_unconnected: bool,
    /// Bytes to send before reading (TCP); UDP always sends this (or `?\n` when empty).
    pub payload: Vec<u8>,
    /// Local address to send from (default: whatever routing picks).
    pub bind: Option<IpAddr>,
    /// Attempt `n` uses source port `source_port + n` (default: ephemeral ports). TCP sockets
    /// then close with RST, so no `TIME_WAIT` keeps a 4-tuple from being used again.
    pub source_port: Option<u16>,
}

impl ProbeConfig {
    #[must_use]
    pub fn new(target: SocketAddr, proto: Proto, limit: Limit) -> Self {
        Self {
            target,
            proto,
            limit,
            interval: Duration::ZERO,
            timeout: Duration::from_secs(1),
            udp_unconnected: false,
            payload: Vec::new(),
            bind: None,
            source_port: None,
        }
    }
}

/// What one attempt produced.
#[derive(Debug)]
struct Attempt {
    name: Result<Reply, io::Error>,
    peer: Option<SocketAddr>,
    reply_source: Option<SocketAddr>,
    took: Duration,
}

/// Runs the probe and returns the tally; failures are counted, never returned.
#[must_use]
pub fn probe(config: &ProbeConfig) -> ClientReport {
    let mode = if config.proto == Proto::Udp && config.udp_unconnected {
        "unconnected"
    } else {
        "connected"
    };
    let mut report = ClientReport {
        target: config.target.to_string(),
        proto: match config.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
        .into(),
        mode: mode.into(),
        ..ClientReport::default()
    };
    let mut refused = Vec::new();
    let start = Instant::now();
    loop {
        let keep_going = match config.limit {
            Limit::Count(n) => report.attempts < n,
            Limit::Duration(d) => start.elapsed() < d,
        };
        if !keep_going {
            break;
        }
        if report.attempts > 0 && !config.interval.is_zero() {
            std::thread::sleep(config.interval);
        }
        let local = local_addr(config, report.attempts);
        let attempt = match (config.proto, config.udp_unconnected) {
            (Proto::Tcp, _) => tcp_attempt(config, local),
            (Proto::Udp, false) => udp_connected_attempt(config, local),
            (Proto::Udp, true) => udp_unconnected_attempt(config, local),
        };
        report.attempts += 1;
        if let Some(peer) = attempt.peer {
            report.peers.insert(peer.to_string());
        }
        if let Some(source) = attempt.reply_source {
            report.reply_sources.insert(source.to_string());
        }
        match attempt.name {
            Ok(reply) => {
                report.ok += 1;
                if let Some(peer) = reply.peer {
                    report
                        .peers_seen_by_server
                        .entry(reply.name.clone())
                        .or_default()
                        .insert(peer);
                }
                *report.names.entry(reply.name).or_default() += 1;
            }
            Err(e) => {
                if e.raw_os_error() == Some(libc::ECONNREFUSED) {
                    refused.push(u64::try_from(attempt.took.as_micros()).unwrap_or(u64::MAX));
                }
                *report.failures.entry(error_kind(&e)).or_default() += 1;
            }
        }
    }
    report.refused_us = LatencySummary::from_samples(&mut refused);
    report.elapsed_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    report
}

/// A server's answer: `NAME` or, from `serve --echo-peer`, `NAME PEER`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub name: String,
    /// The client address the server saw, IP only (`PEER` may carry a port, which is dropped).
    pub peer: Option<String>,
}

/// Parses a reply: its first line, `NAME` or `NAME PEER`; the name must not be empty.
pub fn parse_reply(bytes: &[u8]) -> io::Result<Reply> {
    let text = String::from_utf8_lossy(bytes);
    let mut words = text.lines().next().unwrap_or("").split_whitespace();
    let Some(name) = words.next() else {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "empty reply"));
    };
    let peer = words.next().map(|p| {
        p.parse::<SocketAddr>()
            .map_or_else(|_| p.to_owned(), |a| a.ip().to_string())
    });
    Ok(Reply {
        name: name.to_owned(),
        peer,
    })
}

/// The local address attempt `n` binds to, if the config asks for one.
fn local_addr(config: &ProbeConfig, n: u64) -> Option<io::Result<SocketAddr>> {
    if config.bind.is_none() && config.source_port.is_none() {
        return None;
    }
    let ip = config.bind.unwrap_or(if config.target.is_ipv4() {
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    });
    let port = match config.source_port {
        None => Ok(0),
        Some(base) => u16::try_from(u64::from(base) + n).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("source port {base} + {n} is past 65535"),
            )
        }),
    };
    Some(port.map(|port| SocketAddr::new(ip, port)))
}

fn tcp_attempt(config: &ProbeConfig, local: Option<io::Result<SocketAddr>>) -> Attempt {
    let start = Instant::now();
    let mut peer = None;
    let name = (|| {
        let mut stream = match local {
            None => TcpStream::connect_timeout(&config.target, config.timeout)?,
            Some(local) => {
                let stream =
                    crate::sock::tcp_connect_from(&local?, &config.target, config.timeout)?;
                crate::sock::set_linger_zero(stream.as_raw_fd())?;
                stream
            }
        };
        peer = stream.peer_addr().ok();
        stream.set_read_timeout(Some(config.timeout))?;
        stream.set_write_timeout(Some(config.timeout))?;
        if !config.payload.is_empty() {
            stream.write_all(&config.payload)?;
        }
        let mut buf = Vec::with_capacity(64);
        let mut chunk = [0u8; 256];
        // Up to the first newline or EOF; servers close right after the name.
        loop {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.contains(&b'\n') || buf.len() > 4096 {
                break;
            }
        }
        parse_reply(&buf)
    })();
    Attempt {
        name,
        peer,
        reply_source: None,
        took: start.elapsed(),
    }
}

fn udp_payload(config: &ProbeConfig) -> &[u8] {
    if config.payload.is_empty() {
        b"?\n"
    } else {
        &config.payload
    }
}

fn udp_bind(target: &SocketAddr, local: Option<io::Result<SocketAddr>>) -> io::Result<UdpSocket> {
    match local {
        Some(local) => UdpSocket::bind(local?),
        None if target.is_ipv4() => UdpSocket::bind(("0.0.0.0", 0)),
        None => UdpSocket::bind(("::", 0)),
    }
}

fn udp_connected_attempt(config: &ProbeConfig, local: Option<io::Result<SocketAddr>>) -> Attempt {
    let start = Instant::now();
    let mut peer = None;
    let name = (|| {
        let socket = udp_bind(&config.target, local)?;
        socket.connect(config.target)?;
        peer = socket.peer_addr().ok();
        socket.set_read_timeout(Some(config.timeout))?;
        socket.send(udp_payload(config))?;
        let mut buf = [0u8; 2048];
        let n = socket.recv(&mut buf)?;
        parse_reply(&buf[..n])
    })();
    Attempt {
        name,
        peer,
        reply_source: None,
        took: start.elapsed(),
    }
}

fn udp_unconnected_attempt(config: &ProbeConfig, local: Option<io::Result<SocketAddr>>) -> Attempt {
    let start = Instant::now();
    let mut reply_source = None;
    let name = (|| {
        let socket = udp_bind(&config.target, local)?;
        socket.set_read_timeout(Some(config.timeout))?;
        socket.send_to(udp_payload(config), config.target)?;
        let mut buf = [0u8; 2048];
        let (n, from) = socket.recv_from(&mut buf)?;
        reply_source = Some(from);
        parse_reply(&buf[..n])
    })();
    Attempt {
        name,
        peer: None,
        reply_source,
        took: start.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::{Server, ServerConfig, TcpMode};
    use std::net::TcpListener;

    fn server(mode: TcpMode) -> Server {
        Server::start(&ServerConfig {
            name: "pod-a".into(),
            tcp: vec!["127.0.0.1:0".parse().unwrap()],
            udp: vec!["127.0.0.1:0".parse().unwrap()],
            mode,
            ..ServerConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn tcp_counts_names_and_peers() {
        let s = server(TcpMode::Banner);
        let target = s.tcp_addrs()[0];
        let r = probe(&ProbeConfig::new(target, Proto::Tcp, Limit::Count(5)));
        assert_eq!((r.attempts, r.ok), (5, 5));
        assert_eq!(r.names.get("pod-a"), Some(&5));
        assert_eq!(r.peers.iter().collect::<Vec<_>>(), [&target.to_string()]);
        assert!(r.failures.is_empty());

        let s = server(TcpMode::Request);
        let mut cfg = ProbeConfig::new(s.tcp_addrs()[0], Proto::Tcp, Limit::Count(2));
        cfg.payload = b"hi\n".to_vec();
        assert_eq!(probe(&cfg).ok, 2);
    }

    #[test]
    fn replies_with_the_peer_are_tallied_per_server() {
        assert_eq!(
            parse_reply(b"n1-pod-1 192.168.50.3:40000\n").unwrap(),
            Reply {
                name: "n1-pod-1".into(),
                peer: Some("192.168.50.3".into())
            }
        );
        assert_eq!(
            parse_reply(b"pod [fd00::3]:5\n").unwrap().peer.as_deref(),
            Some("fd00::3")
        );
        assert_eq!(parse_reply(b"pod\n").unwrap().peer, None);
        assert!(parse_reply(b"  \n").is_err());

        let s = Server::start(&ServerConfig {
            name: "pod-e".into(),
            tcp: vec!["127.0.0.1:0".parse().unwrap()],
            udp: vec!["127.0.0.1:0".parse().unwrap()],
            echo_peer: true,
            ..ServerConfig::default()
        })
        .unwrap();
        for (target, proto) in [
            (s.tcp_addrs()[0], Proto::Tcp),
            (s.udp_addrs()[0], Proto::Udp),
        ] {
            let mut cfg = ProbeConfig::new(target, proto, Limit::Count(3));
            cfg.bind = Some("127.0.0.2".parse().unwrap());
            let r = probe(&cfg);
            assert_eq!(r.names.get("pod-e"), Some(&3), "{r:?}");
            assert_eq!(
                r.peers_seen_by_server["pod-e"].iter().collect::<Vec<_>>(),
                ["127.0.0.2"]
            );
        }
        // Fixed source ports: every attempt gets base + n, and TCP ones can repeat at once.
        let free = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        for _ in 0..2 {
            let mut cfg = ProbeConfig::new(s.tcp_addrs()[0], Proto::Tcp, Limit::Count(3));
            cfg.source_port = Some(free.port());
            let r = probe(&cfg);
            assert_eq!(r.ok, 3, "{r:?}");
        }
    }

    #[test]
    fn refused_connections_are_timed() {
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut cfg = ProbeConfig::new(
            closed,
            Proto::Tcp,
            Limit::Duration(Duration::from_millis(50)),
        );
        cfg.interval = Duration::from_millis(5);
        let r = probe(&cfg);
        assert!(r.attempts >= 2, "{r:?}");
        assert_eq!(r.failures.get("ECONNREFUSED"), Some(&r.attempts));
        let refused = r.refused_us.unwrap();
        assert_eq!(refused.count, r.attempts);
        assert!(refused.max_us < 1_000_000);
    }

    #[test]
    fn udp_both_modes() {
        let s = server(TcpMode::Banner);
        let target = s.udp_addrs()[0];
        let r = probe(&ProbeConfig::new(target, Proto::Udp, Limit::Count(3)));
        assert_eq!((r.ok, r.mode.as_str()), (3, "connected"));
        assert!(r.peers.contains(&target.to_string()));
        let mut cfg = ProbeConfig::new(target, Proto::Udp, Limit::Count(3));
        cfg.udp_unconnected = true;
        let r = probe(&cfg);
        assert_eq!((r.ok, r.mode.as_str()), (3, "unconnected"));
        assert_eq!(
            r.reply_sources.iter().collect::<Vec<_>>(),
            [&target.to_string()]
        );

        // Nothing listens: the ICMP port unreachable turns into ECONNREFUSED on a connected socket.
        let dead = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut cfg = ProbeConfig::new(dead, Proto::Udp, Limit::Count(1));
        cfg.timeout = Duration::from_millis(300);
        let r = probe(&cfg);
        assert_eq!(r.failures.get("ECONNREFUSED"), Some(&1), "{r:?}");
    }
}
