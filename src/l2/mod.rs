//! L2 announcements: which node answers ARP/NDP for which LoadBalancer and external address.
//!
//! - [`membership`]: SWIM-style failure detection among the agents over UDP on the node network,
//!   with each member's advertised eligibility (the addresses it may announce) as metadata. It
//!   keeps working while the Kubernetes API server is unreachable.
//! - [`ownership`]: the pure rule every node applies to the same membership view, so that exactly
//!   one live, eligible node claims each address (rendezvous hashing).

pub mod membership;
pub mod ownership;

// Announcing (lead): gratuitous ARP / unsolicited NA, and which addresses this node may announce.
pub mod announce;
pub mod eligibility;
pub mod heartbeat;
pub mod hold;
pub mod view;
