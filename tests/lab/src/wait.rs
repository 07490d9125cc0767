//! Polling until a condition holds.

use std::time::{Duration, Instant};

/// A condition that did not become true in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("condition not met within {timeout:?}")]
pub struct TimedOut {
    pub timeout: Duration,
}

/// Calls `cond` every `poll` until it returns true (`Ok` with the time it took) or `timeout`
/// passes (`Err`). `cond` runs at least once, and once more at the deadline.
pub fn wait_until(
    timeout: Duration,
    poll: Duration,
    mut cond: impl FnMut() -> bool,
) -> Result<Duration, TimedOut> {
    let start = Instant::now();
    let deadline = start + timeout;
    loop {
        if cond() {
            return Ok(start.elapsed());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(TimedOut { timeout });
        }
        std::thread::sleep(poll.min(deadline - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_when_condition_holds() {
        let mut calls = 0;
        let took = wait_until(Duration::from_secs(5), Duration::from_millis(1), || {
            calls += 1;
            calls == 3
        })
        .unwrap();
        assert_eq!(calls, 3);
        assert!(took < Duration::from_secs(5));
    }

    #[test]
    fn times_out_after_a_last_check() {
        let mut calls = 0;
        let err = wait_until(Duration::from_millis(30), Duration::from_millis(10), || {
            calls += 1;
            false
        })
        .unwrap_err();
        assert_eq!(err.timeout, Duration::from_millis(30));
        assert!(calls >= 2, "{calls}");
        assert_eq!(err.to_string(), "condition not met within 30ms");
    }

    #[test]
    fn zero_timeout_checks_once() {
        assert!(wait_until(Duration::ZERO, Duration::from_millis(1), || true).is_ok());
    }
}
