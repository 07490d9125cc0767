//! Hand-made Ethernet frames for robustness tests of a load balancer's datapath: a catalog of
//! malformed, unknown-port and stray IPv4/IPv6 packets aimed at one frontend (an LB IP or a
//! node address with its node ports), and an `AF_PACKET` sender that puts any byte string on
//! the wire, whatever the kernel's own IP stack would refuse to build.
//!
//! Split by responsibility: [`frame`] (builders and [`Mac`]), [`catalog`] (the frames and the
//! treatment each is owed, [`send_catalog`]) and [`socket`] ([`RawSender`], [`mac_of`]).

pub mod catalog;
pub mod frame;
pub mod socket;

pub use catalog::{Aim, Class, Frame, GarbageReport, catalog, send_catalog};
pub use frame::{Mac, ethernet};
pub(crate) use frame::{checksum, pseudo_header};
pub use socket::{RawSender, mac_of};
