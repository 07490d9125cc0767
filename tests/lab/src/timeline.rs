//! [`RequestLoop`]: a client that keeps making short TCP requests (connect, read the server's
//! `NAME [PEER]` line) in the background and records when each attempt started, ended and who
//! answered, so failover tests can see exactly when service stopped and resumed.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::errno::error_kind;
use crate::netns::Ns;
use crate::probe::parse_reply;

/// One request of a [`RequestLoop`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub start: Instant,
    pub end: Instant,
    /// The server name that answered, or the error kind (`timeout`, `ECONNREFUSED`, ...).
    pub outcome: Result<String, String>,
}

impl Attempt {
    #[must_use]
    pub fn ok(&self) -> bool {
        self.outcome.is_ok()
    }
}

fn attempt(target: SocketAddr, timeout: Duration) -> Attempt {
    let start = Instant::now();
    let outcome = (|| -> io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&target, timeout)?;
        let left = timeout
            .saturating_sub(start.elapsed())
            .max(Duration::from_millis(1));
        stream.set_read_timeout(Some(left))?;
        let mut buf = Vec::with_capacity(64);
        let mut chunk = [0u8; 256];
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
        Ok(parse_reply(&buf)?.name)
    })()
    .map_err(|e| error_kind(&e));
    Attempt {
        start,
        end: Instant::now(),
        outcome,
    }
}

/// Requests to one address every `interval` from a thread inside a netns, until stopped.
#[derive(Debug)]
pub struct RequestLoop {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<Vec<Attempt>, String>>>,
}

impl RequestLoop {
    /// Starts requesting `target` from `ns`; each attempt gives up after `timeout`.
    pub fn start(
        ns: &Ns,
        target: SocketAddr,
        interval: Duration,
        timeout: Duration,
    ) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let ns = ns.clone();
        let handle = std::thread::Builder::new()
            .name("request-loop".into())
            .spawn(move || {
                ns.run(|| {
                    let mut out = Vec::new();
                    while !flag.load(Ordering::Relaxed) {
                        let a = attempt(target, timeout);
                        out.push(a);
                        std::thread::sleep(interval);
                    }
                    out
                })
                .map_err(|e| e.to_string())
            })?;
        Ok(Self {
            stop,
            handle: Some(handle),
        })
    }

    /// Stops and returns every attempt in order.
    pub fn stop(mut self) -> Result<Vec<Attempt>, String> {
        self.stop.store(true, Ordering::Relaxed);
        let handle = self.handle.take().expect("joined once");
        handle
            .join()
            .map_err(|_| "the request loop panicked".to_owned())?
    }
}

impl Drop for RequestLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The last successful attempt that ended at or before `t`.
#[must_use]
pub fn last_ok_before(attempts: &[Attempt], t: Instant) -> Option<&Attempt> {
    attempts.iter().rev().find(|a| a.ok() && a.end <= t)
}

/// The first successful attempt that started at or after `t`.
#[must_use]
pub fn first_ok_after(attempts: &[Attempt], t: Instant) -> Option<&Attempt> {
    attempts.iter().find(|a| a.ok() && a.start >= t)
}

/// The longest time between two consecutive successful answers (by end time) among those
/// ending in `[from, to]`, counting from the last success before `from`: how long the service
/// was unreachable around a fault at `from`. `None` when nothing succeeded after `from`.
#[must_use]
pub fn longest_outage(attempts: &[Attempt], from: Instant, to: Instant) -> Option<Duration> {
    let mut prev = last_ok_before(attempts, from).map_or(from, |a| a.end);
    let mut longest = None::<Duration>;
    for a in attempts
        .iter()
        .filter(|a| a.ok() && a.end > from && a.end <= to)
    {
        let gap = a.end - prev;
        longest = Some(longest.map_or(gap, |l| l.max(gap)));
        prev = a.end;
    }
    longest
}

/// Failed attempts that started in `[from, to)`.
#[must_use]
pub fn failures(attempts: &[Attempt], from: Instant, to: Instant) -> usize {
    attempts
        .iter()
        .filter(|a| !a.ok() && a.start >= from && a.start < to)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outage_is_the_longest_gap_between_answers() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let a = |s, e, ok: bool| Attempt {
            start: ms(s),
            end: ms(e),
            outcome: if ok {
                Ok("pod".into())
            } else {
                Err("timeout".into())
            },
        };
        let attempts = vec![
            a(0, 5, true),
            a(25, 30, true),
            a(50, 300, false),
            a(320, 570, false),
            a(590, 600, true),
            a(620, 625, true),
        ];
        assert_eq!(last_ok_before(&attempts, ms(40)).unwrap().end, ms(30));
        assert_eq!(first_ok_after(&attempts, ms(40)).unwrap().start, ms(590));
        assert_eq!(
            longest_outage(&attempts, ms(40), ms(1000)),
            Some(Duration::from_millis(570))
        );
        assert_eq!(failures(&attempts, ms(40), ms(1000)), 2);
        assert_eq!(longest_outage(&attempts, ms(700), ms(1000)), None);
    }
}
