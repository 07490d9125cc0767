//! Traffic for the masquerade lab: the WAN host's byte sink and UDP recorder, and the pod-side
//! clients (one request, many concurrent flows, a bulk upload, ping).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netns::Ns;
use crate::nslab::NsLabError;
use crate::sock;

const TIMEOUT: Duration = Duration::from_secs(5);

fn both(port: u16) -> [SocketAddr; 2] {
    [
        SocketAddr::from(([0, 0, 0, 0], port)),
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)),
    ]
}

fn other(what: impl std::fmt::Display) -> NsLabError {
    NsLabError::Other(what.to_string())
}

/// Threads polling `stop`; joined on drop.
#[derive(Debug, Default)]
struct Threads {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
}

impl Drop for Threads {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// TCP on both families: reads every connection to EOF and answers the byte count and a
/// newline.
#[derive(Debug)]
pub struct Sink {
    _threads: Threads,
}

impl Sink {
    /// Listens on `port` in the calling thread's netns.
    pub fn start(port: u16) -> Result<Self, NsLabError> {
        let mut threads = Threads::default();
        for addr in both(port) {
            let listener = sock::tcp_listener(&addr, 256).map_err(NsLabError::from_io("sink"))?;
            listener
                .set_nonblocking(true)
                .map_err(NsLabError::from_io("sink"))?;
            let stop = threads.stop.clone();
            threads
                .handles
                .push(std::thread::spawn(move || accept_loop(&listener, &stop)));
        }
        Ok(Self { _threads: threads })
    }
}

fn accept_loop(listener: &TcpListener, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut conn, _)) => {
                std::thread::spawn(move || {
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
                    let mut buf = vec![0u8; 256 * 1024];
                    let mut total = 0u64;
                    loop {
                        match conn.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => total += n as u64,
                            Err(_) => return,
                        }
                    }
                    let _ = writeln!(conn, "{total}");
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return,
        }
    }
}

/// UDP on both families: remembers the source of every datagram, answers nothing.
#[derive(Debug)]
pub struct Recorder {
    seen: Arc<Mutex<Vec<SocketAddr>>>,
    _threads: Threads,
}

impl Recorder {
    pub fn start(port: u16) -> Result<Self, NsLabError> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Threads::default();
        for addr in both(port) {
            let socket = sock::udp_socket(&addr).map_err(NsLabError::from_io("recorder"))?;
            socket
                .set_read_timeout(Some(Duration::from_millis(50)))
                .map_err(NsLabError::from_io("recorder"))?;
            let (stop, seen) = (threads.stop.clone(), seen.clone());
            threads.handles.push(std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((_, peer)) = socket.recv_from(&mut buf) {
                        seen.lock().expect("not poisoned").push(peer);
                    }
                }
            }));
        }
        Ok(Self {
            seen,
            _threads: threads,
        })
    }

    #[must_use]
    pub fn seen(&self) -> Vec<SocketAddr> {
        self.seen.lock().expect("not poisoned").clone()
    }
}

fn read_line(conn: &TcpStream) -> io::Result<String> {
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line)?;
    Ok(line.trim().to_owned())
}

/// The peer address in an echo-peer answer (`NAME PEER`).
fn peer_of(answer: &str) -> Result<SocketAddr, NsLabError> {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| other(format!("answer {answer:?} has no peer address")))
}

/// From `ns`: one TCP request to an echo-peer server; the address the server saw.
pub fn tcp_ask(ns: &Ns, dst: SocketAddr) -> Result<SocketAddr, NsLabError> {
    ns.run(|| {
        let mut conn = TcpStream::connect_timeout(&dst, TIMEOUT)
            .map_err(|e| other(format!("connect {dst}: {e}")))?;
        conn.set_read_timeout(Some(TIMEOUT))
            .map_err(NsLabError::from_io("timeout"))?;
        conn.write_all(b"hi\n")
            .map_err(|e| other(format!("send to {dst}: {e}")))?;
        let answer = read_line(&conn).map_err(|e| other(format!("answer from {dst}: {e}")))?;
        peer_of(&answer)
    })?
}

/// From `ns`: `n` TCP connections to `dst` open at the same time, then one request on each;
/// the addresses the server saw, in connection order.
pub fn tcp_many(ns: &Ns, dst: SocketAddr, n: usize) -> Result<Vec<SocketAddr>, NsLabError> {
    ns.run(|| {
        let mut conns = Vec::with_capacity(n);
        for i in 0..n {
            let conn = TcpStream::connect_timeout(&dst, TIMEOUT)
                .map_err(|e| other(format!("connection {i} to {dst}: {e}")))?;
            conn.set_read_timeout(Some(TIMEOUT))
                .map_err(NsLabError::from_io("timeout"))?;
            conns.push(conn);
        }
        // Every request first: a server handling one connection at a time never waits.
        for (i, conn) in conns.iter_mut().enumerate() {
            conn.write_all(b"hi\n")
                .map_err(|e| other(format!("request {i} to {dst}: {e}")))?;
        }
        conns
            .iter()
            .enumerate()
            .map(|(i, conn)| {
                read_line(conn)
                    .map_err(|e| other(format!("answer {i} from {dst}: {e}")))
                    .and_then(|a| peer_of(&a))
            })
            .collect()
    })?
}

/// From `ns`: `n` UDP sockets each send one datagram to `dst` (resent up to 3 times while
/// unanswered); the addresses the server saw, in socket order.
pub fn udp_many(ns: &Ns, dst: SocketAddr, n: usize) -> Result<Vec<SocketAddr>, NsLabError> {
    ns.run(|| {
        let local = if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let sockets = (0..n)
            .map(|_| {
                let s = UdpSocket::bind(local)?;
                s.connect(dst)?;
                s.set_read_timeout(Some(Duration::from_millis(500)))?;
                Ok(s)
            })
            .collect::<io::Result<Vec<_>>>()
            .map_err(NsLabError::from_io("udp sockets"))?;
        let mut peers: Vec<Option<SocketAddr>> = vec![None; n];
        for _round in 0..4 {
            for (s, p) in sockets.iter().zip(&peers) {
                if p.is_none() {
                    s.send(b"hi\n").map_err(NsLabError::from_io("udp send"))?;
                }
            }
            let mut buf = [0u8; 512];
            for (s, p) in sockets.iter().zip(peers.iter_mut()) {
                if p.is_none()
                    && let Ok(len) = s.recv(&mut buf)
                {
                    *p = Some(peer_of(String::from_utf8_lossy(&buf[..len]).trim())?);
                }
            }
            if peers.iter().all(Option::is_some) {
                break;
            }
        }
        let answered = peers.iter().filter(|p| p.is_some()).count();
        if answered < n {
            return Err(other(format!(
                "{answered} of {n} UDP flows to {dst} were answered"
            )));
        }
        Ok(peers.into_iter().flatten().collect())
    })?
}

/// From `ns`: uploads `bytes` to the sink at `dst` (in `chunk`-byte writes, `pause` between
/// them) and returns the count the sink answered and how long it took.
pub fn bulk_upload(
    ns: &Ns,
    dst: SocketAddr,
    bytes: u64,
    chunk: usize,
    pause: Duration,
) -> Result<(u64, Duration), NsLabError> {
    ns.run(|| {
        let started = Instant::now();
        let mut conn = TcpStream::connect_timeout(&dst, TIMEOUT)
            .map_err(|e| other(format!("connect {dst}: {e}")))?;
        conn.set_write_timeout(Some(Duration::from_secs(20)))
            .and_then(|()| conn.set_read_timeout(Some(Duration::from_secs(30))))
            .map_err(NsLabError::from_io("timeout"))?;
        let buf = vec![0x5au8; chunk];
        let mut sent = 0u64;
        while sent < bytes {
            let n = usize::try_from((bytes - sent).min(chunk as u64)).unwrap_or(chunk);
            conn.write_all(&buf[..n])
                .map_err(|e| other(format!("upload to {dst} stalled after {sent} bytes: {e}")))?;
            sent += n as u64;
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
        }
        conn.shutdown(std::net::Shutdown::Write)
            .map_err(NsLabError::from_io("shutdown"))?;
        let answer = read_line(&conn).map_err(|e| other(format!("sink count from {dst}: {e}")))?;
        let got = answer
            .parse()
            .map_err(|_| other(format!("sink answered {answer:?}")))?;
        Ok((got, started.elapsed()))
    })?
}

/// `busybox ping -c COUNT` from `ns` to `dst`: how many replies came back.
pub fn ping(ns: &Ns, dst: std::net::IpAddr, count: u32) -> Result<u32, NsLabError> {
    let mut cmd = ns.command("busybox")?;
    cmd.arg(if dst.is_ipv4() { "ping" } else { "ping6" })
        .args(["-c", &count.to_string(), "-W", "2"])
        .arg(dst.to_string());
    let out = run_tolerant(&mut cmd)?;
    // "3 packets transmitted, 3 packets received, 0% packet loss"
    out.split(',')
        .find_map(|part| part.trim().strip_suffix(" packets received"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| other(format!("no ping summary in {out:?}")))
}

/// Runs `cmd` and returns its stdout whatever its exit status (ping exits 1 on loss).
fn run_tolerant(cmd: &mut Command) -> Result<String, NsLabError> {
    let out = cmd
        .output()
        .map_err(|e| NsLabError::Command(crate::cmd::spawn_error(cmd, e)))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl NsLabError {
    fn from_io(what: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |source| Self::Io {
            what: what.into(),
            source,
        }
    }
}
