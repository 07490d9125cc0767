//! The aggregator's state: every watched kind's decoded objects, which kinds have completed a
//! list, and what failed. Builds the [`Snapshot`] and the error list the API shows.

use std::{collections::BTreeMap, path::PathBuf};

use super::watch::{Entry, Key, Kind, Update};
use crate::{model::Snapshot, source::dir::FileError};

#[derive(Debug, Default)]
struct KindState {
    objects: BTreeMap<Key, Entry>,
    /// A complete list was received (or the kind is absent and optional).
    synced: bool,
    /// The kind could not be listed (404/403) and runs empty.
    absent: bool,
    /// The last watch failure, until the watch works again.
    error: Option<String>,
}

/// What the aggregator knows, kind by kind (indexes as in [`super::watch::kinds`]).
#[derive(Debug)]
pub struct Cache {
    kinds: Vec<Kind>,
    states: Vec<KindState>,
}

/// An object whose validity is reported as a condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validity {
    pub kind: usize,
    pub key: Key,
    pub generation: Option<i64>,
    /// Why it was rejected; `None` when valid.
    pub error: Option<String>,
    pub current: Option<super::watch::WrittenCondition>,
}

impl Cache {
    pub fn new(kinds: Vec<Kind>) -> Self {
        let states = kinds.iter().map(|_| KindState::default()).collect();
        Self { kinds, states }
    }

    /// Applies one update; returns whether the objects changed.
    pub fn apply(&mut self, update: Update) -> bool {
        match update {
            Update::Listed { kind, objects } => {
                let state = &mut self.states[kind];
                state.objects = objects;
                state.synced = true;
                state.absent = false;
                state.error = None;
                true
            }
            Update::Applied { kind, key, entry } => {
                let state = &mut self.states[kind];
                state.error = None;
                state.objects.insert(key, *entry);
                true
            }
            Update::Deleted { kind, key } => {
                let state = &mut self.states[kind];
                state.error = None;
                state.objects.remove(&key).is_some()
            }
            Update::Failed {
                kind,
                message,
                absent,
            } => {
                let optional = self.kinds[kind].optional;
                let state = &mut self.states[kind];
                state.error = Some(message);
                if absent && optional && !state.synced {
                    // Not installed (or not allowed): run without it, keep retrying.
                    state.synced = true;
                    state.absent = true;
                    return true;
                }
                false
            }
        }
    }

    /// Every required kind has been listed (optional ones listed or found absent).
    pub fn synced(&self) -> bool {
        self.states.iter().all(|s| s.synced)
    }

    /// Kinds not yet listed, for logs.
    pub fn waiting_for(&self) -> Vec<&str> {
        self.kinds
            .iter()
            .zip(&self.states)
            .filter(|(_, s)| !s.synced)
            .map(|(k, _)| k.resource.plural.as_str())
            .collect()
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for state in &self.states {
            for entry in state.objects.values() {
                if let Ok(Some(object)) = &entry.decoded {
                    object.clone().insert_into(&mut snapshot);
                }
            }
        }
        snapshot
    }

    /// Rejected objects and failing watches, in the shape of the `dir:` source's file errors:
    /// `path` is `Kind namespace/name` or `watch <resource>`.
    pub fn errors(&self) -> Vec<FileError> {
        let mut errors = Vec::new();
        for (kind, state) in self.kinds.iter().zip(&self.states) {
            if let Some(error) = &state.error {
                let message = if state.absent {
                    format!("not available, running without it (retrying): {error}")
                } else {
                    format!("{error} (retrying; the last known objects stay in force)")
                };
                errors.push(FileError {
                    path: PathBuf::from(format!("kube: watch {}", kind.resource.plural)),
                    message,
                });
            }
            for ((namespace, name), entry) in &state.objects {
                if let Err(message) = &entry.decoded {
                    errors.push(FileError {
                        path: PathBuf::from(object_path(kind, namespace, name)),
                        message: message.clone(),
                    });
                }
            }
        }
        errors
    }

    /// Objects of kinds whose validity is reported as a condition.
    pub fn validity(&self) -> Vec<Validity> {
        let mut out = Vec::new();
        for (index, (kind, state)) in self.kinds.iter().zip(&self.states).enumerate() {
            if kind.conditions == super::watch::Conditions::Never {
                continue;
            }
            for (key, entry) in &state.objects {
                out.push(Validity {
                    kind: index,
                    key: key.clone(),
                    generation: entry.generation,
                    error: entry.decoded.as_ref().err().cloned(),
                    current: entry.condition.clone(),
                });
            }
        }
        out
    }
}

/// `Service test/web`, `L2AnnouncementPolicy lan`.
pub fn object_path(kind: &Kind, namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        format!("{} {name}", kind.resource.kind)
    } else {
        format!("{} {namespace}/{name}", kind.resource.kind)
    }
}
