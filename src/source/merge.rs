//! Merging every file's objects into one [`Snapshot`].

use std::{
    collections::{BTreeMap, HashMap, hash_map::Entry},
    path::{Path, PathBuf},
};

use super::objects::{Object, ObjectKey};
use crate::model::Snapshot;

/// An object defined more than once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Duplicate {
    /// The file whose definition is used.
    pub used: PathBuf,
    /// Files whose definitions are ignored (the used file again when it defines the object twice).
    pub ignored: Vec<PathBuf>,
}

#[derive(Debug, Default)]
pub struct Merged {
    pub snapshot: Snapshot,
    pub duplicates: BTreeMap<ObjectKey, Duplicate>,
}

/// Merges files given in path order; within a file, objects are in document order. The first
/// definition of a (kind, namespace/name) wins, so the winner of a duplicate is deterministic: the
/// first file in path order, and the first document within it.
pub fn merge<'a>(files: impl IntoIterator<Item = (&'a Path, &'a [Object])>) -> Merged {
    let mut merged = Merged::default();
    let mut winners: HashMap<ObjectKey, &Path> = HashMap::new();
    for (path, objects) in files {
        for object in objects {
            match winners.entry(object.key()) {
                Entry::Vacant(entry) => {
                    entry.insert(path);
                    object.clone().insert_into(&mut merged.snapshot);
                }
                Entry::Occupied(entry) => {
                    let used = *entry.get();
                    merged
                        .duplicates
                        .entry(entry.key().clone())
                        .or_insert_with(|| Duplicate {
                            used: used.to_owned(),
                            ignored: Vec::new(),
                        })
                        .ignored
                        .push(path.to_owned());
                }
            }
        }
    }
    merged
}
