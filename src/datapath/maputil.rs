//! Small helpers shared by the map writers.

use aya::maps::MapError;

use super::DatapathError;

pub fn map_err(name: &'static str) -> impl Fn(MapError) -> DatapathError {
    move |source| DatapathError::Map {
        name,
        source: Box::new(source),
    }
}

/// Takes map `name` out of the loaded object as the typed handle `T`.
pub fn take<T: TryFrom<aya::maps::Map, Error = MapError>>(
    ebpf: &mut aya::Ebpf,
    name: &'static str,
) -> Result<T, DatapathError> {
    let map = ebpf
        .take_map(name)
        .ok_or(DatapathError::MissingMap { name })?;
    T::try_from(map).map_err(map_err(name))
}

/// A delete of a key that is already gone is success (idempotent apply).
pub fn ignore_missing(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

/// The layout of aya's `lpm_trie::Key` (`#[repr(C, packed)]`), whose fields are private.
#[repr(C, packed)]
struct RawLpmKey<K: Copy> {
    prefix_len: u32,
    data: K,
}

/// The prefix length and data of an LPM trie key.
pub fn lpm_key_parts<K: aya::Pod>(k: &aya::maps::lpm_trie::Key<K>) -> (u32, K) {
    const { assert!(size_of::<RawLpmKey<K>>() == size_of::<aya::maps::lpm_trie::Key<K>>()) };
    // SAFETY: same size and layout (both packed: u32 then the data); read unaligned.
    let raw: RawLpmKey<K> =
        unsafe { std::ptr::read_unaligned(std::ptr::from_ref(k).cast::<RawLpmKey<K>>()) };
    (raw.prefix_len, raw.data)
}
