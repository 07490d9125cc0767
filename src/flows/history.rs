//! The bounded in-memory history of flows: the newest [`DEFAULT_CAPACITY`] events; older ones
//! are evicted (counted). Readers ask with a cursor (`after`) so a follower sees each flow once.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::Flow;
use super::filter::FlowQuery;

/// Flows kept (≈ 300 bytes each: about 1.2 MB at most).
pub const DEFAULT_CAPACITY: usize = 4096;
/// Flows one answer carries when the query sets no `last`.
pub const DEFAULT_LAST: usize = 100;

#[derive(Debug)]
struct Inner {
    flows: VecDeque<Flow>,
    next_seq: u64,
    evicted: u64,
}

#[derive(Debug)]
pub struct FlowHistory {
    capacity: usize,
    inner: Mutex<Inner>,
}

impl FlowHistory {
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner {
                flows: VecDeque::new(),
                next_seq: 1,
                evicted: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends the flow `make` builds for the next sequence number.
    pub fn push(&self, make: impl FnOnce(u64) -> Flow) {
        let mut inner = self.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        if inner.flows.len() == self.capacity {
            inner.flows.pop_front();
            inner.evicted += 1;
        }
        inner.flows.push_back(make(seq));
    }

    /// The newest `last` flows after `after` that match, oldest first, each passed through
    /// `enrich` (filling in the service) before the filter sees it.
    pub fn query(&self, q: &FlowQuery, enrich: impl Fn(&mut Flow)) -> Vec<Flow> {
        let last = q.last.unwrap_or(DEFAULT_LAST);
        let after = q.after.unwrap_or(0);
        let inner = self.lock();
        let mut out: Vec<Flow> = inner
            .flows
            .iter()
            .rev()
            .take_while(|f| f.seq > after)
            .filter_map(|f| {
                let mut f = f.clone();
                enrich(&mut f);
                q.filter.matches(&f).then_some(f)
            })
            .take(last)
            .collect();
        out.reverse();
        out
    }

    /// (flows held, the newest seq so far, flows evicted).
    #[must_use]
    pub fn counts(&self) -> (usize, u64, u64) {
        let inner = self.lock();
        (inner.flows.len(), inner.next_seq - 1, inner.evicted)
    }

    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(seq: u64, verdict: &str) -> Flow {
        Flow {
            verdict: verdict.into(),
            ..crate::flows::test_flow("n", seq, seq)
        }
    }

    #[test]
    fn keeps_the_newest_and_counts_what_it_evicts() {
        let h = FlowHistory::new(3);
        for i in 0..5 {
            h.push(|seq| flow(seq, if i % 2 == 0 { "FORWARDED" } else { "DROPPED" }));
        }
        assert_eq!(h.counts(), (3, 5, 2));
        let all = h.query(&FlowQuery::default(), |_| {});
        assert_eq!(all.iter().map(|f| f.seq).collect::<Vec<_>>(), [3, 4, 5]);
    }

    #[test]
    fn after_last_filter_and_enrich_apply_in_order() {
        let h = FlowHistory::new(100);
        for i in 0..10 {
            h.push(|seq| flow(seq, if i % 2 == 0 { "FORWARDED" } else { "DROPPED" }));
        }
        let q = FlowQuery::parse(Some("after=3&last=2&verdict=DROPPED&service=web")).unwrap();
        let got = h.query(&q, |f| f.service = Some("default/web".into()));
        assert_eq!(got.iter().map(|f| f.seq).collect::<Vec<_>>(), [8, 10]);
        assert!(
            got.iter()
                .all(|f| f.service.as_deref() == Some("default/web"))
        );
        // Nothing new after the newest: a follower gets an empty answer.
        let q = FlowQuery::parse(Some("after=10")).unwrap();
        assert!(h.query(&q, |_| {}).is_empty());
    }
}
