//! The aggregator's state: every watched kind's objects, which kinds have completed a list, and
//! what failed. Keeps the [`Snapshot`] up to date in place, one object per event (an event costs
//! O(log n), not a rebuild of the whole cluster), and the error list the API shows.

use std::{collections::BTreeMap, path::PathBuf};

use super::watch::{Entry, Key, Kind, Update};
use crate::{
    model::Snapshot,
    source::{
        dir::FileError,
        objects::{Object, ObjectKey},
    },
};

/// One object as the cache keeps it: the decoded model object itself lives only in the
/// snapshot; the entry keeps what errors, conditions and removals need.
#[derive(Debug)]
struct Stored {
    /// `Ok(Some(key))`: in the snapshot under `key`; `Ok(None)`: valid but not used; `Err`:
    /// rejected.
    decoded: Result<Option<ObjectKey>, String>,
    generation: Option<i64>,
    condition: Option<super::watch::WrittenCondition>,
}

/// What one update changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// The snapshot's content changed.
    pub snapshot: bool,
    /// Objects of a kind whose validity is reported as a condition changed.
    pub validity: bool,
}

impl std::ops::BitOrAssign for Changes {
    fn bitor_assign(&mut self, other: Self) {
        self.snapshot |= other.snapshot;
        self.validity |= other.validity;
    }
}

#[derive(Debug, Default)]
struct KindState {
    objects: BTreeMap<Key, Stored>,
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
    /// Every kind's valid objects, updated in place by [`apply`](Self::apply).
    snapshot: Snapshot,
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
        Self {
            kinds,
            states,
            snapshot: Snapshot::default(),
        }
    }

    /// Applies one update to the objects and the snapshot; says what changed.
    pub fn apply(&mut self, update: Update) -> Changes {
        match update {
            Update::Listed { kind, objects } => {
                let old = std::mem::take(&mut self.states[kind].objects);
                for stored in old.values() {
                    if let Ok(Some(key)) = &stored.decoded {
                        remove_from(key, &mut self.snapshot);
                    }
                }
                let mut stored = BTreeMap::new();
                for (key, entry) in objects {
                    let value = self.store(entry);
                    stored.insert(key, value);
                }
                let state = &mut self.states[kind];
                state.objects = stored;
                state.synced = true;
                state.absent = false;
                state.error = None;
                self.changes(kind, true)
            }
            Update::Applied { kind, key, entry } => {
                self.states[kind].error = None;
                self.replace(kind, key, *entry)
            }
            Update::Deleted { kind, key } => {
                let state = &mut self.states[kind];
                state.error = None;
                let Some(old) = state.objects.remove(&key) else {
                    return Changes::default();
                };
                if let Ok(Some(key)) = &old.decoded {
                    remove_from(key, &mut self.snapshot);
                }
                self.changes(kind, true)
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
                    return self.changes(kind, true);
                }
                Changes::default()
            }
        }
    }

    fn changes(&self, kind: usize, changed: bool) -> Changes {
        Changes {
            snapshot: changed,
            validity: changed && self.kinds[kind].conditions != super::watch::Conditions::Never,
        }
    }

    /// Moves the entry's object into the snapshot; returns what the cache keeps of it.
    fn store(&mut self, entry: Entry) -> Stored {
        let decoded = match entry.decoded {
            Ok(Some(object)) => {
                let key = object.key();
                object.insert_into(&mut self.snapshot);
                Ok(Some(key))
            }
            Ok(None) => Ok(None),
            Err(message) => Err(message),
        };
        Stored {
            decoded,
            generation: entry.generation,
            condition: entry.condition,
        }
    }

    /// Replaces one object; says whether the snapshot (the object) and whether its validity
    /// inputs (decoding result, generation, condition) changed.
    fn replace(&mut self, kind: usize, key: Key, entry: Entry) -> Changes {
        let old = self.states[kind].objects.remove(&key);
        let same_object = old
            .as_ref()
            .is_some_and(|old| match (&old.decoded, &entry.decoded) {
                (Ok(Some(placed)), Ok(Some(object))) => {
                    *placed == object.key() && self.holds(object)
                }
                (Ok(None), Ok(None)) => true,
                (Err(a), Err(b)) => a == b,
                _ => false,
            });
        let same_meta = old.as_ref().is_some_and(|old| {
            old.generation == entry.generation && old.condition == entry.condition
        });
        let stored = match old {
            Some(mut old) if same_object => {
                old.generation = entry.generation;
                old.condition = entry.condition;
                old
            }
            old => {
                if let Some(Stored {
                    decoded: Ok(Some(placed)),
                    ..
                }) = &old
                {
                    remove_from(placed, &mut self.snapshot);
                }
                self.store(entry)
            }
        };
        self.states[kind].objects.insert(key, stored);
        let changes = self.changes(kind, !(same_object && same_meta));
        Changes {
            snapshot: !same_object,
            ..changes
        }
    }

    /// Whether the snapshot already holds exactly `object`.
    fn holds(&self, object: &Object) -> bool {
        let s = &self.snapshot;
        match object {
            Object::Service(o) => s.services.get(&o.name) == Some(o),
            Object::EndpointSlice(o) => s.endpoint_slices.get(&o.name) == Some(o),
            Object::Pool(_, o) => s.pools.get(&o.name) == Some(o),
            Object::Node(_, o) => s.nodes.get(&o.name) == Some(&**o),
            Object::Namespace(_, o) => s.namespaces.get(&o.name) == Some(&**o),
            Object::Pod(o) => s.pods.get(&o.name) == Some(&**o),
            Object::NetworkPolicy(o) => s.network_policies.get(&o.name) == Some(&**o),
            Object::L2Policy(_, o) => s.l2_policies.get(&o.name) == Some(&**o),
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

    /// Every valid object of every kind, as kept up to date by [`apply`](Self::apply).
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
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

/// Removes the object `key` from `snapshot` (where [`Object::insert_into`] put it).
fn remove_from((kind, name): &ObjectKey, snapshot: &mut Snapshot) {
    match *kind {
        "Service" => drop(snapshot.services.remove(name)),
        "EndpointSlice" => drop(snapshot.endpoint_slices.remove(name)),
        "Pod" => drop(snapshot.pods.remove(name)),
        "NetworkPolicy" => drop(snapshot.network_policies.remove(name)),
        "LoadBalancerIPPool" => drop(snapshot.pools.remove(&name.name)),
        "Node" => drop(snapshot.nodes.remove(&name.name)),
        "Namespace" => drop(snapshot.namespaces.remove(&name.name)),
        "L2AnnouncementPolicy" => drop(snapshot.l2_policies.remove(&name.name)),
        other => unreachable!("no snapshot map holds {other} objects"),
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::{EndpointSlice, Service, ServiceName};
    use crate::source::kube::watch::kinds;

    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            usize::try_from(self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33).unwrap() % n
        }
    }

    /// A random entry of kind 0 (Service) or 1 (EndpointSlice) named `name`.
    fn entry(kind: usize, name: &str, rng: &mut Rng) -> Entry {
        let key = ServiceName::new("ns", name);
        let object = if kind == 0 {
            Object::Service(Service {
                name: key,
                cluster_ips: vec![std::net::IpAddr::from([10, 0, 0, 1])],
                ..Service::default()
            })
        } else {
            Object::EndpointSlice(EndpointSlice {
                name: key,
                service: ServiceName::new("ns", format!("s{}", rng.below(3))),
                ports: Vec::new(),
                endpoints: Vec::new(),
            })
        };
        Entry {
            decoded: match rng.below(6) {
                0 => Err(format!("bad {}", rng.below(2))),
                1 => Ok(None),
                _ => Ok(Some(object)),
            },
            generation: Some(i64::try_from(rng.below(2)).unwrap()),
            condition: None,
        }
    }

    /// The snapshot rebuilt from scratch, as the cache built it before it was incremental.
    fn full(objects: &BTreeMap<(usize, Key), Entry>) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for entry in objects.values() {
            if let Ok(Some(object)) = &entry.decoded {
                object.clone().insert_into(&mut snapshot);
            }
        }
        snapshot
    }

    #[test]
    fn the_snapshot_kept_in_place_equals_a_full_rebuild_along_random_walks() {
        for seed in 1..=6_u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut cache = Cache::new(kinds());
            let mut shadow: BTreeMap<(usize, Key), Entry> = BTreeMap::new();
            for step in 0..400 {
                let kind = rng.below(2);
                let name = format!("o{}", rng.below(8));
                let key = ("ns".to_owned(), name.clone());
                let before = cache.snapshot().clone();
                let changes = match rng.below(8) {
                    0 => {
                        let mut objects = BTreeMap::new();
                        shadow.retain(|(k, _), _| *k != kind);
                        for i in 0..rng.below(5) {
                            let name = format!("o{i}");
                            let entry = entry(kind, &name, &mut rng);
                            shadow.insert((kind, ("ns".to_owned(), name.clone())), entry.clone());
                            objects.insert(("ns".to_owned(), name), entry);
                        }
                        cache.apply(Update::Listed { kind, objects })
                    }
                    1 | 2 => {
                        shadow.remove(&(kind, key.clone()));
                        cache.apply(Update::Deleted { kind, key })
                    }
                    _ => {
                        let entry = entry(kind, &name, &mut rng);
                        shadow.insert((kind, key.clone()), entry.clone());
                        cache.apply(Update::Applied {
                            kind,
                            key,
                            entry: Box::new(entry),
                        })
                    }
                };
                let expected = full(&shadow);
                assert_eq!(cache.snapshot(), &expected, "seed {seed}, step {step}");
                if !changes.snapshot {
                    assert_eq!(
                        before, expected,
                        "seed {seed}, step {step}: unreported change"
                    );
                }
                let errors: Vec<_> = shadow
                    .iter()
                    .filter_map(|((_, (_, name)), e)| e.decoded.as_ref().err().map(|m| (name, m)))
                    .collect();
                assert_eq!(
                    cache.errors().len(),
                    errors.len(),
                    "seed {seed}, step {step}"
                );
            }
        }
    }
}
