//! Membership of the L2 announcers: SWIM (Das, Gupta, Motivala 2002) with Lifeguard's
//! refinements, among the agents over UDP on the node network. It needs no Kubernetes API
//! server, and a node whose announcing NIC is down stops answering probes on that network, so
//! the others declare it dead.
//!
//! [`Membership::start`] binds the socket and runs the protocol on the tokio runtime; the
//! returned `watch::Receiver<MembershipView>` changes whenever a member appears, changes state
//! or advertises a new eligibility. [`crate::l2::ownership::assign`] turns a view into owners.
//!
//! # Why a compact SWIM of our own rather than the `foca` crate
//! - Eligibility must travel *with* liveness and be versioned by it: here it is member metadata
//!   carried by every alive record and versioned by the incarnation (an eligibility change is a
//!   new incarnation, pushed to every live member at once). In foca identities are immutable
//!   (changing one is a rejoin under a new identity) and custom broadcasts are a separate
//!   channel with no order relative to liveness.
//! - The failover budget (≤1 s median) needs choices foca does not expose together: suspicion
//!   and death notices sent straight to the accused (a live member refutes within one round
//!   trip), Lifeguard's confirmation-shortened suspicion timeout, memberlist-style "dead in a
//!   peer's table ⇒ only suspect" when merging full syncs, a stale-gossip TTL, and periodic
//!   syncs to dead members and unreached seeds that merge healed partitions within a second.
//! - A restarted agent keeps its node name: its first incarnation is the wall clock in ms, and
//!   a claim about an earlier run is outranked, with no identity renewal scheme.
//! - The state machine is sans-IO ([`swim::Swim`]): simulation tests drive it with virtual time,
//!   packet loss, partitions and frozen members. The whole protocol is ~1k lines with no new
//!   dependency.
//!
//! # Partitions
//! Both sides of a partition declare the other side dead after the detection time (≈0.5 s,
//! ≤1.2 s) and from then on each side owns every address it has live eligible members for, so
//! an address can be announced from both sides for as long as the partition lasts. There is
//! deliberately no quorum: the protocol runs on the announcing network, so a membership
//! partition is almost always a split of the L2 segment itself, where each side's clients only
//! hear their own side's answers — the most available outcome. A quorum would turn "two of three
//! nodes died" into a total outage, and a two-node cluster could never fail over. Bounds:
//! - a node whose announcing NIC goes down loses its eligibility locally at once (the agent's
//!   interface watch), so the isolated side of a NIC failure never claims anything; the others
//!   stop hearing it and take over after the detection time;
//! - a killed or frozen agent stops answering within the responder heartbeat grace (250 ms,
//!   written by its own thread, see [`crate::l2::heartbeat`]), before the others take over
//!   (≈0.5 s): no overlap, only a gap clients ride out on their ARP cache;
//! - a node coming back (link up, agent start, resumed after a freeze) claims nothing new until
//!   it has completed a full-state exchange with a peer (it asks every seed and known member
//!   at once; the exchange is counted only once the peer's table shows it alive, so the interim
//!   owner has already released) plus a 50 ms settle, or until a hold-down (1 s,
//!   `--l2-claim-hold-ms`) passed with no peer answering ([`crate::l2::hold`]): ownership moves
//!   back to the rightful owner within a round trip and no request is answered by two nodes
//!   (0 double-answered probes over 24 bench trials);
//! - when a partition heals without a link event on either side, rejoin syncs (every
//!   `rejoin_interval`, 1 s) reach the members declared dead, each side refutes the other's
//!   death claims (a peer's "dead" only makes a member we see live suspect, so healthy members
//!   do not flap) and re-announces what it owns, and within one rejoin interval plus a round
//!   trip every node has the same view again, and rendezvous hashing leaves exactly one owner
//!   per address; until then both sides may answer (at most ≈1 s);
//! - the case left unbounded is membership cut while L2 still connects the sides (a firewall
//!   dropping UDP 7946 between nodes): both owners answer until it is fixed. `member down` logs
//!   on both sides at the same moment are the symptom.

mod auth;
mod config;
mod service;
mod swim;
mod table;
mod view;
mod wire;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod sim_tests;

use std::net::SocketAddr;

pub use auth::{Key, KeyError};
pub use config::{
    BindFrom, DEFAULT_CLUSTER, DEFAULT_PORT, MembershipConfig, Timing, choose_bind, parse_peers,
    seeds_from_nodes,
};
pub use service::{Membership, MembershipHandle, Rejected};
pub use view::{MemberState, MemberView, MembershipView};

use crate::l2::ownership::NodeName;

/// Failure to start or talk to the membership service.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("binding the membership socket to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "membership must bind to this node's address on the announcing network, not {0}: other \
         members probe that address"
    )]
    UnspecifiedBind(SocketAddr),
    #[error("member name `{0}` must be 1 to 255 bytes")]
    BadName(NodeName),
    #[error("peer `{0}` is not an address or address:port")]
    BadPeer(String),
    #[error("membership timing: {0}")]
    BadTiming(&'static str),
    #[error("the membership service needs a tokio runtime (call start from inside one)")]
    NoRuntime,
    #[error("the membership service has stopped")]
    Stopped,
}
