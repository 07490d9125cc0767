//! Just enough HTTP/1.1 for the lab: a keep-alive responder (so `wrk` can load a backend
//! through a load balancer) and a one-shot GET client (for health-check node ports).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::serve::{Answer, ServerStats};

/// Largest request head (or response) this module reads.
const MAX_HEAD: usize = 64 * 1024;
const MAX_RESPONSE: usize = 1024 * 1024;

/// A complete request at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Request {
    /// Bytes it occupies (head and body).
    len: usize,
    keep_alive: bool,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `Ok(None)` while `buf` holds no complete request yet; `Err` for one that is not HTTP/1.x.
fn parse_request(buf: &[u8]) -> Result<Option<Request>, ()> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Err(())
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| ())?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().ok_or(())?;
    let mut parts = request_line.split(' ');
    let (_method, _target, version) = (
        parts.next().ok_or(())?,
        parts.next().ok_or(())?,
        parts.next().ok_or(())?,
    );
    let mut keep_alive = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err(()),
    };
    let mut body = 0usize;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(());
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("connection") {
            if value.eq_ignore_ascii_case("close") {
                keep_alive = false;
            } else if value.eq_ignore_ascii_case("keep-alive") {
                keep_alive = true;
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            body = value.parse().map_err(|_| ())?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked request bodies are not needed by any lab client.
            return Err(());
        }
    }
    let len = end + 4 + body;
    Ok((buf.len() >= len).then_some(Request { len, keep_alive }))
}

fn response(status: &str, body: &[u8], close: bool, out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: text/plain\r\nContent-Length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    if close {
        out.extend_from_slice(b"\r\nConnection: close");
    }
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

/// Answers every request on `stream` with `200 OK` and the answer line as body, until the
/// client closes, asks to close, sends something that is not HTTP/1.x, or `stop` is set.
pub fn serve_connection(
    mut stream: TcpStream,
    answer: &Answer,
    stop: &AtomicBool,
    stats: &ServerStats,
) {
    let body = answer.line(stream.peer_addr().ok()).into_owned();
    if stream.set_nonblocking(false).is_err()
        || stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .is_err()
    {
        return;
    }
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    let mut out = Vec::with_capacity(4096);
    loop {
        // Answer every complete request buffered so far (pipelining), in one write.
        out.clear();
        let mut close = false;
        let mut used = 0;
        loop {
            match parse_request(&buf[used..]) {
                Ok(Some(req)) => {
                    used += req.len;
                    stats.http_requests.fetch_add(1, Ordering::Relaxed);
                    close = !req.keep_alive;
                    response("200 OK", &body, close, &mut out);
                    if close {
                        break;
                    }
                }
                Ok(None) => break,
                Err(()) => {
                    response("400 Bad Request", b"bad request\n", true, &mut out);
                    close = true;
                    break;
                }
            }
        }
        buf.drain(..used);
        if !out.is_empty() && stream.write_all(&out).is_err() {
            return;
        }
        if close {
            let _ = stream.shutdown(Shutdown::Write);
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// A response read by [`get`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lower case, in order.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// The first header called `name` (case-insensitive).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn dechunk(mut body: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(body, b"\r\n").ok_or_else(|| invalid("truncated chunk size"))?;
        let size_text =
            std::str::from_utf8(&body[..line_end]).map_err(|_| invalid("chunk size"))?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| invalid("chunk size"))?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size + 2 {
            return Err(invalid("truncated chunk"));
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// Parses a complete response (the connection was closed after it).
pub fn parse_response(bytes: &[u8]) -> io::Result<HttpResponse> {
    let end = find(bytes, b"\r\n\r\n").ok_or_else(|| invalid("no end of the response head"))?;
    let head = std::str::from_utf8(&bytes[..end]).map_err(|_| invalid("head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(invalid(format!(
            "not an HTTP/1.x status line: {status_line:?}"
        )));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let raw = &bytes[end + 4..];
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(raw)?
    } else if let Some(len) = header("content-length") {
        let len: usize = len.parse().map_err(|_| invalid("bad content-length"))?;
        if raw.len() < len {
            return Err(invalid(format!("body has {} of {len} bytes", raw.len())));
        }
        raw[..len].to_vec()
    } else {
        raw.to_vec()
    };
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// `GET path` from `addr` with `Connection: close`; the whole exchange must fit in `timeout`.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<HttpResponse> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    let left = |deadline: Instant| {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut))
    };
    stream.set_write_timeout(Some(left(deadline)?))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: ferrite-lab\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )?;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        stream.set_read_timeout(Some(left(deadline)?))?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                bytes.extend_from_slice(&chunk[..n]);
                if bytes.len() > MAX_RESPONSE {
                    return Err(invalid("response larger than 1 MiB"));
                }
                // A server that keeps the connection open despite `close`: stop once the
                // announced body is complete.
                if let Ok(r) = parse_response(&bytes)
                    && r.header("content-length").is_some()
                {
                    return Ok(r);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    parse_response(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::{Server, ServerConfig};

    #[test]
    fn requests_parse_incrementally() {
        assert_eq!(parse_request(b"GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None));
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET"),
            Ok(Some(Request {
                len: 27,
                keep_alive: true
            }))
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap(),
            Request {
                len: 18,
                keep_alive: false
            }
        );
        assert!(
            !parse_request(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
                .unwrap()
                .unwrap()
                .keep_alive
        );
        // The body must be there too.
        assert_eq!(
            parse_request(b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nab"),
            Ok(None)
        );
        assert!(parse_request(b"hello there\r\n\r\n").is_err());
        assert!(parse_request(b"GET / SPDY/3\r\n\r\n").is_err());
    }

    #[test]
    fn responses_parse_with_length_chunked_or_eof() {
        let r = parse_response(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n{\"localEndpoints\":0}").unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(r.body, "{\"localEndpoints\":0}");
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "abcde"));
        let r = parse_response(b"HTTP/1.0 200 OK\r\n\r\nrest").unwrap();
        assert_eq!(r.body, "rest");
        assert!(parse_response(b"SSH-2.0-x\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab").is_err());
    }

    #[test]
    fn keep_alive_pipelining_and_get() {
        let server = Server::start(&ServerConfig {
            name: "web-1".into(),
            http: vec!["127.0.0.1:0".parse().unwrap()],
            echo_peer: true,
            ..ServerConfig::default()
        })
        .unwrap();
        let addr = server.http_addrs()[0];
        let r = get(addr, "/healthz", Duration::from_secs(2)).unwrap();
        assert_eq!(r.status, 200);
        assert!(r.body.starts_with("web-1 127.0.0.1:"), "{r:?}");

        // Two pipelined requests, then a third on the same connection.
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 1024];
        while got.windows(6).filter(|w| w == b"web-1 ").count() < 2 {
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0);
            got.extend_from_slice(&chunk[..n]);
        }
        s.write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        let text = String::from_utf8_lossy(&rest);
        assert!(text.contains("Connection: close"), "{text}");
        assert_eq!(
            server
                .stats()
                .http_requests
                .load(std::sync::atomic::Ordering::Relaxed),
            4
        );
    }
}
