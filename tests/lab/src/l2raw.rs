//! ARP and IPv6 neighbor discovery on the wire, for tests of L2 announcements: requests and
//! Neighbor Solicitations built by hand, a parser for the answers (ARP replies, gratuitous ARP,
//! solicited and unsolicited Neighbor Advertisements), [`solicit`] (one request, every answer
//! within a window), [`Watch`] (a background poller that records every answer and announcement
//! with its arrival time), [`answer_rate`] (requests as fast as possible, answers per second)
//! and [`catalog`]: truncated, malformed and unusual ARP/NDP frames, each from its own sender
//! MAC so that any answer names the frame that provoked it.
//!
//! Split by responsibility: [`frames`] (requests built field by field), [`parse`] (answers),
//! [`socket`] ([`PacketSocket`], [`solicit`]), [`watch`] ([`Watch`], [`answer_rate`]),
//! [`catalog`] / [`catalog_nd`] (crafted frames and their expectations) and [`report`]
//! ([`send_catalog`]).

pub mod catalog;
pub mod catalog_nd;
pub mod frames;
pub mod parse;
pub mod report;
pub mod socket;
pub mod watch;

pub use catalog::*;
use catalog_nd::nd_catalog;
pub use frames::*;
pub use parse::*;
pub use report::*;
pub use socket::*;
pub use watch::*;

#[cfg(test)]
mod tests;
