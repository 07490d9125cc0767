//! The CNI spec versions this plugin speaks, and what each allows.

use std::fmt;

/// A supported CNI spec version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

/// Every version VERSION reports, oldest first.
pub const SUPPORTED: [CniVersion; 3] = [CniVersion::V0_4_0, CniVersion::V1_0_0, CniVersion::V1_1_0];

/// The newest version, used when a request names none we can use.
pub const LATEST: CniVersion = CniVersion::V1_1_0;

impl CniVersion {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V0_4_0 => "0.4.0",
            Self::V1_0_0 => "1.0.0",
            Self::V1_1_0 => "1.1.0",
        }
    }

    /// `None` for a version this plugin does not speak (older, newer or not a version).
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        SUPPORTED.into_iter().find(|v| v.as_str() == text)
    }

    /// GC and STATUS arrived with spec 1.1.0; a config of an older version may not use them.
    #[must_use]
    pub fn allows_gc_and_status(self) -> bool {
        self >= Self::V1_1_0
    }

    /// 0.4.0 results carry `"version": "4"|"6"` in every IP; 1.0.0 removed it.
    #[must_use]
    pub fn ips_have_version(self) -> bool {
        self < Self::V1_0_0
    }

    /// 1.1.0 added `mtu`/`socketPath`/`pciID` to interfaces and `mtu`, `advmss`, `priority`,
    /// `table`, `scope` to routes.
    #[must_use]
    pub fn has_1_1_fields(self) -> bool {
        self >= Self::V1_1_0
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `"0.4.0, 1.0.0, 1.1.0"` for messages.
#[must_use]
pub fn supported_list() -> String {
    SUPPORTED.map(CniVersion::as_str).join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_supported_versions() {
        for v in SUPPORTED {
            assert_eq!(CniVersion::parse(v.as_str()), Some(v));
        }
        for bad in ["0.3.1", "0.1.0", "2.0.0", "1.1", "", "latest"] {
            assert_eq!(CniVersion::parse(bad), None, "{bad}");
        }
        assert_eq!(supported_list(), "0.4.0, 1.0.0, 1.1.0");
    }

    #[test]
    fn feature_gates_follow_the_spec() {
        assert!(!CniVersion::V1_0_0.allows_gc_and_status());
        assert!(CniVersion::V1_1_0.allows_gc_and_status());
        assert!(CniVersion::V0_4_0.ips_have_version());
        assert!(!CniVersion::V1_0_0.ips_have_version());
        assert!(!CniVersion::V1_0_0.has_1_1_fields());
    }
}
