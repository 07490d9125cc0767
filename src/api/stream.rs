//! `/v1/flows/stream`: the flows of `/v1/flows`' filters as NDJSON (one flow a line), kept open
//! and written as they arrive. The body polls the history every [`POLL`]; when the client goes
//! away hyper drops the body and the stream ends (counted in `stats.streams`).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use hyper::body::{Body, Frame};

use super::SharedState;
use super::routes::{Reply, ReplyBody};
use crate::flows::Flow;
use crate::flows::filter::{FlowFilter, FlowQuery, MAX_LAST};
use crate::flows::history::FlowHistory;

/// How often an open stream looks for new flows.
pub const POLL: Duration = Duration::from_millis(100);

pub const CONTENT_TYPE: &str = "application/x-ndjson";

/// Where a stream starts: after `after` when given; else the newest `last` flows (when given)
/// then new ones; else only flows from now on (`latest` is the newest seq so far).
#[must_use]
pub fn start_cursor(q: &FlowQuery, latest: u64) -> (u64, usize) {
    match (q.after, q.last) {
        (Some(after), last) => (after, last.unwrap_or(MAX_LAST)),
        (None, Some(last)) => (0, last),
        (None, None) => (latest, MAX_LAST),
    }
}

/// The NDJSON lines of the (at most `last`) flows after `cursor` that match `filter` (each
/// enriched first), and the cursor to ask with next: the newest seq seen, matching or not, so
/// a flow is looked at once.
pub fn next_lines(
    history: &FlowHistory,
    filter: &FlowFilter,
    cursor: u64,
    last: usize,
    enrich: impl Fn(&mut Flow),
) -> (Vec<u8>, u64) {
    let (_, latest, _) = history.counts();
    if latest <= cursor {
        return (Vec::new(), cursor);
    }
    let q = FlowQuery {
        after: Some(cursor),
        last: Some(last),
        filter: filter.clone(),
    };
    let flows = history.query(&q, enrich);
    let mut out = Vec::new();
    for f in &flows {
        // A Flow is strings and integers: serialising it cannot fail.
        if serde_json::to_writer(&mut out, f).is_ok() {
            out.push(b'\n');
        }
    }
    let newest = flows.last().map_or(0, |f| f.seq);
    (out, latest.max(newest))
}

/// Counts an open stream while it lives.
#[derive(Debug)]
struct Open(Arc<AtomicU64>);

impl Open {
    fn new(count: Arc<AtomicU64>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The response body of one open stream.
pub struct FlowStream {
    state: SharedState,
    history: Arc<FlowHistory>,
    filter: FlowFilter,
    cursor: u64,
    last: usize,
    tick: tokio::time::Interval,
    pending: VecDeque<Bytes>,
    _open: Open,
}

impl std::fmt::Debug for FlowStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowStream")
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

impl FlowStream {
    /// A stream of `history`'s flows after `cursor` (the first answer at most `last`) that
    /// match `filter`, enriched from `state`, counted in `open` while it lives. Needs a tokio
    /// runtime (its timer).
    fn new(
        state: SharedState,
        history: Arc<FlowHistory>,
        filter: FlowFilter,
        (cursor, last): (u64, usize),
        open: Arc<AtomicU64>,
    ) -> Self {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            state,
            history,
            filter,
            cursor,
            last,
            tick,
            pending: VecDeque::new(),
            _open: Open::new(open),
        }
    }

    fn poll_history(&mut self) {
        let (lines, cursor) = {
            let enrich = super::flows::enricher(&self.state);
            next_lines(&self.history, &self.filter, self.cursor, self.last, enrich)
        };
        self.cursor = cursor;
        self.last = MAX_LAST;
        if !lines.is_empty() {
            self.pending.push_back(Bytes::from(lines));
        }
    }
}

impl Body for FlowStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        loop {
            if let Some(chunk) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            if this.tick.poll_tick(cx).is_pending() {
                return Poll::Pending;
            }
            this.poll_history();
        }
    }
}

pub fn handler(state: &SharedState, _: Option<&str>, query: Option<&str>) -> Reply {
    let q = match FlowQuery::parse(query) {
        Ok(q) => q,
        Err(e) => return Reply::error(StatusCode::BAD_REQUEST, e),
    };
    let source = super::flows::flow_source(state);
    let Some(src) = source else {
        return Reply::error(
            StatusCode::NOT_FOUND,
            "flow events are off on this agent (--flow-rate 0): nothing to stream",
        );
    };
    let start = start_cursor(&q, src.history.counts().1);
    tracing::debug!(cursor = start.0, "flow stream opened");
    Reply {
        status: StatusCode::OK,
        content_type: CONTENT_TYPE,
        body: ReplyBody::Stream(Box::new(FlowStream::new(
            state.clone(),
            src.history,
            q.filter,
            start,
            src.streams,
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(n: u64) -> FlowHistory {
        let h = FlowHistory::new(100);
        for i in 0..n {
            h.push(|seq| crate::flows::Flow {
                verdict: if i % 2 == 0 { "FORWARDED" } else { "DROPPED" }.into(),
                ..crate::flows::test_flow("n", seq, seq)
            });
        }
        h
    }

    fn seqs(lines: &[u8]) -> Vec<u64> {
        std::str::from_utf8(lines)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Flow>(l).unwrap().seq)
            .collect()
    }

    #[test]
    fn a_stream_starts_now_after_a_cursor_or_with_the_newest_last() {
        let q = |s: &str| FlowQuery::parse(Some(s)).unwrap();
        assert_eq!(start_cursor(&q(""), 42), (42, MAX_LAST));
        assert_eq!(start_cursor(&q("last=5"), 42), (0, 5));
        assert_eq!(start_cursor(&q("after=7"), 42), (7, MAX_LAST));
        assert_eq!(start_cursor(&q("after=7&last=2"), 42), (7, 2));
    }

    #[test]
    fn lines_are_the_new_matching_flows_and_the_cursor_passes_the_others() {
        let h = history(6);
        let dropped = FlowQuery::parse(Some("verdict=DROPPED")).unwrap().filter;
        let (lines, cursor) = next_lines(&h, &dropped, 1, MAX_LAST, |f| {
            f.service = Some("default/web".into());
        });
        assert_eq!(seqs(&lines), [2, 4, 6]);
        assert_eq!(cursor, 6);
        let text = String::from_utf8(lines).unwrap();
        assert!(text.ends_with('\n') && text.matches('\n').count() == 3);
        assert!(text.contains("\"service\":\"default/web\""));
        // Nothing new: no lines, the same cursor.
        assert_eq!(
            next_lines(&h, &dropped, cursor, MAX_LAST, |_| {}),
            (Vec::new(), 6)
        );
        // A new flow that does not match moves the cursor past it.
        h.push(|seq| crate::flows::test_flow("n", seq, seq));
        let (lines, cursor) = next_lines(&h, &dropped, 6, MAX_LAST, |_| {});
        assert!(lines.is_empty());
        assert_eq!(cursor, 7);
        // The first answer's `last` bounds the backlog.
        let all = FlowFilter::default();
        let (lines, _) = next_lines(&h, &all, 0, 2, |_| {});
        assert_eq!(seqs(&lines), [6, 7]);
    }

    async fn next(body: &mut FlowStream) -> Bytes {
        use http_body_util::BodyExt as _;
        tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("a frame within 5 s")
            .expect("the stream does not end")
            .unwrap()
            .into_data()
            .unwrap()
    }

    #[tokio::test]
    async fn the_body_writes_new_matching_flows_as_they_arrive() {
        let h = Arc::new(history(2));
        let open = Arc::new(AtomicU64::new(0));
        let state = SharedState::default();
        let dropped = FlowQuery::parse(Some("verdict=DROPPED")).unwrap().filter;
        let mut body = FlowStream::new(state, h.clone(), dropped, (2, MAX_LAST), open.clone());
        assert_eq!(open.load(Ordering::Relaxed), 1);
        // Pushed after the stream opened: a forwarded flow (filtered out), then a dropped one.
        h.push(|seq| crate::flows::test_flow("n", seq, seq));
        h.push(|seq| crate::flows::Flow {
            verdict: "DROPPED".into(),
            ..crate::flows::test_flow("n", seq, seq)
        });
        assert_eq!(seqs(&next(&mut body).await), [4]);
        h.push(|seq| crate::flows::Flow {
            verdict: "DROPPED".into(),
            ..crate::flows::test_flow("n", seq, seq)
        });
        assert_eq!(seqs(&next(&mut body).await), [5]);
        drop(body);
        assert_eq!(open.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn an_open_stream_is_counted_until_it_is_dropped() {
        let count = Arc::new(AtomicU64::new(0));
        let a = Open::new(count.clone());
        let b = Open::new(count.clone());
        assert_eq!(count.load(Ordering::Relaxed), 2);
        drop(a);
        drop(b);
        assert_eq!(count.load(Ordering::Relaxed), 0);
    }
}
