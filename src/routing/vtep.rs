//! The VTEP MAC of a node, derived from its name: every agent computes every other node's the
//! same way, so VXLAN needs no per-node annotation (flannel publishes its MACs on the Node).

/// A locally administered unicast MAC from a hash of `node_name` (FNV-1a, stable across releases
/// and architectures).
#[must_use]
pub fn vtep_mac(node_name: &str) -> [u8; 6] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node_name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    // 0x0e: locally administered (bit 1), unicast (bit 0 clear).
    [0x0e, b[2], b[3], b[4], b[5], b[6] ^ b[7]]
}

#[cfg(test)]
mod tests {
    use super::vtep_mac;

    #[test]
    fn macs_are_stable_unicast_local_and_distinct() {
        let a = vtep_mac("node1");
        assert_eq!(a, vtep_mac("node1"));
        assert_ne!(a, vtep_mac("node2"));
        assert_eq!(a[0] & 0x01, 0, "unicast");
        assert_eq!(a[0] & 0x02, 0x02, "locally administered");
        let names: std::collections::BTreeSet<[u8; 6]> =
            (0..1000).map(|i| vtep_mac(&format!("node-{i}"))).collect();
        assert_eq!(names.len(), 1000);
    }
}
