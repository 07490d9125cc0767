//! `/v1/l2`: every announceable address, its owner and why this node does or does not announce.

use serde::{Deserialize, Serialize};

use crate::l2::hold::{HoldReason, HoldStatus};
use crate::l2::view::Clock;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct L2View {
    pub node: String,
    /// Alive members of the L2 membership, this node included.
    pub members: Vec<String>,
    pub addresses: Vec<L2AddressView>,
    /// Present while this node claims no new address (after a start, a link-up or a freeze,
    /// until membership synced with a peer or the hold-down passed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_hold: Option<L2HoldView>,
    /// The membership service: bound where, with which key, refused datagrams, or why not.
    #[serde(default)]
    pub membership: L2MembershipView,
}

/// The state of this node's L2 membership.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct L2MembershipView {
    /// `bound` (running), `unbound` (not running: see `error`; nothing is claimed) or
    /// `standalone` (`--l2-standalone`: this node decides alone).
    pub mode: String,
    /// The bound address (`bound`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// Where the address came from: `--l2-bind`, `Node InternalIP` or `HOST_IP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_from: Option<String>,
    /// The key's fingerprint (a hash prefix), or `ephemeral` for a lone node without a key file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Where the key came from: `file PATH`, `Secret NS/NAME (read|created|…)`, or
    /// `generated at start`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_from: Option<String>,
    /// Why membership is not running or not working; none when healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Datagrams refused and dropped since the start.
    #[serde(default)]
    pub rejected: L2RejectedView,
}

/// Refused membership datagrams by reason.
#[derive(
    Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema,
)]
pub struct L2RejectedView {
    pub unauthenticated: u64,
    pub bad_mac: u64,
    pub replayed: u64,
    pub malformed: u64,
}

impl From<crate::l2::membership::Rejected> for L2RejectedView {
    fn from(r: crate::l2::membership::Rejected) -> Self {
        Self {
            unauthenticated: r.unauthenticated,
            bad_mac: r.bad_mac,
            replayed: r.replayed,
            malformed: r.malformed,
        }
    }
}

/// Why new claims are held, since when and until what.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct L2HoldView {
    /// `start`, `link-up` or `freeze`.
    pub reason: String,
    /// The announcing interfaces that came up (reason `link-up`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
    /// When the hold started (Unix ms).
    pub since_unix_ms: u64,
    /// The hold-down deadline: with no peer syncing, claims resume then (Unix ms).
    pub deadline_unix_ms: u64,
    /// When a membership sync with a peer completed (Unix ms); none yet while waiting for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_unix_ms: Option<u64>,
    /// After that sync, when claims resume (the interim owner's release settled, Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled_unix_ms: Option<u64>,
    /// Addresses claimed before are released too until then (after a freeze).
    pub drop_existing: bool,
}

impl From<(&HoldStatus, &Clock)> for L2HoldView {
    fn from((s, clock): (&HoldStatus, &Clock)) -> Self {
        let (reason, interfaces) = match &s.reason {
            HoldReason::Start => ("start", Vec::new()),
            HoldReason::LinkUp(ifaces) => ("link-up", ifaces.clone()),
            HoldReason::Freeze => ("freeze", Vec::new()),
        };
        Self {
            reason: reason.into(),
            interfaces,
            since_unix_ms: clock.unix_ms_of(s.since),
            deadline_unix_ms: clock.unix_ms_of(s.deadline),
            synced_unix_ms: s.synced.map(|(t, _)| clock.unix_ms_of(t)),
            settled_unix_ms: s.synced.map(|(_, t)| clock.unix_ms_of(t)),
            drop_existing: s.drop_existing,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct L2AddressView {
    pub address: String,
    pub service: String,
    /// The node announcing it (none when no alive node is eligible).
    pub owner: Option<String>,
    /// The interface this node announces it on, when it is the owner.
    pub interface: Option<String>,
    /// When this node started announcing it (Unix ms).
    pub since_unix_ms: Option<u64>,
    pub eligible: bool,
    /// Why this node is or is not eligible.
    pub reason: String,
    /// This node is the owner but has not claimed the address yet: the claim hold is active.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub claim_held: bool,
}
