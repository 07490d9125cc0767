//! [`Watch`]: a background poller recording every answer and announcement for an address with
//! its arrival time; [`answer_rate`]: requests as fast as possible, answers per second.

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::netns::Ns;
use crate::raw::Mac;

use super::{
    Answer, AnswerKind, ETH_P_ALL, ETH_P_ARP, ETH_P_IPV6, PacketSocket, parse_answer, request,
};

/// One answer seen by a [`Watch`].
#[derive(Clone, Copy, Debug)]
pub struct Seen {
    pub at: Instant,
    pub answer: Answer,
}

/// What a [`Watch`] saw.
#[derive(Clone, Debug)]
pub struct WatchLog {
    /// This interface's MAC (replies to the watch's requests go there).
    pub mac: Mac,
    /// When each request went out.
    pub requests: Vec<Instant>,
    /// Every answer for the watched address (replies to anyone, announcements), in order.
    pub answers: Vec<Seen>,
}

impl WatchLog {
    /// The distinct MACs that replied to each request, by request (replies arriving before the
    /// next request count for the previous one).
    #[must_use]
    pub fn replies_by_request(&self) -> Vec<(Instant, BTreeSet<Mac>)> {
        let mut out: Vec<(Instant, BTreeSet<Mac>)> = self
            .requests
            .iter()
            .map(|t| (*t, BTreeSet::new()))
            .collect();
        for s in &self.answers {
            if s.answer.kind != AnswerKind::Reply || s.answer.eth_dst != self.mac {
                continue;
            }
            let i = self.requests.partition_point(|t| *t <= s.at);
            if i > 0 {
                out[i - 1].1.insert(s.answer.mac);
            }
        }
        out
    }

    /// Requests sent in `[from, to)` that more than one MAC answered.
    #[must_use]
    pub fn double_answered(&self, from: Instant, to: Instant) -> usize {
        self.replies_by_request()
            .iter()
            .filter(|(t, macs)| *t >= from && *t < to && macs.len() > 1)
            .count()
    }

    /// From the first to the last request sent in `[from, to)` that more than one MAC
    /// answered (`None` when none was).
    #[must_use]
    pub fn double_answered_span(&self, from: Instant, to: Instant) -> Option<Duration> {
        let times: Vec<Instant> = self
            .replies_by_request()
            .iter()
            .filter(|(t, macs)| *t >= from && *t < to && macs.len() > 1)
            .map(|(t, _)| *t)
            .collect();
        Some(*times.last()? - *times.first()?)
    }

    /// Requests sent in `[from, to)` that nobody answered.
    #[must_use]
    pub fn unanswered(&self, from: Instant, to: Instant) -> usize {
        self.replies_by_request()
            .iter()
            .filter(|(t, macs)| *t >= from && *t < to && macs.is_empty())
            .count()
    }

    /// The first answer at or after `from` that satisfies `pred`.
    pub fn first(&self, from: Instant, pred: impl Fn(&Answer) -> bool) -> Option<&Seen> {
        self.answers
            .iter()
            .find(|s| s.at >= from && pred(&s.answer))
    }

    /// The last answer at or after `from` (and before `to`) that satisfies `pred`.
    pub fn last(
        &self,
        from: Instant,
        to: Instant,
        pred: impl Fn(&Answer) -> bool,
    ) -> Option<&Seen> {
        self.answers
            .iter()
            .rev()
            .find(|s| s.at >= from && s.at < to && pred(&s.answer))
    }
}

/// Polls an address from one interface in the background: a request every `interval`, and
/// every answer or announcement for the address recorded with its arrival time.
#[derive(Debug)]
pub struct Watch {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<io::Result<WatchLog>>>,
}

impl Watch {
    /// Starts watching `target` from `ifname` in `ns`, sending requests as `ip`.
    pub fn start(
        ns: &Ns,
        ifname: &str,
        ip: IpAddr,
        target: IpAddr,
        interval: Duration,
    ) -> io::Result<Self> {
        let sock = PacketSocket::open_in(ns, ifname, ETH_P_ALL)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("l2-watch".into())
            .spawn(move || {
                let mut log = WatchLog {
                    mac: sock.mac(),
                    requests: Vec::new(),
                    answers: Vec::new(),
                };
                let frame = request(sock.mac(), ip, target);
                let mut next = Instant::now();
                while !flag.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    if now >= next {
                        sock.send(&frame)?;
                        log.requests.push(Instant::now());
                        next += interval;
                        if next < now {
                            next = now + interval;
                        }
                    }
                    let until = next.min(Instant::now() + Duration::from_millis(50));
                    while let Some(r) = sock.recv_until(until)? {
                        if r.outgoing {
                            continue;
                        }
                        if let Some(a) = parse_answer(&r.bytes)
                            && a.ip == target
                        {
                            log.answers.push(Seen {
                                at: r.at,
                                answer: a,
                            });
                        }
                    }
                }
                Ok(log)
            })?;
        Ok(Self {
            stop,
            handle: Some(handle),
        })
    }

    /// Stops and returns what it saw.
    pub fn stop(mut self) -> io::Result<WatchLog> {
        self.stop.store(true, Ordering::Relaxed);
        let handle = self.handle.take().expect("joined once");
        handle
            .join()
            .map_err(|_| io::Error::other("the watch thread panicked"))?
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Requests sent and replies received by [`answer_rate`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct AnswerRate {
    pub requests: u64,
    pub replies: u64,
    pub seconds: f64,
    /// Replies per second.
    pub rate: f64,
}

/// Sends requests for `target` from `ifname` in `ns` as fast as one thread can for `duration`
/// while another counts the replies addressed to this interface.
pub fn answer_rate(
    ns: &Ns,
    ifname: &str,
    ip: IpAddr,
    target: IpAddr,
    duration: Duration,
) -> io::Result<AnswerRate> {
    let proto = if target.is_ipv4() {
        ETH_P_ARP
    } else {
        ETH_P_IPV6
    };
    let tx = PacketSocket::open_in(ns, ifname, proto)?;
    let rx = PacketSocket::open_in(ns, ifname, proto)?;
    let replies = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let frame = request(tx.mac(), ip, target);
    let start = Instant::now();
    let (requests, rx_result) = std::thread::scope(|scope| {
        let counter = scope.spawn(|| -> io::Result<()> {
            while !done.load(Ordering::Relaxed) {
                let until = Instant::now() + Duration::from_millis(50);
                while let Some(r) = rx.recv_until(until)? {
                    if !r.outgoing
                        && let Some(a) = parse_answer(&r.bytes)
                        && a.kind == AnswerKind::Reply
                        && a.ip == target
                        && a.eth_dst == rx.mac()
                    {
                        replies.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Ok(())
        });
        let mut requests = 0u64;
        while start.elapsed() < duration {
            match tx.send(&frame) {
                Ok(()) => requests += 1,
                // A full socket buffer: let the wire drain.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => std::thread::yield_now(),
                Err(e) => {
                    done.store(true, Ordering::Relaxed);
                    return (Err(e), Ok(()));
                }
            }
        }
        // Replies still in flight.
        std::thread::sleep(Duration::from_millis(100));
        done.store(true, Ordering::Relaxed);
        let rx_result = counter
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("counter panicked")));
        (Ok(requests), rx_result)
    });
    rx_result?;
    let requests = requests?;
    let seconds = duration.as_secs_f64();
    let replies = replies.load(Ordering::Relaxed);
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    let rate = replies as f64 / seconds;
    Ok(AnswerRate {
        requests,
        replies,
        seconds,
        rate,
    })
}
