//! `/v1/l2`: every announceable address, its owner and why this node does or does not announce.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct L2View {
    pub node: String,
    /// Alive members of the L2 membership, this node included.
    pub members: Vec<String>,
    pub addresses: Vec<L2AddressView>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
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
}
