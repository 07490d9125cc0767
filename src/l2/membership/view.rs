//! What the membership service publishes: every known member with its state and its advertised
//! eligibility, as plain values (serialisable for the API and the CLI).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use crate::l2::ownership::NodeName;

/// A member's state, as SWIM defines it. At the same incarnation `Left` > `Dead` > `Suspect` >
/// `Alive` (a later state wins); a higher incarnation always wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Answers probes (directly or through a relay).
    Alive,
    /// Missed a probe; declared dead unless it refutes within the suspicion timeout. A suspect
    /// still counts as live for ownership, so a short hiccup does not move addresses.
    Suspect,
    /// Missed probes for the whole suspicion timeout.
    Dead,
    /// Said goodbye (graceful shutdown).
    Left,
}

impl MemberState {
    /// Alive or suspect: the member may own addresses.
    #[must_use]
    pub fn is_live(self) -> bool {
        matches!(self, Self::Alive | Self::Suspect)
    }

    /// Precedence at equal incarnation.
    pub(super) fn rank(self) -> u8 {
        match self {
            Self::Alive => 0,
            Self::Suspect => 1,
            Self::Dead => 2,
            Self::Left => 3,
        }
    }

    pub(super) fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            0 => Some(Self::Alive),
            1 => Some(Self::Suspect),
            2 => Some(Self::Dead),
            3 => Some(Self::Left),
            _ => None,
        }
    }

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alive => "alive",
            Self::Suspect => "suspect",
            Self::Dead => "dead",
            Self::Left => "left",
        }
    }
}

impl std::fmt::Display for MemberState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One member as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberView {
    pub name: NodeName,
    /// Its membership address (node address on the announcing network, UDP port).
    pub addr: SocketAddr,
    pub state: MemberState,
    /// Bumped by the member itself to refute suspicion and with every eligibility change, so
    /// it doubles as the version of `eligible`.
    pub incarnation: u64,
    /// The addresses the member says it may announce (policy, interface up, local endpoints).
    pub eligible: BTreeSet<IpAddr>,
    /// When this node saw it enter `state` (Unix milliseconds).
    pub since_unix_ms: u64,
}

/// Everything this node knows about the cluster's agents, itself included (sorted by name).
/// Dead and departed members stay listed for a while (`Timing::dead_retention`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MembershipView {
    /// This node's member name.
    pub local: NodeName,
    pub members: Vec<MemberView>,
    /// Full-state exchanges completed with peers since start (a peer's whole table received,
    /// ours sent to it). The agent holds new claims after a link-up or start until this grows:
    /// then its rendezvous view is the one the others use.
    pub syncs: u64,
    /// [`Self::syncs`] per peer: a node coming back waits until every live peer synced with it
    /// after the event, not only the first one to answer (that may not be the interim owner).
    pub peer_syncs: std::collections::BTreeMap<NodeName, u64>,
    /// Suspicion or death claims about this node it refuted since start. Peers may have moved
    /// its addresses meanwhile: the agent announces what it owns again when this grows.
    pub refutations: u64,
}

impl MembershipView {
    /// Members that are alive or suspect.
    pub fn live(&self) -> impl Iterator<Item = &MemberView> {
        self.members.iter().filter(|m| m.state.is_live())
    }

    #[must_use]
    pub fn get(&self, name: &str) -> Option<&MemberView> {
        self.members.iter().find(|m| m.name == name)
    }
}
