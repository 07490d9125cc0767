//! The lab's backend server: answers every TCP connection and UDP datagram with `NAME\n`
//! (or `NAME PEER\n` with `echo_peer`, so a client learns which address the backend saw),
//! one thread per listener, so a client can tell which backend it reached. HTTP listeners
//! answer every request with the same line (see [`crate::http`]).

use std::borrow::Cow;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::sock;

/// How long an accept/recv waits before checking whether the server is stopping.
const POLL_MS: i32 = 200;
/// Listen backlog: bursts of thousands of connects per second must not overflow it.
const BACKLOG: i32 = 4096;

/// What the server does with an accepted TCP connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TcpMode {
    /// Write `NAME\n` at once and close (bytes the client sent first are drained, not answered).
    #[default]
    Banner,
    /// Read a request (up to a newline, EOF, 64 KiB or 2 s), then write `NAME\n` and close.
    Request,
}

/// Listeners to open.
#[derive(Clone, Debug, Default)]
pub struct ServerConfig {
    pub name: String,
    pub tcp: Vec<SocketAddr>,
    pub udp: Vec<SocketAddr>,
    /// HTTP/1.1 listeners (keep-alive; every request gets the answer line as its body).
    pub http: Vec<SocketAddr>,
    pub mode: TcpMode,
    /// Answer `NAME PEER` (the client's address as this server sees it) instead of `NAME`.
    pub echo_peer: bool,
}

/// The line a server answers with.
#[derive(Debug)]
pub struct Answer {
    name: String,
    fixed: Vec<u8>,
    echo_peer: bool,
}

impl Answer {
    #[must_use]
    pub fn new(name: &str, echo_peer: bool) -> Self {
        Self {
            name: name.to_owned(),
            fixed: format!("{name}\n").into_bytes(),
            echo_peer,
        }
    }

    /// `NAME\n`, or `NAME PEER\n` when echoing peers and the peer is known.
    #[must_use]
    pub fn line(&self, peer: Option<SocketAddr>) -> Cow<'_, [u8]> {
        match peer {
            Some(peer) if self.echo_peer => {
                Cow::Owned(format!("{} {peer}\n", self.name).into_bytes())
            }
            _ => Cow::Borrowed(&self.fixed),
        }
    }
}

/// A listener that could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {proto} {addr}: {source}")]
pub struct ServeError {
    pub proto: &'static str,
    pub addr: SocketAddr,
    #[source]
    pub source: io::Error,
}

/// Counters shared by the listener threads.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub tcp_accepted: AtomicU64,
    pub udp_replied: AtomicU64,
    pub http_requests: AtomicU64,
}

/// Running listener threads; dropping it stops and joins them.
#[derive(Debug)]
pub struct Server {
    stop: Arc<AtomicBool>,
    stats: Arc<ServerStats>,
    threads: Vec<JoinHandle<()>>,
    tcp: Vec<SocketAddr>,
    udp: Vec<SocketAddr>,
    http: Vec<SocketAddr>,
}

impl Server {
    /// Binds every listener (all or nothing), then starts one thread per listener.
    /// Sockets live in the netns of the calling thread (see [`crate::Ns::run`]).
    pub fn start(config: &ServerConfig) -> Result<Self, ServeError> {
        let mut tcp = Vec::new();
        for addr in &config.tcp {
            let listener = sock::tcp_listener(addr, BACKLOG).map_err(|source| ServeError {
                proto: "tcp",
                addr: *addr,
                source,
            })?;
            tcp.push(listener);
        }
        let mut udp = Vec::new();
        for addr in &config.udp {
            let socket = sock::udp_socket(addr).map_err(|source| ServeError {
                proto: "udp",
                addr: *addr,
                source,
            })?;
            udp.push(socket);
        }
        let mut http = Vec::new();
        for addr in &config.http {
            let listener = sock::tcp_listener(addr, BACKLOG).map_err(|source| ServeError {
                proto: "http",
                addr: *addr,
                source,
            })?;
            http.push(listener);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(ServerStats::default());
        let reply = Arc::new(Answer::new(&config.name, config.echo_peer));
        let bound = |a: io::Result<SocketAddr>, fallback: &SocketAddr| a.unwrap_or(*fallback);
        let tcp_addrs = tcp
            .iter()
            .zip(&config.tcp)
            .map(|(l, a)| bound(l.local_addr(), a))
            .collect();
        let udp_addrs = udp
            .iter()
            .zip(&config.udp)
            .map(|(s, a)| bound(s.local_addr(), a))
            .collect();
        let http_addrs = http
            .iter()
            .zip(&config.http)
            .map(|(l, a)| bound(l.local_addr(), a))
            .collect();
        let mut threads = Vec::new();
        for listener in tcp {
            let (stop, stats, reply) = (stop.clone(), stats.clone(), reply.clone());
            let mode = config.mode;
            threads.push(std::thread::spawn(move || {
                tcp_loop(&listener, mode, &reply, &stop, &stats);
            }));
        }
        for socket in udp {
            let (stop, stats, reply) = (stop.clone(), stats.clone(), reply.clone());
            threads.push(std::thread::spawn(move || {
                udp_loop(&socket, &reply, &stop, &stats);
            }));
        }
        for listener in http {
            let (stop, stats, reply) = (stop.clone(), stats.clone(), reply.clone());
            threads.push(std::thread::spawn(move || {
                http_loop(&listener, &reply, &stop, &stats);
            }));
        }
        Ok(Self {
            stop,
            stats,
            threads,
            tcp: tcp_addrs,
            udp: udp_addrs,
            http: http_addrs,
        })
    }

    /// Bound TCP addresses (with the real port when 0 was asked for), in config order.
    #[must_use]
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp
    }

    /// Bound UDP addresses, in config order.
    #[must_use]
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.udp
    }

    /// Bound HTTP addresses, in config order.
    #[must_use]
    pub fn http_addrs(&self) -> &[SocketAddr] {
        &self.http
    }

    #[must_use]
    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// Blocks until the listener threads end (they only do once stopped, i.e. never for
    /// the CLI, which is killed).
    pub fn wait(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Waits up to [`POLL_MS`] for `fd` to become readable.
fn readable(fd: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&raw mut pfd, 1, POLL_MS) > 0 }
}

fn tcp_loop(
    listener: &TcpListener,
    mode: TcpMode,
    reply: &Arc<Answer>,
    stop: &AtomicBool,
    stats: &ServerStats,
) {
    // Non-blocking, so the inner loop can take everything queued and then poll again.
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    while !stop.load(Ordering::Relaxed) {
        if !readable(listener.as_raw_fd()) {
            continue;
        }
        // Accept everything queued before polling again.
        loop {
            match accept_nonblocking(listener) {
                Ok(stream) => {
                    stats.tcp_accepted.fetch_add(1, Ordering::Relaxed);
                    match mode {
                        TcpMode::Banner => {
                            let peer = stream.peer_addr().ok();
                            banner(stream, &reply.line(peer));
                        }
                        TcpMode::Request => {
                            let reply = reply.clone();
                            std::thread::spawn(move || {
                                let peer = stream.peer_addr().ok();
                                request(stream, &reply.line(peer));
                            });
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e)
                    if e.raw_os_error() == Some(libc::EMFILE)
                        || e.raw_os_error() == Some(libc::ENFILE) =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                    break;
                }
                // ECONNABORTED and friends: that client is gone; keep serving the others.
                Err(_) => {}
            }
        }
    }
}

fn accept_nonblocking(listener: &TcpListener) -> io::Result<TcpStream> {
    // SAFETY: accept4 on our listening socket; the result is a fresh owned descriptor.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a valid descriptor we own.
    Ok(unsafe { <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

fn banner(mut stream: TcpStream, reply: &[u8]) {
    // Non-blocking: a client that already reset the connection costs nothing.
    let _ = stream.write(reply);
    // Drain what the client sent so close() sends FIN rather than RST.
    let mut sink = [0u8; 1024];
    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
    let _ = stream.shutdown(Shutdown::Write);
}

fn request(mut stream: TcpStream, reply: &[u8]) {
    if stream.set_nonblocking(false).is_err()
        || stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .is_err()
    {
        return;
    }
    let mut buf = [0u8; 4096];
    let mut total = 0usize;
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                total += n;
                if buf[..n].contains(&b'\n') || total >= 64 * 1024 {
                    break;
                }
            }
        }
    }
    let _ = stream.write_all(reply);
    let _ = stream.shutdown(Shutdown::Write);
}

/// Accepts HTTP connections; each gets a thread that answers its requests until it closes.
fn http_loop(
    listener: &TcpListener,
    reply: &Arc<Answer>,
    stop: &Arc<AtomicBool>,
    stats: &Arc<ServerStats>,
) {
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    while !stop.load(Ordering::Relaxed) {
        if !readable(listener.as_raw_fd()) {
            continue;
        }
        loop {
            match accept_nonblocking(listener) {
                Ok(stream) => {
                    stats.tcp_accepted.fetch_add(1, Ordering::Relaxed);
                    let (reply, stop, stats) = (reply.clone(), stop.clone(), stats.clone());
                    std::thread::spawn(move || {
                        crate::http::serve_connection(stream, &reply, &stop, &stats);
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e)
                    if e.raw_os_error() == Some(libc::EMFILE)
                        || e.raw_os_error() == Some(libc::ENFILE) =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                    break;
                }
                Err(_) => {}
            }
        }
    }
}

fn udp_loop(socket: &UdpSocket, reply: &Answer, stop: &AtomicBool, stats: &ServerStats) {
    if socket.set_nonblocking(true).is_err() {
        return;
    }
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        if !readable(socket.as_raw_fd()) {
            continue;
        }
        loop {
            match sock::recv_datagram(socket, &mut buf) {
                Ok(d) => {
                    let line = reply.line(Some(d.from));
                    if sock::send_datagram(socket, &line, &d.from, d.to, d.ifindex).is_ok() {
                        stats.udp_replied.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // ICMP errors from earlier replies surface here; keep serving.
                Err(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv6Addr, TcpStream};

    fn read_name(stream: &mut TcpStream) -> String {
        let mut s = String::new();
        stream.read_to_string(&mut s).unwrap();
        s
    }

    #[test]
    fn tcp_banner_request_and_udp_on_v4_and_v6() {
        let server = Server::start(&ServerConfig {
            name: "pod-a".into(),
            tcp: vec![
                "127.0.0.1:0".parse().unwrap(),
                SocketAddr::from((Ipv6Addr::LOCALHOST, 0)),
            ],
            udp: vec!["0.0.0.0:0".parse().unwrap()],
            mode: TcpMode::Banner,
            ..ServerConfig::default()
        })
        .unwrap();
        for addr in server.tcp_addrs() {
            let mut s = TcpStream::connect(addr).unwrap();
            // Sending first is fine in banner mode.
            s.write_all(b"hello\n").unwrap();
            assert_eq!(read_name(&mut s), "pod-a\n");
        }
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        udp.send_to(b"x", ("127.0.0.1", server.udp_addrs()[0].port()))
            .unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = udp.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"pod-a\n");
        assert_eq!(server.stats().tcp_accepted.load(Ordering::Relaxed), 2);

        let req = Server::start(&ServerConfig {
            name: "pod-b".into(),
            tcp: vec!["127.0.0.1:0".parse().unwrap()],
            mode: TcpMode::Request,
            ..ServerConfig::default()
        })
        .unwrap();
        let mut s = TcpStream::connect(req.tcp_addrs()[0]).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut one = [0u8; 1];
        // Nothing arrives before the request.
        assert!(s.read(&mut one).is_err());
        s.set_read_timeout(None).unwrap();
        s.write_all(b"GET\n").unwrap();
        assert_eq!(read_name(&mut s), "pod-b\n");
    }

    #[test]
    fn bind_failure_names_the_listener() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = Server::start(&ServerConfig {
            name: "x".into(),
            tcp: vec![addr],
            ..ServerConfig::default()
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("cannot listen on tcp {addr}")),
            "{err}"
        );
    }
}
