//! L2 announcements: who announces which LoadBalancer address (membership, ownership) and how
//! (the eBPF ARP/NDP responder in `datapath`, gratuitous ARP / unsolicited NA here).

pub mod announce;
