//! Exponential backoff with jitter, for watch restarts and status-write retries.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kube::runtime::utils::Backoff;

/// Doubles from `min` to `max`; each delay is shortened by up to a quarter at random so that
/// many nodes do not retry in lockstep.
#[derive(Clone, Debug)]
pub struct ExpBackoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl ExpBackoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
        }
    }
}

impl Iterator for ExpBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let jitter = delay / 4 * (nanos % 1000) / 1000;
        Some(delay.saturating_sub(jitter))
    }
}

impl Backoff for ExpBackoff {
    fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kube::runtime::utils::Backoff;

    use super::ExpBackoff;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = ExpBackoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let delays: Vec<Duration> = b.by_ref().take(5).collect();
        for (d, nominal) in delays.iter().zip([100, 200, 400, 500, 500]) {
            let nominal = Duration::from_millis(nominal);
            assert!(
                *d <= nominal && *d >= nominal * 3 / 4,
                "{d:?} vs {nominal:?}"
            );
        }
        b.reset();
        assert!(b.next().expect("delay") <= Duration::from_millis(100));
    }
}
