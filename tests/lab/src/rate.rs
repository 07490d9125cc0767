//! TCP connect rate: threads doing connect + RST-close as fast as they can for a fixed time.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::errno::error_kind;
use crate::report::ConnectRateReport;
use crate::sock::ConnectTarget;

/// Per-connect timeout; a connect that takes this long counts as a `timeout` error.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Tally {
    connects: u64,
    failures: BTreeMap<String, u64>,
}

fn worker(targets: &[ConnectTarget], first: usize, deadline: Instant) -> Tally {
    let mut tally = Tally::default();
    let mut next = first % targets.len();
    // Checking the clock every connect costs far less than the connect itself.
    while Instant::now() < deadline {
        let target = &targets[next];
        next = (next + 1) % targets.len();
        match target.connect_and_reset(CONNECT_TIMEOUT) {
            Ok(()) => tally.connects += 1,
            Err(e) => {
                *tally.failures.entry(error_kind(&e)).or_default() += 1;
                // Do not spin on an instant error (e.g. no route): it would swamp the CPU
                // the servers need, and the count is what matters.
                if e.raw_os_error() != Some(libc::ECONNREFUSED) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    tally
}

/// Connects from `threads` threads for `duration`, each connect on a new socket closed with
/// `SO_LINGER` 0; successive connects of a thread rotate over `targets`.
///
/// # Panics
/// If `targets` is empty.
#[must_use]
pub fn connect_rate(targets: &[SocketAddr], duration: Duration, threads: u32) -> ConnectRateReport {
    assert!(!targets.is_empty(), "connect_rate needs a target");
    let threads = threads.max(1);
    let prepared: Vec<ConnectTarget> = targets.iter().copied().map(ConnectTarget::new).collect();
    let prepared = &prepared;
    let start = Instant::now();
    let deadline = start + duration;
    let tallies: Vec<Tally> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|i| scope.spawn(move || worker(prepared, i as usize, deadline)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let seconds = start.elapsed().as_secs_f64();
    let mut report = ConnectRateReport {
        target: targets
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
        threads,
        seconds,
        ..ConnectRateReport::default()
    };
    for tally in tallies {
        report.connects += tally.connects;
        for (kind, n) in tally.failures {
            report.errors += n;
            *report.failures.entry(kind).or_default() += n;
        }
    }
    #[expect(
        clippy::cast_precision_loss,
        reason = "connect counts are far below 2^52"
    )]
    let rate = report.connects as f64 / seconds.max(f64::EPSILON);
    report.rate = rate;
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::{Server, ServerConfig};
    use std::net::TcpListener;

    #[test]
    fn measures_a_local_server() {
        let server = Server::start(&ServerConfig {
            name: "pod-a".into(),
            tcp: vec!["127.0.0.1:0".parse().unwrap()],
            ..ServerConfig::default()
        })
        .unwrap();
        let r = connect_rate(server.tcp_addrs(), Duration::from_millis(200), 2);
        assert!(r.connects > 50, "{r:?}");
        // A loaded CI box can let the accept queue overflow for a moment: the dropped SYN is
        // retransmitted after 1 s, past CONNECT_TIMEOUT. Rare timeouts are the machine; any other
        // failure, or many timeouts, is the tool.
        let timeouts = r.failures.get("ETIMEDOUT").copied().unwrap_or(0);
        assert_eq!(r.errors, timeouts, "only timeouts may happen: {r:?}");
        assert!(timeouts * 100 <= r.connects, "too many timeouts: {r:?}");
        assert!(r.rate > 0.0 && r.seconds >= 0.2);
    }

    #[test]
    fn counts_refusals() {
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let r = connect_rate(&[closed], Duration::from_millis(50), 1);
        assert_eq!(r.connects, 0);
        assert!(r.errors > 0);
        assert_eq!(r.failures.get("ECONNREFUSED"), Some(&r.errors));
    }
}
