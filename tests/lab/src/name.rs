//! Unique, short names for lab objects (netns, cgroups, veths): `PREFIX-PID-COUNTER` with the
//! pid and counter in base 36, so that a name plus a one-letter veth prefix fits in `IFNAMSIZ`
//! and a leftover from a dead process can be recognised and removed.

use std::sync::atomic::{AtomicU32, Ordering};

/// Longest name [`unique`] returns; `v` + name still fits a 15-character interface name.
pub const MAX_NAME_LEN: usize = 14;
/// Longest accepted prefix.
pub const MAX_PREFIX_LEN: usize = 4;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A prefix or generated name that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NameError {
    #[error(
        "name prefix {0:?} must be 1 to {MAX_PREFIX_LEN} characters of a-z and 0-9, starting with a letter"
    )]
    BadPrefix(String),
    #[error("generated name {0:?} is longer than {MAX_NAME_LEN} characters (too many objects)")]
    TooLong(String),
}

/// Formats `n` in lower-case base 36.
#[must_use]
pub fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[usize::try_from(n % 36).expect("digit < 36")]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ascii digits")
}

fn valid_prefix(prefix: &str) -> bool {
    (1..=MAX_PREFIX_LEN).contains(&prefix.len())
        && prefix.starts_with(|c: char| c.is_ascii_lowercase())
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// A new name `PREFIX-PID-N` unique within this machine while this process lives.
pub fn unique(prefix: &str) -> Result<String, NameError> {
    if !valid_prefix(prefix) {
        return Err(NameError::BadPrefix(prefix.to_owned()));
    }
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!(
        "{prefix}-{}-{}",
        base36(u64::from(std::process::id())),
        base36(u64::from(n))
    );
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(name));
    }
    Ok(name)
}

/// The pid embedded in a name made by [`unique`] with `prefix`, if `name` is one.
#[must_use]
pub fn owner_pid(name: &str, prefix: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('-')?;
    let (pid, counter) = rest.split_once('-')?;
    let is_b36 = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
    };
    if !is_b36(pid) || !is_b36(counter) {
        return None;
    }
    u32::from_str_radix(pid, 36).ok()
}

/// Whether a process with this pid exists.
#[must_use]
pub fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_short_and_parse_back() {
        let a = unique("flb").unwrap();
        let b = unique("flb").unwrap();
        assert_ne!(a, b);
        assert!(a.len() <= MAX_NAME_LEN);
        assert_eq!(owner_pid(&a, "flb"), Some(std::process::id()));
        assert_eq!(owner_pid(&a, "fl"), None);
        assert_eq!(owner_pid("flb-zz", "flb"), None);
        assert_eq!(owner_pid("flb-z-", "flb"), None);
        assert_eq!(owner_pid("flb-A-1", "flb"), None);
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(unique("").is_err());
        assert!(unique("abcde").is_err());
        assert!(unique("Ab").is_err());
        assert!(unique("1a").is_err());
        assert!(unique("a-b").is_err());
        assert!(unique("ab12").is_ok());
    }

    #[test]
    fn base36_round_trips() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        // pid_max on 64-bit Linux fits five digits, so names stay within MAX_NAME_LEN.
        assert_eq!(base36(4_194_304).len(), 5);
        assert_eq!(
            u64::from_str_radix(&base36(123_456_789), 36).unwrap(),
            123_456_789
        );
    }
}
