//! Watches: event fan-out with selector transitions, resume from the history, `410 Gone`,
//! bookmarks, and ending or expiring every watch.

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::{
    error::ApiError,
    resources::Resource,
    selector::Selector,
    store::{HISTORY, Query, Store},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

#[derive(Clone, Debug)]
pub struct Event {
    pub rv: u64,
    pub resource: &'static Resource,
    pub namespace: String,
    pub kind: EventType,
    pub old: Option<Value>,
    pub new: Value,
}

pub struct Watcher {
    pub resource: &'static Resource,
    namespace: Option<String>,
    labels: Selector,
    fields: Selector,
    bookmarks: bool,
    tx: mpsc::UnboundedSender<Bytes>,
}

impl Watcher {
    /// The event this watcher sees for `event`, following selector transitions (an object that
    /// stops matching is reported as deleted, one that starts matching as added).
    pub fn translate(&self, event: &Event) -> Option<&'static str> {
        if !std::ptr::eq(self.resource, event.resource)
            || self
                .namespace
                .as_ref()
                .is_some_and(|ns| *ns != event.namespace)
        {
            return None;
        }
        let matches = |v: &Value| self.labels.matches(v) && self.fields.matches(v);
        let new = matches(&event.new);
        match event.kind {
            EventType::Added => new.then_some("ADDED"),
            EventType::Deleted => new.then_some("DELETED"),
            EventType::Modified => match (event.old.as_ref().is_some_and(matches), new) {
                (true, true) => Some("MODIFIED"),
                (false, true) => Some("ADDED"),
                (true, false) => Some("DELETED"),
                (false, false) => None,
            },
        }
    }
}

impl Store {
    pub(crate) fn emit(&mut self, event: Event) {
        self.watchers.retain(|_, w| match w.translate(&event) {
            Some(kind) => w.tx.send(event_line(kind, &event.new)).is_ok(),
            None => !w.tx.is_closed(),
        });
        self.history.push_back(event);
        while self.history.len() > HISTORY {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted = dropped.rv;
            }
        }
    }

    /// Opens a watch: events after `resource_version` (every current object as ADDED when it is
    /// unset or "0"), then live events. A version older than the compacted history gets a
    /// stream with one `410 Gone` ERROR event, as from a real server.
    pub fn watch(
        &mut self,
        query: Query,
        resource_version: Option<u64>,
        bookmarks: bool,
    ) -> (u64, mpsc::UnboundedReceiver<Bytes>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let watcher = Watcher {
            resource: query.resource,
            namespace: query.namespace.clone(),
            labels: query.labels,
            fields: query.fields,
            bookmarks,
            tx,
        };
        match resource_version {
            Some(rv) if rv > 0 && rv < self.compacted => {
                let error = ApiError::gone(format!(
                    "too old resource version: {rv} ({})",
                    self.compacted
                ));
                let _ = watcher.tx.send(event_line("ERROR", &error.status()));
                return (0, rx);
            }
            Some(rv) if rv > 0 => {
                for event in self.history.iter().filter(|e| e.rv > rv) {
                    if let Some(kind) = watcher.translate(event) {
                        let _ = watcher.tx.send(event_line(kind, &event.new));
                    }
                }
            }
            _ => {
                let list = self
                    .list(
                        &Query {
                            resource: watcher.resource,
                            namespace: watcher.namespace.clone(),
                            labels: watcher.labels.clone(),
                            fields: watcher.fields.clone(),
                        },
                        None,
                        None,
                    )
                    .unwrap_or_default();
                for item in list["items"].as_array().into_iter().flatten() {
                    let mut item = item.clone();
                    item["apiVersion"] = Value::String(watcher.resource.api_version());
                    item["kind"] = Value::String(watcher.resource.kind.to_owned());
                    let _ = watcher.tx.send(event_line("ADDED", &item));
                }
            }
        }
        self.next_watcher += 1;
        let id = self.next_watcher;
        self.watchers.insert(id, watcher);
        (id, rx)
    }

    /// Ends one watch (its stream closes).
    pub fn close_watch(&mut self, id: u64) {
        self.watchers.remove(&id);
    }

    /// Ends every watch, as when the server's watch timeout passes: clients resume from their
    /// last resourceVersion.
    pub fn close_watches(&mut self) {
        self.watchers.clear();
    }

    /// Forgets the event history: a watch resumed from any version seen so far gets `410 Gone`.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv + 1;
    }

    /// Compacts, tells every open watch `410 Gone` and ends it: clients must list again.
    pub fn expire_watches(&mut self) {
        self.compact();
        let error = ApiError::gone(format!("too old resource version ({})", self.compacted));
        for watcher in std::mem::take(&mut self.watchers).into_values() {
            let _ = watcher.tx.send(event_line("ERROR", &error.status()));
        }
    }

    /// Sends a BOOKMARK with the current resourceVersion to every watch that asked for them.
    pub fn bookmark(&mut self) {
        let rv = self.rv.to_string();
        self.watchers.retain(|_, w| {
            if !w.bookmarks {
                return !w.tx.is_closed();
            }
            let object = json!({
                "kind": w.resource.kind,
                "apiVersion": w.resource.api_version(),
                "metadata": {"resourceVersion": rv},
            });
            w.tx.send(event_line("BOOKMARK", &object)).is_ok()
        });
    }
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}
